-- The event log: one row per Stripe event id (dedup, audit, retries), and the ordering key of
-- every Stripe object the worker keeps (an older snapshot never overwrites a newer one).
--
-- stripe_webhook_events keeps the columns of the table as first designed (id, stripe_event_id,
-- event_type, user_id, old_tier, new_tier, processed_at, event_data, processing_status,
-- error_message, retry_count, created_at) and adds what the worker needs: leases, retries,
-- ordering and correlation.
create table if not exists public.stripe_webhook_events (
  id uuid primary key default gen_random_uuid(),
  stripe_event_id text unique not null,
  event_type text not null,
  user_id uuid references auth.users (id) on delete set null,
  old_tier text,
  new_tier text,
  processed_at timestamptz,
  event_data jsonb not null,
  processing_status text not null default 'pending',
  error_message text,
  retry_count integer not null default 0,
  created_at timestamptz not null default now()
);

-- A table created earlier from the first design (uuid_generate_v4, nullable status): align it.
alter table public.stripe_webhook_events alter column id set default gen_random_uuid();  -- drop uuid-ossp dependency
update public.stripe_webhook_events set processing_status = 'pending' where processing_status is null;
update public.stripe_webhook_events set retry_count = 0 where retry_count is null;
update public.stripe_webhook_events set created_at = coalesce(processed_at, now()) where created_at is null;
alter table public.stripe_webhook_events
  alter column processing_status set default 'pending',
  alter column processing_status set not null,
  alter column retry_count set default 0,
  alter column retry_count set not null,
  alter column created_at set default now(),
  alter column created_at set not null;

alter table public.stripe_webhook_events
  add column if not exists livemode boolean not null default false,
  add column if not exists api_version text,
  add column if not exists event_created_at timestamptz,      -- the Stripe event's `created`
  add column if not exists next_attempt_at timestamptz,       -- retry schedule for 'failed'
  add column if not exists locked_until timestamptz,          -- processing lease
  add column if not exists locked_by text,                    -- worker instance holding the lease
  add column if not exists request_id text,                   -- delivery correlation id
  add column if not exists processing_note text,              -- e.g. 'stale: newer state already applied'
  add column if not exists updated_at timestamptz not null default now();

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.stripe_webhook_events'::regclass
                 and conname = 'stripe_webhook_events_stripe_event_id_key') then
    alter table public.stripe_webhook_events
      add constraint stripe_webhook_events_stripe_event_id_key unique (stripe_event_id);
  end if;
  if not exists (select 1 from pg_constraint where conrelid = 'public.stripe_webhook_events'::regclass
                 and conname = 'stripe_webhook_events_user_id_fkey') then
    alter table public.stripe_webhook_events
      add constraint stripe_webhook_events_user_id_fkey
      foreign key (user_id) references auth.users (id) on delete set null;
  end if;
  if not exists (select 1 from pg_constraint where conrelid = 'public.stripe_webhook_events'::regclass
                 and conname = 'stripe_webhook_events_processing_status_check') then
    -- Rows written before this migration with another status are kept untouched: the check is
    -- then added NOT VALID (enforced for new writes only) and the operator is told.
    if exists (select 1 from public.stripe_webhook_events
               where processing_status not in ('pending', 'processing', 'processed', 'ignored', 'failed', 'dead')) then
      raise notice 'stripe_webhook_events holds unknown processing_status values; check added NOT VALID';
      alter table public.stripe_webhook_events
        add constraint stripe_webhook_events_processing_status_check
        check (processing_status in ('pending', 'processing', 'processed', 'ignored', 'failed', 'dead')) not valid;
    else
      alter table public.stripe_webhook_events
        add constraint stripe_webhook_events_processing_status_check
        check (processing_status in ('pending', 'processing', 'processed', 'ignored', 'failed', 'dead'));
    end if;
  end if;
end
$$;

