-- Subscription vouchers (migration 20261101000610): one voucher per billing period despite the
-- two insert triggers seed 002 has, renewals, status changes. Subscriptions are written the way
-- stripe-worker writes them (as postgres, the five date columns always explicit). Rolled back.
begin;
select plan(52);

-- ---------------------------------------------------------------- triggers + functions
select has_trigger('public', 'subscriptions', 'trigger_create_or_update_voucher_after_subscription_change', 'insert-or-update voucher trigger');
select has_trigger('public', 'subscriptions', 'trigger_create_voucher_after_subscription_insert', 'insert voucher trigger');
select has_trigger('public', 'subscriptions', 'trigger_update_voucher_after_subscription_update', 'status-change voucher trigger');
select trigger_is('public', 'subscriptions', 'trigger_create_voucher_after_subscription_insert',
                  'public', 'create_voucher_for_new_subscription', 'insert trigger calls create_voucher_for_new_subscription');
select trigger_is('public', 'subscriptions', 'trigger_update_voucher_after_subscription_update',
                  'public', 'update_voucher_on_subscription_change', 'status trigger calls update_voucher_on_subscription_change');
select ok(not has_function_privilege('authenticated', 'public.create_voucher_for_new_subscription()', 'execute')
      and not has_function_privilege('anon', 'public.update_voucher_on_subscription_change()', 'execute'),
          'subscription trigger functions are not callable by API roles');

-- ---------------------------------------------------------------- fixtures
insert into public.products (id, active, name) values ('prod_t_sub', true, 'Plan');
insert into public.prices (id, product_id, unit_amount, currency, type, interval, interval_count) values
  ('price_t_month', 'prod_t_sub', 900, 'usd', 'recurring', 'month', 1),
  ('price_t_quarter', 'prod_t_sub', 2500, 'usd', 'recurring', 'month', 3),
  ('price_t_year', 'prod_t_sub', 9000, 'usd', 'recurring', 'year', 1),
  ('price_t_week', 'prod_t_sub', 300, 'usd', 'recurring', 'week', 1);
select isnt(public.find_or_create_auth_user('sub.s@example.com', 'Sub S'), null, 'user S');
select isnt(public.find_or_create_auth_user('sub.y@example.com', null), null, 'user Y');
select isnt(public.find_or_create_auth_user('sub.t@example.com', null), null, 'user T');

-- ---------------------------------------------------------------- first period
select lives_ok($$
  insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end, created,
                                    current_period_start, current_period_end,
                                    ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
  values ('sub_t_s', (select id from auth.users where email = 'sub.s@example.com'), 'active', 'price_t_month', 1, false, now(),
          '2030-01-01 00:00+00', '2030-02-01 00:00+00', null, null, null, null, null, 'sub_t_s')
$$, 'active subscription inserted');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s'), 1,
          'exactly one voucher despite two insert triggers');
select ok((select is_used and used_at is not null and status = 'active' and duration_months = 1
              and period_start = '2030-01-01 00:00+00' and period_end = '2030-02-01 00:00+00'
              and updated_by = 'stripe-worker' and payment_intent_id is null
              and associated_account = (select account_number from public.accounts
                                         where user_id = (select id from auth.users where email = 'sub.s@example.com'))
             from public.vouchers where subscription_id = 'sub_t_s'),
          'voucher redeemed onto the subscriber''s account for the billing period');
select is((select count(*)::int from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          1, 'one account created');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          '2030-02-01T00:00:00Z', 'expiry = period end');

-- ---------------------------------------------------------------- same period: nothing added
select lives_ok($$update public.subscriptions set quantity = 2, cancel_at_period_end = false where id = 'sub_t_s'$$,
                'update within the period');
select lives_ok($$update public.subscriptions set status = 'active', current_period_start = '2030-01-01 00:00+00',
                   current_period_end = '2030-02-01 00:00+00' where id = 'sub_t_s'$$, 'replayed snapshot');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s'), 1, 'no voucher added');
select throws_ok($$insert into public.vouchers (code, subscription_id, period_start) values ('T-SDUP-1', 'sub_t_s', '2030-01-01 00:00+00')$$,
                 '23505', null, 'a second voucher for the period is rejected (vouchers_subscription_period_once)');

-- ---------------------------------------------------------------- renewal
select lives_ok($$update public.subscriptions set current_period_start = '2030-02-01 00:00+00',
                   current_period_end = '2030-03-01 00:00+00' where id = 'sub_t_s'$$, 'renewal');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s'), 2, 'exactly one more voucher');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          '2030-03-01T00:00:00Z', 'expiry = new period end');
select lives_ok($$update public.subscriptions set current_period_start = '2030-02-01 00:00+00',
                   current_period_end = '2030-03-01 00:00+00', status = 'active' where id = 'sub_t_s'$$, 'renewal replayed');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s'), 2, 'replayed renewal adds nothing');

-- ---------------------------------------------------------------- cancel at period end, past_due
select lives_ok($$update public.subscriptions set cancel_at_period_end = true, cancel_at = '2030-03-01 00:00+00',
                   canceled_at = now() where id = 'sub_t_s'$$, 'cancel_at_period_end');
