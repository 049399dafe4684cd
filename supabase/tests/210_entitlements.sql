-- The entitlement rule as SQL unit tests: facts are written the way the worker writes them (as
-- postgres), then grants, vouchers and accounts.expiry are checked exactly. Times are fixed, so
-- every expected value is written out. Rolled back at the end.
begin;
select plan(66);
set local timezone = 'UTC';

-- A buyer with a customers row (payment_intents.customer_id references it); returns the user.
create function pg_temp.buyer(p_email text) returns uuid language sql as $$
  with u as (select public.find_or_create_auth_user(p_email, null) as id)
  insert into public.customers (id) select id from u on conflict (id) do update set id = excluded.id
  returning id
$$;
create function pg_temp.expiry(p_email text) returns text language sql as $$
  select a.expiry from public.accounts a join auth.users u on u.id = a.user_id where u.email = p_email
$$;
-- Grants of a buyer, in coverage order: kind, months or period, status, coverage.
create function pg_temp.grants(p_email text) returns text[] language sql as $$
  select array(
    select concat_ws(' ', g.kind, coalesce(g.months::text, to_char(g.period_start, 'MM-DD') || '..' || to_char(g.period_end, 'MM-DD')),
                     g.status, g.revoked_reason, coalesce(to_char(g.coverage_start, 'YYYY-MM-DD') || '..' || to_char(g.coverage_end, 'YYYY-MM-DD'), '-'))
      from public.access_grants g join public.accounts a on a.id = g.account_id join auth.users u on u.id = a.user_id
     where u.email = p_email
     order by g.coverage_start nulls last, g.effective_at, g.source)
$$;
create function pg_temp.vouchers(p_email text) returns text[] language sql as $$
  select array(
    select concat_ws(' ', v.duration_months, case when v.is_used then 'used' else 'unused' end, v.status,
                     case when v.revoked_at is not null then 'revoked_at' end)
      from public.vouchers v join public.accounts a on a.account_number = v.associated_account
      join auth.users u on u.id = a.user_id
     where u.email = p_email
     order by v.period_start nulls first, v.duration_months, v.status)
$$;
create function pg_temp.pay(p_intent text, p_email text, p_amount bigint, p_paid_at timestamptz,
                            p_price text default null, p_checkout text default null) returns void language sql as $$
  insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id,
                                      checkout_session_id, paid_at)
  values (p_intent, 'succeeded', p_amount, 'usd', pg_temp.buyer(p_email), p_price, p_checkout, p_paid_at);
  insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
  select 'ch_' || p_intent, id, p_amount, 0, 'usd', 'succeeded' from public.payment_intents
   where stripe_payment_intent_id = p_intent;
$$;
create function pg_temp.invoice(p_invoice text, p_email text, p_sub text, p_status text, p_amount bigint,
                                p_start timestamptz, p_end timestamptz, p_price text default 'price_t_month',
                                p_reason text default 'subscription_cycle') returns void language sql as $$
  insert into public.invoices (stripe_invoice_id, user_id, stripe_subscription_id, status, billing_reason, currency,
                               amount_paid, amount_due, subtotal, total, paid_at, period_start, period_end, lines)
  values (p_invoice, pg_temp.buyer(p_email), p_sub, p_status, p_reason, 'usd',
          case when p_status = 'paid' then p_amount else 0 end, p_amount, p_amount, p_amount,
          case when p_status = 'paid' then p_start end, p_start, p_end,
          jsonb_build_array(jsonb_build_object('price', p_price, 'quantity', 1, 'amount', p_amount, 'proration', false,
                                               'period_start', extract(epoch from p_start)::bigint,
                                               'period_end', extract(epoch from p_end)::bigint)))
  on conflict (stripe_invoice_id) do update
    set status = excluded.status, amount_paid = excluded.amount_paid, paid_at = excluded.paid_at;
$$;

insert into public.products (id, active, name, metadata) values
  ('prod_t_pack', true, 'Pack', '{"duration_months": "3"}'),
  ('prod_t_plan', true, 'Plan', null);