create index if not exists idx_stripe_webhooks_event_type on public.stripe_webhook_events (event_type);
create index if not exists idx_stripe_webhooks_user on public.stripe_webhook_events (user_id);
create index if not exists idx_stripe_webhooks_status on public.stripe_webhook_events (processing_status);
-- retry queue and lease expiry scans touch only the few rows in those states
create index if not exists idx_stripe_webhooks_retry on public.stripe_webhook_events (next_attempt_at)
  where processing_status = 'failed';
create index if not exists idx_stripe_webhooks_lease on public.stripe_webhook_events (locked_until)
  where processing_status = 'processing';
create index if not exists idx_stripe_webhooks_event_created on public.stripe_webhook_events (event_created_at);
create index if not exists idx_stripe_webhooks_type_created on public.stripe_webhook_events (event_type, created_at desc);

-- Generic BEFORE UPDATE helper, reusable by any table with an updated_at column.
create or replace function public.set_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

do $$
begin
  if not exists (select 1 from pg_trigger where tgrelid = 'public.stripe_webhook_events'::regclass
                 and tgname = 'stripe_webhook_events_set_updated_at') then
    create trigger stripe_webhook_events_set_updated_at
      before update on public.stripe_webhook_events
      for each row execute function public.set_updated_at();
  end if;
end
$$;

-- Event payloads hold customer PII and the API roles get table grants by default (Supabase):
-- RLS on with no policy = no access for anon/authenticated; the worker (table owner /
-- service_role) is unaffected.
alter table public.stripe_webhook_events enable row level security;

comment on table public.stripe_webhook_events is
  'One row per Stripe event (stripe_event_id unique), written by stripe-worker. Retention: 7 years '
  '(legal requirement). Never purged automatically; only an operator query in sql/ops deletes old rows.';

-- The exact signed body of an event whose event_data had to be changed to be storable as jsonb
-- (a \u0000 escape or an unpaired UTF-16 surrogate escape, replaced with \ufffd). NULL for every
-- other event: event_data is then the body, key order aside.
alter table public.stripe_webhook_events add column if not exists event_raw_body bytea;
comment on column public.stripe_webhook_events.event_raw_body is
  'The body exactly as Stripe signed it, kept only when event_data differs from it (escapes jsonb cannot hold were replaced with U+FFFD); NULL otherwise.';

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
revoke all on function public.stripe_webhook_event_is_due(public.stripe_webhook_events)
  from public, anon, authenticated;
grant execute on function public.stripe_webhook_event_is_due(public.stripe_webhook_events) to service_role;

-- ---------------------------------------------------------------------------------------
-- Per-object ordering: Stripe delivers events at least once and in no particular order, so
-- every handler that writes a snapshot of a Stripe object first asks whether its event is newer
-- than the last one applied to that object. Internal to the worker.

create table if not exists public.stripe_object_versions (
  object_id text primary key,
  object_type text not null,
  -- the ordering key of the last applied state: the event's created time, then a tie-break the
  -- handler derives from the snapshot (status progression, period end) for same-second events
  event_created_at timestamptz not null,
  tie_break bigint not null default 0,
  stripe_event_id text not null,
  -- deletion wins: once deleted, later updates of the object are stale
  deleted boolean not null default false,
  updated_at timestamptz not null default now()
);

comment on table public.stripe_object_versions is
  'Ordering key of the last applied event per Stripe object (stripe-worker internal).';

