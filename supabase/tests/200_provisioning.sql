-- Provisioning (migration 20261101000600): auth user + account creation, one-time purchase
-- vouchers, refunds, redeem_voucher. Writes facts the way stripe-worker does (as postgres) and
-- checks what the triggers derived. Rolled back at the end.
begin;
select plan(107);

-- ---------------------------------------------------------------- API surface
select has_function('public', 'find_or_create_auth_user', array['text', 'text'], 'find_or_create_auth_user(text, text)');
select has_function('public', 'ensure_account', array['uuid'], 'ensure_account(uuid)');
select has_function('public', 'generate_account_number', 'generate_account_number()');
select has_function('public', 'account_expiry', array['text'], 'account_expiry(text)');
select has_function('public', 'format_expiry', array['timestamp with time zone'], 'format_expiry(timestamptz)');
select has_function('public', 'redeem_voucher', array['text'], 'redeem_voucher(text)');
select is_definer('public', 'find_or_create_auth_user', array['text', 'text'], 'find_or_create_auth_user is security definer');
select is_definer('public', 'redeem_voucher', array['text'], 'redeem_voucher is security definer');
select has_trigger('public', 'payment_intents', 'trigger_issue_voucher_for_payment_intent', 'payment_intents: voucher trigger');
select has_trigger('public', 'charges', 'trigger_revoke_voucher_on_full_refund', 'charges: refund trigger');
select has_column('public', 'payment_intents', 'price_id', 'payment_intents.price_id');
select fk_ok('public', 'payment_intents', 'price_id', 'public', 'prices', 'id', 'payment_intents.price_id -> prices.id');
select has_column('public', 'vouchers', 'period_start', 'vouchers.period_start');
select has_column('public', 'vouchers', 'period_end', 'vouchers.period_end');
select has_column('public', 'vouchers', 'revoked_at', 'vouchers.revoked_at');
select has_column('public', 'vouchers', 'legacy_duplicate', 'vouchers.legacy_duplicate');
select has_index('public', 'vouchers', 'vouchers_payment_intent_once', 'index vouchers_payment_intent_once');
select has_index('public', 'vouchers', 'vouchers_subscription_period_once', 'index vouchers_subscription_period_once');
select ok(not has_function_privilege('anon', 'public.find_or_create_auth_user(text, text)', 'execute')
      and not has_function_privilege('authenticated', 'public.find_or_create_auth_user(text, text)', 'execute')
      and has_function_privilege('service_role', 'public.find_or_create_auth_user(text, text)', 'execute'),
          'find_or_create_auth_user: service_role only');
select ok(not has_function_privilege('anon', 'public.ensure_account(uuid)', 'execute')
      and not has_function_privilege('authenticated', 'public.ensure_account(uuid)', 'execute')
      and has_function_privilege('service_role', 'public.ensure_account(uuid)', 'execute'),
          'ensure_account: service_role only');
select ok(not has_function_privilege('anon', 'public.redeem_voucher(text)', 'execute')
      and has_function_privilege('authenticated', 'public.redeem_voucher(text)', 'execute')
      and has_function_privilege('service_role', 'public.redeem_voucher(text)', 'execute'),
          'redeem_voucher: authenticated + service_role, not anon');
select ok(not has_function_privilege('authenticated', 'public.issue_voucher_for_payment_intent()', 'execute')
      and not has_function_privilege('authenticated', 'public.revoke_voucher_on_full_refund()', 'execute'),
          'trigger functions are not callable by API roles');

