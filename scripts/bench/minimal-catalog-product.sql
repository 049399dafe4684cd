-- pgbench minimal transaction, catalog mix (product.updated): the event row with its final status
-- and the upsert of the object it carries, nothing else. events per run: 1
\set n random(1, 1000000000000000)
\set p random(1, 1000)
start transaction;
insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at, request_id, event_raw_body, processing_status, processed_at, user_id, old_tier, new_tier, processing_note, error_message, next_attempt_at, retry_count) values ('evt_pgb_' || :n::text, 'product.updated', replace('{"api_version": "2025-03-31.basil","created": 1795372556,"data": {"object": {"active": true,"description": "bench","id": "prod_pgb_P","images": [],"livemode": false,"metadata": {"tier": "basic"},"name": "Product P","object": "product"}},"id": "evt_pgb_N","livemode": false,"object": "event","pending_webhooks": 1,"request": {"id": null,"idempotency_key": null},"type": "product.updated"}', 'N', :n::text)::jsonb, false, '2025-03-31.basil', now(), 'b1f0c6de-5c55-4d0e-8c6a-1b1e1d1e1f10', null, 'processed', now(), null, null, null, null, null, null, 0) on conflict (stripe_event_id) do nothing returning id;
insert into public.products (id, active, name, description, image, metadata) values ('prod_pgb_' || :p::text, true, 'Product', 'bench', null, '{"tier":  "basic"}') on conflict (id) do update set active = excluded.active, name = excluded.name, description = excluded.description, image = excluded.image, metadata = excluded.metadata, updated_at = now();
commit;
