-- Unique constraints the worker's idempotent upserts (ON CONFLICT) need, plus indexes on FK
-- columns. Production may already hold duplicates (the old handler deduplicated in memory
-- only), so each constraint is preceded by a deterministic resolution. Every deleted or
-- nullified row is first copied to migration_dedup_log: nothing is lost silently.
-- On a rerun there are no duplicates left and nothing changes.

create table if not exists public.migration_dedup_log (
  id bigserial primary key,
  table_name text not null,
  kept_id text,                  -- id of the row that won
  action text not null,          -- 'deleted' | 'nullified' | 'merged' (keeper before the merge)
  removed jsonb not null,        -- the full row as it was
  created_at timestamptz not null default now()
);
alter table public.migration_dedup_log enable row level security;  -- holds billing rows: no API access

-- charges.stripe_charge_id -----------------------------------------------------------------
-- Keep the newest row per Stripe charge (created_at, then id). Refunds only grow, so the keeper
-- first takes the largest amount_refunded among its duplicates. Nothing references charges,
-- so the others are deleted.
with ranked as (
  select c.id,
         first_value(c.id) over w as keeper_id,
         row_number() over w as rn,
         max(c.amount_refunded) over (partition by c.stripe_charge_id) as max_refunded
    from public.charges c
  window w as (partition by c.stripe_charge_id order by c.created_at desc nulls last, c.id desc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'charges', r.keeper_id::text, 'merged', to_jsonb(c)
    from ranked r join public.charges c on c.id = r.id
   where r.rn = 1 and c.amount_refunded < r.max_refunded
)
update public.charges c
   set amount_refunded = r.max_refunded
  from ranked r
 where r.id = c.id and r.rn = 1 and c.amount_refunded < r.max_refunded;

with ranked as (
  select c.id,
         first_value(c.id) over w as keeper_id,
         row_number() over w as rn
    from public.charges c
  window w as (partition by c.stripe_charge_id order by c.created_at desc nulls last, c.id desc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'charges', r.keeper_id::text, 'deleted', to_jsonb(c)
    from ranked r join public.charges c on c.id = r.id
   where r.rn > 1
)
delete from public.charges c using ranked r where r.id = c.id and r.rn > 1;

-- payment_methods.stripe_payment_method_id -------------------------------------------------
-- Keep the most recently updated row (updated_at, created_at, id); nothing references
-- payment_methods, so the others are deleted.
with ranked as (
  select p.id,
         first_value(p.id) over w as keeper_id,
         row_number() over w as rn
    from public.payment_methods p
  window w as (partition by p.stripe_payment_method_id
               order by p.updated_at desc nulls last, p.created_at desc nulls last, p.id desc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'payment_methods', r.keeper_id::text, 'deleted', to_jsonb(p)
    from ranked r join public.payment_methods p on p.id = r.id
   where r.rn > 1
)
delete from public.payment_methods p using ranked r where r.id = p.id and r.rn > 1;

-- customers.stripe_customer_id (NULLs allowed) ---------------------------------------------
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

-- subscriptions.stripe_subscription_id ------------------------------------------------------
-- Keep it on the row whose id equals the Stripe subscription id (the worker's convention),
-- else on the newest row (created, then id); NULL it on the others (rows kept: vouchers
-- reference subscriptions.id).
with ranked as (
  select s.id,
         first_value(s.id) over w as keeper_id,
         row_number() over w as rn
    from public.subscriptions s
   where s.stripe_subscription_id is not null
  window w as (partition by s.stripe_subscription_id
               order by (s.id = s.stripe_subscription_id) desc, s.created desc, s.id desc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'subscriptions', r.keeper_id, 'nullified', to_jsonb(s)
    from ranked r join public.subscriptions s on s.id = r.id
   where r.rn > 1
)
update public.subscriptions s set stripe_subscription_id = null
  from ranked r where r.id = s.id and r.rn > 1;

-- The constraints ---------------------------------------------------------------------------
do $$
declare c record;
begin
  for c in select * from (values
    ('public.charges',         'charges_stripe_charge_id_key',                 'unique (stripe_charge_id)'),
    ('public.payment_methods', 'payment_methods_stripe_payment_method_id_key', 'unique (stripe_payment_method_id)'),
    ('public.customers',       'customers_stripe_customer_id_key',             'unique (stripe_customer_id)'),
    ('public.subscriptions',   'subscriptions_stripe_subscription_id_key',     'unique (stripe_subscription_id)')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_constraint where conrelid = c.tbl::regclass and conname = c.name) then
      execute format('alter table %s add constraint %I %s', c.tbl, c.name, c.def);
    end if;
  end loop;
end
$$;

-- Indexes on FK columns (joins, and FK checks on delete of the referenced row).
-- accounts.user_id stays non-unique: production may hold several accounts per user.
create index if not exists accounts_user_id_idx on public.accounts (user_id);
create index if not exists charges_payment_intent_id_idx on public.charges (payment_intent_id);
create index if not exists charges_customer_id_idx on public.charges (customer_id);
create index if not exists payment_intents_customer_id_idx on public.payment_intents (customer_id);
create index if not exists payment_methods_customer_id_idx on public.payment_methods (customer_id);
create index if not exists subscriptions_user_id_idx on public.subscriptions (user_id);
create index if not exists subscriptions_price_id_idx on public.subscriptions (price_id);
create index if not exists vouchers_associated_account_idx on public.vouchers (associated_account);
create index if not exists vouchers_payment_intent_id_idx on public.vouchers (payment_intent_id);
create index if not exists vouchers_subscription_id_idx on public.vouchers (subscription_id);
create index if not exists vouchers_channel_id_idx on public.vouchers (channel_id);
