-- pgbench ceiling, duplicates mix: what the worker sends for a redelivery of an event its own
-- run already processed (-D run=<its run id> -D ndup=<its events>): the claim finds the id
-- taken, the retake finds nothing waiting. events per run: 1
\set i random(0, :ndup - 1)
start transaction;
insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at, request_id, processing_status, locked_by, locked_until) values ('evt_' || :run::text || '_cat_' || :i::text, 'product.updated', '{"id": "dup"}'::text::jsonb, false, '2025-03-31.basil', now(), 'b1f0c6de-5c55-4d0e-8c6a-1b1e1d1e1f10', 'processing', 'pgbench', now() + make_interval(secs => 300)) on conflict (stripe_event_id) do nothing returning id;
select id, retry_count from public.stripe_webhook_events where stripe_event_id = 'evt_' || :run::text || '_cat_' || :i::text and (processing_status in ('failed', 'pending') or (processing_status = 'processing' and locked_until < now())) for update skip locked;
savepoint handler;
commit;
