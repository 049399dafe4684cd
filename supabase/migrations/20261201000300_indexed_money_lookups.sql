-- Every look-up a payment's derivation makes goes through an index, so its cost does not grow
-- with the shop's history.
--
-- "rows of this payment intent OR rows of its charges (a sub-select)" cannot be answered from
-- the two indexes: PostgreSQL reads the whole table and tests each row against the hashed
-- sub-select. Three derivations used that shape: a charge's, refund's or dispute's grants
-- (every access grant read for each charge.succeeded), a payment's refunds and disputes for
-- its billing rows, and the money returned on a payment. Each now compares with an array of the
-- ids the sub-select finds, a condition both indexes answer in one bitmap scan.
--
-- uuid_v7() was a SQL function with a fixed search_path, which PostgreSQL cannot inline and
-- so parses and plans at each call: about 120 µs per inserted row. As
-- PL/pgSQL its one expression is planned once per session. Same bits, same privileges.
--
-- payment_intents had two indexes on stripe_payment_intent_id: the unique constraint's and a
-- plain one that no query needs (the unique one answers every look-up), written by every
-- payment.

create or replace function public.uuid_v7()
returns uuid
language plpgsql
volatile
parallel safe
set search_path = ''
as $$
begin
  return pg_catalog.encode(
           pg_catalog.set_bit(
             pg_catalog.set_bit(
               overlay(
                 pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                 placing substring(
                   pg_catalog.int8send((extract(epoch from pg_catalog.clock_timestamp()) * 1000)::bigint)
                   from 3)
                 from 1 for 6),
               52, 1),
             53, 1),
           'hex')::uuid;
end
$$;

drop index if exists public.idx_payment_intents_stripe_payment_intent_id;

create or replace function public.refresh_grants_for_intents(p_intents text[])
returns void
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
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
        or ag.stripe_invoice_id = any (array(select ip.stripe_invoice_id from public.invoice_payments ip
                                              where ip.stripe_payment_intent_id = any (p_intents)))
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

create or replace function public.money_reversal(
  p_intents text[], p_paid bigint,
  out paid bigint, out returned bigint, out reason text, out reversed boolean)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
begin
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
        or r.stripe_charge_id = any (array(select stripe_charge_id from chs))
  ), dps as (
    select d.amount, d.status, d.funds_withdrawn, d.funds_reinstated
      from public.disputes d
     where d.stripe_payment_intent_id = any (p_intents)
        or d.stripe_charge_id = any (array(select stripe_charge_id from chs))
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
    into paid, returned, reason, reversed
    from totals t;
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
  v_known bigint;
  v_inactive bigint;
  v_rest bigint;
begin
  select * into pi from public.payment_intents where stripe_payment_intent_id = p_intent;
  if not found then
    return;
  end if;
  v_charges := array(select ch.stripe_charge_id from public.charges ch where ch.payment_intent_id = pi.id);

  if pi.status = 'succeeded'
     and not exists (select 1 from public.invoice_payments ip where ip.stripe_payment_intent_id = p_intent) then
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

  perform public.refresh_dispute_history(dp.stripe_dispute_id)
     from public.disputes dp
    where dp.stripe_payment_intent_id = p_intent
       or dp.stripe_charge_id = any (v_charges);
end
$$;