-- ---------------------------------------------------------------- expiry helpers
select is(public.account_expiry(null), null, 'account_expiry(NULL) is NULL');
select is(public.account_expiry(''), null, 'account_expiry('''') is NULL');
select is(public.account_expiry('not a date'), null, 'account_expiry(garbage) is NULL');
select is(public.account_expiry('2025-01-01'), '2025-01-01 00:00:00+00'::timestamptz, 'plain date (production) read as UTC');
select is(public.account_expiry('2030-05-06T07:08:09Z'), '2030-05-06 07:08:09+00'::timestamptz, 'ISO-8601 UTC parsed');
select is(public.format_expiry('2030-05-06 09:08:09+02'::timestamptz), '2030-05-06T07:08:09Z', 'format_expiry writes ISO-8601 UTC');
select is(public.format_expiry(null), null, 'format_expiry(NULL) is NULL');

-- ---------------------------------------------------------------- auth users
select isnt(public.find_or_create_auth_user('Buyer.A@Example.com', 'Buyer A'), null, 'creates an auth user');
select is(public.find_or_create_auth_user('  buyer.a@EXAMPLE.com ', null),
          (select id from auth.users where email = 'buyer.a@example.com'),
          'same email in another case finds the same user');
select is((select count(*)::int from auth.users where lower(email) = 'buyer.a@example.com'), 1, 'exactly one auth user for the email');
select ok((select instance_id = '00000000-0000-0000-0000-000000000000' and aud = 'authenticated' and role = 'authenticated'
              and email_confirmed_at is null and is_super_admin = false and encrypted_password = ''
              and confirmation_token = '' and recovery_token = '' and email_change_token_new = '' and email_change = ''
              and raw_app_meta_data = '{"provider": "email", "providers": ["email"]}'::jsonb
              and raw_user_meta_data ->> 'full_name' = 'Buyer A'
              and created_at is not null and updated_at is not null
             from auth.users where email = 'buyer.a@example.com'),
          'auth user has the columns GoTrue needs (not confirmed, not super admin, empty tokens, email provider)');
select ok((select i.provider = 'email' and i.provider_id = u.id::text and i.identity_data ->> 'sub' = u.id::text
              and i.identity_data ->> 'email' = 'buyer.a@example.com' and not (i.identity_data ->> 'email_verified')::boolean
              and i.last_sign_in_at is null
             from auth.users u join auth.identities i on i.user_id = u.id
            where u.email = 'buyer.a@example.com'),
          'email identity created');
select is((select count(*)::int from auth.identities i join auth.users u on u.id = i.user_id where u.email = 'buyer.a@example.com'),
          1, 'one identity');
select is((select email::text || '|' || full_name from public.users
            where id = (select id from auth.users where email = 'buyer.a@example.com')),
          'buyer.a@example.com|Buyer A', 'public.users row with email and full_name (handle_new_user)');
select isnt(public.find_or_create_auth_user('buyer.b@example.com', null), null, 'creates user B without a name');
select is((select full_name from public.users where email = 'buyer.b@example.com'), null, 'B has no name yet');
select is(public.find_or_create_auth_user('Buyer.B@example.com', 'Buyer B'),
          (select id from auth.users where email = 'buyer.b@example.com'), 'B found again');
select is((select full_name from public.users where email = 'buyer.b@example.com'), 'Buyer B', 'missing full_name filled in');
select lives_ok($$select public.find_or_create_auth_user('buyer.b@example.com', 'Other Name')$$, 'call with another name');
select is((select full_name from public.users where email = 'buyer.b@example.com'), 'Buyer B', 'an existing full_name is kept');
select throws_ok($$select public.find_or_create_auth_user('not-an-email', null)$$, '22023', null, 'invalid email rejected');

-- ---------------------------------------------------------------- accounts
select ok(public.ensure_account((select id from auth.users where email = 'buyer.a@example.com')) ~ '^[1-9][0-9]{15}$',
          'ensure_account returns a 16-digit account number');
select is(public.ensure_account((select id from auth.users where email = 'buyer.a@example.com')),
          (select account_number from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'ensure_account twice returns the same number');
select is((select count(*)::int from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          1, 'one account per user');
select ok((select status = 'active' and expiry = '' from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'new account is active with an empty expiry');
select ok(public.ensure_account((select id from auth.users where email = 'buyer.b@example.com'))
            <> public.ensure_account((select id from auth.users where email = 'buyer.a@example.com')),
          'two users get different numbers');
select ok(abs(public.ensure_account((select id from auth.users where email = 'buyer.b@example.com'))::numeric
              - public.ensure_account((select id from auth.users where email = 'buyer.a@example.com'))::numeric) > 1000,
          'numbers are not sequential');
select is((select count(distinct n)::int from (select public.generate_account_number() as n from generate_series(1, 200)) s),
          200, '200 generated numbers are distinct');
-- legacy user C: two accounts, the oldest without a number
select lives_ok($$
  select public.find_or_create_auth_user('legacy.c@example.com', null);
  insert into public.accounts (id, created_at, account_number, user_id)
  values ('00000000-0000-4000-8000-0000000c0001', now() - interval '2 days', null,
          (select id from auth.users where email = 'legacy.c@example.com')),
         ('00000000-0000-4000-8000-0000000c0002', now() - interval '1 day', 'LEGACY-C-2',
          (select id from auth.users where email = 'legacy.c@example.com'));
$$, 'legacy user with two accounts, the oldest unnumbered');
select isnt(public.ensure_account((select id from auth.users where email = 'legacy.c@example.com')), null,
            'ensure_account for the legacy user');
select is(public.ensure_account((select id from auth.users where email = 'legacy.c@example.com')),
          (select account_number from public.accounts where id = '00000000-0000-4000-8000-0000000c0001'),
          'the oldest account is used and numbered');
select ok((select account_number is not null from public.accounts where id = '00000000-0000-4000-8000-0000000c0001')
      and (select count(*) = 2 from public.accounts where user_id = (select id from auth.users where email = 'legacy.c@example.com')),
          'no third account created');

-- ---------------------------------------------------------------- catalog + customers
insert into public.products (id, active, name, metadata) values
  ('prod_t_pack', true, 'Pack', '{"duration_months": "3"}'),
  ('prod_t_plain', true, 'Plain', null),
  ('prod_t_gift', true, 'Gift', '{"voucher_redeem": "manual"}');
insert into public.prices (id, product_id, unit_amount, currency, type, interval, interval_count, metadata) values
  ('price_t_pack', 'prod_t_pack', 900, 'usd', 'one_time', null, null, '{}'),
  ('price_t_12', 'prod_t_pack', 4900, 'usd', 'one_time', null, null, '{"duration_months": "12"}'),
  ('price_t_bad', 'prod_t_plain', 100, 'usd', 'one_time', null, null, '{"duration_months": "lots"}'),
  ('price_t_gift', 'prod_t_gift', 2900, 'usd', 'one_time', null, null, '{"duration_months": "6"}'),
  ('price_t_rec', 'prod_t_plain', 900, 'usd', 'recurring', 'month', 1, null);
insert into public.customers (id, stripe_customer_id)
select id, 'cus_t_' || split_part(email, '@', 1) from auth.users
 where email in ('buyer.a@example.com', 'buyer.b@example.com');

-- ---------------------------------------------------------------- one-time purchase
select lives_ok($$
  insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('00000000-0000-4000-8000-00000000f001', 'pi_t_1', 'processing', 900, 'usd',
          (select id from auth.users where email = 'buyer.a@example.com'), 'price_t_pack')
$$, 'intent recorded as processing');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f001'),
          0, 'no voucher while processing');
select lives_ok($$update public.payment_intents set status = 'succeeded' where stripe_payment_intent_id = 'pi_t_1'$$,
                'intent succeeded');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f001'),
          1, 'one voucher issued');
select ok((select is_used and used_at is not null and status = 'active' and updated_by = 'stripe-worker'
              and duration_months = 3 and revoked_at is null and not legacy_duplicate
              and code ~ '^[A-HJ-NP-Z2-9]{4}(-[A-HJ-NP-Z2-9]{4}){3}$'
              and associated_account = (select account_number from public.accounts
                                         where user_id = (select id from auth.users where email = 'buyer.a@example.com'))
             from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f001'),
          'voucher redeemed onto the buyer''s account, duration from product metadata, well-formed code');
select ok((select public.account_expiry(expiry) >= now() + interval '3 months' - interval '1 minute'
             from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'expiry >= now + 3 months');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          public.format_expiry(public.add_months_utc(now(), 3)), 'expiry is exactly now + 3 months, ISO UTC text');
create temp table t_expiry on commit drop as
  select expiry as a1 from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com');
select lives_ok($$update public.payment_intents set status = 'succeeded' where stripe_payment_intent_id = 'pi_t_1'$$,
                'replayed status update');
select lives_ok($$update public.payment_intents set customer_id = customer_id, price_id = price_id where stripe_payment_intent_id = 'pi_t_1'$$,
                'customer_id / price_id update');
select lives_ok($$
  insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('pi_t_1', 'succeeded', 900, 'usd', (select id from auth.users where email = 'buyer.a@example.com'), 'price_t_pack')
  on conflict (stripe_payment_intent_id) do update
    set status = excluded.status, customer_id = excluded.customer_id, price_id = excluded.price_id
$$, 'worker-style upsert replay');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f001'),
          1, 'still exactly one voucher');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          (select a1 from t_expiry), 'expiry unchanged by replays');
select throws_ok($$insert into public.vouchers (code, payment_intent_id) values ('T-DUP-1', '00000000-0000-4000-8000-00000000f001')$$,
                 '23505', null, 'a second voucher for the intent is rejected (vouchers_payment_intent_once)');
select lives_ok($$insert into public.vouchers (code, payment_intent_id, legacy_duplicate) values ('T-DUP-2', '00000000-0000-4000-8000-00000000f001', true)$$,
                'a legacy duplicate is exempt from the index');
delete from public.vouchers where code = 'T-DUP-2';

-- succeeded first, customer linked later
select lives_ok($$
  insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('00000000-0000-4000-8000-00000000f00b', 'pi_t_b', 'succeeded', 100, 'usd', null, 'price_t_bad')
$$, 'succeeded intent without customer');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f00b'),
          0, 'no voucher without a customer');
select lives_ok($$update public.payment_intents set customer_id = (select id from auth.users where email = 'buyer.b@example.com')
                   where stripe_payment_intent_id = 'pi_t_b'$$, 'customer linked');
select is((select duration_months from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f00b'),
          1, 'one voucher; invalid duration metadata -> 1 month');
select lives_ok($$update public.payment_intents set customer_id = customer_id, status = 'succeeded' where stripe_payment_intent_id = 'pi_t_b'$$,
                'second customer_id update');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f00b'),
          1, 'still one voucher');

-- second purchase: 12 months (price metadata wins over product metadata), from the previous expiry
select lives_ok($$
  insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('00000000-0000-4000-8000-00000000f002', 'pi_t_2', 'succeeded', 4900, 'usd',
          (select id from auth.users where email = 'buyer.a@example.com'), 'price_t_12')
$$, 'second purchase (12 months)');
select is((select duration_months from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f002'),
          12, 'price metadata duration_months 12');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          (select public.format_expiry(public.add_months_utc(public.account_expiry(a1), 12)) from t_expiry),
          'expiry moves on by 12 months from the previous expiry');

-- recurring price: the subscription triggers handle it
select lives_ok($$
  insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('00000000-0000-4000-8000-00000000f003', 'pi_t_3', 'succeeded', 900, 'usd',
          (select id from auth.users where email = 'buyer.a@example.com'), 'price_t_rec')
$$, 'subscription invoice intent');
select is((select count(*)::int from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f003'),
          0, 'no one-time voucher for a recurring price');

-- gift (voucher_redeem = manual on the product)
select lives_ok($$
  insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id, price_id)
  values ('00000000-0000-4000-8000-00000000f004', 'pi_t_4', 'succeeded', 2900, 'usd',
          (select id from auth.users where email = 'buyer.b@example.com'), 'price_t_gift'),
         ('00000000-0000-4000-8000-00000000f005', 'pi_t_5', 'succeeded', 2900, 'usd',
          (select id from auth.users where email = 'buyer.b@example.com'), 'price_t_gift'),
         ('00000000-0000-4000-8000-00000000f006', 'pi_t_6', 'succeeded', 2900, 'usd',
          (select id from auth.users where email = 'buyer.b@example.com'), 'price_t_gift')
$$, 'three gift purchases by B');
select ok((select bool_and(not is_used and used_at is null and status = 'active' and duration_months = 6
              and associated_account = (select account_number from public.accounts
                                         where user_id = (select id from auth.users where email = 'buyer.b@example.com')))
             from public.vouchers where payment_intent_id in ('00000000-0000-4000-8000-00000000f004',
                                                              '00000000-0000-4000-8000-00000000f005',
                                                              '00000000-0000-4000-8000-00000000f006')),
          'manual vouchers stay unused, visible on the buyer''s account');
select is((select public.account_expiry(expiry) from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.b@example.com')),
          public.add_months_utc(date_trunc('second', now()), 1), 'B''s expiry only has the 1-month voucher');

-- ---------------------------------------------------------------- refunds
create temp table t_expiry2 on commit drop as
  select expiry as a2 from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com');
select lives_ok($$
  insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, customer_id, status)
  values ('ch_t_2', '00000000-0000-4000-8000-00000000f002', 4900, 1000, 'usd',
          (select id from auth.users where email = 'buyer.a@example.com'), 'succeeded')
$$, 'partial refund');
select ok((select status = 'active' and revoked_at is null from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f002')
      and (select expiry = (select a2 from t_expiry2) from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'partial refund changes nothing');
select lives_ok($$update public.charges set amount_refunded = 4900 where stripe_charge_id = 'ch_t_2'$$, 'full refund');
select ok((select status = 'revoked' and revoked_at is not null from public.vouchers
            where payment_intent_id = '00000000-0000-4000-8000-00000000f002'),
          'voucher revoked');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          (select a1 from t_expiry), 'the 12 months are taken back');
select lives_ok($$update public.charges set amount_refunded = 4900, status = 'succeeded' where stripe_charge_id = 'ch_t_2'$$,
                'refund event replayed');
select lives_ok($$
  insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
  values ('ch_t_2b', '00000000-0000-4000-8000-00000000f002', 4900, 4900, 'usd', 'succeeded')
$$, 'another fully refunded charge of the intent');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          (select a1 from t_expiry), 'refunding again changes nothing');
select lives_ok($$
  insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
  values ('ch_t_6', '00000000-0000-4000-8000-00000000f006', 2900, 2900, 'usd', 'succeeded')
$$, 'full refund of an unused gift');
select ok((select status = 'revoked' and not is_used from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f006')
      and (select public.account_expiry(expiry) = public.add_months_utc(date_trunc('second', now()), 1) from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.b@example.com')),
          'unused gift revoked, no expiry change');

-- ---------------------------------------------------------------- redeem_voucher
insert into public.vouchers (code, duration_months, status) values ('T-CANCELED-1', 1, 'canceled');
create temp table t_codes on commit drop as
  select (select code from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f004') as gift4,
         (select code from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f005') as gift5,
         (select code from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f006') as gift6,
         (select code from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f001') as used1,
         (select account_number from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')) as acc_a,
         (select account_number from public.accounts where user_id = (select id from auth.users where email = 'buyer.b@example.com')) as acc_b,
         (select id from auth.users where email = 'buyer.a@example.com') as uid_a,
         (select id from auth.users where email = 'buyer.b@example.com') as uid_b;
grant select on t_codes to anon, authenticated;

-- B (the buyer) redeems one gift
do $$ begin perform set_config('request.jwt.claims', json_build_object('sub', uid_b, 'role', 'authenticated')::text, true) from t_codes; end $$;
set local role authenticated;
select is((select public.redeem_voucher(' ' || lower(gift5) || ' ') - 'expiry' from t_codes),
          (select jsonb_build_object('account_number', acc_b, 'duration_months', 6) from t_codes),
          'B redeems a gift code (trimmed, case-insensitive)');
reset role;
select ok((select is_used and used_at is not null and updated_by = (select uid_b::text from t_codes)
             from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f005'),
          'voucher marked used by B');
select is((select public.account_expiry(expiry) from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.b@example.com')),
          public.add_months_utc(public.add_months_utc(date_trunc('second', now()), 1), 6), 'B''s expiry moved on by 6 months');

-- Owner only: A cannot redeem (nor probe) B's gift code; unassigned operator codes are anyone's
insert into public.vouchers (code, duration_months, status) values ('T-OPEN-1', 2, 'active');
do $$ begin perform set_config('request.jwt.claims', json_build_object('sub', uid_a, 'role', 'authenticated')::text, true) from t_codes; end $$;
set local role authenticated;
select throws_ok((select format('select public.redeem_voucher(%L)', gift4) from t_codes),
                 'P0002', 'voucher code not found', 'A cannot redeem B''s gift code: it looks unknown');
select throws_ok((select format('select public.redeem_voucher(%L)', used1) from t_codes),
                 '22023', 'voucher already used', 'auto-redeemed purchase code rejected');
select throws_ok($$select public.redeem_voucher('T-CANCELED-1')$$, '22023', 'voucher is canceled', 'canceled code rejected');
select throws_ok($$select public.redeem_voucher('NOPE-NOPE-NOPE-NOPE')$$, 'P0002', 'voucher code not found', 'unknown code rejected');
select is((select (public.redeem_voucher('t-open-1') ->> 'account_number') from t_codes),
          (select acc_a from t_codes), 'A redeems an unassigned code onto A''s account');
reset role;
select ok((select not is_used and associated_account = (select acc_b from t_codes)
             from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f004'),
          'B''s gift code is untouched by A''s attempt');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          (select public.format_expiry(public.add_months_utc(public.account_expiry(a1), 2)) from t_expiry),
          'A''s expiry moved on by the unassigned code''s 2 months');

-- B, the owner, redeems the gift A could not
do $$ begin perform set_config('request.jwt.claims', json_build_object('sub', uid_b, 'role', 'authenticated')::text, true) from t_codes; end $$;
set local role authenticated;
select is((select (public.redeem_voucher(gift4) ->> 'account_number') from t_codes),
          (select acc_b from t_codes), 'B redeems their own gift code');
select throws_ok((select format('select public.redeem_voucher(%L)', gift6) from t_codes),
                 '22023', 'voucher is revoked', 'revoked code rejected');
reset role;
select ok((select is_used and updated_by = (select uid_b::text from t_codes)
             from public.vouchers where payment_intent_id = '00000000-0000-4000-8000-00000000f004'),
          'gift code used by its owner');

-- not signed in / anon
do $$ begin perform set_config('request.jwt.claims', '', true); end $$;
set local role authenticated;
select throws_ok($$select public.redeem_voucher('T-CANCELED-1')$$, '42501', 'not signed in', 'no JWT subject: not signed in');
reset role;
set local role anon;
select throws_ok($$select public.redeem_voucher('T-CANCELED-1')$$, '42501', null, 'anon cannot execute redeem_voucher');
reset role;

select * from finish();
rollback;
