-- Payments: the money facts. payment_intents and charges (the production tables), refunds,
-- disputes, invoices and the link between an invoice and the payment intents that paid it.
--
-- The worker writes what Stripe reports, keyed by Stripe ids, and keeps the latest snapshot of
-- each object (stripe_object_versions decides what is latest). What the money buys (access
-- grants, vouchers, expiry) and the billing history are derived from these rows by SQL in later
-- migrations, so the outcome depends on the facts and not on the order they arrived in.

-- ---------------------------------------------------------------------------------------
-- Columns on the production tables.
alter table public.payment_intents
  -- what was bought, when it says so (checkout metadata, or the intent's own metadata)
  add column if not exists price_id text,
  -- the Stripe customer behind the row, kept while the buyer is not known yet
  add column if not exists stripe_customer_id text,
  -- set when a paid Checkout Session (mode=payment) names this intent: a one-time purchase
  add column if not exists checkout_session_id text,
  -- when the money was received: the earliest report of success (event time)
  add column if not exists paid_at timestamptz,
  add column if not exists livemode boolean;
-- Rows that existed before access was derived from payments: their time is already in the
-- account's starting balance and is never granted again. Adding the column with default true
-- marks exactly the existing rows; new rows get false.
alter table public.payment_intents
  add column if not exists recorded_before_ledger boolean not null default true;
alter table public.payment_intents alter column recorded_before_ledger set default false;
alter table public.charges
  add column if not exists stripe_customer_id text,
  add column if not exists livemode boolean;
alter table public.payment_methods add column if not exists stripe_customer_id text;

create index if not exists payment_intents_price_id_idx on public.payment_intents (price_id);
create index if not exists payment_intents_unlinked_idx
  on public.payment_intents (stripe_customer_id) where customer_id is null;
create index if not exists charges_unlinked_idx
  on public.charges (stripe_customer_id) where customer_id is null;
create index if not exists payment_methods_unlinked_idx
  on public.payment_methods (stripe_customer_id) where customer_id is null;

-- ---------------------------------------------------------------------------------------
-- Unique Stripe ids on charges and payment methods. Production may hold duplicates (the old
-- handler deduplicated in memory only): each is resolved deterministically first, and every
-- deleted or changed row is copied to migration_dedup_log. On a rerun nothing changes.

-- charges.stripe_charge_id
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

-- payment_methods.stripe_payment_method_id
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

do $$
declare c record;
begin
  for c in select * from (values
    ('public.charges',         'charges_stripe_charge_id_key',                 'unique (stripe_charge_id)'),
    ('public.payment_methods', 'payment_methods_stripe_payment_method_id_key', 'unique (stripe_payment_method_id)')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_constraint where conrelid = c.tbl::regclass and conname = c.name) then
      execute format('alter table %s add constraint %I %s', c.tbl, c.name, c.def);
    end if;
  end loop;
end
$$;

create index if not exists charges_payment_intent_id_idx on public.charges (payment_intent_id);
create index if not exists charges_customer_id_idx on public.charges (customer_id);
create index if not exists payment_intents_customer_id_idx on public.payment_intents (customer_id);
create index if not exists payment_methods_customer_id_idx on public.payment_methods (customer_id);

-- ---------------------------------------------------------------------------------------
-- Refunds: one row per Stripe refund, in its latest state. Reported by refund.* events and, in
-- older API versions, inside the charge (charge.refunds). user_id is the buyer the refunded
-- payment belongs to, filled in as soon as it is known.
create table if not exists public.refunds (
  stripe_refund_id text primary key,
  stripe_charge_id text,
  stripe_payment_intent_id text,
  amount bigint not null,
  currency text not null,
  status text not null,            -- pending, requires_action, succeeded, failed, canceled
  reason text,
  refunded_at timestamptz not null, -- Stripe's created
  user_id uuid references auth.users (id) on delete set null,
  livemode boolean,
  updated_at timestamptz not null default now()
);
create index if not exists refunds_charge_idx on public.refunds (stripe_charge_id);
create index if not exists refunds_payment_intent_idx on public.refunds (stripe_payment_intent_id);
create index if not exists refunds_user_idx on public.refunds (user_id);

-- Disputes: one row per Stripe dispute. funds_withdrawn / funds_reinstated only ever become
-- true (from charge.dispute.funds_* events or the dispute's balance transactions), so they do
-- not depend on the order the events arrive in; status is the latest snapshot's.
create table if not exists public.disputes (
  stripe_dispute_id text primary key,
  stripe_charge_id text,
  stripe_payment_intent_id text,
  amount bigint not null,
  currency text not null,
  status text not null,            -- warning_*, needs_response, under_review, won, lost, prevented
  reason text,
  funds_withdrawn boolean not null default false,
  funds_reinstated boolean not null default false,
  opened_at timestamptz not null,  -- Stripe's created
  funds_withdrawn_at timestamptz,  -- the earliest report of each movement
  funds_reinstated_at timestamptz,
  user_id uuid references auth.users (id) on delete set null,
  livemode boolean,
  updated_at timestamptz not null default now()
);
create index if not exists disputes_charge_idx on public.disputes (stripe_charge_id);
create index if not exists disputes_payment_intent_idx on public.disputes (stripe_payment_intent_id);
create index if not exists disputes_user_idx on public.disputes (user_id);

-- Invoices: one row per Stripe invoice, in its latest state. period_start/period_end is the
-- billing period the invoice pays for (its subscription lines that are not prorations), NULL
-- when it pays for none; lines keeps what the entitlement rules read of each line.
create table if not exists public.invoices (
  stripe_invoice_id text primary key,
  stripe_customer_id text,
  user_id uuid references auth.users (id) on delete set null,
  stripe_subscription_id text,
  status text not null,            -- draft, open, paid, uncollectible, void
  billing_reason text,
  currency text,
  amount_due bigint,
  amount_paid bigint,
  subtotal bigint,
  total bigint,
  attempt_count integer,
  paid_at timestamptz,
  period_start timestamptz,
  period_end timestamptz,
  lines jsonb not null default '[]'::jsonb,
  livemode boolean,
  invoice_created_at timestamptz,  -- Stripe's created
  updated_at timestamptz not null default now()
);
create index if not exists invoices_user_idx on public.invoices (user_id);
create index if not exists invoices_subscription_idx on public.invoices (stripe_subscription_id);
create index if not exists invoices_unlinked_idx
  on public.invoices (stripe_customer_id) where user_id is null;

-- Which payment intents paid which invoice. Before API 2025-03-31.basil the invoice, its intent
-- and its charge name each other; since then only invoice_payment.paid tells.
create table if not exists public.invoice_payments (
  stripe_invoice_id text not null,
  stripe_payment_intent_id text not null,
  amount_paid bigint,
  status text,
  updated_at timestamptz not null default now(),
  primary key (stripe_invoice_id, stripe_payment_intent_id)
);
create index if not exists invoice_payments_intent_idx on public.invoice_payments (stripe_payment_intent_id);

-- ---------------------------------------------------------------------------------------
-- Attribution: every charge, refund and dispute of a buyer names them, guest checkouts
-- included (through the payment intent, whose owner the checkout names).
create or replace function public.attribute_to_payment_owner()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_table_name = 'charges' then
    if new.customer_id is null then
      select pi.customer_id into new.customer_id
        from public.payment_intents pi where pi.id = new.payment_intent_id;
    end if;
  elsif new.user_id is null then
    new.user_id := coalesce(
      (select c.customer_id from public.charges c where c.stripe_charge_id = new.stripe_charge_id),
      (select pi.customer_id from public.payment_intents pi
        where pi.stripe_payment_intent_id = new.stripe_payment_intent_id),
      (select pi.customer_id from public.charges c
         join public.payment_intents pi on pi.id = c.payment_intent_id
        where c.stripe_charge_id = new.stripe_charge_id));
  end if;
  return new;
end
$$;

-- A payment intent or charge that gets its owner hands its charges, refunds and disputes to
-- them.
create or replace function public.attribute_payment_rows()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_charges text[];
  v_intent text;
begin
  if tg_table_name = 'payment_intents' then
    update public.charges set customer_id = new.customer_id
     where payment_intent_id = new.id and customer_id is null;
    v_intent := new.stripe_payment_intent_id;
    v_charges := array(select c.stripe_charge_id from public.charges c where c.payment_intent_id = new.id);
  else
    v_charges := array[new.stripe_charge_id];
  end if;
  update public.refunds set user_id = new.customer_id
   where user_id is null and (stripe_payment_intent_id = v_intent or stripe_charge_id = any (v_charges));
  update public.disputes set user_id = new.customer_id
   where user_id is null and (stripe_payment_intent_id = v_intent or stripe_charge_id = any (v_charges));
  return null;
end
$$;

do $$
declare t record;
begin
  for t in select * from (values
    ('public.charges', 'charges_attribute_owner',
     'before insert or update of customer_id, payment_intent_id on public.charges for each row execute function public.attribute_to_payment_owner()'),
    ('public.refunds', 'refunds_attribute_owner',
     'before insert or update on public.refunds for each row execute function public.attribute_to_payment_owner()'),
    ('public.disputes', 'disputes_attribute_owner',
     'before insert or update on public.disputes for each row execute function public.attribute_to_payment_owner()'),
    ('public.payment_intents', 'payment_intents_attribute_rows',
     'after insert or update of customer_id on public.payment_intents for each row when (new.customer_id is not null) execute function public.attribute_payment_rows()'),
    ('public.charges', 'charges_attribute_rows',
     'after insert or update of customer_id on public.charges for each row when (new.customer_id is not null) execute function public.attribute_payment_rows()')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_trigger where tgrelid = t.tbl::regclass and tgname = t.name and not tgisinternal) then
      execute format('create trigger %I %s', t.name, t.def);
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Who may read what: a signed-in user reads their own payments; the link table is internal.
do $$
declare
  t text;
begin
  foreach t in array array['payment_intents', 'charges', 'payment_methods', 'refunds', 'disputes',
                           'invoices', 'invoice_payments'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('revoke all on table public.%I from public, anon, authenticated', t);
    execute format('grant all on table public.%I to service_role', t);
    if t <> 'invoice_payments' then
      execute format('grant select on table public.%I to authenticated', t);
    end if;
  end loop;
end
$$;

drop policy if exists payment_intents_select_own on public.payment_intents;
create policy payment_intents_select_own on public.payment_intents
  for select to authenticated
  using (customer_id = (select auth.uid()));

-- A charge is the caller's when it names them, or when its payment intent is theirs.
-- `= any (array(subquery))` rather than `in (subquery)`: the array is an InitPlan computed once
-- and `= any ($1)` uses the index; `in` would be a hashed SubPlan over every charge.
drop policy if exists charges_select_own on public.charges;
create policy charges_select_own on public.charges
  for select to authenticated
  using (customer_id = (select auth.uid())
         or payment_intent_id = any (array(select pi.id from public.payment_intents pi
                                            where pi.customer_id = (select auth.uid()))));

drop policy if exists payment_methods_select_own on public.payment_methods;
create policy payment_methods_select_own on public.payment_methods
  for select to authenticated
  using (customer_id = (select auth.uid()));

drop policy if exists refunds_select_own on public.refunds;
create policy refunds_select_own on public.refunds
  for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists disputes_select_own on public.disputes;
create policy disputes_select_own on public.disputes
  for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists invoices_select_own on public.invoices;
create policy invoices_select_own on public.invoices
  for select to authenticated
  using (user_id = (select auth.uid()));

revoke all on function public.attribute_to_payment_owner() from public, anon, authenticated;
revoke all on function public.attribute_payment_rows() from public, anon, authenticated;