insert into public.prices (id, product_id, unit_amount, currency, type, interval, interval_count, metadata) values
  ('price_t_pack', 'prod_t_pack', 2900, 'usd', 'one_time', null, null, '{}'),
  ('price_t_month', 'prod_t_plan', 900, 'usd', 'recurring', 'month', 1, '{}'),
  ('price_t_year', 'prod_t_plan', 9000, 'usd', 'recurring', 'year', 1, '{}');

-- ---------------------------------------------------------------- one-time purchases
select pg_temp.pay('pi_p1', 'pass@example.com', 2900, '2030-01-01', 'price_t_pack', 'cs_p1');
select is(pg_temp.grants('pass@example.com'), array['purchase 3 active 2030-01-01..2030-04-01'],
          'a paid checkout grants the price''s terms from the payment''s time');
select is(pg_temp.expiry('pass@example.com'), '2030-04-01T00:00:00Z', 'expiry = the end of that coverage');
select is(pg_temp.vouchers('pass@example.com'), array['3 used active'], 'one used voucher of 3 months');
select lives_ok($$update public.payment_intents set status = 'succeeded', paid_at = '2030-01-01' where stripe_payment_intent_id = 'pi_p1'$$,
                'a replayed report of the payment');
select is((select count(*)::int from public.access_grants where source = 'payment_intent:pi_p1'), 1, 'still one grant');
select is((select count(*)::int from public.vouchers where source = 'payment_intent:pi_p1'), 1, 'still one voucher');

select pg_temp.pay('pi_bare', 'bare@example.com', 500, '2030-01-01');
select is(pg_temp.grants('bare@example.com'), '{}'::text[], 'a payment that names nothing bought grants nothing');
select pg_temp.pay('pi_meta', 'meta@example.com', 2900, '2030-01-01', 'price_t_pack');
select is(pg_temp.grants('meta@example.com'), array['purchase 3 active 2030-01-01..2030-04-01'],
          'an intent whose metadata names a one-time price is a purchase');
select pg_temp.pay('pi_rec', 'recurring@example.com', 900, '2030-01-01', 'price_t_month');
select is(pg_temp.grants('recurring@example.com'), '{}'::text[], 'an intent naming a recurring price is no purchase');

-- Checkout reports the payment a second time and names its session: on an intent that has its
-- price this changes nothing the grant depends on, so the grant is not derived again; on one
-- without a price it makes the payment a purchase.
-- The purchase derivations this transaction has run so far.
create function pg_temp.derivations() returns bigint language sql as $$
  select pg_stat_get_xact_function_calls('public.sync_purchase_grant(uuid,text)'::regprocedure)
$$;
set local track_functions = 'all';
select pg_temp.pay('pi_twice', 'twice@example.com', 2900, '2030-01-01', 'price_t_pack');
create temporary table derived_before as select pg_temp.derivations() as n;
update public.payment_intents set checkout_session_id = 'cs_twice', price_id = 'price_t_pack'
 where stripe_payment_intent_id = 'pi_twice';
select is(pg_temp.derivations() - (select n from derived_before), 0::bigint,
          'the session named on a priced intent: its grant is not derived again');
select is(pg_temp.grants('twice@example.com'), array['purchase 3 active 2030-01-01..2030-04-01'],
          'and it stays what the payment bought');
update derived_before set n = pg_temp.derivations();
update public.payment_intents set checkout_session_id = 'cs_bare' where stripe_payment_intent_id = 'pi_bare';
select is(pg_temp.derivations() - (select n from derived_before), 1::bigint,
          'the session named on an intent without a price: derived');
select is(pg_temp.grants('bare@example.com'), array['purchase 1 active 2030-01-01..2030-02-01'],
          'a paid session without a price grants the default month');
update public.payment_intents set paid_at = '2029-12-31' where stripe_payment_intent_id = 'pi_twice';
select is(pg_temp.grants('twice@example.com'), array['purchase 3 active 2029-12-31..2030-03-31'],
          'an earlier report of the payment''s time moves the coverage');
reset track_functions;

