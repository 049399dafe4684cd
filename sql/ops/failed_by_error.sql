-- Failed and dead Stripe events grouped by error message: what is broken, how often, since when.
-- Read-only.
--
-- Usage:
--   psql "$DATABASE_URL" -f sql/ops/failed_by_error.sql
--   psql "$DATABASE_URL" -v since="'2026-01-31'" -f sql/ops/failed_by_error.sql   -- received since
--
-- Next steps: fix the cause, then `scripts/replay-failed-events.sh` (failed) or
-- `stripe-worker replay --status dead` (dead); `--type T` narrows to one event type.
\if :{?since}
\else
  \set since '''-infinity'''
\endif

select processing_status                                  as status,
       event_type,
       coalesce(error_message, '(no message)')            as error,
       count(*)                                           as events,
       min(created_at)                                    as oldest,
       max(created_at)                                    as newest,
       max(retry_count)                                   as max_attempts,
       min(next_attempt_at)                               as next_retry,
       (array_agg(stripe_event_id order by created_at))[1] as example_event
from public.stripe_webhook_events
where processing_status in ('failed', 'dead')
  and created_at >= (:since)::timestamptz
group by processing_status, event_type, error_message
order by processing_status, count(*) desc, min(created_at);
