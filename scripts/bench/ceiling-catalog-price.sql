-- pgbench ceiling, catalog mix: what the worker sends for one price.updated. events per run: 1
\set n random(1, 1000000000)
\set p random(1, 1000)
select processing_status from public.stripe_webhook_events where stripe_event_id = 'evt_pgb_' || :n::text;
start transaction;
insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at, request_id, processing_status, locked_by, locked_until) values ('evt_pgb_' || :n::text, 'price.updated', replace('{"api_version": "2025-03-31.basil","created": 1795372556,"data": {"object": {"active": true,"currency": "usd","id": "price_pgb_P","livemode": false,"lookup_key": null,"metadata": {},"nickname": "Monthly","object": "price","product": "prod_pgb_P","recurring": {"interval": "month","interval_count": 1},"type": "recurring","unit_amount": 900}},"id": "evt_pgb_N","livemode": false,"object": "event","pending_webhooks": 1,"request": {"id": null,"idempotency_key": null},"type": "price.updated"}', 'N', :n::text)::jsonb, false, '2025-03-31.basil', now(), 'b1f0c6de-5c55-4d0e-8c6a-1b1e1d1e1f10', 'processing', 'pgbench', now() + make_interval(secs => 300)) on conflict (stripe_event_id) do nothing returning id \gset ev_
savepoint handler;
select public.claim_object_version('price_pgb_' || :p::text, 'price', clock_timestamp(), 0, 'evt_pgb_' || :n::text, false);
insert into public.products (id, active) values ('prod_pgb_' || :p::text, false) on conflict (id) do nothing;
insert into public.prices (id, product_id, active, description, unit_amount, currency, type, interval, interval_count, trial_period_days, lookup_key, metadata) values ('price_pgb_' || :p::text, 'prod_pgb_' || :p::text, true, 'Monthly', 900, 'usd', 'recurring', 'month', 1, null, null, '{}') on conflict (id) do update set product_id = excluded.product_id, active = excluded.active, description = excluded.description, unit_amount = excluded.unit_amount, currency = excluded.currency, type = excluded.type, interval = excluded.interval, interval_count = excluded.interval_count, trial_period_days = excluded.trial_period_days, lookup_key = excluded.lookup_key, metadata = excluded.metadata, updated_at = now();
release handler;
update public.stripe_webhook_events set processing_status = 'processed', processed_at = now(), error_message = null, next_attempt_at = null, locked_by = null, locked_until = null, user_id = coalesce(null, user_id), old_tier = coalesce(null, old_tier), new_tier = coalesce(null, new_tier), processing_note = null where id = :ev_id;
commit;
