-- Billing history: public.events, one row per money movement (source = 'stripe').
--
-- Rows are derived from the money facts (payments, invoices, refunds, disputes), keyed by the
-- movement, so redeliveries and stale snapshots neither drop nor double a row and the amounts
-- add up to the money actually received:
--   external_id = pi_…            a payment that is not an invoice's (+amount)
--   external_id = in_…            a paid invoice (+amount_paid; its intents' rows merge into it)
--   external_id = re_…            a refund (−amount; 0 once it failed or was canceled)
--   external_id = refunds:ch_…    refunded on a charge beyond the refunds known one by one
--   external_id = du_…:withdrawn  a dispute took the money (−amount)
--   external_id = du_…:reinstated the dispute gave it back (+amount)
--   external_id = evt_…           a failed payment attempt (amount 0, status failed)
-- status is the object's (succeeded, paid, pending, failed, lost, …), never a constant.
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
alter table public.events add column if not exists status text;

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
create index if not exists events_payment_intent_idx on public.events ((metadata ->> 'payment_intent'))
  where source = 'stripe';

-- When Stripe reports a charge's refunded amount (the earliest report): the time of the
-- billing row for refunds not known one by one.
alter table public.charges add column if not exists refunded_at timestamptz;

-- Stripe amounts are in the currency's minor unit; most have two decimals, these not.
create or replace function public.currency_decimals(p_currency text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select case lower(p_currency)
           when 'bif' then 0 when 'clp' then 0 when 'djf' then 0 when 'gnf' then 0 when 'jpy' then 0
           when 'kmf' then 0 when 'krw' then 0 when 'mga' then 0 when 'pyg' then 0 when 'rwf' then 0
           when 'ugx' then 0 when 'vnd' then 0 when 'vuv' then 0 when 'xaf' then 0 when 'xof' then 0
           when 'xpf' then 0
           when 'bhd' then 3 when 'jod' then 3 when 'kwd' then 3 when 'omr' then 3 when 'tnd' then 3
           else 2
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
language sql
security definer
set search_path = ''
as $$
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
           excluded.occurred_at, excluded.status, excluded.metadata)
$$;

-- A refund's row.
create or replace function public.refresh_refund_history(p_refund_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  r public.refunds;
begin
  select * into r from public.refunds where stripe_refund_id = p_refund_id;
  if not found then
    return;
  end if;
  perform public.put_billing_row(
    r.stripe_refund_id, 'stripe.refund', r.user_id,
    case when r.status in ('failed', 'canceled') then 0 else -r.amount end,
    r.currency, r.refunded_at, r.status,
    jsonb_build_object('refund', r.stripe_refund_id, 'charge', r.stripe_charge_id,
                       'payment_intent', r.stripe_payment_intent_id, 'reason', r.reason));
end
$$;

-- Everything one payment intent moved: the payment itself (unless it pays an invoice, whose
-- row carries it), refunds, what its charges report refunded beyond the known refunds, and
-- disputes.
create or replace function public.refresh_payment_history(p_intent text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  pi public.payment_intents;
  c record;
  d public.disputes;
  v_known bigint;
  v_inactive bigint;
  v_rest bigint;
begin
  select * into pi from public.payment_intents where stripe_payment_intent_id = p_intent;
  if not found then
    return;
  end if;

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
       or r.stripe_charge_id in (select ch.stripe_charge_id from public.charges ch where ch.payment_intent_id = pi.id);

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

  for d in
    select * from public.disputes dp
     where dp.stripe_payment_intent_id = p_intent
        or dp.stripe_charge_id in (select ch.stripe_charge_id from public.charges ch where ch.payment_intent_id = pi.id)
  loop
    perform public.refresh_dispute_history(d.stripe_dispute_id);
  end loop;
end
$$;

create or replace function public.refresh_dispute_history(p_dispute_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  d public.disputes;
  v_withdrawn boolean;
  v_meta jsonb;
begin
  select * into d from public.disputes where stripe_dispute_id = p_dispute_id;
  if not found then
    return;
  end if;
  v_withdrawn := d.funds_withdrawn or d.status = 'lost';
  v_meta := jsonb_build_object('dispute', d.stripe_dispute_id, 'charge', d.stripe_charge_id,
                               'payment_intent', d.stripe_payment_intent_id, 'reason', d.reason);
  if v_withdrawn then
    perform public.put_billing_row(d.stripe_dispute_id || ':withdrawn', 'stripe.charge.dispute.funds_withdrawn',
                                   d.user_id, -d.amount, d.currency,
                                   coalesce(d.funds_withdrawn_at, d.opened_at), d.status, v_meta);
  else
    delete from public.events where source = 'stripe' and external_id = d.stripe_dispute_id || ':withdrawn';
  end if;
  if v_withdrawn and (d.funds_reinstated or d.status = 'won') then
    perform public.put_billing_row(d.stripe_dispute_id || ':reinstated', 'stripe.charge.dispute.funds_reinstated',
                                   d.user_id, d.amount, d.currency,
                                   greatest(coalesce(d.funds_reinstated_at, d.opened_at),
                                            coalesce(d.funds_withdrawn_at, d.opened_at)), d.status, v_meta);
  else
    delete from public.events where source = 'stripe' and external_id = d.stripe_dispute_id || ':reinstated';
  end if;
end
$$;

-- A paid invoice's row (the payment of its intents included).
create or replace function public.refresh_invoice_history(p_invoice_id text)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
  inv public.invoices;
begin
  select * into inv from public.invoices where stripe_invoice_id = p_invoice_id;
  if not found then
    return;
  end if;
  if inv.status = 'paid' then
    perform public.put_billing_row(
      inv.stripe_invoice_id, 'stripe.invoice.paid', inv.user_id, coalesce(inv.amount_paid, 0),
      coalesce(inv.currency, 'usd'), coalesce(inv.paid_at, inv.invoice_created_at), inv.status,
      jsonb_build_object(
        'invoice', inv.stripe_invoice_id, 'subscription', inv.stripe_subscription_id,
        'customer', inv.stripe_customer_id, 'billing_reason', inv.billing_reason,
        'period_start', inv.period_start, 'period_end', inv.period_end,
        'payment_intents', (select coalesce(jsonb_agg(ip.stripe_payment_intent_id order by ip.stripe_payment_intent_id), '[]'::jsonb)
                              from public.invoice_payments ip where ip.stripe_invoice_id = inv.stripe_invoice_id)));
  else
    delete from public.events where source = 'stripe' and external_id = inv.stripe_invoice_id;
  end if;
end
$$;

-- Triggers.
create or replace function public.derive_billing_history()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
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

do $$
declare t record;
begin
  for t in select * from (values
    ('public.payment_intents', 'payment_intents_derive_billing',
     'after insert or update of status, amount, currency, customer_id, paid_at, checkout_session_id, price_id on public.payment_intents for each row execute function public.derive_billing_history()'),
    ('public.charges', 'charges_derive_billing',
     'after insert or update of amount_refunded, customer_id, refunded_at, payment_intent_id on public.charges for each row execute function public.derive_billing_history()'),
    ('public.refunds', 'refunds_derive_billing',
     'after insert or update on public.refunds for each row execute function public.derive_billing_history()'),
    ('public.disputes', 'disputes_derive_billing',
     'after insert or update on public.disputes for each row execute function public.derive_billing_history()'),
    ('public.invoices', 'invoices_derive_billing',
     'after insert or update on public.invoices for each row execute function public.derive_billing_history()'),
    ('public.invoice_payments', 'invoice_payments_derive_billing',
     'after insert on public.invoice_payments for each row execute function public.derive_billing_history()')
  ) v(tbl, name, def)
  loop
    if not exists (select 1 from pg_trigger where tgrelid = t.tbl::regclass and tgname = t.name and not tgisinternal) then
      execute format('create trigger %I %s', t.name, t.def);
    end if;
  end loop;
end
$$;

-- Who may read what: a signed-in user reads their own history.
alter table public.events enable row level security;
revoke all on table public.events from public, anon, authenticated;
grant all on table public.events to service_role;
grant select on table public.events to authenticated;
drop policy if exists events_select_own on public.events;
create policy events_select_own on public.events
  for select to authenticated
  using (user_id = (select auth.uid()));

revoke all on function public.currency_decimals(text) from public, anon, authenticated;
revoke all on function public.put_billing_row(text, text, uuid, bigint, text, timestamptz, text, jsonb)
  from public, anon, authenticated;
revoke all on function public.refresh_refund_history(text) from public, anon, authenticated;
revoke all on function public.refresh_payment_history(text) from public, anon, authenticated;
revoke all on function public.refresh_dispute_history(text) from public, anon, authenticated;
revoke all on function public.refresh_invoice_history(text) from public, anon, authenticated;
revoke all on function public.derive_billing_history() from public, anon, authenticated;
grant execute on function public.put_billing_row(text, text, uuid, bigint, text, timestamptz, text, jsonb)
  to service_role;
