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
