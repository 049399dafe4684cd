-- pgbench ceiling, duplicates mix: what the worker sends for a redelivery of an event it
-- received and processed before: one probe of the id's status, outside any transaction. The
-- stored ids are numbered by bench.sh in bench_events (-D ndup=<their count>) and read first,
-- which the worker does not need. events per run: 1
\set i random(0, :ndup - 1)
select stripe_event_id as eid from bench_events where n = :i \gset
select processing_status from public.stripe_webhook_events where stripe_event_id = :eid;
