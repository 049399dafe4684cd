-- pgbench ceiling, duplicates mix: what the worker sends for a redelivery of an event its own
-- run already processed (-D run=<its run id> -D ndup=<its events>): the look-up finds the id
-- finished, the retake finds nothing waiting. events per run: 1
\set i random(0, :ndup - 1)
start transaction;
select id, retry_count from public.stripe_webhook_events where stripe_event_id = 'evt_' || :run::text || '_cat_' || :i::text and (processing_status in ('failed', 'pending') or (processing_status = 'processing' and locked_until < now())) for update skip locked;
select processing_status from public.stripe_webhook_events where stripe_event_id = 'evt_' || :run::text || '_cat_' || :i::text;
savepoint handler;
commit;