-- An intent that turns out to pay an invoice loses its one-time grant, whatever came first.
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_meta', 'pi_meta');
select is(pg_temp.grants('meta@example.com'), '{}'::text[], 'linked to an invoice: the purchase grant is gone');
select is(pg_temp.vouchers('meta@example.com'), '{}'::text[], 'and its voucher');
select is(pg_temp.expiry('meta@example.com'), null, 'no grant left: no expiry');

-- A payment recorded before the ledger began is part of the starting balance.
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id,
                                    checkout_session_id, paid_at, recorded_before_ledger)
values ('pi_old', 'succeeded', 2900, 'usd', pg_temp.buyer('old@example.com'), 'price_t_pack', 'cs_old', '2029-01-01', true);
select is(pg_temp.grants('old@example.com'), '{}'::text[], 'a pre-ledger payment grants nothing again');

-- ---------------------------------------------------------------- the price arrives late
select pg_temp.pay('pi_late', 'late@example.com', 4900, '2030-01-01', 'price_t_late', 'cs_late');
select is(pg_temp.grants('late@example.com'), array['purchase 1 active 2030-01-01..2030-02-01'],
          'unknown price: the default month for now');
select is((select terms_known from public.access_grants where source = 'payment_intent:pi_late'), false, 'terms not known yet');
insert into public.products (id, active, name, metadata) values ('prod_t_late', true, 'Late', '{}');
insert into public.prices (id, product_id, unit_amount, currency, type, metadata)
values ('price_t_late', 'prod_t_late', 4900, 'usd', 'one_time', '{"duration_months": "12"}');
select is(pg_temp.grants('late@example.com'), array['purchase 12 active 2030-01-01..2031-01-01'],
          'the price arrives: the purchase gets its 12 months');
select is(pg_temp.vouchers('late@example.com'), array['12 used active'], 'the voucher follows');
update public.prices set metadata = '{"duration_months": "6"}' where id = 'price_t_late';
select is(pg_temp.grants('late@example.com'), array['purchase 12 active 2030-01-01..2031-01-01'],
          'a later catalog change never rewrites a purchase');

-- ---------------------------------------------------------------- subscription periods
select pg_temp.invoice('in_s1', 'sub@example.com', 'sub_s', 'paid', 900, '2030-01-01', '2030-02-01', 'price_t_month', 'subscription_create');
select is(pg_temp.grants('sub@example.com'), array['subscription_period 01-01..02-01 active 2030-01-01..2030-02-01'],
          'a paid subscription invoice grants exactly its period');
select is(pg_temp.vouchers('sub@example.com'), array['1 used active'], 'a one-month voucher');
select pg_temp.invoice('in_s2', 'sub@example.com', 'sub_s', 'open', 900, '2030-02-01', '2030-03-01');
select is(pg_temp.expiry('sub@example.com'), '2030-02-01T00:00:00Z', 'an open renewal invoice grants nothing');
select pg_temp.invoice('in_s2', 'sub@example.com', 'sub_s', 'paid', 900, '2030-02-01', '2030-03-01');
select is(pg_temp.expiry('sub@example.com'), '2030-03-01T00:00:00Z', 'once paid, its period counts');
select pg_temp.invoice('in_s3', 'sub@example.com', 'sub_s', 'open', 900, '2030-03-01', '2030-04-01');
select pg_temp.invoice('in_s3', 'sub@example.com', 'sub_s', 'uncollectible', 900, '2030-03-01', '2030-04-01');
select is(pg_temp.expiry('sub@example.com'), '2030-03-01T00:00:00Z', 'a renewal that never gets paid adds nothing');

