-- Baseline: the production schema as it exists before stripe-worker.
-- Production already has these objects WITH DATA, so every statement must be a no-op there
-- (IF NOT EXISTS / guarded DO blocks) and must also build them from scratch on an empty
-- database (after sql/platform). Never drops or rewrites rows.

-- ---------------------------------------------------------------------------------------
-- channels (referenced by vouchers.channel_id's default; production never spelled it out)
create table if not exists public.channels (
  id uuid not null default gen_random_uuid(),
  name text not null,
  created_at timestamp with time zone not null default now(),
  constraint channels_pkey primary key (id)
);
insert into public.channels (id, name)
values ('c4c8ca3f-3083-4484-a69c-cd64624ab765', 'default')
on conflict (id) do nothing;

-- ---------------------------------------------------------------------------------------
-- Stripe catalog. ids are Stripe ids. A price can arrive before its product: the worker
-- inserts a placeholder product (active = false) first, so the FK stays a plain FK.
create table if not exists public.products (
  id text not null,
  active boolean not null default true,
  name text null,
  description text null,
  image text null,
  metadata jsonb null,
  created_at timestamp with time zone not null default now(),
  updated_at timestamp with time zone not null default now(),
  constraint products_pkey primary key (id)
);
alter table public.products
  add column if not exists active boolean not null default true,
  add column if not exists name text,
  add column if not exists description text,
  add column if not exists image text,
  add column if not exists metadata jsonb,
  add column if not exists created_at timestamp with time zone not null default now(),
  add column if not exists updated_at timestamp with time zone not null default now();

create table if not exists public.prices (
  id text not null,
  product_id text null,
  active boolean not null default true,
  description text null,
  unit_amount bigint null,
  currency text null,
  type text null,
  interval text null,
  interval_count integer null,
  trial_period_days integer null,
  lookup_key text null,
  metadata jsonb null,
  created_at timestamp with time zone not null default now(),
  updated_at timestamp with time zone not null default now(),
  constraint prices_pkey primary key (id),
  constraint prices_product_id_fkey foreign key (product_id) references public.products (id),
  constraint prices_currency_check check (char_length(currency) = 3),
  constraint prices_type_check check (type in ('one_time', 'recurring')),
  constraint prices_interval_check check (interval in ('day', 'week', 'month', 'year'))
);
alter table public.prices
  add column if not exists product_id text,
  add column if not exists active boolean not null default true,
  add column if not exists description text,
  add column if not exists unit_amount bigint,
  add column if not exists currency text,
  add column if not exists type text,
  add column if not exists interval text,
  add column if not exists interval_count integer,
  add column if not exists trial_period_days integer,
  add column if not exists lookup_key text,
  add column if not exists metadata jsonb,
  add column if not exists created_at timestamp with time zone not null default now(),
  add column if not exists updated_at timestamp with time zone not null default now();
-- Projects started from Supabase's subscription starter have prices.type / prices.interval as
-- enums (pricing_type, pricing_plan_interval). The worker binds text parameters, and there is
-- no assignment cast text -> enum, so widen them to text (values unchanged; checks below).
do $$
declare col text;
begin
  foreach col in array array['type', 'interval'] loop
    if exists (select 1 from information_schema.columns
               where table_schema = 'public' and table_name = 'prices'
                 and column_name = col and data_type <> 'text') then
      execute format('alter table public.prices alter column %I type text using %I::text', col, col);
    end if;
  end loop;
end
$$;
-- Starter tables have active without default: give it one (rows untouched; NULLs may remain).
alter table public.products alter column active set default true;
alter table public.prices alter column active set default true;
create index if not exists prices_product_id_idx on public.prices using btree (product_id);

-- ---------------------------------------------------------------------------------------
-- subscription_status: all of Stripe's statuses. Production may have an older label set
-- (without 'paused'): add the missing ones. Allowed in a transaction on PG >= 12 as long as
-- the new value is not used in the same transaction.
do $$
begin
  if not exists (select 1 from pg_type t join pg_namespace n on n.oid = t.typnamespace
                 where n.nspname = 'public' and t.typname = 'subscription_status') then
    create type public.subscription_status as enum
      ('trialing', 'active', 'canceled', 'incomplete', 'incomplete_expired', 'past_due', 'unpaid', 'paused');
  end if;
end
$$;
alter type public.subscription_status add value if not exists 'trialing';
alter type public.subscription_status add value if not exists 'active';
alter type public.subscription_status add value if not exists 'canceled';
alter type public.subscription_status add value if not exists 'incomplete';
alter type public.subscription_status add value if not exists 'incomplete_expired';
alter type public.subscription_status add value if not exists 'past_due';
alter type public.subscription_status add value if not exists 'unpaid';
alter type public.subscription_status add value if not exists 'paused';

-- ---------------------------------------------------------------------------------------
-- Seed 002 tables, verbatim, in FK order.
create table if not exists public.users (
  id uuid not null,
  full_name text null,
  avatar_url text null,
  billing_address jsonb null,
  payment_method jsonb null,
  type text null,
  email character varying(255) null,
  constraint users_pkey primary key (id),
  constraint users_id_fkey foreign key (id) references auth.users (id)
);
-- handle_new_user() writes these (production may still lack email).
alter table public.users
  add column if not exists full_name text,
  add column if not exists avatar_url text,
  add column if not exists email character varying(255);

create table if not exists public.customers (
  id uuid not null,
  stripe_customer_id text null,
  constraint customers_pkey primary key (id),
  constraint customers_id_fkey foreign key (id) references auth.users (id)
);

create table if not exists public.accounts (
  id uuid not null default gen_random_uuid(),
  created_at timestamp with time zone not null default now(),
  account_number text null,
  status text null default 'active'::text,
  max_devices text null default '5'::text,
  cryptotoken text null,
  can_add_ports text null default 'false'::text,
  can_add_devices text null default 'true'::text,
  max_ports text null default '0'::text,
  expiry text null default ''::text,
  apple_receipt text null,
  apple_api_response text null,
  user_id uuid null,
  marked_inactive_by_user timestamp with time zone null,
  constraint accounts_pkey primary key (id),
  constraint accounts_account_number_key unique (account_number),
  constraint accounts_cryptotoken_key unique (cryptotoken),
  constraint accounts_user_id_fkey foreign key (user_id) references public.users (id)
);
alter table public.accounts add column if not exists user_id uuid;

create table if not exists public.payment_intents (
  id uuid not null default gen_random_uuid(),
  stripe_payment_intent_id text not null,
  status text not null,
  amount bigint not null,
  currency text not null,
  customer_id uuid null,
  created_at timestamp with time zone null default now(),
  receipt_email text null,
  constraint payment_intents_pkey primary key (id),
  constraint unique_stripe_payment_intent_id unique (stripe_payment_intent_id),
  constraint payment_intents_customer_id_fkey foreign key (customer_id) references public.customers (id)
);
create index if not exists idx_payment_intents_stripe_payment_intent_id
  on public.payment_intents using btree (stripe_payment_intent_id);

create table if not exists public.charges (
  id uuid not null default gen_random_uuid(),
  stripe_charge_id text not null,
  payment_intent_id uuid not null,
  amount bigint not null,
  amount_refunded bigint not null default 0,
  currency text not null,
  customer_id uuid null,
  billing_details jsonb null,
  status text not null,
  created_at timestamp with time zone null default now(),
  receipt_email text null,
  constraint charges_pkey primary key (id),
  constraint charges_payment_intent_id_fkey foreign key (payment_intent_id) references public.payment_intents (id)
);

create table if not exists public.payment_methods (
  id uuid not null default gen_random_uuid(),
  stripe_payment_method_id text not null,
  type text not null,
  last_four text null,
  exp_month integer null,
  exp_year integer null,
  customer_id uuid null,
  created_at timestamp with time zone null default now(),
  updated_at timestamp with time zone null default now(),
  constraint payment_methods_pkey primary key (id),
  constraint payment_methods_customer_id_fkey foreign key (customer_id) references public.customers (id)
);

-- TRAP (kept from production on purpose): ended_at, cancel_at, canceled_at, trial_start and
-- trial_end DEFAULT to now(), so a row inserted without them looks ended/canceled/in trial.
-- The frontend may depend on the current behaviour, so the defaults are not changed; the
-- worker always writes these five columns explicitly (NULL when Stripe has no value).
create table if not exists public.subscriptions (
  id text not null,
  user_id uuid not null,
  status public.subscription_status null,
  metadata jsonb null,
  price_id text null,
  quantity integer null,
  cancel_at_period_end boolean null,
  created timestamp with time zone not null default timezone('utc'::text, now()),
  current_period_start timestamp with time zone not null default timezone('utc'::text, now()),
  current_period_end timestamp with time zone not null default timezone('utc'::text, now()),
  ended_at timestamp with time zone null default timezone('utc'::text, now()),
  cancel_at timestamp with time zone null default timezone('utc'::text, now()),
  canceled_at timestamp with time zone null default timezone('utc'::text, now()),
  trial_start timestamp with time zone null default timezone('utc'::text, now()),
  trial_end timestamp with time zone null default timezone('utc'::text, now()),
  stripe_subscription_id character varying(255) null,
  constraint subscriptions_pkey primary key (id),
  constraint subscriptions_price_id_fkey foreign key (price_id) references public.prices (id),
  constraint subscriptions_user_id_fkey foreign key (user_id) references auth.users (id)
);
alter table public.subscriptions add column if not exists stripe_subscription_id character varying(255);

create table if not exists public.vouchers (
  id uuid not null default gen_random_uuid(),
  code text not null,
  duration_months integer not null default 1,
  is_used boolean not null default false,
  associated_account text null,
  created_at timestamp with time zone not null default now(),
  used_at timestamp with time zone null,
  status text null default 'active'::text,
  subscription_id text null,
  channel_id uuid null default 'c4c8ca3f-3083-4484-a69c-cd64624ab765'::uuid,
  updated_at timestamp with time zone not null default now(),
  updated_by text null,
  payment_intent_id uuid null,
  constraint vouchers_pkey primary key (id),
  constraint vouchers_code_key unique (code),
  constraint vouchers_associated_account_fkey foreign key (associated_account) references public.accounts (account_number),
  constraint vouchers_channel_id_fkey foreign key (channel_id) references public.channels (id),
  constraint vouchers_payment_intent_id_fkey foreign key (payment_intent_id) references public.payment_intents (id),
  constraint vouchers_subscription_id_fkey foreign key (subscription_id) references public.subscriptions (id)
);
alter table public.vouchers
  add column if not exists updated_at timestamp with time zone not null default now(),
  add column if not exists channel_id uuid default 'c4c8ca3f-3083-4484-a69c-cd64624ab765'::uuid;

-- Constraints that CREATE TABLE IF NOT EXISTS skips when the table already exists: add the
-- ones production might lack (matched by name; primary keys are assumed present).
do $$
declare c record;
begin
  for c in select * from (values
    ('public.prices',          'prices_product_id_fkey',            'foreign key (product_id) references public.products (id)'),
    ('public.prices',          'prices_currency_check',             'check (char_length(currency) = 3)'),
    ('public.prices',          'prices_type_check',                 $c$check (type in ('one_time', 'recurring'))$c$),
    ('public.prices',          'prices_interval_check',             $c$check (interval in ('day', 'week', 'month', 'year'))$c$),
    ('public.users',           'users_id_fkey',                     'foreign key (id) references auth.users (id)'),
    ('public.customers',       'customers_id_fkey',                 'foreign key (id) references auth.users (id)'),
    ('public.accounts',        'accounts_account_number_key',       'unique (account_number)'),
    ('public.accounts',        'accounts_cryptotoken_key',          'unique (cryptotoken)'),
    ('public.accounts',        'accounts_user_id_fkey',             'foreign key (user_id) references public.users (id)'),
    ('public.payment_intents', 'unique_stripe_payment_intent_id',   'unique (stripe_payment_intent_id)'),
    ('public.payment_intents', 'payment_intents_customer_id_fkey',  'foreign key (customer_id) references public.customers (id)'),
    ('public.charges',         'charges_payment_intent_id_fkey',    'foreign key (payment_intent_id) references public.payment_intents (id)'),
    ('public.payment_methods', 'payment_methods_customer_id_fkey',  'foreign key (customer_id) references public.customers (id)'),
    ('public.subscriptions',   'subscriptions_price_id_fkey',       'foreign key (price_id) references public.prices (id)'),
    ('public.subscriptions',   'subscriptions_user_id_fkey',        'foreign key (user_id) references auth.users (id)'),
    ('public.vouchers',        'vouchers_code_key',                 'unique (code)'),
    ('public.vouchers',        'vouchers_associated_account_fkey',  'foreign key (associated_account) references public.accounts (account_number)'),
    ('public.vouchers',        'vouchers_channel_id_fkey',          'foreign key (channel_id) references public.channels (id)'),
    ('public.vouchers',        'vouchers_payment_intent_id_fkey',   'foreign key (payment_intent_id) references public.payment_intents (id)'),
    ('public.vouchers',        'vouchers_subscription_id_fkey',     'foreign key (subscription_id) references public.subscriptions (id)')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_constraint
                   where conrelid = c.tbl::regclass and conname = c.name) then
      execute format('alter table %s add constraint %I %s', c.tbl, c.name, c.def);
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Trigger functions the production triggers name (their bodies follow in later migrations).

-- Profile row for every new auth user. SECURITY DEFINER + empty search_path: runs as the
-- owner whatever role inserts into auth.users, and cannot be hijacked via search_path.
create or replace function public.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.users as u (id, email, full_name, avatar_url)
  values (
    new.id,
    new.email,
    coalesce(new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'name'),
    new.raw_user_meta_data ->> 'avatar_url'
  )
  on conflict (id) do update
    set email      = excluded.email,
        full_name  = coalesce(u.full_name, excluded.full_name),
        avatar_url = coalesce(u.avatar_url, excluded.avatar_url);
  return new;
end
$$;

create or replace function public.update_voucher_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- Account change notifications (LISTEN accounts_update / sse_accounts). Any client allowed to
-- LISTEN sees every payload, so it carries only the changed row's id, user_id and the
-- operation: never other users' data, the cryptotoken, the account number or receipts.
-- Listeners re-read the row with their own privileges.
create or replace function public.accounts_update_trigger()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  r record;
begin
  if tg_op = 'DELETE' then r := old; else r := new; end if;
  perform pg_notify('accounts_update',
    json_build_object('id', r.id, 'user_id', r.user_id, 'operation', tg_op)::text);
  return null;
end
$$;

create or replace function public.update_sse_from_accounts()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  r record;
begin
  if tg_op = 'DELETE' then r := old; else r := new; end if;
  perform pg_notify('sse_accounts',
    json_build_object('id', r.id, 'user_id', r.user_id, 'operation', tg_op)::text);
  return null;
end
$$;

-- Voucher functions: created only when missing (NOT replaced), so production keeps its current
-- bodies until the later migration that completes them. Placeholders do nothing.
-- NOTE: production has TWO insert triggers on subscriptions calling
-- create_voucher_for_new_subscription() (..._after_subscription_change: AFTER INSERT OR UPDATE,
-- and ..._after_subscription_insert: AFTER INSERT). Both are kept, so the function must be
-- idempotent: one INSERT fires it twice and must still yield at most one voucher.
do $$
begin
  if to_regprocedure('public.create_voucher_for_new_subscription()') is null then
    execute $f$
      create function public.create_voucher_for_new_subscription()
      returns trigger language plpgsql set search_path = ''
      as $b$ begin return new; end $b$
    $f$;
  end if;
  if to_regprocedure('public.update_voucher_on_subscription_change()') is null then
    execute $f$
      create function public.update_voucher_on_subscription_change()
      returns trigger language plpgsql set search_path = ''
      as $b$ begin return new; end $b$
    $f$;
  end if;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Seed 002 triggers, created only when missing.
do $$
declare t record;
begin
  for t in select * from (values
    ('public.accounts', 'trigger_sse_accounts',
     'after insert or delete or update on public.accounts for each row execute function public.update_sse_from_accounts()'),
    ('public.accounts', 'trigger_accounts_update',
     'after insert or delete or update on public.accounts for each row execute function public.accounts_update_trigger()'),
    ('public.subscriptions', 'trigger_create_or_update_voucher_after_subscription_change',
     'after insert or update on public.subscriptions for each row execute function public.create_voucher_for_new_subscription()'),
    ('public.subscriptions', 'trigger_create_voucher_after_subscription_insert',
     'after insert on public.subscriptions for each row execute function public.create_voucher_for_new_subscription()'),
    ('public.subscriptions', 'trigger_update_voucher_after_subscription_update',
     'after update on public.subscriptions for each row when (old.status is distinct from new.status) execute function public.update_voucher_on_subscription_change()'),
    ('public.vouchers', 'vouchers_updated_at_trigger',
     'before update on public.vouchers for each row execute function public.update_voucher_updated_at()'),
    ('auth.users', 'on_auth_user_created',
     'after insert on auth.users for each row execute function public.handle_new_user()')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_trigger
                   where tgrelid = t.tbl::regclass and tgname = t.name and not tgisinternal) then
      execute format('create trigger %I %s', t.name, t.def);
    end if;
  end loop;
end
$$;
