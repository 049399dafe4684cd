-- pgbench ceiling, catalog mix: what the worker sends for one product.updated (captured with
-- log_statement=all, see scripts/bench.sh), one transaction per event. events per run: 1
\set n random(1, 1000000000000000)
\set p random(1, 1000)
start transaction;
select id, retry_count from public.stripe_webhook_events where stripe_event_id = 'evt_pgb_' || :n::text and (processing_status in ('failed', 'pending') or (processing_status = 'processing' and locked_until < now())) for update skip locked;
select processing_status from public.stripe_webhook_events where stripe_event_id = 'evt_pgb_' || :n::text;
savepoint handler;
select public.claim_object_version('prod_pgb_' || :p::text, 'product', clock_timestamp(), 0, 'evt_pgb_' || :n::text, false);
insert into public.products (id, active, name, description, image, metadata) select 'prod_pgb_' || :p::text, true, 'Product', 'bench', null, '{"tier":  "basic"}'::jsonb where exists (select 1 from public.stripe_object_versions v where v.object_id = 'prod_pgb_' || :p::text and v.stripe_event_id = 'evt_pgb_' || :n::text) on conflict (id) do update set active = excluded.active, name = excluded.name, description = excluded.description, image = excluded.image, metadata = excluded.metadata, updated_at = now();
insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at, request_id, event_raw_body, processing_status, processed_at, user_id, old_tier, new_tier, processing_note, error_message, next_attempt_at, retry_count) values ('evt_pgb_' || :n::text, 'product.updated', replace('{"api_version": "2025-03-31.basil","created": 1795372556,"data": {"object": {"active": true,"description": "bench","id": "prod_pgb_P","images": [],"livemode": false,"metadata": {"tier": "basic"},"name": "Product P","object": "product"}},"id": "evt_pgb_N","livemode": false,"object": "event","pending_webhooks": 1,"request": {"id": null,"idempotency_key": null},"type": "product.updated"}', 'N', :n::text)::jsonb, false, '2025-03-31.basil', now(), 'b1f0c6de-5c55-4d0e-8c6a-1b1e1d1e1f10', null, 'processed', now(), null, null, null, null, null, null, 0) on conflict (stripe_event_id) do nothing returning id;
commit;
