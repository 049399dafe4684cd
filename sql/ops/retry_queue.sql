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
select count(*) filter (where processing_status = 'failed' and next_attempt_at <= now()) as due_now,
       count(*) filter (where processing_status = 'failed' and next_attempt_at > now())  as later,
       count(*) filter (where processing_status = 'pending')                             as pending,
       count(*) filter (where processing_status = 'processing' and locked_until >= now()) as held,
       count(*) filter (where processing_status = 'processing' and locked_until < now())  as expired_leases,
       min(next_attempt_at) filter (where processing_status = 'failed')                  as next_retry,
       now() - min(created_at) filter (where processing_status in ('pending', 'processing')) as oldest_waiting
from public.stripe_webhook_events
where processing_status in ('failed', 'pending', 'processing');

\echo '== queue (due first) =='
select stripe_event_id,
       event_type,
       processing_status                                   as status,
       retry_count                                         as attempts,
       next_attempt_at,
       case when processing_status = 'failed' and next_attempt_at <= now() then 'due now'
            when processing_status = 'failed' then 'in ' || date_trunc('second', next_attempt_at - now())::text
            when processing_status = 'processing' and locked_until < now() then 'lease expired'
            when processing_status = 'processing' then 'held by ' || coalesce(locked_by, '?')
            else 'pending' end                             as state,
       created_at                                          as received_at,
       left(error_message, 120)                            as error
from public.stripe_webhook_events
where processing_status in ('failed', 'pending', 'processing')
order by coalesce(next_attempt_at, created_at), created_at
limit :limit;
