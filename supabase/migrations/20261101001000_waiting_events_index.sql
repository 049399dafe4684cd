-- Linking a Stripe customer wakes the failed events that wait for it (typically the
-- subscription events Stripe sends before checkout.session.completed). Without this index the
-- wake-up reads the JSON of every failed row on each checkout (measured ~2 ms per call with a
-- retry backlog; see BENCHMARKS.md). Failed rows are few, so the index stays small.
create index if not exists stripe_webhook_events_waiting_customer_idx
  on public.stripe_webhook_events ((event_data -> 'data' -> 'object' ->> 'customer'), next_attempt_at)
  where processing_status = 'failed';