-- Returns true when the event may be applied, and records it as the object's latest state.
-- A replay of the event already recorded is allowed (handlers are idempotent); an older one
-- is not; a deletion applies even when late, and nothing applies after it.
create or replace function public.claim_object_version(
  p_object_id text,
  p_object_type text,
  p_event_created_at timestamptz,
  p_tie_break bigint,
  p_stripe_event_id text,
  p_deleted boolean
) returns boolean
language sql
set search_path = ''
as $$
  with claimed as (
    insert into public.stripe_object_versions as v
      (object_id, object_type, event_created_at, tie_break, stripe_event_id, deleted)
    values
      (p_object_id, p_object_type, p_event_created_at, p_tie_break, p_stripe_event_id, p_deleted)
    on conflict (object_id) do update
      set event_created_at = excluded.event_created_at,
          tie_break = excluded.tie_break,
          stripe_event_id = excluded.stripe_event_id,
          deleted = v.deleted or excluded.deleted,
          updated_at = now()
      where (excluded.deleted and not v.deleted)
         or (excluded.stripe_event_id = v.stripe_event_id and (excluded.deleted or not v.deleted))
         or (not v.deleted
             and (excluded.event_created_at, excluded.tie_break, excluded.stripe_event_id)
               > (v.event_created_at, v.tie_break, v.stripe_event_id))
    returning true
  )
  select coalesce((select true from claimed), false)
$$;

revoke all on function public.claim_object_version(text, text, timestamptz, bigint, text, boolean)
  from public, anon, authenticated;

alter table public.stripe_object_versions enable row level security;
revoke all on table public.stripe_object_versions from public, anon, authenticated;
grant all on table public.stripe_object_versions to service_role;
revoke all on table public.stripe_webhook_events from public, anon, authenticated;
grant all on table public.stripe_webhook_events to service_role;
revoke all on function public.set_updated_at() from public, anon, authenticated;

-- ---------------------------------------------------------------------------------------
-- Catch-up: the worker (`serve`, with STRIPE_SECRET_KEY) lists Stripe's events on its own and
-- ingests those never stored. This table is its durable progress, one row per stream (the
-- mode the endpoint processes: 'live', 'test', or 'any' when it processes both):
--
--   high_water_mark   every event created up to here was listed and ingested; the next run
--                     lists from here minus an overlap (NULL until the first window completes)
--   watching_since    where the first run started (now minus RECONCILE_START_LOOKBACK when the
--                     row was created); nothing before it is listed
--   locked_by/_until  the replica running the catch-up now: a lease, renewed as pages complete
--                     and taken over by another replica once it expires (a crashed worker)
--   run_*             the current or last run; *_total since the row was created
--   recovered         events the catch-up stored that were created after the row was: each is a
--                     delivery Stripe failed to make or the worker failed to take
--
-- Internal: RLS on, no policy, nothing granted to anon or authenticated.

create table if not exists public.stripe_catch_up (
  stream text primary key check (stream in ('live', 'test', 'any')),
  high_water_mark timestamptz,
  watching_since timestamptz not null,
  locked_by text,
  locked_until timestamptz,
  run_started_at timestamptz,
  run_finished_at timestamptz,
  run_status text check (run_status in ('running', 'ok', 'failed', 'interrupted')),
  run_from timestamptz,
  run_until timestamptz,
  run_listed bigint not null default 0,
  run_ingested bigint not null default 0,
  run_recovered bigint not null default 0,
  run_errors bigint not null default 0,
  run_rate_limited bigint not null default 0,
  last_error text,
  listed_total bigint not null default 0,
  ingested_total bigint not null default 0,
  recovered_total bigint not null default 0,
  errors_total bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.stripe_catch_up is
  'Progress of the catch-up that lists Stripe events and ingests missed ones (stripe-worker internal).';

alter table public.stripe_catch_up enable row level security;
revoke all on table public.stripe_catch_up from public, anon, authenticated;
grant all on table public.stripe_catch_up to service_role;

-- ---------------------------------------------------------------------------------------
-- Linking a Stripe customer wakes the failed events that wait for it (typically subscription
-- and invoice events Stripe sends before the payment that provisions the buyer). Without this
-- index the wake-up reads the JSON of every failed row (about 2 ms per call with a retry
-- backlog). Failed rows are few, so the index stays small.
create index if not exists stripe_webhook_events_waiting_customer_idx
  on public.stripe_webhook_events ((event_data -> 'data' -> 'object' ->> 'customer'), next_attempt_at)
  where processing_status = 'failed';
