-- Customers: who a Stripe customer is.
--
-- stripe_customers is the directory of every Stripe customer the worker has heard of, mapped
-- or not: customer.* events record the email and name Stripe holds, so a buyer can be
-- provisioned from it when their payment succeeds (no Stripe API key needed), and an address
-- changed in Stripe still finds the same person. public.customers keeps one Stripe customer per
-- user (the first), as the frontend expects; a user may have several (Checkout creates a new
-- Stripe customer for each guest purchase), all of them in the directory.

create table if not exists public.migration_dedup_log (
  id bigserial primary key,
  table_name text not null,
  kept_id text,                  -- id of the row that won
  action text not null,          -- 'deleted' | 'nullified' | 'merged' (keeper before the merge)
  removed jsonb not null,        -- the full row as it was
  created_at timestamptz not null default now()
);
comment on table public.migration_dedup_log is
  'Rows that duplicate resolution before a unique constraint deleted or changed, as they were.';
alter table public.migration_dedup_log enable row level security;  -- holds billing rows: no API access
revoke all on table public.migration_dedup_log from public, anon, authenticated;
revoke all on sequence public.migration_dedup_log_id_seq from public, anon, authenticated;
grant all on table public.migration_dedup_log to service_role;
grant all on sequence public.migration_dedup_log_id_seq to service_role;

create table if not exists public.stripe_customers (
  stripe_customer_id text primary key,
  user_id uuid references auth.users (id) on delete set null,
  email text,
  name text,
  livemode boolean,
  deleted_at timestamptz,          -- customer.deleted: the mapping stays for attribution
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists stripe_customers_user_id_idx on public.stripe_customers (user_id);
create index if not exists stripe_customers_email_lower_idx
  on public.stripe_customers (lower(email)) where user_id is not null;
alter table public.stripe_customers enable row level security;
revoke all on table public.stripe_customers from public, anon, authenticated;
grant all on table public.stripe_customers to service_role;

-- ---------------------------------------------------------------------------------------
-- customers.stripe_customer_id becomes unique. Before that, duplicates left by the old handler
-- (it deduplicated in memory only) are resolved; every changed row is logged first.
-- Several users mapped to one Stripe customer: the OLDEST user (auth.users.created_at, then id)
-- keeps the mapping (the first buyer); the others keep their row (payment_intents etc. point at
-- it) with stripe_customer_id set to NULL.
with ranked as (
  select c.id,
         first_value(c.id) over w as keeper_id,
         row_number() over w as rn
    from public.customers c
    left join auth.users a on a.id = c.id
   where c.stripe_customer_id is not null
  window w as (partition by c.stripe_customer_id order by a.created_at asc nulls last, c.id asc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'customers', r.keeper_id::text, 'nullified', to_jsonb(c)
    from ranked r join public.customers c on c.id = r.id
   where r.rn > 1
)
update public.customers c set stripe_customer_id = null
  from ranked r where r.id = c.id and r.rn > 1;

-- Existing mappings (after resolution) are directory entries too.
insert into public.stripe_customers (stripe_customer_id, user_id)
select c.stripe_customer_id, c.id
from public.customers c
where c.stripe_customer_id is not null
on conflict (stripe_customer_id) do nothing;


-- ---------------------------------------------------------------------------------------
-- Finding a person by email.

-- The auth user an address belongs to: the (non-SSO, not deleted) user who signs in with it,
-- case-insensitively; else the user whose Stripe customer reported this address (a buyer who
-- changed their email in Stripe keeps one auth user). The instance_id condition lets the first
-- look-up use auth.users' (instance_id, lower(email)) index.
create or replace function public.find_auth_user(p_email text)
returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(
    (select u.id
       from auth.users u
      where lower(u.email::text) = lower(btrim(p_email))
        and (u.instance_id = '00000000-0000-0000-0000-000000000000' or u.instance_id is null)
        and u.is_sso_user = false
        and u.deleted_at is null
      order by u.created_at nulls last, u.id
      limit 1),
    (select sc.user_id
       from public.stripe_customers sc
       join auth.users u on u.id = sc.user_id and u.deleted_at is null
      where lower(sc.email) = lower(btrim(p_email))
        and sc.user_id is not null
      order by sc.updated_at desc, sc.stripe_customer_id
      limit 1))
$$;

-- Finds the user for an email (find_auth_user) or creates one GoTrue can sign in by magic link
-- or password reset: no password, '' tokens, an email identity, is_super_admin false (older
-- GoTrue versions scan it into a plain bool). Whether the address counts as confirmed is the
-- caller's choice (p_email_confirmed): Stripe never verified it, so by default it is not.
-- Serialized per email, so concurrent calls create one user.
create or replace function public.find_or_create_auth_user(
  p_email text,
  p_full_name text default null,
  p_email_confirmed boolean default false
)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_name text := nullif(btrim(p_full_name), '');
  v_id uuid;
begin
  if v_email is null or v_email = '' or position('@' in v_email) < 2 then
    raise exception 'find_or_create_auth_user: invalid email' using errcode = '22023';
  end if;

  perform pg_advisory_xact_lock(hashtext('auth-user:' || v_email));

  v_id := public.find_auth_user(v_email);

  if v_id is null then
    v_id := gen_random_uuid();
    insert into auth.users (
      instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
      confirmation_token, recovery_token, email_change_token_new, email_change,
      raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at)
    values (
      '00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', v_email, '',
      case when p_email_confirmed then now() end,
      '', '', '', '',
      '{"provider": "email", "providers": ["email"]}'::jsonb,
      case when v_name is null then '{}'::jsonb else jsonb_build_object('full_name', v_name) end,
      false, now(), now());

    insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (
      v_id::text, v_id,
      jsonb_build_object('sub', v_id::text, 'email', v_email,
                         'email_verified', coalesce(p_email_confirmed, false), 'phone_verified', false),
      'email', null, now(), now());
    -- on_auth_user_created (handle_new_user) has created public.users.
  else
    -- Existing user: make sure the profile row exists and fill a missing name.
    insert into public.users as pu (id, email, full_name)
    select u.id, u.email, v_name from auth.users u where u.id = v_id
    on conflict (id) do update
      set full_name = coalesce(pu.full_name, excluded.full_name),
          email = coalesce(pu.email, excluded.email)
      where (pu.full_name is null and excluded.full_name is not null)
         or (pu.email is null and excluded.email is not null);
  end if;

  return v_id;
end
$$;

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.customers'::regclass
                 and conname = 'customers_stripe_customer_id_key') then
    alter table public.customers add constraint customers_stripe_customer_id_key unique (stripe_customer_id);
  end if;
end
$$;

alter table public.customers enable row level security;
revoke all on table public.customers from public, anon, authenticated;
grant all on table public.customers to service_role;
grant select on table public.customers to authenticated;
drop policy if exists customers_select_own on public.customers;
create policy customers_select_own on public.customers
  for select to authenticated
  using (id = (select auth.uid()));

revoke all on function public.find_auth_user(text) from public, anon, authenticated;
revoke all on function public.find_or_create_auth_user(text, text, boolean) from public, anon, authenticated;
grant execute on function public.find_auth_user(text) to service_role;
grant execute on function public.find_or_create_auth_user(text, text, boolean) to service_role;
