-- Every stored Stripe event about one Stripe customer: events whose object is the customer
-- (customer.*) or names it (`customer` of a session, intent, charge, subscription, invoice …).
-- Read-only.
--
-- Usage:
--   psql "$DATABASE_URL" -v customer=cus_123 -f sql/ops/events_for_customer.sql
--
-- The scan reads every event's JSON (no index on it): on a large table, add a time bound, e.g.
-- `and created_at > now() - interval '90 days'`.
\if :{?customer}
\else
  \echo 'usage: psql "$DATABASE_URL" -v customer=cus_... -f sql/ops/events_for_customer.sql'
  \quit
\endif

select stripe_event_id,
       event_type,
       processing_status                               as status,
       event_created_at,
       created_at                                      as received_at,
       retry_count                                     as attempts,
       user_id,
       event_data->'data'->'object'->>'id'             as object_id,
       left(coalesce(error_message, processing_note), 120) as error_or_note
from public.stripe_webhook_events
where event_data->'data'->'object'->>'customer' = :'customer'
   or event_data->'data'->'object'->>'id' = :'customer'
   -- an expanded customer object
   or event_data->'data'->'object'->'customer'->>'id' = :'customer'
order by coalesce(event_created_at, created_at), created_at;
