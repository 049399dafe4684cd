-- Billing history (public.events): one row per money movement, derived from the money facts,
-- so the rows add up to the money actually received whatever order the facts arrive in.
-- Rolled back at the end.
begin;
select plan(14);
set local timezone = 'UTC';

create function pg_temp.buyer(p_email text) returns uuid language sql as $$
  with u as (select public.find_or_create_auth_user(p_email, null) as id)
  insert into public.customers (id) select id from u on conflict (id) do update set id = excluded.id
  returning id
$$;
create function pg_temp.history(p_user uuid) returns text[] language sql as $$
  select array(select concat_ws(' ', e.event_type, e.external_id, e.amount, e.status)
                 from public.events e where e.user_id = p_user order by e.occurred_at, e.external_id)
$$;
create function pg_temp.total(p_user uuid) returns numeric language sql as $$
  select coalesce(sum(amount), 0) from public.events where user_id = p_user
$$;

select pg_temp.buyer('history@example.com') as uid \gset

-- A one-time payment, partly refunded twice (one refund fails), then disputed and won.
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, paid_at)
values ('pi_h1', 'succeeded', 4900, 'usd', :'uid', '2030-01-01');
insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
select 'ch_h1', id, 4900, 0, 'usd', 'succeeded' from public.payment_intents where stripe_payment_intent_id = 'pi_h1';
select is(pg_temp.history(:'uid'), array['stripe.payment_intent.succeeded pi_h1 49.00 succeeded'], 'the payment');

insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_h2', 'ch_h1', 'pi_h1', 1000, 'usd', 'succeeded', '2030-01-03'),
       ('re_h1', 'ch_h1', 'pi_h1', 500, 'usd', 'succeeded', '2030-01-02');
update public.charges set amount_refunded = 1500, refunded_at = '2030-01-02' where stripe_charge_id = 'ch_h1';
select is(pg_temp.history(:'uid'),
          array['stripe.payment_intent.succeeded pi_h1 49.00 succeeded', 'stripe.refund re_h1 -5.00 succeeded',
                'stripe.refund re_h2 -10.00 succeeded'],
          'each refund once, whatever order they were recorded in');
select is(pg_temp.total(:'uid'), 34.00, 'history adds up: 49 - 5 - 10');
update public.refunds set status = 'failed' where stripe_refund_id = 're_h2';
select is(pg_temp.total(:'uid'), 44.00, 'a failed refund no longer counts');
select is((select status || ' ' || amount from public.events where external_id = 're_h2'), 'failed 0.00', 'its row says failed, 0');

-- A charge that reports more refunded than the refunds known one by one.
update public.charges set amount_refunded = 2500 where stripe_charge_id = 'ch_h1';
select is((select amount from public.events where external_id = 'refunds:ch_h1'), -10.00,
          'the rest of the charge''s refunded amount is one row');
insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_h3', 'ch_h1', 'pi_h1', 1000, 'usd', 'succeeded', '2030-01-04');
select is((select count(*)::int from public.events where external_id = 'refunds:ch_h1'), 0,
          'once that refund is known by itself, the rest row goes');
select is(pg_temp.total(:'uid'), 34.00, 'still adds up: 49 - 5 - 10 (re_h3)');

insert into public.disputes (stripe_dispute_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, opened_at, funds_withdrawn)
values ('du_h1', 'ch_h1', 'pi_h1', 3400, 'usd', 'under_review', '2030-01-05', true);
select is(pg_temp.total(:'uid'), 0.00, 'the dispute withdrew the rest');
update public.disputes set status = 'won', funds_reinstated = true where stripe_dispute_id = 'du_h1';
select is(pg_temp.total(:'uid'), 34.00, 'won: reinstated');

-- An invoice paid by an intent: one row, the invoice's, whichever was recorded first.
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, paid_at)
values ('pi_h2', 'succeeded', 900, 'usd', :'uid', '2030-02-01');
insert into public.invoices (stripe_invoice_id, user_id, stripe_subscription_id, status, billing_reason, currency,
                             amount_paid, subtotal, paid_at, period_start, period_end)
values ('in_h2', :'uid', 'sub_h', 'paid', 'subscription_cycle', 'usd', 900, 900, '2030-02-01', '2030-02-01', '2030-03-01');
select is((select count(*)::int from public.events where external_id in ('pi_h2', 'in_h2')), 2,
          'before the link is known: the intent and the invoice');
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_h2', 'pi_h2');
select is((select array_agg(external_id) from public.events where external_id in ('pi_h2', 'in_h2')), array['in_h2'],
          'once linked: the invoice''s row only');
select is((select metadata -> 'payment_intents' from public.events where external_id = 'in_h2'), '["pi_h2"]'::jsonb,
          'which names the intent');
select is(pg_temp.total(:'uid'), 43.00, 'and the history adds up: 34 + 9');

select * from finish();
rollback;
