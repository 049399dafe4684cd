-- Billing history (seed 000's generic public.events). The worker writes one row per billing
-- fact with source = 'stripe', external_id = the Stripe event id; the unique constraint makes
-- `insert ... on conflict (source, external_id) do nothing` idempotent.
create table if not exists public.events (
  id uuid not null default gen_random_uuid(),
  category text null,
  event_type text null,
  source text null,
  user_id uuid null,
  entitlement text null,
  amount numeric null,
  currency text null,
  occurred_at timestamp with time zone not null default now(),
  external_id text null,
  metadata jsonb null,
  constraint events_pkey primary key (id),
  constraint events_user_id_fkey foreign key (user_id) references auth.users (id) on delete set null,
  constraint events_source_external_id_key unique (source, external_id)
);

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.events'::regclass
                 and conname = 'events_user_id_fkey') then
    alter table public.events add constraint events_user_id_fkey
      foreign key (user_id) references auth.users (id) on delete set null;
  end if;
  if not exists (select 1 from pg_constraint where conrelid = 'public.events'::regclass
                 and conname = 'events_source_external_id_key') then
    alter table public.events add constraint events_source_external_id_key unique (source, external_id);
  end if;
end
$$;

create index if not exists events_category_occurred_at_idx on public.events (category, occurred_at desc);
create index if not exists events_user_id_occurred_at_idx on public.events (user_id, occurred_at desc);

-- Default grants expose it to the API roles; no policy yet = no access for anon/authenticated
-- until the RLS work adds one (e.g. users read their own rows).
alter table public.events enable row level security;
