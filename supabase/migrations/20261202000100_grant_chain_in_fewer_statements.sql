-- A payment's derivation runs fewer statements; every outcome is the same.
--
-- Each statement a PL/pgSQL function runs costs its executor start-up and end whatever it
-- finds (about 15-30 µs here), and a paid purchase ran about forty of them in its triggers.
-- These were repeated or could not find anything:
--
-- * put_grant wrote the grant and then each step read it again by id: the voucher's mirror,
--   the status refresh. The row the upsert returns is now handed on
--   (mirror_voucher_of_grant, refresh_status_of_grant). refresh_grant_status(id) stays for
--   its other caller and reads the row once; the id-taking mirror had no other caller.
-- * The voucher's mirror read the account's number, the payment and the subscription in
--   three statements: now one.
-- * The status refresh looked up the invoice's amount even for a purchase, which has none.
-- * The account's refresh read its starting balance and cleared revoked grants' coverage in
--   two statements of their own: both now come from the one read of the account's grants.
-- * A payment intent's row just inserted has no charges yet (they reference its new id): its
--   attribution no longer updates charges and the refunds and disputes of its charges.
-- * A payment's billing rows read its charges twice and its invoice link once more: now the
--   charges once, with the invoice link, and the loop over them only when there are any.

-- The voucher of a grant paid with money: created once, then kept in step with the grant.
-- Takes the grant's current row; returns the voucher's id.
create or replace function public.mirror_voucher_of_grant(p_grant public.access_grants, p_duration_months integer)
returns uuid
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  v_account_number text;
  v_intent uuid;
  v_subscription text;
  v_id uuid;
begin
  select a.account_number,
         (select pi.id from public.payment_intents pi
           where pi.stripe_payment_intent_id = coalesce(p_grant.stripe_payment_intent_id,
                   (select ip.stripe_payment_intent_id from public.invoice_payments ip
                     where ip.stripe_invoice_id = p_grant.stripe_invoice_id
                     order by ip.stripe_payment_intent_id limit 1))),
         (select s.id from public.subscriptions s where s.id = p_grant.stripe_subscription_id)
    into v_account_number, v_intent, v_subscription
    from public.accounts a where a.id = p_grant.account_id;
  insert into public.vouchers as v
    (code, duration_months, is_used, used_at, associated_account, status, payment_intent_id,
     subscription_id, period_start, period_end, updated_by, source, grant_id)
  values
    (public.generate_voucher_code(), p_duration_months, true, now(), v_account_number, 'active',
     v_intent, v_subscription, p_grant.period_start, p_grant.period_end, 'stripe-worker',
     p_grant.source, p_grant.id)
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
    select id into v_id from public.vouchers where source = p_grant.source;
  end if;
  if p_grant.voucher_id is distinct from v_id then
    update public.access_grants set voucher_id = v_id where id = p_grant.id;
  end if;
  return v_id;
end
$$;

-- put_grant was the only caller of the id-taking mirror.
drop function if exists public.mirror_grant_voucher(uuid, integer);

-- Recomputes a grant's status from its money and mirrors it into its voucher. Takes the
-- grant's current row; returns true when the status changed (the caller then refreshes the
-- account's coverage).
create or replace function public.refresh_status_of_grant(p_grant public.access_grants)
returns boolean
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  m record;
  v_status text;
  v_reason text;
  v_invoice_paid bigint;
begin
  if p_grant.kind in ('baseline', 'trial') then
    return false;
  end if;
  if p_grant.stripe_invoice_id is not null then
    select i.amount_paid into v_invoice_paid
      from public.invoices i where i.stripe_invoice_id = p_grant.stripe_invoice_id;
  end if;
  select * into m from public.money_reversal(public.grant_intents(p_grant), v_invoice_paid);
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
   where (id = p_grant.voucher_id or grant_id = p_grant.id)
     and status is distinct from case when v_status = 'revoked' then 'revoked' else 'active' end;
  if p_grant.status is not distinct from v_status and p_grant.revoked_reason is not distinct from v_reason then
    return false;
  end if;
  update public.access_grants set status = v_status, revoked_reason = v_reason where id = p_grant.id;
  return true;
end
$$;

create or replace function public.refresh_grant_status(p_grant_id uuid)
returns boolean
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  g public.access_grants;
begin
  select * into g from public.access_grants where id = p_grant_id;
  if not found then
    return false;
  end if;
  return public.refresh_status_of_grant(g);
end
$$;

-- accounts.expiry from the account's grants. Locks the account row first, so concurrent
-- refreshes of one account run one after the other. One read of the account's grants gives
-- the starting balance's date (the baseline's), each live grant's coverage and the revoked
-- ones whose coverage is to be cleared. Returns the new expiry text.
create or replace function public.refresh_account_access(p_account_id uuid)
returns text
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  g record;
  v_cover timestamptz;
  v_start timestamptz;
  v_end timestamptz;
  v_expiry text;
