-- Entitlements: access is bought, not observed.
--
-- public.access_grants is the ledger: one row per grant of access, derived here from the money
-- facts the worker writes (payments, invoices, refunds, disputes) and from trials and redeemed
-- gift codes. Nothing else grants time: a subscription snapshot never does.
--
--   grants     a paid one-time purchase (Checkout mode=payment, or an intent whose metadata
--              names the price): the price's terms (duration_months, default 1)
--              a paid subscription invoice: exactly the period it paid for
--              a paid one-off invoice: its lines' terms
--              a trial: trial_start .. trial_end (ended_at if earlier), no money
--              a redeemed gift code: its months, from the moment of redemption
--              the starting balance: the expiry an account had when this ledger began
--   revokes    a full refund of the money behind the grant; a dispute that takes it
--              (funds withdrawn, or lost)
--   restores   a refund that failed or was canceled; a dispute won or funds reinstated
--
-- accounts.expiry is a pure function of the account's grants (refresh_account_access): grants
-- that are not revoked, in the order they took effect (effective_at, then source), each start
-- at the later of their own start and the end of the coverage so far and add their length
-- (months for purchases and codes, the period's duration for periods and trials). A period of
-- a subscription ends where that subscription's next granted period starts (a plan change
-- resets the billing cycle and credits the rest). The expiry is the end of the last coverage,
-- so the same facts give the same vouchers and expiry in any delivery order, and every day of
-- access is explained by one grant (coverage_start .. coverage_end).
--
-- Every grant paid with money has a voucher (the code the frontend shows), mirroring it:
-- used, active or revoked. A manual (gift) purchase gives an unused voucher and no grant until
-- the code is redeemed.

-- ---------------------------------------------------------------------------------------
-- Vouchers: columns the ledger mirrors into them.
alter table public.vouchers
  add column if not exists period_start timestamptz,       -- the period a subscription voucher pays
  add column if not exists period_end timestamptz,
  add column if not exists revoked_at timestamptz,
  add column if not exists source text;                    -- the grant source it was issued for
create unique index if not exists vouchers_source_key on public.vouchers (source);
create index if not exists vouchers_code_upper_idx on public.vouchers (upper(code));
create index if not exists vouchers_associated_account_idx on public.vouchers (associated_account);
create index if not exists vouchers_payment_intent_id_idx on public.vouchers (payment_intent_id);
create index if not exists vouchers_subscription_id_idx on public.vouchers (subscription_id);
create index if not exists vouchers_channel_id_idx on public.vouchers (channel_id);

-- 'XXXX-XXXX-XXXX-XXXX' over a 32-letter alphabet without 0/O/1/I (80 random bits).
create or replace function public.generate_voucher_code()
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_alphabet constant text := 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  v_bytes bytea;
  v_code text;
begin
  loop
    v_bytes := sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
    v_code := '';
    for i in 0..15 loop
      if i > 0 and i % 4 = 0 then
        v_code := v_code || '-';
      end if;
      v_code := v_code || substr(v_alphabet, (get_byte(v_bytes, i) % 32) + 1, 1);
    end loop;
    exit when not exists (select 1 from public.vouchers v where upper(v.code) = v_code);
  end loop;
  return v_code;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Expiry text helpers. accounts.expiry is TEXT: written as ISO-8601 UTC, read leniently.

-- accounts.expiry text -> timestamptz. NULL / '' / unparseable -> NULL. Text without a zone is
-- read as UTC (production holds plain dates like '2025-01-01').
create or replace function public.account_expiry(p_text text)
returns timestamptz
language plpgsql
stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
  t text := nullif(btrim(p_text), '');
begin
  if t is null or lower(t) in ('now', 'today', 'tomorrow', 'yesterday') then
    return null;
  end if;
  if t ~ '^[0-9]{9,10}$' then                       -- unix seconds
    return to_timestamp(t::bigint);
  end if;
  if t ~ '^[0-9]{12,13}$' then                      -- unix milliseconds
    return to_timestamp(t::bigint / 1000.0);
  end if;
  return t::timestamptz;
exception
  when data_exception then
    return null;
end
$$;

