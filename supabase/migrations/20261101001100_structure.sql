-- Definitions the worker's Rust code and the operator tools share, so each exists once.
-- Idempotent (create or replace); internal to the worker: no grants to anon or authenticated.

-- "Due": the retrier takes the row on its next pass. A failed row past its next_attempt_at, a
-- pending row, or a row in processing whose lease ran out (its worker crashed). The retrier's
-- claim, /metrics (stripe_worker_retry_queue_due), `stripe-worker status` and
-- sql/ops/retry_queue.sql all count with this. A plain SQL function: the planner inlines it, so
-- the partial indexes on next_attempt_at and locked_until still serve the claim.
create or replace function public.stripe_webhook_event_is_due(e public.stripe_webhook_events)
returns boolean
language sql
stable
as $$
  select (e.processing_status = 'failed' and e.next_attempt_at <= pg_catalog.now())
      or e.processing_status = 'pending'
      or (e.processing_status = 'processing' and e.locked_until < pg_catalog.now())
$$;

comment on function public.stripe_webhook_event_is_due(public.stripe_webhook_events) is
  'True when the retrier takes the event on its next pass: failed and past next_attempt_at, '
  'pending, or processing with an expired lease.';

-- The auth user an email address belongs to: case-insensitive, as GoTrue compares, among the
-- instance's users that can sign in with it (not SSO, not deleted), the oldest first. The
-- instance_id condition lets it use auth.users' (instance_id, lower(email)) index. The worker
-- looks up with it before asking the Supabase Auth admin API to create a user.
create or replace function public.find_auth_user(p_email text)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select u.id
    from auth.users u
   where lower(u.email::text) = lower(btrim(p_email))
     and (u.instance_id = '00000000-0000-0000-0000-000000000000' or u.instance_id is null)
     and u.is_sso_user = false
     and u.deleted_at is null
   order by u.created_at nulls last, u.id
   limit 1
$$;

comment on function public.find_auth_user(text) is
  'The id of the auth user with this email (case-insensitive; not SSO, not deleted; oldest first), or null.';

revoke all on function public.stripe_webhook_event_is_due(public.stripe_webhook_events)
  from public, anon, authenticated;
revoke all on function public.find_auth_user(text) from public, anon, authenticated;
grant execute on function public.stripe_webhook_event_is_due(public.stripe_webhook_events) to service_role;
grant execute on function public.find_auth_user(text) to service_role;
