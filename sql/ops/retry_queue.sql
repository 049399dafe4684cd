-- The retry queue: failed events waiting for the retrier (due now first), pending ones, and
-- rows held by a worker (a lease that has run out belongs to a crashed worker and is taken over
-- by the next retrier pass). Read-only.
--
-- Usage:
--   psql "$DATABASE_URL" -f sql/ops/retry_queue.sql
--   psql "$DATABASE_URL" -v limit=200 -f sql/ops/retry_queue.sql      -- more rows (default 50)
\if :{?limit}
\else
  \set limit 50
\endif

\echo '== summary =='
-- "Due" (the retrier takes it on its next pass) is public.stripe_webhook_event_is_due, the
-- definition the worker, /metrics and `stripe-worker status` use: failed and past its next
-- attempt, pending, or processing with an expired lease.
select count(*) filter (where public.stripe_webhook_event_is_due(e))                    as due_now,
       count(*) filter (where processing_status = 'failed'
                          and not public.stripe_webhook_event_is_due(e))                as later,
       count(*) filter (where processing_status = 'pending')                             as pending,
       count(*) filter (where processing_status = 'processing' and locked_until >= now()) as held,
       count(*) filter (where processing_status = 'processing' and locked_until < now())  as expired_leases,
       min(next_attempt_at) filter (where processing_status = 'failed')                  as next_retry,
       now() - min(created_at) filter (where processing_status in ('pending', 'processing')) as oldest_waiting
from public.stripe_webhook_events e
where processing_status in ('failed', 'pending', 'processing');

\echo '== queue (due first) =='
select stripe_event_id,
       event_type,
       processing_status                                   as status,
       retry_count                                         as attempts,
       next_attempt_at,
       case when public.stripe_webhook_event_is_due(e) and processing_status = 'processing'
                 then 'due: lease expired'
            when public.stripe_webhook_event_is_due(e) then 'due now'
            when processing_status = 'failed' then 'in ' || date_trunc('second', next_attempt_at - now())::text
            when processing_status = 'processing' then 'held by ' || coalesce(locked_by, '?')
            else 'pending' end                             as state,
       created_at                                          as received_at,
       left(error_message, 120)                            as error
from public.stripe_webhook_events e
where processing_status in ('failed', 'pending', 'processing')
order by not public.stripe_webhook_event_is_due(e), coalesce(next_attempt_at, created_at), created_at
limit :limit;