begin
  perform 1 from public.accounts where id = p_account_id for update;

  for g in
    select ag.id, ag.kind, ag.months, ag.period_start, ag.period_end, ag.effective_at, ag.status,
           ag.coverage_start, ag.coverage_end,
           -- the next granted period of the same subscription cuts this one short (revoked
           -- grants are a partition of their own: they cut nothing)
           case when ag.kind in ('subscription_period', 'trial') then
             lead(ag.period_start) over (partition by ag.stripe_subscription_id,
                                                      ag.kind in ('subscription_period', 'trial'),
                                                      ag.status = 'revoked'
                                         order by ag.period_start, ag.source)
           end as next_period_start,
           max(ag.period_start) filter (where ag.kind = 'baseline') over () as as_of
      from public.access_grants ag
     where ag.account_id = p_account_id
     order by ag.effective_at, ag.source
  loop
    if g.status = 'revoked' then
      if g.coverage_end is not null then
        update public.access_grants set coverage_start = null, coverage_end = null where id = g.id;
      end if;
      continue;
    end if;
    v_start := null;
    v_end := null;
    if g.kind = 'baseline' then
      v_start := g.period_start;
      v_end := g.period_end;
    elsif g.as_of is not null and g.effective_at < g.as_of then
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

  v_expiry := public.format_expiry(v_cover);
  update public.accounts set expiry = v_expiry
   where id = p_account_id and expiry is distinct from v_expiry;
  return v_expiry;
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
set plan_cache_mode = force_generic_plan
as $$
declare
  v_existing public.access_grants;
  v_row public.access_grants;
  v_voucher uuid;
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
  returning ag.* into v_row;
  if v_row.id is null then
    select * into v_row from public.access_grants where source = p_source;
  end if;
  if p_voucher_months is not null then
    v_voucher := public.mirror_voucher_of_grant(v_row, p_voucher_months);
    v_row.voucher_id := v_voucher;
  end if;
  perform public.refresh_status_of_grant(v_row);
  if v_existing.account_id is not null and v_existing.account_id <> p_account_id then
    perform public.refresh_account_access(v_existing.account_id);
  end if;
  perform public.refresh_account_access(p_account_id);
end
$$;

create or replace function public.attribute_payment_rows()
returns trigger
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  v_charges text[];
  v_intent text;
begin
  if tg_op = 'UPDATE' and new.customer_id is not distinct from old.customer_id then
    return null;
  end if;
  if tg_table_name = 'payment_intents' then
    v_intent := new.stripe_payment_intent_id;
    if tg_op = 'UPDATE' then
      -- a row just inserted has no charges: they reference its id
      update public.charges set customer_id = new.customer_id
       where payment_intent_id = new.id and customer_id is null;
      v_charges := array(select c.stripe_charge_id from public.charges c where c.payment_intent_id = new.id);
    end if;
  else
    v_charges := array[new.stripe_charge_id];
  end if;
  -- two probes, each on its own index (one condition with OR reads the whole table)
  if v_intent is not null then
    update public.refunds set user_id = new.customer_id
     where user_id is null and stripe_payment_intent_id = v_intent;
    update public.disputes set user_id = new.customer_id
     where user_id is null and stripe_payment_intent_id = v_intent;
  end if;
  if cardinality(v_charges) > 0 then
    update public.refunds set user_id = new.customer_id
     where user_id is null and stripe_charge_id = any (v_charges);
    update public.disputes set user_id = new.customer_id
     where user_id is null and stripe_charge_id = any (v_charges);
  end if;
  return null;
end
$$;

create or replace function public.refresh_payment_history(p_intent text)
returns void
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  pi public.payment_intents;
  c record;
  v_charges text[];
  v_invoiced boolean;
  v_known bigint;
  v_inactive bigint;
  v_rest bigint;
begin
  select * into pi from public.payment_intents where stripe_payment_intent_id = p_intent;
  if not found then
    return;
  end if;
  select array(select ch.stripe_charge_id from public.charges ch where ch.payment_intent_id = pi.id),
         exists (select 1 from public.invoice_payments ip where ip.stripe_payment_intent_id = p_intent)
    into v_charges, v_invoiced;

  if pi.status = 'succeeded' and not v_invoiced then
    perform public.put_billing_row(
      p_intent, 'stripe.payment_intent.succeeded', pi.customer_id, pi.amount, pi.currency,
      coalesce(pi.paid_at, pi.created_at), pi.status,
      jsonb_build_object('payment_intent', p_intent, 'customer', pi.stripe_customer_id,
                         'checkout_session', pi.checkout_session_id, 'price', pi.price_id));
  else
    delete from public.events where source = 'stripe' and external_id = p_intent;
  end if;

  perform public.refresh_refund_history(r.stripe_refund_id)
     from public.refunds r
    where r.stripe_payment_intent_id = p_intent
       or r.stripe_charge_id = any (v_charges);

  if cardinality(v_charges) > 0 then
    for c in select * from public.charges ch where ch.payment_intent_id = pi.id loop
      select coalesce(sum(r.amount) filter (where r.status not in ('failed', 'canceled')), 0),
             coalesce(sum(r.amount) filter (where r.status in ('failed', 'canceled')), 0)
        into v_known, v_inactive
        from public.refunds r where r.stripe_charge_id = c.stripe_charge_id;
      v_rest := greatest(c.amount_refunded - v_inactive - v_known, 0);
      if v_rest > 0 then
        perform public.put_billing_row(
          'refunds:' || c.stripe_charge_id, 'stripe.charge.refunded', c.customer_id, -v_rest,
          c.currency, coalesce(c.refunded_at, c.created_at), 'succeeded',
          jsonb_build_object('charge', c.stripe_charge_id, 'payment_intent', p_intent,
                             'amount_refunded_total', c.amount_refunded));
      else
        delete from public.events where source = 'stripe' and external_id = 'refunds:' || c.stripe_charge_id;
      end if;
    end loop;
  end if;

  perform public.refresh_dispute_history(dp.stripe_dispute_id)
     from public.disputes dp
    where dp.stripe_payment_intent_id = p_intent
       or dp.stripe_charge_id = any (v_charges);
end
$$;

revoke all on function public.mirror_voucher_of_grant(public.access_grants, integer) from public, anon, authenticated;
revoke all on function public.refresh_status_of_grant(public.access_grants) from public, anon, authenticated;