-- A trial: trial_start .. trial_end, then the paid period; the trial's $0 invoice grants nothing.
select pg_temp.buyer('trial@example.com');
insert into public.subscriptions (id, user_id, status, price_id, current_period_start, current_period_end,
                                  ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
select 'sub_t', id, 'trialing', 'price_t_year', '2030-05-01', '2030-05-08', null, null, null, '2030-05-01', '2030-05-08', 'sub_t'
  from auth.users where email = 'trial@example.com';
select pg_temp.invoice('in_t0', 'trial@example.com', 'sub_t', 'paid', 0, '2030-05-01', '2030-05-08', 'price_t_year', 'subscription_create');
select is(pg_temp.grants('trial@example.com'), array['trial 05-01..05-08 active 2030-05-01..2030-05-08'],
          'a trial grants its days only, never a year');
select is(pg_temp.expiry('trial@example.com'), '2030-05-08T00:00:00Z', 'expiry = trial end');
select pg_temp.invoice('in_t1', 'trial@example.com', 'sub_t', 'paid', 9000, '2030-05-08', '2031-05-08', 'price_t_year');
select is(pg_temp.expiry('trial@example.com'), '2031-05-08T00:00:00Z', 'trial then the paid year');
select is(pg_temp.vouchers('trial@example.com'), array['0 used active', '12 used active'],
          'a trial voucher (0 months) and a 12-month voucher');
update public.subscriptions set status = 'canceled', ended_at = '2030-05-03' where id = 'sub_t';
select is(pg_temp.grants('trial@example.com'),
          array['trial 05-01..05-03 active 2030-05-01..2030-05-03', 'subscription_period 05-08..05-08 active 2030-05-08..2031-05-08'],
          'a trial ended early covers up to its end; the paid year stays');

-- Upgrade monthly -> yearly: the new period starts at once and cuts the month short.
select pg_temp.invoice('in_u1', 'upgrade@example.com', 'sub_u', 'paid', 900, '2030-01-01', '2030-02-01', 'price_t_month', 'subscription_create');
select pg_temp.invoice('in_u2', 'upgrade@example.com', 'sub_u', 'open', 8600, '2030-01-15', '2031-01-15', 'price_t_year', 'subscription_update');
select is(pg_temp.expiry('upgrade@example.com'), '2030-02-01T00:00:00Z', 'upgrade not paid: the month stays as paid');
select pg_temp.invoice('in_u2', 'upgrade@example.com', 'sub_u', 'paid', 8600, '2030-01-15', '2031-01-15', 'price_t_year', 'subscription_update');
select is(pg_temp.grants('upgrade@example.com'),
          array['subscription_period 01-01..02-01 active 2030-01-01..2030-01-15',
                'subscription_period 01-15..01-15 active 2030-01-15..2031-01-15'],
          'upgrade paid: the month ends where the year begins');
select is(pg_temp.expiry('upgrade@example.com'), '2031-01-15T00:00:00Z', 'expiry = the yearly period''s end');
-- The upgrade's payment is refunded in full: the year goes, and a revoked period cuts nothing
-- short, so the month is whole again.
select pg_temp.pay('pi_u2', 'upgrade@example.com', 8600, '2030-01-15');
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_u2', 'pi_u2');
update public.charges set amount_refunded = 8600 where stripe_charge_id = 'ch_pi_u2';
select is(pg_temp.grants('upgrade@example.com'),
          array['subscription_period 01-01..02-01 active 2030-01-01..2030-02-01',
                'subscription_period 01-15..01-15 revoked refunded -'],
          'upgrade refunded: the year is revoked and the month covers its own dates again');
select is(pg_temp.expiry('upgrade@example.com'), '2030-02-01T00:00:00Z', 'expiry = the month''s end');

-- ---------------------------------------------------------------- stacking: same facts, either order
select pg_temp.pay('pi_x1', 'stack1@example.com', 2900, '2030-01-01', 'price_t_pack', 'cs_x1');
select pg_temp.invoice('in_x1', 'stack1@example.com', 'sub_x1', 'paid', 900, '2030-01-10', '2030-02-10', 'price_t_month', 'subscription_create');
select pg_temp.invoice('in_x2', 'stack2@example.com', 'sub_x2', 'paid', 900, '2030-01-10', '2030-02-10', 'price_t_month', 'subscription_create');
select pg_temp.pay('pi_x2', 'stack2@example.com', 2900, '2030-01-01', 'price_t_pack', 'cs_x2');
select is(pg_temp.grants('stack1@example.com'),
          array['purchase 3 active 2030-01-01..2030-04-01', 'subscription_period 01-10..02-10 active 2030-04-01..2030-05-02'],
          'pass then subscription: the paid month follows the pass');
select is(pg_temp.expiry('stack1@example.com'), '2030-05-02T00:00:00Z', 'every paid day counts');
select is(pg_temp.expiry('stack2@example.com'), pg_temp.expiry('stack1@example.com'), 'recorded in the other order: the same expiry');
select is(pg_temp.grants('stack2@example.com'), pg_temp.grants('stack1@example.com'), 'and the same coverage');

-- A renewal, then the pass is refunded: the subscription's time stays.
select pg_temp.invoice('in_x1b', 'stack1@example.com', 'sub_x1', 'paid', 900, '2030-02-10', '2030-03-10');
select is(pg_temp.expiry('stack1@example.com'), '2030-05-30T00:00:00Z', 'the renewal adds its 28 days');
insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_x1', 'ch_pi_x1', 'pi_x1', 2900, 'usd', 'succeeded', '2030-02-15');
select is(pg_temp.grants('stack1@example.com'),
          array['subscription_period 01-10..02-10 active 2030-01-10..2030-02-10',
                'subscription_period 02-10..03-10 active 2030-02-10..2030-03-10',
                'purchase 3 revoked refunded -'],
          'the refunded pass is revoked and the periods move back to their own dates');
select is(pg_temp.expiry('stack1@example.com'), '2030-03-10T00:00:00Z', 'subscription time kept');

-- ---------------------------------------------------------------- reversals
select pg_temp.pay('pi_r', 'refund@example.com', 2900, '2030-01-01', 'price_t_pack', 'cs_r');
insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_r1', 'ch_pi_r', 'pi_r', 1000, 'usd', 'succeeded', '2030-01-05');
select is(pg_temp.expiry('refund@example.com'), '2030-04-01T00:00:00Z', 'a partial refund changes nothing');
insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_r2', 'ch_pi_r', 'pi_r', 1900, 'usd', 'pending', '2030-01-06');
select is(pg_temp.grants('refund@example.com'), array['purchase 3 revoked refunded -'], 'refunded in full: revoked');
select is(pg_temp.expiry('refund@example.com'), null, 'nothing left: no expiry');
select is(pg_temp.vouchers('refund@example.com'), array['3 used revoked revoked_at'], 'the voucher is revoked');
update public.refunds set status = 'failed' where stripe_refund_id = 're_r2';
select is(pg_temp.grants('refund@example.com'), array['purchase 3 restored 2030-01-01..2030-04-01'], 'the refund failed: restored');
select is(pg_temp.vouchers('refund@example.com'), array['3 used active'], 'the voucher is active again');

-- The charge reports the refund before the refund's failure is known: the refund row decides.
update public.charges set amount_refunded = 2900 where stripe_charge_id = 'ch_pi_r';
select is(pg_temp.grants('refund@example.com'), array['purchase 3 restored 2030-01-01..2030-04-01'],
          'a charge snapshot older than the failure does not revoke again');

-- Subscription payment refunded in full: that period goes.
select pg_temp.pay('pi_s2', 'sub@example.com', 900, '2030-02-01');
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_s2', 'pi_s2');
update public.charges set amount_refunded = 900 where stripe_charge_id = 'ch_pi_s2';
select is(pg_temp.grants('sub@example.com'),
          array['subscription_period 01-01..02-01 active 2030-01-01..2030-02-01', 'subscription_period 02-01..03-01 revoked refunded -'],
          'a fully refunded renewal is revoked');
select is(pg_temp.expiry('sub@example.com'), '2030-02-01T00:00:00Z', 'its days are gone');

-- Disputes: lost revokes; won (funds reinstated) restores.
select pg_temp.pay('pi_d1', 'dispute@example.com', 2900, '2030-01-01', 'price_t_pack', 'cs_d1');
select pg_temp.pay('pi_d2', 'dispute@example.com', 2900, '2030-01-02', 'price_t_pack', 'cs_d2');
select is(pg_temp.expiry('dispute@example.com'), '2030-07-01T00:00:00Z', 'two passes: six months');
insert into public.disputes (stripe_dispute_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, opened_at)
values ('du_1', 'ch_pi_d1', 'pi_d1', 2900, 'usd', 'needs_response', '2030-01-10'),
       ('du_2', 'ch_pi_d2', 'pi_d2', 2900, 'usd', 'needs_response', '2030-01-11');
select is(pg_temp.expiry('dispute@example.com'), '2030-07-01T00:00:00Z', 'an open dispute takes nothing yet');
update public.disputes set funds_withdrawn = true where stripe_dispute_id in ('du_1', 'du_2');
select is(pg_temp.expiry('dispute@example.com'), null, 'funds withdrawn on both: both revoked');
update public.disputes set status = 'lost' where stripe_dispute_id = 'du_1';
update public.disputes set funds_reinstated = true, status = 'won' where stripe_dispute_id = 'du_2';
select is(pg_temp.grants('dispute@example.com'),
          array['purchase 3 restored 2030-01-02..2030-04-02', 'purchase 3 revoked disputed -'],
          'the lost dispute stays revoked; the won one is restored from its own payment time');
select is(pg_temp.expiry('dispute@example.com'), '2030-04-02T00:00:00Z', 'expiry from the payment that stands');

-- ---------------------------------------------------------------- one-off invoice
insert into public.invoices (stripe_invoice_id, user_id, status, billing_reason, currency, amount_paid, subtotal, paid_at, lines)
values ('in_o', pg_temp.buyer('oneoff@example.com'), 'paid', 'manual', 'usd', 5800, 5800, '2030-03-01',
        '[{"price": "price_t_pack", "quantity": 2, "amount": 5800, "proration": false}]');
select is(pg_temp.grants('oneoff@example.com'), array['invoice 6 active 2030-03-01..2030-09-01'],
          'a one-off invoice grants its lines'' terms (2 x 3 months)');

-- ---------------------------------------------------------------- the starting balance
select public.ensure_account(pg_temp.buyer('legacy@example.com'));
update public.accounts set expiry = '2031-01-01' where user_id = (select id from auth.users where email = 'legacy@example.com');
insert into public.access_grants (account_id, source, kind, period_start, period_end, effective_at, coverage_start, coverage_end)
select a.id, 'baseline:' || a.id, 'baseline', '2030-06-01', public.account_expiry(a.expiry), '-infinity', '2030-06-01', public.account_expiry(a.expiry)
  from public.accounts a where public.account_expiry(a.expiry) is not null
   and not exists (select 1 from public.access_grants g where g.account_id = a.id);
select is((select count(*)::int from public.access_grants where kind = 'baseline'), 1,
          'the starting balance is taken once, only for accounts without grants');
select is(pg_temp.expiry('legacy@example.com'), '2031-01-01', 'taking it does not rewrite the expiry');
select pg_temp.pay('pi_l1', 'legacy@example.com', 2900, '2030-07-01', 'price_t_pack', 'cs_l1');
select is(pg_temp.expiry('legacy@example.com'), '2031-04-01T00:00:00Z', 'a new purchase adds its months after the balance');
select pg_temp.pay('pi_l0', 'legacy@example.com', 2900, '2030-05-01', 'price_t_pack', 'cs_l0');
select is(pg_temp.expiry('legacy@example.com'), '2031-04-01T00:00:00Z', 'a payment from before the balance was taken is in it already');

-- ---------------------------------------------------------------- invariants
select is((select count(*)::int from public.access_grants a join public.access_grants b
             on a.account_id = b.account_id and a.id < b.id
            where a.coverage_start is not null and b.coverage_start is not null
              and tstzrange(a.coverage_start, a.coverage_end) && tstzrange(b.coverage_start, b.coverage_end)),
          0, 'no two grants of an account cover the same day');
select is((select count(*)::int from public.accounts a
            where a.expiry is distinct from public.format_expiry((select max(g.coverage_end) from public.access_grants g where g.account_id = a.id))
              and exists (select 1 from public.access_grants g where g.account_id = a.id and g.kind <> 'baseline')),
          0, 'every expiry is the end of its account''s last coverage');

select * from finish();
rollback;