select ok((select bool_and(status = 'active' and is_used) from public.vouchers where subscription_id = 'sub_t_s')
      and (select expiry = '2030-03-01T00:00:00Z' from public.accounts
            where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          'cancel_at_period_end revokes nothing; access runs to period end');
-- an unused voucher of this subscription (e.g. handed out by the old handler)
insert into public.vouchers (code, duration_months, is_used, subscription_id) values ('T-SUB-UNUSED', 1, false, 'sub_t_s');
select lives_ok($$update public.subscriptions set status = 'past_due' where id = 'sub_t_s'$$, 'past_due');
select ok((select bool_and(status = 'active') from public.vouchers where subscription_id = 'sub_t_s')
      and (select expiry = '2030-03-01T00:00:00Z' from public.accounts
            where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          'past_due changes nothing');
select lives_ok($$update public.subscriptions set status = 'active' where id = 'sub_t_s'$$, 'active again');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s'), 3,
          'back to active in the same period adds nothing');

-- ---------------------------------------------------------------- canceled
select lives_ok($$update public.subscriptions set status = 'canceled', ended_at = now() where id = 'sub_t_s'$$, 'canceled');
select is((select status from public.vouchers where code = 'T-SUB-UNUSED'), 'canceled', 'unused voucher canceled');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s' and is_used and status = 'active'),
          2, 'used vouchers untouched');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          '2030-03-01T00:00:00Z', 'expiry unchanged: paid time is never taken away');
select lives_ok($$update public.subscriptions set status = 'active', current_period_start = '2030-03-01 00:00+00',
                   current_period_end = '2030-04-01 00:00+00' where id = 'sub_t_s'$$, 'reactivated with a new period');
select is((select status from public.vouchers where code = 'T-SUB-UNUSED'), 'canceled', 'canceled voucher stays canceled');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s' and period_start = '2030-03-01 00:00+00'),
          1, 'the new period gets its voucher');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          '2030-04-01T00:00:00Z', 'expiry follows the new period');

-- expiry never moves backwards: a second (older) subscription of S
select lives_ok($$
  insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end,
                                    current_period_start, current_period_end,
                                    ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
  values ('sub_t_s2', (select id from auth.users where email = 'sub.s@example.com'), 'active', 'price_t_month', 1, false,
          '2029-01-01 00:00+00', '2029-02-01 00:00+00', null, null, null, null, null, 'sub_t_s2')
$$, 'subscription with an earlier period end');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_s2'), 1, 'its voucher is issued');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          '2030-04-01T00:00:00Z', 'expiry does not move backwards');
select is((select count(*)::int from public.accounts where user_id = (select id from auth.users where email = 'sub.s@example.com')),
          1, 'still one account');

-- ---------------------------------------------------------------- unpaid / incomplete_expired
insert into public.vouchers (code, duration_months, is_used, subscription_id) values ('T-SUB2-UNUSED', 1, false, 'sub_t_s2');
select lives_ok($$update public.subscriptions set status = 'unpaid' where id = 'sub_t_s2'$$, 'unpaid');
select ok((select status = 'canceled' from public.vouchers where code = 'T-SUB2-UNUSED')
      and (select status = 'active' and is_used from public.vouchers where subscription_id = 'sub_t_s2' and period_start is not null),
          'unpaid cancels the unused voucher only');

-- ---------------------------------------------------------------- durations by interval, trialing, incomplete
select lives_ok($$
  insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end,
                                    current_period_start, current_period_end,
                                    ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
  values ('sub_t_y', (select id from auth.users where email = 'sub.y@example.com'), 'active', 'price_t_year', 1, false,
          '2030-01-15 00:00+00', '2031-01-15 00:00+00', null, null, null, null, null, 'sub_t_y')
$$, 'yearly subscription');
select is((select duration_months from public.vouchers where subscription_id = 'sub_t_y'), 12, 'yearly price -> 12 months');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.y@example.com')),
          '2031-01-15T00:00:00Z', 'yearly: expiry = period end');
select lives_ok($$
  insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end,
                                    current_period_start, current_period_end,
                                    ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
  values ('sub_t_q', (select id from auth.users where email = 'sub.t@example.com'), 'incomplete', 'price_t_quarter', 1, false,
          '2030-01-15 00:00+00', '2030-04-15 00:00+00', null, null, null, null, null, 'sub_t_q'),
         ('sub_t_w', (select id from auth.users where email = 'sub.t@example.com'), 'trialing', 'price_t_week', 1, false,
          '2030-01-15 00:00+00', '2030-01-22 00:00+00', null, null, null, '2030-01-15 00:00+00', '2030-01-22 00:00+00', 'sub_t_w')
$$, 'incomplete quarterly + trialing weekly subscriptions');
select is((select count(*)::int from public.vouchers where subscription_id = 'sub_t_q'), 0, 'incomplete: no voucher');
select is((select duration_months from public.vouchers where subscription_id = 'sub_t_w'), 1, 'trialing weekly: one voucher, 1 month minimum');
select lives_ok($$update public.subscriptions set status = 'active' where id = 'sub_t_q'$$, 'incomplete -> active');
select is((select duration_months from public.vouchers where subscription_id = 'sub_t_q'), 3, 'quarterly price -> 3 months');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'sub.t@example.com')),
          '2030-04-15T00:00:00Z', 'expiry = the latest period end');

select * from finish();
rollback;
