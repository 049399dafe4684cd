-- Cheaper derivations, same results.
--
-- 1. Functions keep their plans. A SQL-language function with `set search_path` is never
--    inlined, and PostgreSQL 15 plans its body again on every call; PL/pgSQL keeps a plan per
--    statement for the session. The small SQL functions on the hot paths become PL/pgSQL with
--    the same signature and result, and the functions that run on every event use the generic
--    plan at once (their statements look rows up by key, where a custom plan is no better and
--    its planning is most of the cost).
-- 2. The auth-user look-up probes the (instance_id, lower(email)) index once per instance_id
--    form instead of reading every user.
-- 3. A re-delivered payment, refund or dispute that changes nothing derives nothing: the
--    trigger functions return early when an update leaves the columns they derive from as they
--    were. Invoices always derive again: reconcile repairs a lost grant by delivering the
--    invoice once more.

create or replace function public.claim_object_version(
  p_object_id text,
  p_object_type text,
  p_event_created_at timestamptz,
  p_tie_break bigint,
  p_stripe_event_id text,
  p_deleted boolean
) returns boolean
language plpgsql
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  insert into public.stripe_object_versions as v
      (object_id, object_type, event_created_at, tie_break, stripe_event_id, deleted)
    values
      (p_object_id, p_object_type, p_event_created_at, p_tie_break, p_stripe_event_id, p_deleted)
    on conflict (object_id) do update
      set event_created_at = excluded.event_created_at,
          tie_break = excluded.tie_break,
          stripe_event_id = excluded.stripe_event_id,
          deleted = v.deleted or excluded.deleted,
          updated_at = now()
      where (excluded.deleted and not v.deleted)
         or (excluded.stripe_event_id = v.stripe_event_id and (excluded.deleted or not v.deleted))
         or (not v.deleted
             and (excluded.event_created_at, excluded.tie_break, excluded.stripe_event_id)
               > (v.event_created_at, v.tie_break, v.stripe_event_id));
  -- a row was inserted or updated
  return found;
end
$$;

create or replace function public.find_auth_user(p_email text)
returns uuid
language plpgsql
stable
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
declare
  v_email text := lower(btrim(p_email));
begin
  return coalesce(
    (select u.id
       from (select a.id, a.created_at
               from auth.users a
              where a.instance_id = '00000000-0000-0000-0000-000000000000'
                and lower(a.email::text) = v_email
                and a.is_sso_user = false
                and a.deleted_at is null
             union all
             select a.id, a.created_at
               from auth.users a
              where a.instance_id is null
                and lower(a.email::text) = v_email
                and a.is_sso_user = false
                and a.deleted_at is null) u
      order by u.created_at nulls last, u.id
      limit 1),
    (select sc.user_id
       from public.stripe_customers sc
       join auth.users u on u.id = sc.user_id and u.deleted_at is null
      where lower(sc.email) = v_email
        and sc.user_id is not null
      order by sc.updated_at desc, sc.stripe_customer_id
      limit 1));
end
$$;

create or replace function public.metadata_months(p_value text)
returns integer
language plpgsql
immutable
set search_path = ''
as $$
begin
  return case when btrim(p_value) ~ '^[0-9]{1,4}$' and btrim(p_value)::integer > 0
              then btrim(p_value)::integer end;
end
$$;

create or replace function public.price_voucher_terms(
  p_price_id text,
  out months integer,
  out manual boolean,
  out recurring boolean,
  out known boolean
)
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  select coalesce(public.metadata_months(p.metadata ->> 'duration_months'),
                  public.metadata_months(pr.metadata ->> 'duration_months'),
                  1),
         coalesce(lower(btrim(p.metadata ->> 'voucher_redeem')) = 'manual', false)
           or coalesce(lower(btrim(pr.metadata ->> 'voucher_redeem')) = 'manual', false),
         coalesce(p.type = 'recurring', false),
         p.id is not null
           and (public.metadata_months(p.metadata ->> 'duration_months') is not null
                or (pr.id is not null and pr.name is not null))
    into months, manual, recurring, known
    from (select 1) one
    left join public.prices p on p.id = p_price_id
    left join public.products pr on pr.id = p.product_id;
end
$$;

create or replace function public.price_period_months(p_price_id text)
returns integer
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  return coalesce(
    (select case p.interval
              when 'month' then greatest(coalesce(p.interval_count, 1), 1)
              when 'year'  then 12 * greatest(coalesce(p.interval_count, 1), 1)
              else 0
            end
       from public.prices p
      where p.id = p_price_id),
    1);
