-- The event log's indexes, each for a query that runs, and small where the query wants few
-- rows. Every delivery inserts into each index of stripe_webhook_events, so an index nobody
-- reads costs on every event.
--
-- * The retrier, `status`, `replay` and the ops queries look for the rare actionable states
--   (failed, pending, processing, dead), never for the processed and ignored bulk: one partial
--   index on those states, ordered by arrival, replaces the index on every row's status.
-- * The index on event_type alone is the leading column of (event_type, created_at).
-- * Half of the events concern no user: the user index holds only those that do (a look-up by
--   user is an equality, which implies the index's condition).
-- * Billing rows waiting for their owner are found by the Stripe customer they name.

create index if not exists stripe_webhook_events_actionable_idx
  on public.stripe_webhook_events (processing_status, created_at)
  where processing_status in ('failed', 'pending', 'processing', 'dead');
drop index if exists public.idx_stripe_webhooks_status;

drop index if exists public.idx_stripe_webhooks_event_type;

create index if not exists stripe_webhook_events_user_idx
  on public.stripe_webhook_events (user_id)
  where user_id is not null;
drop index if exists public.idx_stripe_webhooks_user;

create index if not exists events_unowned_customer_idx
  on public.events ((metadata ->> 'customer'))
  where source = 'stripe' and user_id is null;
