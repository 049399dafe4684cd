-- Retention: deletes stripe_webhook_events older than 7 years (the legal retention period of
-- payment records; the table comment says the same). NEVER run automatically.
--
-- As shipped it only REPORTS: it deletes inside a transaction, shows how many rows and which
-- range would go, and ends with ROLLBACK. To purge, copy the file, change the last line to
-- COMMIT deliberately, and run the copy:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/ops/retention_purge.sql
--
-- Only rows whose effects are applied or were never needed go (processed, ignored).
-- dead rows are never purged: they are the only record of events whose effects never
-- happened (replay them or resolve them first); failed/pending/processing rows neither.
\set ON_ERROR_STOP on

begin;

\echo '== what the 7-year retention would delete =='
select count(*)                as rows_to_delete,
       min(created_at)         as oldest,
       max(created_at)         as newest,
       now() - interval '7 years' as cutoff
from public.stripe_webhook_events
where created_at < now() - interval '7 years'
  and processing_status in ('processed', 'ignored');

with purged as (
  delete from public.stripe_webhook_events
  where created_at < now() - interval '7 years'
    and processing_status in ('processed', 'ignored')
  returning 1)
select count(*) as deleted_in_this_transaction from purged;

\echo 'ROLLBACK: nothing was deleted. Change the last line to COMMIT to purge for real.'
rollback;