end
$$;

create or replace function public.format_expiry(p_ts timestamptz)
returns text
language plpgsql
stable
set search_path = ''
as $$
begin
  return case
           when p_ts is null then null
           when isfinite(p_ts) then to_char(p_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           else p_ts::text
         end;
end
$$;

create or replace function public.add_months_utc(p_ts timestamptz, p_months integer)
returns timestamptz
language plpgsql
immutable
set search_path = ''
as $$
begin
  return ((p_ts at time zone 'UTC') + make_interval(months => p_months)) at time zone 'UTC';
end
$$;

create or replace function public.money_reversal(
  p_intents text[],
  p_paid bigint,
  out paid bigint,
  out returned bigint,
  out reason text,
  out reversed boolean
)
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
    into paid, returned, reason, reversed
    from totals t;
end
$$;

create or replace function public.grant_intents(p_grant public.access_grants)
returns text[]
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  return array(
    select p_grant.stripe_payment_intent_id where p_grant.stripe_payment_intent_id is not null
    union
    select ip.stripe_payment_intent_id from public.invoice_payments ip
     where ip.stripe_invoice_id = p_grant.stripe_invoice_id);
end
$$;

create or replace function public.currency_decimals(p_currency text)
returns integer
language plpgsql
immutable
set search_path = ''
as $$
begin
  return case lower(p_currency)
           when 'bif' then 0 when 'clp' then 0 when 'djf' then 0 when 'gnf' then 0 when 'jpy' then 0
           when 'kmf' then 0 when 'krw' then 0 when 'mga' then 0 when 'pyg' then 0 when 'rwf' then 0
           when 'ugx' then 0 when 'vnd' then 0 when 'vuv' then 0 when 'xaf' then 0 when 'xof' then 0
           when 'xpf' then 0
           when 'bhd' then 3 when 'jod' then 3 when 'kwd' then 3 when 'omr' then 3 when 'tnd' then 3
           else 2
         end;
end
$$;

create or replace function public.put_billing_row(
  p_external_id text,
  p_event_type text,
  p_user_id uuid,
  p_amount_minor bigint,
  p_currency text,
  p_occurred_at timestamptz,
  p_status text,
  p_metadata jsonb
) returns void
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  insert into public.events as e
    (category, event_type, source, user_id, amount, currency, occurred_at, external_id, status, metadata)
  values
    ('billing', p_event_type, 'stripe', p_user_id,
     round(p_amount_minor::numeric / (10::numeric ^ public.currency_decimals(p_currency)), public.currency_decimals(p_currency)),
     lower(p_currency), coalesce(p_occurred_at, now()), p_external_id, p_status, p_metadata)
  on conflict (source, external_id) do update
    set event_type = excluded.event_type, user_id = excluded.user_id, amount = excluded.amount,
        currency = excluded.currency, occurred_at = excluded.occurred_at, status = excluded.status,
        metadata = excluded.metadata
    where (e.event_type, e.user_id, e.amount, e.currency, e.occurred_at, e.status, e.metadata)
          is distinct from
          (excluded.event_type, excluded.user_id, excluded.amount, excluded.currency,
           excluded.occurred_at, excluded.status, excluded.metadata);
end
$$;

-- ---------------------------------------------------------------------------------------
-- Unchanged rows derive nothing.

create or replace function public.derive_grants_from_payment_intent()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE'
     and (new.status, new.customer_id, new.price_id, new.checkout_session_id, new.paid_at)
         is not distinct from
         (old.status, old.customer_id, old.price_id, old.checkout_session_id, old.paid_at) then
    return null;
  end if;
  if new.status = 'succeeded' or (tg_op = 'UPDATE' and old.status = 'succeeded') then
    perform public.sync_purchase_grant(new.id);
  end if;
  return null;
end
$$;

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
  if tg_op = 'UPDATE' and new.customer_id is not distinct from old.customer_id then
    return null;
  end if;
  if tg_table_name = 'payment_intents' then
    update public.charges set customer_id = new.customer_id
     where payment_intent_id = new.id and customer_id is null;
    v_intent := new.stripe_payment_intent_id;
    v_charges := array(select c.stripe_charge_id from public.charges c where c.payment_intent_id = new.id);
  else
    v_charges := array[new.stripe_charge_id];
  end if;
  -- two probes, each on its own index (one condition with OR reads the whole table)
  update public.refunds set user_id = new.customer_id
   where user_id is null and stripe_payment_intent_id = v_intent;
  update public.refunds set user_id = new.customer_id
   where user_id is null and stripe_charge_id = any (v_charges);
  update public.disputes set user_id = new.customer_id
   where user_id is null and stripe_payment_intent_id = v_intent;
  update public.disputes set user_id = new.customer_id
   where user_id is null and stripe_charge_id = any (v_charges);
  return null;
end
$$;

create or replace function public.derive_billing_history()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' then
    if tg_table_name = 'payment_intents' then
      if (new.status, new.amount, new.currency, new.customer_id, new.paid_at,
          new.checkout_session_id, new.price_id)
         is not distinct from
         (old.status, old.amount, old.currency, old.customer_id, old.paid_at,
          old.checkout_session_id, old.price_id) then
        return null;
      end if;
    elsif tg_table_name in ('refunds', 'disputes')
          and (to_jsonb(new) - 'updated_at') = (to_jsonb(old) - 'updated_at') then
      return null;
    end if;
  end if;
  case tg_table_name
    when 'payment_intents' then
      perform public.refresh_payment_history(new.stripe_payment_intent_id);
    when 'charges' then
      perform public.refresh_payment_history(pi.stripe_payment_intent_id)
         from public.payment_intents pi where pi.id = new.payment_intent_id;
    when 'refunds' then
      perform public.refresh_refund_history(new.stripe_refund_id);
      perform public.refresh_payment_history(x.pi)
         from (select new.stripe_payment_intent_id as pi
               union
               select p.stripe_payment_intent_id from public.charges c
                 join public.payment_intents p on p.id = c.payment_intent_id
                where c.stripe_charge_id = new.stripe_charge_id) x
        where x.pi is not null;
    when 'disputes' then
      perform public.refresh_dispute_history(new.stripe_dispute_id);
    when 'invoices' then
      perform public.refresh_invoice_history(new.stripe_invoice_id);
    when 'invoice_payments' then
      perform public.refresh_payment_history(new.stripe_payment_intent_id);
      perform public.refresh_invoice_history(new.stripe_invoice_id);
  end case;
  return null;
end
$$;

-- ---------------------------------------------------------------------------------------
-- The functions every event runs plan once per session.

alter function public.handle_user_email_change set plan_cache_mode = force_generic_plan;
alter function public.ensure_account set plan_cache_mode = force_generic_plan;
alter function public.find_or_create_auth_user set plan_cache_mode = force_generic_plan;
alter function public.attribute_to_payment_owner set plan_cache_mode = force_generic_plan;
alter function public.attribute_payment_rows set plan_cache_mode = force_generic_plan;
alter function public.refresh_grant_status set plan_cache_mode = force_generic_plan;
alter function public.refresh_account_access set plan_cache_mode = force_generic_plan;
alter function public.mirror_grant_voucher set plan_cache_mode = force_generic_plan;
alter function public.put_grant set plan_cache_mode = force_generic_plan;
alter function public.sync_purchase_grant set plan_cache_mode = force_generic_plan;
alter function public.refresh_gift_voucher set plan_cache_mode = force_generic_plan;
alter function public.sync_invoice_grant set plan_cache_mode = force_generic_plan;
alter function public.sync_trial_grant set plan_cache_mode = force_generic_plan;
alter function public.refresh_grants_for_intents set plan_cache_mode = force_generic_plan;
alter function public.derive_grants_from_payment_intent set plan_cache_mode = force_generic_plan;
alter function public.derive_grants_from_invoice set plan_cache_mode = force_generic_plan;
alter function public.derive_grants_from_invoice_payment set plan_cache_mode = force_generic_plan;
alter function public.derive_grants_from_money_movement set plan_cache_mode = force_generic_plan;
alter function public.create_voucher_for_new_subscription set plan_cache_mode = force_generic_plan;
alter function public.update_voucher_on_subscription_change set plan_cache_mode = force_generic_plan;
alter function public.complete_grant_terms set plan_cache_mode = force_generic_plan;
alter function public.redeem_voucher set plan_cache_mode = force_generic_plan;
alter function public.refresh_refund_history set plan_cache_mode = force_generic_plan;
alter function public.refresh_payment_history set plan_cache_mode = force_generic_plan;
alter function public.refresh_dispute_history set plan_cache_mode = force_generic_plan;
alter function public.refresh_invoice_history set plan_cache_mode = force_generic_plan;
alter function public.derive_billing_history set plan_cache_mode = force_generic_plan;
