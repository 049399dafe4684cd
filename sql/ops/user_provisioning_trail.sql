-- Everything the worker knows about one buyer, by email (case-insensitive): the auth user and
-- profile, Stripe customer links, accounts, payment intents, charges, vouchers, subscriptions,
-- billing history and the webhook events that concerned them. Read-only.
--
-- Usage:
--   psql "$DATABASE_URL" -v email=buyer@example.com -f sql/ops/user_provisioning_trail.sql
\if :{?email}
\else
  \echo 'usage: psql "$DATABASE_URL" -v email=buyer@example.com -f sql/ops/user_provisioning_trail.sql'
  \quit
\endif

\echo '== auth user and profile (public.users) =='
select a.id, a.email, a.created_at, a.email_confirmed_at, a.last_sign_in_at,
       p.full_name, p.email as profile_email, p.type
from auth.users a
left join public.users p on p.id = a.id
where lower(a.email) = lower(:'email');

\echo '== Stripe customers (public.customers = first mapping; public.stripe_customers = all links) =='
select 'customers' as source, c.stripe_customer_id, null::timestamptz as linked_at
from public.customers c join auth.users a on a.id = c.id
where lower(a.email) = lower(:'email')
union all
select 'stripe_customers', s.stripe_customer_id, s.created_at
from public.stripe_customers s join auth.users a on a.id = s.user_id
where lower(a.email) = lower(:'email')
order by 1, 3;

\echo '== accounts =='
select ac.account_number, ac.status, ac.expiry, ac.created_at, ac.marked_inactive_by_user
from public.accounts ac join auth.users a on a.id = ac.user_id
where lower(a.email) = lower(:'email')
order by ac.created_at;

\echo '== payment intents =='
select pi.stripe_payment_intent_id, pi.status, pi.amount, pi.currency, pi.price_id,
       pi.stripe_customer_id, pi.receipt_email, pi.created_at
from public.payment_intents pi
where pi.customer_id in (select id from auth.users where lower(email) = lower(:'email'))
   or lower(pi.receipt_email) = lower(:'email')
order by pi.created_at;

\echo '== charges =='
select ch.stripe_charge_id, pi.stripe_payment_intent_id, ch.status, ch.amount, ch.amount_refunded,
       ch.currency, ch.created_at
from public.charges ch
join public.payment_intents pi on pi.id = ch.payment_intent_id
where ch.customer_id in (select id from auth.users where lower(email) = lower(:'email'))
   or pi.customer_id in (select id from auth.users where lower(email) = lower(:'email'))
   or lower(ch.receipt_email) = lower(:'email')
order by ch.created_at;

\echo '== vouchers (by account, payment intent or subscription) =='
select v.code, v.status, v.duration_months, v.is_used, v.used_at, v.associated_account,
       pi.stripe_payment_intent_id, v.subscription_id, v.created_at
from public.vouchers v
left join public.payment_intents pi on pi.id = v.payment_intent_id
left join public.subscriptions s on s.id = v.subscription_id
left join public.accounts ac on ac.account_number = v.associated_account
where pi.customer_id in (select id from auth.users where lower(email) = lower(:'email'))
   or s.user_id in (select id from auth.users where lower(email) = lower(:'email'))
   or ac.user_id in (select id from auth.users where lower(email) = lower(:'email'))
order by v.created_at;

\echo '== subscriptions =='
select s.id, s.status, s.price_id, s.quantity, s.cancel_at_period_end, s.current_period_start,
       s.current_period_end, s.canceled_at, s.ended_at, s.created
from public.subscriptions s join auth.users a on a.id = s.user_id
where lower(a.email) = lower(:'email')
order by s.created;

\echo '== billing history (public.events) =='
select e.occurred_at, e.category, e.event_type, e.entitlement, e.amount, e.currency, e.external_id
from public.events e join auth.users a on a.id = e.user_id
where lower(a.email) = lower(:'email')
order by e.occurred_at;

\echo '== webhook events (linked to the user, or naming one of their Stripe customers) =='
select w.stripe_event_id, w.event_type, w.processing_status as status, w.created_at as received_at,
       w.retry_count as attempts, left(coalesce(w.error_message, w.processing_note), 120) as error_or_note
from public.stripe_webhook_events w
where w.user_id in (select id from auth.users where lower(email) = lower(:'email'))
   or w.event_data->'data'->'object'->>'customer' in (
        select s.stripe_customer_id from public.stripe_customers s
        join auth.users a on a.id = s.user_id where lower(a.email) = lower(:'email'))
order by w.created_at;
