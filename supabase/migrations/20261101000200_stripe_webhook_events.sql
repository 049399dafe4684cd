-- Durable log of every Stripe event (seed 001's stripe_webhook_events, extended for the worker:
-- leases, retries, ordering). One row per Stripe event id.
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

-- If the table was created earlier from seed 001 verbatim: align it instead of failing.
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
  '(legal requirement, seed 001). Never purged automatically; only an operator query in sql/ops deletes old rows.';