-- timestamptz -> the canonical accounts.expiry text (UTC, second precision).
create or replace function public.format_expiry(p_ts timestamptz)
returns text
language sql
stable
set search_path = ''
as $$
  select case
           when p_ts is null then null
           when isfinite(p_ts) then to_char(p_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           else p_ts::text
         end
$$;

-- Calendar-month arithmetic in UTC (independent of the session time zone).
create or replace function public.add_months_utc(p_ts timestamptz, p_months integer)
returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select ((p_ts at time zone 'UTC') + make_interval(months => p_months)) at time zone 'UTC'
$$;

-- ---------------------------------------------------------------------------------------
-- The ledger.
create table if not exists public.access_grants (
  id uuid primary key default gen_random_uuid(),
  account_id uuid not null references public.accounts (id) on delete cascade,
  -- what the grant is for, unique: 'payment_intent:pi_…', 'invoice:in_…', 'trial:sub_…',
  -- 'voucher:<voucher id>', 'baseline:<account id>'
  source text not null unique,
  kind text not null check (kind in ('baseline', 'purchase', 'subscription_period', 'invoice',
                                     'trial', 'gift_code')),
  stripe_event_id text,            -- the event that first established it
  stripe_payment_intent_id text,
  stripe_invoice_id text,
  stripe_subscription_id text,
  price_id text,
  voucher_id uuid references public.vouchers (id) on delete set null,
  months integer,                  -- purchases, one-off invoices, gift codes
  terms_known boolean not null default true,  -- false while the price has not arrived
  period_start timestamptz,        -- periods and trials; the starting balance: when it was taken
  period_end timestamptz,
  effective_at timestamptz not null,
  status text not null default 'active' check (status in ('active', 'revoked', 'restored')),
  revoked_reason text check (revoked_reason in ('refunded', 'disputed')),
  coverage_start timestamptz,      -- the days this grant explains (NULL: none)
  coverage_end timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index if not exists access_grants_account_idx on public.access_grants (account_id, effective_at);
create index if not exists access_grants_payment_intent_idx on public.access_grants (stripe_payment_intent_id);
create index if not exists access_grants_invoice_idx on public.access_grants (stripe_invoice_id);
create index if not exists access_grants_subscription_idx on public.access_grants (stripe_subscription_id);
create index if not exists access_grants_unknown_terms_idx on public.access_grants (price_id) where not terms_known;

comment on table public.access_grants is
  'The entitlement ledger: one row per grant of access (kind, source, length or period, status, '
  'coverage). accounts.expiry is derived from it by refresh_account_access().';

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.vouchers'::regclass
                 and conname = 'vouchers_grant_id_fkey') then
    alter table public.vouchers add column if not exists grant_id uuid;
    alter table public.vouchers add constraint vouchers_grant_id_fkey
      foreign key (grant_id) references public.access_grants (id) on delete set null;
  end if;
  if not exists (select 1 from pg_trigger where tgrelid = 'public.access_grants'::regclass
                 and tgname = 'access_grants_set_updated_at') then
    create trigger access_grants_set_updated_at before update on public.access_grants
      for each row execute function public.set_updated_at();
  end if;
end
$$;
create index if not exists vouchers_grant_id_idx on public.vouchers (grant_id);

-- ---------------------------------------------------------------------------------------
-- Money behind a grant: the payment intents that paid it (a one-time purchase: its intent; an
-- invoice: the intents linked to it) and what came back. `paid` falls back to p_paid when the
-- intents themselves were never reported. A refund row's status decides over the charge's
-- amount_refunded, which may predate the refund's failure.
create or replace function public.money_reversal(
  p_intents text[],
  p_paid bigint,
  out paid bigint,
  out returned bigint,
  out reason text,
  out reversed boolean
)
language sql
stable
set search_path = ''
as $$
  with pis as (
    select pi.id, pi.amount
      from public.payment_intents pi
     where pi.stripe_payment_intent_id = any (p_intents) and pi.status = 'succeeded'
  ), chs as (
    select c.stripe_charge_id, c.amount_refunded
      from public.charges c
     where c.payment_intent_id in (select id from pis)
  ), rfs as (
    select r.amount, r.status
      from public.refunds r
     where r.stripe_payment_intent_id = any (p_intents)
        or r.stripe_charge_id in (select stripe_charge_id from chs)
  ), dps as (
    select d.amount, d.status, d.funds_withdrawn, d.funds_reinstated
      from public.disputes d
     where d.stripe_payment_intent_id = any (p_intents)
        or d.stripe_charge_id in (select stripe_charge_id from chs)
  ), totals as (
    select coalesce(nullif((select sum(amount) from pis), 0), p_paid, 0) as paid,
           case when exists (select 1 from rfs)
                then greatest(
                       coalesce((select sum(amount) from rfs where status not in ('failed', 'canceled')), 0),
                       coalesce((select sum(amount_refunded) from chs), 0)
                         - coalesce((select sum(amount) from rfs where status in ('failed', 'canceled')), 0))
                else coalesce((select sum(amount_refunded) from chs), 0)
           end as refunded,
           coalesce((select sum(amount) from dps
                      where status = 'lost'
                         or (funds_withdrawn and not funds_reinstated and status <> 'won')), 0) as disputed
  )
  select t.paid::bigint,
         (t.refunded + t.disputed)::bigint,
         case when t.disputed > 0 then 'disputed' when t.refunded > 0 then 'refunded' end,
         exists (select 1 from rfs where status in ('failed', 'canceled'))
           or exists (select 1 from dps where funds_reinstated or status = 'won')
    from totals t
$$;

-- The intents behind a grant.
create or replace function public.grant_intents(p_grant public.access_grants)
returns text[]
language sql
stable
set search_path = ''
as $$
  select array(
    select p_grant.stripe_payment_intent_id where p_grant.stripe_payment_intent_id is not null
    union
    select ip.stripe_payment_intent_id from public.invoice_payments ip
     where ip.stripe_invoice_id = p_grant.stripe_invoice_id)
$$;

-- Recomputes a grant's status from its money and mirrors it into its voucher. Returns true
-- when the status changed (the caller then refreshes the account's coverage).
create or replace function public.refresh_grant_status(p_grant_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
as $$
declare
  g public.access_grants;
  m record;
  v_status text;
  v_reason text;
  v_invoice_paid bigint;
begin
  select * into g from public.access_grants where id = p_grant_id;
  if not found or g.kind in ('baseline', 'trial') then
    return false;
  end if;
  select i.amount_paid into v_invoice_paid from public.invoices i where i.stripe_invoice_id = g.stripe_invoice_id;
  select * into m from public.money_reversal(public.grant_intents(g), v_invoice_paid);
  if m.paid > 0 and m.returned >= m.paid then
    v_status := 'revoked';
    v_reason := m.reason;
  elsif m.reversed then
    v_status := 'restored';
  else
    v_status := 'active';
  end if;
  update public.vouchers
     set status = case when v_status = 'revoked' then 'revoked' else 'active' end,
         revoked_at = case when v_status = 'revoked' then coalesce(revoked_at, now()) end,
         updated_by = 'stripe-worker'
   where (id = g.voucher_id or grant_id = g.id)
     and status is distinct from case when v_status = 'revoked' then 'revoked' else 'active' end;
  if g.status is not distinct from v_status and g.revoked_reason is not distinct from v_reason then
    return false;
  end if;
  update public.access_grants set status = v_status, revoked_reason = v_reason where id = g.id;
  return true;
end
$$;

-- accounts.expiry from the account's grants (the rule at the top of this file). Locks the
-- account row first, so concurrent refreshes of one account run one after the other. Returns
-- the new expiry text.
create or replace function public.refresh_account_access(p_account_id uuid)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  g record;
  v_cover timestamptz;
  v_as_of timestamptz;
  v_start timestamptz;
  v_end timestamptz;
  v_expiry text;
begin
  perform 1 from public.accounts where id = p_account_id for update;
  select period_start into v_as_of
    from public.access_grants where account_id = p_account_id and kind = 'baseline';

  for g in
    select ag.id, ag.kind, ag.months, ag.period_start, ag.period_end, ag.effective_at, ag.status,
           ag.coverage_start, ag.coverage_end,
           -- the next granted period of the same subscription cuts this one short
           case when ag.kind in ('subscription_period', 'trial') then
             lead(ag.period_start) over (partition by ag.stripe_subscription_id,
                                                      ag.kind in ('subscription_period', 'trial')
                                         order by ag.period_start, ag.source)
           end as next_period_start
      from public.access_grants ag
     where ag.account_id = p_account_id and ag.status <> 'revoked'
     order by ag.effective_at, ag.source
  loop
    v_start := null;
    v_end := null;
    if g.kind = 'baseline' then
      v_start := g.period_start;
      v_end := g.period_end;
    elsif v_as_of is not null and g.effective_at < v_as_of then
      null;  -- paid before the ledger began: already part of the starting balance
    elsif g.kind in ('subscription_period', 'trial') then
      if least(g.period_end, coalesce(g.next_period_start, g.period_end)) > g.period_start then
        v_start := greatest(g.period_start, v_cover);
        v_end := v_start + (least(g.period_end, coalesce(g.next_period_start, g.period_end)) - g.period_start);
      end if;
    elsif coalesce(g.months, 0) > 0 then
      v_start := greatest(g.effective_at, v_cover);
      v_end := public.add_months_utc(v_start, g.months);
    end if;
    if v_end is not null then
      v_cover := greatest(v_cover, v_end);
    end if;
    if g.coverage_start is distinct from v_start or g.coverage_end is distinct from v_end then
      update public.access_grants set coverage_start = v_start, coverage_end = v_end where id = g.id;
    end if;
  end loop;

  update public.access_grants set coverage_start = null, coverage_end = null
   where account_id = p_account_id and status = 'revoked' and coverage_end is not null;

  v_expiry := public.format_expiry(v_cover);
  update public.accounts set expiry = v_expiry
   where id = p_account_id and expiry is distinct from v_expiry;
  return v_expiry;
end
$$;

-- The voucher of a grant paid with money: created once, then kept in step with the grant.
create or replace function public.mirror_grant_voucher(p_grant_id uuid, p_duration_months integer)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  g public.access_grants;
  v_account_number text;
  v_intent uuid;
  v_subscription text;
  v_id uuid;
begin
  select * into g from public.access_grants where id = p_grant_id;
  select a.account_number into v_account_number from public.accounts a where a.id = g.account_id;
  select pi.id into v_intent from public.payment_intents pi
   where pi.stripe_payment_intent_id = coalesce(g.stripe_payment_intent_id,
           (select ip.stripe_payment_intent_id from public.invoice_payments ip
             where ip.stripe_invoice_id = g.stripe_invoice_id
             order by ip.stripe_payment_intent_id limit 1));
  select s.id into v_subscription from public.subscriptions s where s.id = g.stripe_subscription_id;
  insert into public.vouchers as v
    (code, duration_months, is_used, used_at, associated_account, status, payment_intent_id,
     subscription_id, period_start, period_end, updated_by, source, grant_id)
  values
    (public.generate_voucher_code(), p_duration_months, true, now(), v_account_number, 'active',
     v_intent, v_subscription, g.period_start, g.period_end, 'stripe-worker', g.source, g.id)
  on conflict (source) do update
    set duration_months = excluded.duration_months,
        associated_account = excluded.associated_account,
        payment_intent_id = coalesce(excluded.payment_intent_id, v.payment_intent_id),
        subscription_id = coalesce(excluded.subscription_id, v.subscription_id),
        period_start = excluded.period_start,
        period_end = excluded.period_end,
        grant_id = excluded.grant_id,
        updated_by = 'stripe-worker'
    where (v.duration_months, v.associated_account, v.payment_intent_id, v.subscription_id,
           v.period_start, v.period_end, v.grant_id)
          is distinct from
          (excluded.duration_months, excluded.associated_account,
           coalesce(excluded.payment_intent_id, v.payment_intent_id),
           coalesce(excluded.subscription_id, v.subscription_id),
           excluded.period_start, excluded.period_end, excluded.grant_id)
  returning v.id into v_id;
  if v_id is null then
    select id into v_id from public.vouchers where source = g.source;
  end if;
  if g.voucher_id is distinct from v_id then
    update public.access_grants set voucher_id = v_id where id = g.id;
  end if;
  return v_id;
end
$$;

-- Writes (or removes) the grant with this source. p_grant carries the wanted row: NULL means
-- no grant should exist. Locks the account first (account -> grant -> voucher, the order every
-- writer follows), then refreshes status and coverage.
create or replace function public.put_grant(
  p_source text,
  p_account_id uuid,
  p_grant public.access_grants,
  p_voucher_months integer
) returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_existing public.access_grants;
  v_id uuid;
begin
  select * into v_existing from public.access_grants where source = p_source;
  if p_grant.kind is null then
    if found then
      perform 1 from public.accounts where id = v_existing.account_id for update;
      delete from public.vouchers where source = p_source and grant_id = v_existing.id;
      delete from public.access_grants where id = v_existing.id;
      perform public.refresh_account_access(v_existing.account_id);
    end if;
    return;
  end if;

  perform 1 from public.accounts where id = p_account_id for update;
  insert into public.access_grants as ag
    (account_id, source, kind, stripe_event_id, stripe_payment_intent_id, stripe_invoice_id,
     stripe_subscription_id, price_id, months, terms_known, period_start, period_end, effective_at)
  values
    (p_account_id, p_source, p_grant.kind,
     -- the event being processed (the worker sets stripe_worker.event_id in each event's transaction)
     coalesce(p_grant.stripe_event_id, nullif(current_setting('stripe_worker.event_id', true), '')),
     p_grant.stripe_payment_intent_id,
     p_grant.stripe_invoice_id, p_grant.stripe_subscription_id, p_grant.price_id, p_grant.months,
     coalesce(p_grant.terms_known, true), p_grant.period_start, p_grant.period_end, p_grant.effective_at)
  on conflict (source) do update
    set account_id = excluded.account_id,
        kind = excluded.kind,
        stripe_event_id = coalesce(ag.stripe_event_id, excluded.stripe_event_id),
        stripe_payment_intent_id = excluded.stripe_payment_intent_id,
        stripe_invoice_id = excluded.stripe_invoice_id,
        stripe_subscription_id = excluded.stripe_subscription_id,
        price_id = excluded.price_id,
        -- terms are fixed once known: a later change of the catalog never rewrites a purchase
        months = case when ag.terms_known and ag.price_id is not distinct from excluded.price_id
                      then ag.months else excluded.months end,
        terms_known = case when ag.price_id is not distinct from excluded.price_id
                           then ag.terms_known or excluded.terms_known else excluded.terms_known end,
        period_start = excluded.period_start,
        period_end = excluded.period_end,
        effective_at = excluded.effective_at
    where (ag.account_id, ag.kind, ag.stripe_payment_intent_id, ag.stripe_invoice_id,
           ag.stripe_subscription_id, ag.price_id, ag.months, ag.terms_known, ag.period_start,
           ag.period_end, ag.effective_at)
          is distinct from
          (excluded.account_id, excluded.kind, excluded.stripe_payment_intent_id,
           excluded.stripe_invoice_id, excluded.stripe_subscription_id, excluded.price_id,
           case when ag.terms_known and ag.price_id is not distinct from excluded.price_id
                then ag.months else excluded.months end,
           case when ag.price_id is not distinct from excluded.price_id
                then ag.terms_known or excluded.terms_known else excluded.terms_known end,
           excluded.period_start, excluded.period_end,
           excluded.effective_at)
       or ag.stripe_event_id is null and excluded.stripe_event_id is not null
  returning ag.id into v_id;
  if v_id is null then
    select id into v_id from public.access_grants where source = p_source;
  end if;
  if p_voucher_months is not null then
    perform public.mirror_grant_voucher(v_id, p_voucher_months);
  end if;
  perform public.refresh_grant_status(v_id);
  if v_existing.account_id is not null and v_existing.account_id <> p_account_id then
    perform public.refresh_account_access(v_existing.account_id);
  end if;
  perform public.refresh_account_access(p_account_id);
end
$$;

-- ---------------------------------------------------------------------------------------
-- Deriving grants from facts.

-- A payment intent is a one-time purchase when it succeeded, its buyer is known, it is not an
-- invoice's payment, and something names what was bought: a paid Checkout Session
-- (mode=payment) or the price in its metadata. A manual price gives an unused gift voucher
-- instead of a grant.
create or replace function public.sync_purchase_grant(p_intent_row uuid, p_event_id text default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  pi public.payment_intents;
  t record;
  v_source text;
  v_account uuid;
  v_grant public.access_grants;
  v_number text;
begin
  select * into pi from public.payment_intents where id = p_intent_row;
  if not found then
    return;
  end if;
  v_source := 'payment_intent:' || pi.stripe_payment_intent_id;
  select * into t from public.price_voucher_terms(pi.price_id);
  if pi.status <> 'succeeded' or pi.customer_id is null or pi.recorded_before_ledger
     or (pi.checkout_session_id is null and pi.price_id is null)
     or t.recurring
     or exists (select 1 from public.invoice_payments ip
                 where ip.stripe_payment_intent_id = pi.stripe_payment_intent_id) then
    perform public.put_grant(v_source, null, null, null);
    return;
  end if;
  v_account := public.ensure_account(pi.customer_id);

  if t.manual then
    -- A gift code: the buyer (or whoever they give it to) redeems it later.
    perform public.put_grant(v_source, null, null, null);
    select a.account_number into v_number from public.accounts a where a.id = v_account;
    insert into public.vouchers as v (code, duration_months, is_used, associated_account, status,
                                      payment_intent_id, updated_by, source)
    values (public.generate_voucher_code(), t.months, false, v_number, 'active', pi.id,
            'stripe-worker', v_source)
    on conflict (source) do update
      set duration_months = excluded.duration_months, updated_by = 'stripe-worker'
      where not v.is_used and v.duration_months <> excluded.duration_months;
    perform public.refresh_gift_voucher(v_source);
    return;
  end if;

  v_grant.kind := 'purchase';
  v_grant.stripe_event_id := p_event_id;
  v_grant.stripe_payment_intent_id := pi.stripe_payment_intent_id;
  v_grant.price_id := pi.price_id;
  v_grant.months := t.months;
  v_grant.terms_known := t.known;
  v_grant.effective_at := coalesce(pi.paid_at, pi.created_at, now());
  perform public.put_grant(v_source, v_account, v_grant, t.months);
end
$$;

-- An unused gift voucher follows its payment: revoked while the money is returned.
create or replace function public.refresh_gift_voucher(p_source text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  v record;
  m record;
  v_revoked boolean;
begin
  select vo.id, vo.status, pi.stripe_payment_intent_id into v
    from public.vouchers vo join public.payment_intents pi on pi.id = vo.payment_intent_id
   where vo.source = p_source and not vo.is_used;
  if not found then
    return;
  end if;
  select * into m from public.money_reversal(array[v.stripe_payment_intent_id], null);
  v_revoked := m.paid > 0 and m.returned >= m.paid;
  update public.vouchers
     set status = case when v_revoked then 'revoked' else 'active' end,
         revoked_at = case when v_revoked then coalesce(revoked_at, now()) end,
         updated_by = 'stripe-worker'
   where id = v.id and status is distinct from case when v_revoked then 'revoked' else 'active' end;
end
$$;

-- A paid invoice grants what it paid for: a subscription invoice its billing period; a
-- one-off invoice its lines' terms. An invoice with nothing paid grants nothing (a trial's $0
-- invoice: the trial grants), except one fully discounted (subtotal > 0): the shop gave it.
create or replace function public.sync_invoice_grant(p_invoice_id text, p_event_id text default null)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  inv public.invoices;
  v_source text := 'invoice:' || p_invoice_id;
  v_account uuid;
  v_grant public.access_grants;
  v_price text;
  v_months integer := 0;
  v_known boolean := true;
  l jsonb;
  t record;
begin
  select * into inv from public.invoices where stripe_invoice_id = p_invoice_id;
  if not found or inv.status <> 'paid' or inv.user_id is null
     or not (coalesce(inv.amount_paid, 0) > 0 or coalesce(inv.subtotal, 0) > 0) then
    perform public.put_grant(v_source, null, null, null);
    return;
  end if;
  v_grant.stripe_event_id := p_event_id;
  v_grant.stripe_invoice_id := inv.stripe_invoice_id;
  v_grant.stripe_subscription_id := inv.stripe_subscription_id;

  if inv.stripe_subscription_id is not null then
    if inv.period_start is null or inv.period_end is null or inv.period_end <= inv.period_start then
      perform public.put_grant(v_source, null, null, null);
      return;
    end if;
    select l2 ->> 'price' into v_price
      from jsonb_array_elements(inv.lines) l2
     where not coalesce((l2 ->> 'proration')::boolean, false) and l2 ->> 'price' is not null
     order by (l2 ->> 'period_end')::bigint desc nulls last
     limit 1;
    v_grant.kind := 'subscription_period';
    v_grant.price_id := v_price;
    -- the period voucher's months need the price's interval: completed when the price arrives
    v_grant.terms_known := exists (select 1 from public.prices p where p.id = v_price and p.interval is not null);
    v_grant.period_start := inv.period_start;
    v_grant.period_end := inv.period_end;
    v_grant.effective_at := inv.period_start;
    v_account := public.ensure_account(inv.user_id);
    perform public.put_grant(v_source, v_account, v_grant, public.price_period_months(v_price));
    return;
  end if;

  for l in select * from jsonb_array_elements(inv.lines) loop
    if l ->> 'price' is null or coalesce((l ->> 'amount')::bigint, 0) < 0 then
      continue;
    end if;
    select * into t from public.price_voucher_terms(l ->> 'price');
    if t.recurring then
      continue;
    end if;
    v_months := v_months + t.months * greatest(coalesce((l ->> 'quantity')::integer, 1), 1);
    v_known := v_known and t.known;
    v_price := coalesce(v_price, l ->> 'price');
  end loop;
  if v_months <= 0 then
    perform public.put_grant(v_source, null, null, null);
    return;
  end if;
  v_grant.kind := 'invoice';
  v_grant.price_id := v_price;
  v_grant.months := v_months;
  v_grant.terms_known := v_known;
  v_grant.effective_at := coalesce(inv.paid_at, inv.invoice_created_at, now());
  v_account := public.ensure_account(inv.user_id);
  perform public.put_grant(v_source, v_account, v_grant, v_months);
end
$$;

-- A trial grants trial_start .. trial_end (ended_at when the subscription ended earlier).
create or replace function public.sync_trial_grant(p_subscription_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  s public.subscriptions;
  v_end timestamptz;
  v_grant public.access_grants;
begin
  select * into s from public.subscriptions where id = p_subscription_id;
  if not found then
    return;
  end if;
  v_end := least(s.trial_end, coalesce(s.ended_at, s.trial_end));
  if s.trial_start is null or s.trial_end is null or v_end <= s.trial_start then
    perform public.put_grant('trial:' || s.id, null, null, null);
    return;
  end if;
  v_grant.kind := 'trial';
  v_grant.stripe_subscription_id := s.id;
  v_grant.price_id := s.price_id;
  v_grant.period_start := s.trial_start;
  v_grant.period_end := v_end;
  v_grant.effective_at := s.trial_start;
  perform public.put_grant('trial:' || s.id, public.ensure_account(s.user_id), v_grant, 0);
end
$$;

-- Grants whose money moved (a refund, a dispute, a charge update, an invoice link) get their
-- status recomputed, and their accounts their coverage.
create or replace function public.refresh_grants_for_intents(p_intents text[])
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  g record;
  v_accounts uuid[] := '{}'::uuid[];
  v_account uuid;
begin
  for g in
    select ag.id, ag.account_id
      from public.access_grants ag
     where ag.stripe_payment_intent_id = any (p_intents)
        or ag.stripe_invoice_id in (select ip.stripe_invoice_id from public.invoice_payments ip
                                     where ip.stripe_payment_intent_id = any (p_intents))
     order by ag.account_id, ag.id
  loop
    perform 1 from public.accounts where id = g.account_id for update;
    if public.refresh_grant_status(g.id) and not (g.account_id = any (v_accounts)) then
      v_accounts := v_accounts || g.account_id;
    end if;
  end loop;
  foreach v_account in array v_accounts loop
    perform public.refresh_account_access(v_account);
  end loop;
  perform public.refresh_gift_voucher('payment_intent:' || i) from unnest(p_intents) i;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Triggers: facts in, grants out.
create or replace function public.derive_grants_from_payment_intent()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status = 'succeeded' or (tg_op = 'UPDATE' and old.status = 'succeeded') then
    perform public.sync_purchase_grant(new.id);
  end if;
  return null;
end
$$;

create or replace function public.derive_grants_from_invoice()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.sync_invoice_grant(new.stripe_invoice_id);
  return null;
end
$$;

create or replace function public.derive_grants_from_invoice_payment()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  -- an intent that turns out to pay an invoice is no one-time purchase
  perform public.sync_purchase_grant(pi.id)
     from public.payment_intents pi where pi.stripe_payment_intent_id = new.stripe_payment_intent_id;
  perform public.sync_invoice_grant(new.stripe_invoice_id);
  perform public.refresh_grants_for_intents(array[new.stripe_payment_intent_id]);
  return null;
end
$$;

-- Charges, refunds and disputes: the money behind grants moved.
create or replace function public.derive_grants_from_money_movement()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_intents text[];
begin
  if tg_table_name = 'charges' then
    v_intents := array(select pi.stripe_payment_intent_id from public.payment_intents pi
                        where pi.id = new.payment_intent_id);
  else
    v_intents := array(select x from unnest(array[new.stripe_payment_intent_id]) x where x is not null
                       union
                       select pi.stripe_payment_intent_id from public.charges c
                         join public.payment_intents pi on pi.id = c.payment_intent_id
                        where c.stripe_charge_id = new.stripe_charge_id);
  end if;
  if cardinality(v_intents) > 0 then
    perform public.refresh_grants_for_intents(v_intents);
  end if;
  return null;
end
$$;

-- The production triggers on subscriptions call these two functions (the insert trigger twice
-- per row): the trial follows the row; a stored subscription is named by its vouchers.
create or replace function public.create_voucher_for_new_subscription()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.sync_trial_grant(new.id);
  if tg_op = 'INSERT' then
    update public.vouchers v set subscription_id = new.id
      from public.access_grants ag
     where ag.stripe_subscription_id = new.id and v.grant_id = ag.id and v.subscription_id is null;
  end if;
  return null;
end
$$;

-- A subscription that ends leaves its paid time alone; unused vouchers of it (issued before
-- this ledger) are canceled.
create or replace function public.update_voucher_on_subscription_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status::text in ('canceled', 'unpaid', 'incomplete_expired') then
    update public.vouchers v
       set status = 'canceled', updated_by = 'stripe-worker'
     where v.subscription_id = new.id
       and not v.is_used
       and v.status is distinct from 'canceled'
       and v.status is distinct from 'revoked';
  end if;
  return null;
end
$$;

-- A price (or its product) that arrives after a purchase completes the purchase's terms.
create or replace function public.complete_grant_terms()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  g record;
begin
  for g in
    select ag.source, ag.stripe_payment_intent_id, ag.stripe_invoice_id
      from public.access_grants ag
     where not ag.terms_known
       and (ag.price_id = new.id
            or (tg_table_name = 'products'
                and ag.price_id in (select p.id from public.prices p where p.product_id = new.id)))
  loop
    if g.stripe_invoice_id is not null then
      perform public.sync_invoice_grant(g.stripe_invoice_id);
    else
      perform public.sync_purchase_grant(pi.id)
         from public.payment_intents pi where pi.stripe_payment_intent_id = g.stripe_payment_intent_id;
    end if;
  end loop;
  return null;
end
$$;

do $$
declare t record;
begin
  for t in select * from (values
    ('public.payment_intents', 'payment_intents_derive_grants',
     'after insert or update of status, customer_id, price_id, checkout_session_id, paid_at on public.payment_intents for each row execute function public.derive_grants_from_payment_intent()'),
    ('public.invoices', 'invoices_derive_grants',
     'after insert or update on public.invoices for each row execute function public.derive_grants_from_invoice()'),
    ('public.invoice_payments', 'invoice_payments_derive_grants',
     'after insert on public.invoice_payments for each row execute function public.derive_grants_from_invoice_payment()'),
    ('public.charges', 'charges_derive_grants',
     'after insert or update of amount, amount_refunded, status, payment_intent_id on public.charges for each row execute function public.derive_grants_from_money_movement()'),
    ('public.refunds', 'refunds_derive_grants',
     'after insert or update of amount, status, stripe_charge_id, stripe_payment_intent_id on public.refunds for each row execute function public.derive_grants_from_money_movement()'),
    ('public.disputes', 'disputes_derive_grants',
     'after insert or update of amount, status, funds_withdrawn, funds_reinstated, stripe_charge_id, stripe_payment_intent_id on public.disputes for each row execute function public.derive_grants_from_money_movement()'),
    ('public.prices', 'prices_complete_grant_terms',
     'after insert or update of metadata, type, product_id on public.prices for each row execute function public.complete_grant_terms()'),
    ('public.products', 'products_complete_grant_terms',
     'after insert or update of metadata, name on public.products for each row execute function public.complete_grant_terms()')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_trigger where tgrelid = t.tbl::regclass and tgname = t.name and not tgisinternal) then
      execute format('create trigger %I %s', t.name, t.def);
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Gift codes (PostgREST RPC as role authenticated). One answer for every code the caller
-- cannot redeem (unknown, used, revoked, canceled, or tied to someone else's account), so codes
-- cannot be probed; failed attempts are counted per user and limited; anonymous sign-ins
-- cannot redeem. A failure returns normally with an HTTP status for PostgREST
-- (response.status), so the counted attempt commits.
create table if not exists public.voucher_redemption_attempts (
  id bigserial primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  succeeded boolean not null,
  attempted_at timestamptz not null default now()
);
create index if not exists voucher_redemption_attempts_user_idx
  on public.voucher_redemption_attempts (user_id, attempted_at) where not succeeded;

-- The parameter is named `code` because PostgREST passes RPC arguments by name.
create or replace function public.redeem_voucher(code text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  c_max_failures constant integer := 10;           -- per user and rolling hour
  v_uid uuid := auth.uid();
  v_claims jsonb := coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb;
  v_code text := upper(btrim(redeem_voucher.code));
  v_voucher public.vouchers%rowtype;
  v_account uuid;
  v_number text;
  v_grant public.access_grants;
  v_expiry text;
begin
  if v_uid is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  if coalesce((v_claims ->> 'is_anonymous')::boolean, false) then
    raise exception 'anonymous users cannot redeem codes: sign in with an email first' using errcode = '42501';
  end if;
  if (select count(*) from public.voucher_redemption_attempts a
       where a.user_id = v_uid and not a.succeeded and a.attempted_at > now() - interval '1 hour')
     >= c_max_failures then
    perform set_config('response.status', '429', true);
    return jsonb_build_object('error', 'too many attempts: try again in an hour');
  end if;

  v_account := public.ensure_account(v_uid);
  select a.account_number into v_number from public.accounts a where a.id = v_account;

  select * into v_voucher
    from public.vouchers v
   where upper(v.code) = v_code
   order by (v.code = btrim(redeem_voucher.code)) desc, v.created_at, v.id
   limit 1
   for update;

  if not found or v_code = ''
     or v_voucher.is_used or v_voucher.revoked_at is not null
     or coalesce(v_voucher.status, 'active') <> 'active'
     or (v_voucher.associated_account is not null and v_voucher.associated_account <> v_number) then
    insert into public.voucher_redemption_attempts (user_id, succeeded) values (v_uid, false);
    perform set_config('response.status', '404', true);
    return jsonb_build_object('error', 'this code cannot be redeemed');
  end if;

  insert into public.voucher_redemption_attempts (user_id, succeeded) values (v_uid, true);
  update public.vouchers
     set is_used = true, used_at = now(), associated_account = v_number, updated_by = v_uid::text
   where id = v_voucher.id;

  v_grant.kind := 'gift_code';
  v_grant.months := v_voucher.duration_months;
  v_grant.effective_at := now();
  v_grant.stripe_payment_intent_id :=
    (select pi.stripe_payment_intent_id from public.payment_intents pi where pi.id = v_voucher.payment_intent_id);
  perform public.put_grant('voucher:' || v_voucher.id, v_account, v_grant, null);
  update public.access_grants set voucher_id = v_voucher.id
   where source = 'voucher:' || v_voucher.id and voucher_id is distinct from v_voucher.id;
  update public.vouchers set grant_id = (select id from public.access_grants where source = 'voucher:' || v_voucher.id)
   where id = v_voucher.id;
  select expiry into v_expiry from public.accounts where id = v_account;

  return jsonb_build_object(
    'account_number', v_number,
    'expiry', v_expiry,
    'duration_months', v_voucher.duration_months);
end
$$;

-- ---------------------------------------------------------------------------------------
-- The starting balance: an account's expiry as it stood when the ledger began is its first
-- grant, so nobody loses a day at migration. Only accounts without any grant get one, so a
-- rerun adds nothing.
insert into public.access_grants (account_id, source, kind, period_start, period_end, effective_at,
                                  coverage_start, coverage_end)
select a.id, 'baseline:' || a.id, 'baseline', now(), public.account_expiry(a.expiry), '-infinity',
       now(), public.account_expiry(a.expiry)
  from public.accounts a
 where public.account_expiry(a.expiry) is not null
   and not exists (select 1 from public.access_grants g where g.account_id = a.id)
on conflict (source) do nothing;

-- ---------------------------------------------------------------------------------------
-- Reading it: public.account_access, one row per grant, for the grant's owner (security
-- invoker: the RLS policies of the tables below apply). "Why does my account expire on X?" is
--   select * from account_access order by coverage_start nulls last;
create or replace view public.account_access with (security_invoker = true) as
select g.id as grant_id,
       a.id as account_id,
       a.account_number,
       a.user_id,
       g.kind,
       case g.kind
         when 'baseline' then 'starting balance'
         when 'purchase' then 'payment ' || g.stripe_payment_intent_id
         when 'subscription_period' then 'invoice ' || g.stripe_invoice_id
         when 'invoice' then 'invoice ' || g.stripe_invoice_id
         when 'trial' then 'trial of ' || g.stripe_subscription_id
         when 'gift_code' then 'gift code ' || coalesce(v.code, '')
       end as source,
       g.stripe_event_id,
       g.stripe_payment_intent_id,
       g.stripe_invoice_id,
       g.stripe_subscription_id,
       g.price_id,
       v.code as voucher_code,
       g.months,
       g.terms_known,
       g.period_start,
       g.period_end,
       g.effective_at,
       g.status,
       g.revoked_reason,
       g.coverage_start,
       g.coverage_end,
       a.expiry as account_expiry
  from public.access_grants g
  join public.accounts a on a.id = g.account_id
  left join public.vouchers v on v.id = g.voucher_id;

comment on view public.account_access is
  'One row per grant of access with the days it covers: why an account expires when it does. '
  'Security invoker: each user sees their own grants.';

-- public.my_account: everything the account page needs in one round trip, for the caller only
-- (security invoker). One row per account of the caller (one row with NULL account fields when
-- they have none yet); nothing for anon (no grant) or a session without a JWT subject.
--   expiry / expiry_at   accounts.expiry as stored, and as timestamptz
--   subscription_*       the caller's current subscription: active/trialing first, then past_due
--   unused_vouchers      [{code, duration_months, created_at}] of the account's redeemable codes
create or replace view public.my_account with (security_invoker = true) as
select me.user_id,
       a.id as account_id,
       a.account_number,
       a.status,
       a.expiry,
       public.account_expiry(a.expiry) as expiry_at,
       s.id as subscription_id,
       s.status as subscription_status,
       s.current_period_end,
       s.cancel_at_period_end,
       s.price_id,
       coalesce(uv.unused_vouchers, '[]'::jsonb) as unused_vouchers
  from (select (select auth.uid()) as user_id) me
  left join public.accounts a on a.user_id = me.user_id
  left join lateral (
         select s.id, s.status, s.current_period_end, s.cancel_at_period_end, s.price_id
           from public.subscriptions s
          where s.user_id = me.user_id
            and s.status in ('active', 'trialing', 'past_due')
          order by (s.status in ('active', 'trialing')) desc, s.current_period_end desc, s.id
          limit 1) s on true
  left join lateral (
         select jsonb_agg(jsonb_build_object('code', v.code,
                                             'duration_months', v.duration_months,
                                             'created_at', v.created_at)
                          order by v.created_at, v.code) as unused_vouchers
           from public.vouchers v
          where v.associated_account = a.account_number
            and not v.is_used and v.used_at is null and coalesce(v.status, 'active') = 'active'
            and v.revoked_at is null) uv on true
 where me.user_id is not null;

comment on view public.my_account is
  'The signed-in user''s accounts with expiry, current subscription and unused vouchers (security invoker: RLS applies). Read by the frontend''s account page.';

-- ---------------------------------------------------------------------------------------
-- Who may read what.
do $$
declare
  t text;
begin
  foreach t in array array['vouchers', 'access_grants', 'voucher_redemption_attempts'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('revoke all on table public.%I from public, anon, authenticated', t);
    execute format('grant all on table public.%I to service_role', t);
  end loop;
end
$$;
revoke all on sequence public.voucher_redemption_attempts_id_seq from public, anon, authenticated;
grant all on sequence public.voucher_redemption_attempts_id_seq to service_role;
grant select on table public.vouchers, public.access_grants to authenticated;

-- Through the caller's accounts. `= any (array(subquery))` is an InitPlan computed once and
-- uses the index; `in (subquery)` would be a hashed SubPlan over every row.
drop policy if exists vouchers_select_own on public.vouchers;
create policy vouchers_select_own on public.vouchers
  for select to authenticated
  using (associated_account = any (array(select a.account_number from public.accounts a
                                          where a.user_id = (select auth.uid()))));

drop policy if exists access_grants_select_own on public.access_grants;
create policy access_grants_select_own on public.access_grants
  for select to authenticated
  using (account_id = any (array(select a.id from public.accounts a
                                  where a.user_id = (select auth.uid()))));

revoke all on table public.account_access, public.my_account from public, anon, authenticated;
grant select on table public.account_access, public.my_account to authenticated, service_role;

-- Internal functions: the worker (owner) and service_role only. redeem_voucher: signed-in
-- users. account_expiry is read by the views, so their callers need it (a pure parser).
revoke all on function public.generate_voucher_code() from public, anon, authenticated;
revoke all on function public.format_expiry(timestamptz) from public, anon, authenticated;
revoke all on function public.add_months_utc(timestamptz, integer) from public, anon, authenticated;
revoke all on function public.account_expiry(text) from public, anon;
grant execute on function public.account_expiry(text) to authenticated, service_role;
revoke all on function public.money_reversal(text[], bigint) from public, anon, authenticated;
revoke all on function public.grant_intents(public.access_grants) from public, anon, authenticated;
revoke all on function public.refresh_grant_status(uuid) from public, anon, authenticated;
revoke all on function public.refresh_account_access(uuid) from public, anon, authenticated;
revoke all on function public.mirror_grant_voucher(uuid, integer) from public, anon, authenticated;
revoke all on function public.put_grant(text, uuid, public.access_grants, integer) from public, anon, authenticated;
revoke all on function public.sync_purchase_grant(uuid, text) from public, anon, authenticated;
revoke all on function public.refresh_gift_voucher(text) from public, anon, authenticated;
revoke all on function public.sync_invoice_grant(text, text) from public, anon, authenticated;
revoke all on function public.sync_trial_grant(text) from public, anon, authenticated;
revoke all on function public.refresh_grants_for_intents(text[]) from public, anon, authenticated;
revoke all on function public.derive_grants_from_payment_intent() from public, anon, authenticated;
revoke all on function public.derive_grants_from_invoice() from public, anon, authenticated;
revoke all on function public.derive_grants_from_invoice_payment() from public, anon, authenticated;
revoke all on function public.derive_grants_from_money_movement() from public, anon, authenticated;
revoke all on function public.create_voucher_for_new_subscription() from public, anon, authenticated;
revoke all on function public.update_voucher_on_subscription_change() from public, anon, authenticated;
revoke all on function public.complete_grant_terms() from public, anon, authenticated;
revoke all on function public.redeem_voucher(text) from public, anon;
grant execute on function public.redeem_voucher(text) to authenticated, service_role;
grant execute on function public.refresh_account_access(uuid) to service_role;
