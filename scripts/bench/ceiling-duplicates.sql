-- pgbench ceiling, duplicates mix: the worker's fast path for an event already processed by
-- its own run (-D run=<its run id> -D ndup=<its events>). events per run: 1
\set i random(0, :ndup - 1)
select processing_status from public.stripe_webhook_events where stripe_event_id = 'evt_' || :run::text || '_cat_' || :i::text;
