-- Schema integrity: every FK and unique constraint exercised
-- with real inserts, plus the triggers stripe-worker relies on. Runs in a transaction that is
-- rolled back (supabase test db / pg_prove). Needs: create extension pgtap.
begin;
select plan(110);

-- ---------------------------------------------------------------- contract tables / columns
select has_table('public', 'users', 'public.users exists');
select has_table('public', 'customers', 'public.customers exists');
select has_table('public', 'accounts', 'public.accounts exists');
select has_table('public', 'payment_intents', 'public.payment_intents exists');
select has_table('public', 'charges', 'public.charges exists');
select has_table('public', 'payment_methods', 'public.payment_methods exists');
select has_table('public', 'subscriptions', 'public.subscriptions exists');
select has_table('public', 'vouchers', 'public.vouchers exists');
select has_table('public', 'products', 'public.products exists');
select has_table('public', 'prices', 'public.prices exists');
select has_table('public', 'channels', 'public.channels exists');
select has_table('public', 'stripe_webhook_events', 'public.stripe_webhook_events exists');
select has_table('public', 'events', 'public.events exists');
select has_table('public', 'migration_dedup_log', 'public.migration_dedup_log exists');
select has_column('public', 'users', 'email', 'public.users.email exists');
select col_type_is('public', 'users', 'email', 'character varying(255)', 'users.email is varchar(255)');
select col_is_pk('public', 'stripe_webhook_events', 'id', 'stripe_webhook_events.id is the pk');
select has_column('public', 'stripe_webhook_events', 'stripe_event_id', 'webhook events: stripe_event_id');
select has_column('public', 'stripe_webhook_events', 'event_data', 'webhook events: event_data');
select has_column('public', 'stripe_webhook_events', 'processing_status', 'webhook events: processing_status');
select has_column('public', 'stripe_webhook_events', 'retry_count', 'webhook events: retry_count');
select has_column('public', 'stripe_webhook_events', 'old_tier', 'webhook events: old_tier (first design)');
select has_column('public', 'stripe_webhook_events', 'livemode', 'webhook events: livemode');
select has_column('public', 'stripe_webhook_events', 'event_created_at', 'webhook events: event_created_at');
select has_column('public', 'stripe_webhook_events', 'next_attempt_at', 'webhook events: next_attempt_at');
select has_column('public', 'stripe_webhook_events', 'locked_until', 'webhook events: locked_until');
select has_column('public', 'stripe_webhook_events', 'locked_by', 'webhook events: locked_by');
select has_column('public', 'stripe_webhook_events', 'request_id', 'webhook events: request_id');
select has_column('public', 'stripe_webhook_events', 'processing_note', 'webhook events: processing_note');
select has_column('public', 'stripe_webhook_events', 'updated_at', 'webhook events: updated_at');
select col_is_pk('public', 'events', 'id', 'events.id is the pk');
select has_column('public', 'events', 'source', 'events.source');
select has_column('public', 'events', 'external_id', 'events.external_id');
select has_trigger('auth', 'users', 'on_auth_user_created', 'auth.users: on_auth_user_created');
select has_trigger('auth', 'users', 'on_auth_user_email_updated', 'auth.users: on_auth_user_email_updated');
select has_trigger('public', 'accounts', 'trigger_sse_accounts', 'accounts: trigger_sse_accounts');
select has_trigger('public', 'accounts', 'trigger_accounts_update', 'accounts: trigger_accounts_update');
select has_trigger('public', 'subscriptions', 'trigger_create_or_update_voucher_after_subscription_change', 'subscriptions: voucher trigger (insert or update)');
select has_trigger('public', 'subscriptions', 'trigger_create_voucher_after_subscription_insert', 'subscriptions: voucher trigger (insert)');
select has_trigger('public', 'subscriptions', 'trigger_update_voucher_after_subscription_update', 'subscriptions: voucher status trigger');
select has_trigger('public', 'vouchers', 'vouchers_updated_at_trigger', 'vouchers: updated_at trigger');
select ok(not has_table_privilege('anon', 'auth.users', 'select'), 'anon cannot read auth.users');
select ok(not has_table_privilege('authenticated', 'auth.users', 'select'), 'authenticated cannot read auth.users');
select ok((select relrowsecurity from pg_class where oid = 'public.stripe_webhook_events'::regclass), 'RLS on stripe_webhook_events');
select ok('paused' = any(enum_range(null::public.subscription_status)::text[]), 'subscription_status has paused');

-- ---------------------------------------------------------------- auth.users -> public.users
select lives_ok($$
  insert into auth.users (id, aud, role, email, raw_user_meta_data, created_at)
  values ('00000000-0000-4000-8000-0000000000a1', 'authenticated', 'authenticated', 't1@example.com',
          '{"full_name": "Test One", "avatar_url": "https://example.com/1.png"}', now()),
         ('00000000-0000-4000-8000-0000000000a2', 'authenticated', 'authenticated', 't2@example.com',
          '{"name": "Test Two"}', now()),
         ('00000000-0000-4000-8000-0000000000a3', 'authenticated', 'authenticated', 't3@example.com',
          '{}', now())
$$, 'insert auth users');
select is((select email::text from public.users where id = '00000000-0000-4000-8000-0000000000a1'),
          't1@example.com', 'handle_new_user copies the email');
select is((select full_name from public.users where id = '00000000-0000-4000-8000-0000000000a1'),
          'Test One', 'handle_new_user copies full_name');
select is((select avatar_url from public.users where id = '00000000-0000-4000-8000-0000000000a1'),
          'https://example.com/1.png', 'handle_new_user copies avatar_url');
select is((select full_name from public.users where id = '00000000-0000-4000-8000-0000000000a2'),
          'Test Two', 'handle_new_user falls back to meta name');
select lives_ok($$update auth.users set email = 't1-new@example.com' where id = '00000000-0000-4000-8000-0000000000a1'$$,
                'change an auth email');
select is((select email::text from public.users where id = '00000000-0000-4000-8000-0000000000a1'),
          't1-new@example.com', 'email change syncs to public.users');

-- ---------------------------------------------------------------- foreign keys: one ok, one 23503
-- users.id -> auth.users
delete from public.users where id = '00000000-0000-4000-8000-0000000000a3';
select lives_ok($$insert into public.users (id) values ('00000000-0000-4000-8000-0000000000a3')$$, 'FK users.id: existing auth user');
select throws_ok($$insert into public.users (id) values ('00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK users.id: unknown auth user');
-- customers.id -> auth.users
select lives_ok($$insert into public.customers (id, stripe_customer_id) values ('00000000-0000-4000-8000-0000000000a1', 'cus_T1')$$, 'FK customers.id: existing auth user');
select throws_ok($$insert into public.customers (id) values ('00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK customers.id: unknown auth user');
-- accounts.user_id -> public.users
select lives_ok($$insert into public.accounts (account_number, cryptotoken, user_id) values ('T-ACC-1', 'T-TOK-1', '00000000-0000-4000-8000-0000000000a1')$$, 'FK accounts.user_id: existing user');
select throws_ok($$insert into public.accounts (account_number, user_id) values ('T-ACC-X', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK accounts.user_id: unknown user');
-- payment_intents.customer_id -> customers
select lives_ok($$insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id)
                  values ('00000000-0000-4000-8000-0000000000b1', 'pi_T1', 'processing', 4900, 'usd', '00000000-0000-4000-8000-0000000000a1')$$, 'FK payment_intents.customer_id: existing customer');
select throws_ok($$insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id)
                   values ('pi_TX', 'succeeded', 1, 'usd', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK payment_intents.customer_id: unknown customer');
-- charges.payment_intent_id -> payment_intents
select lives_ok($$insert into public.charges (stripe_charge_id, payment_intent_id, amount, currency, status)
                  values ('ch_T1', '00000000-0000-4000-8000-0000000000b1', 4900, 'usd', 'succeeded')$$, 'FK charges.payment_intent_id: existing intent');
select throws_ok($$insert into public.charges (stripe_charge_id, payment_intent_id, amount, currency, status)
                   values ('ch_TX', '00000000-0000-4000-8000-00000000dead', 1, 'usd', 'succeeded')$$, '23503', null, 'FK charges.payment_intent_id: unknown intent');
-- payment_methods.customer_id -> customers
select lives_ok($$insert into public.payment_methods (stripe_payment_method_id, type, customer_id) values ('pm_T1', 'card', '00000000-0000-4000-8000-0000000000a1')$$, 'FK payment_methods.customer_id: existing customer');
select throws_ok($$insert into public.payment_methods (stripe_payment_method_id, type, customer_id) values ('pm_TX', 'card', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK payment_methods.customer_id: unknown customer');
-- prices.product_id -> products
select lives_ok($$insert into public.products (id, active) values ('prod_T1', false)$$, 'placeholder product');
select lives_ok($$insert into public.prices (id, product_id, unit_amount, currency, type, interval, interval_count)
                  values ('price_T1', 'prod_T1', 900, 'usd', 'recurring', 'month', 1)$$, 'FK prices.product_id: existing product');
select throws_ok($$insert into public.prices (id, product_id) values ('price_TX', 'prod_missing')$$, '23503', null, 'FK prices.product_id: unknown product');
-- subscriptions.user_id -> auth.users, subscriptions.price_id -> prices (explicit NULL dates)
select lives_ok($$insert into public.subscriptions (id, user_id, status, price_id, quantity, cancel_at_period_end,
                    current_period_start, current_period_end, ended_at, cancel_at, canceled_at, trial_start, trial_end, stripe_subscription_id)
                  values ('sub_T1', '00000000-0000-4000-8000-0000000000a1', 'active', 'price_T1', 1, false,
                    now(), now() + interval '1 month', null, null, null, null, null, 'sub_T1')$$, 'FK subscriptions.user_id + price_id: existing rows');
select throws_ok($$insert into public.subscriptions (id, user_id, price_id, ended_at, cancel_at, canceled_at, trial_start, trial_end)
                   values ('sub_TX', '00000000-0000-4000-8000-00000000dead', 'price_T1', null, null, null, null, null)$$, '23503', null, 'FK subscriptions.user_id: unknown user');
select throws_ok($$insert into public.subscriptions (id, user_id, price_id, ended_at, cancel_at, canceled_at, trial_start, trial_end)
                   values ('sub_TY', '00000000-0000-4000-8000-0000000000a1', 'price_missing', null, null, null, null, null)$$, '23503', null, 'FK subscriptions.price_id: unknown price');
select ok((select ended_at is null and cancel_at is null and canceled_at is null and trial_start is null and trial_end is null
             from public.subscriptions where id = 'sub_T1'), 'explicit NULL dates stay NULL (defaults are now())');
select lives_ok($$update public.subscriptions set status = 'paused' where id = 'sub_T1'$$, 'status paused accepted');
-- vouchers.associated_account -> accounts(account_number)
select lives_ok($$insert into public.vouchers (code, associated_account) values ('V-T1', 'T-ACC-1')$$, 'FK vouchers.associated_account: existing account number');
select throws_ok($$insert into public.vouchers (code, associated_account) values ('V-TX1', 'NO-SUCH-ACCOUNT')$$, '23503', null, 'FK vouchers.associated_account: unknown account number');
-- vouchers.channel_id -> channels (default channel)
select is((select channel_id from public.vouchers where code = 'V-T1'), 'c4c8ca3f-3083-4484-a69c-cd64624ab765'::uuid, 'voucher defaults to the default channel');
select ok(exists (select 1 from public.channels c join public.vouchers v on v.channel_id = c.id where v.code = 'V-T1'), 'FK vouchers.channel_id: default channel row exists');
select throws_ok($$insert into public.vouchers (code, channel_id) values ('V-TX2', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK vouchers.channel_id: unknown channel');
-- vouchers.payment_intent_id -> payment_intents
select lives_ok($$insert into public.vouchers (code, payment_intent_id) values ('V-T2', '00000000-0000-4000-8000-0000000000b1')$$, 'FK vouchers.payment_intent_id: existing intent');
select throws_ok($$insert into public.vouchers (code, payment_intent_id) values ('V-TX3', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK vouchers.payment_intent_id: unknown intent');
-- vouchers.subscription_id -> subscriptions
select lives_ok($$insert into public.vouchers (code, subscription_id) values ('V-T3', 'sub_T1')$$, 'FK vouchers.subscription_id: existing subscription');
select throws_ok($$insert into public.vouchers (code, subscription_id) values ('V-TX4', 'sub_missing')$$, '23503', null, 'FK vouchers.subscription_id: unknown subscription');
-- stripe_webhook_events.user_id -> auth.users
select lives_ok($$insert into public.stripe_webhook_events (stripe_event_id, event_type, user_id, event_data)
                  values ('evt_T1', 'invoice.paid', '00000000-0000-4000-8000-0000000000a1', '{}')$$, 'FK stripe_webhook_events.user_id: existing user');
select throws_ok($$insert into public.stripe_webhook_events (stripe_event_id, event_type, user_id, event_data)
                   values ('evt_TX', 'invoice.paid', '00000000-0000-4000-8000-00000000dead', '{}')$$, '23503', null, 'FK stripe_webhook_events.user_id: unknown user');
-- events.user_id -> auth.users
select lives_ok($$insert into public.events (category, event_type, source, external_id, user_id)
                  values ('billing', 'stripe.invoice.paid', 'stripe', 'evt_T1', '00000000-0000-4000-8000-0000000000a1')$$, 'FK events.user_id: existing user');
select throws_ok($$insert into public.events (category, event_type, source, external_id, user_id)
                   values ('billing', 'stripe.invoice.paid', 'stripe', 'evt_TX', '00000000-0000-4000-8000-00000000dead')$$, '23503', null, 'FK events.user_id: unknown user');

-- ---------------------------------------------------------------- unique constraints: 23505
select throws_ok($$insert into public.accounts (account_number) values ('T-ACC-1')$$, '23505', null, 'unique accounts.account_number');
select throws_ok($$insert into public.accounts (account_number, cryptotoken) values ('T-ACC-2', 'T-TOK-1')$$, '23505', null, 'unique accounts.cryptotoken');
select lives_ok($$insert into public.accounts (account_number, user_id) values ('T-ACC-3', '00000000-0000-4000-8000-0000000000a1')$$, 'several accounts per user allowed');
select throws_ok($$insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency) values ('pi_T1', 'processing', 1, 'usd')$$, '23505', null, 'unique payment_intents.stripe_payment_intent_id');
select throws_ok($$insert into public.charges (stripe_charge_id, payment_intent_id, amount, currency, status)
                   values ('ch_T1', '00000000-0000-4000-8000-0000000000b1', 1, 'usd', 'succeeded')$$, '23505', null, 'unique charges.stripe_charge_id');
select throws_ok($$insert into public.payment_methods (stripe_payment_method_id, type) values ('pm_T1', 'card')$$, '23505', null, 'unique payment_methods.stripe_payment_method_id');
select throws_ok($$insert into public.customers (id, stripe_customer_id) values ('00000000-0000-4000-8000-0000000000a2', 'cus_T1')$$, '23505', null, 'unique customers.stripe_customer_id');
select lives_ok($$insert into public.customers (id, stripe_customer_id) values ('00000000-0000-4000-8000-0000000000a2', null), ('00000000-0000-4000-8000-0000000000a3', null)$$, 'customers.stripe_customer_id allows several NULLs');
select throws_ok($$insert into public.subscriptions (id, user_id, stripe_subscription_id, ended_at, cancel_at, canceled_at, trial_start, trial_end)
                   values ('sub_T2', '00000000-0000-4000-8000-0000000000a1', 'sub_T1', null, null, null, null, null)$$, '23505', null, 'unique subscriptions.stripe_subscription_id');
select throws_ok($$insert into public.vouchers (code) values ('V-T1')$$, '23505', null, 'unique vouchers.code');
select throws_ok($$insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data) values ('evt_T1', 'invoice.paid', '{}')$$, '23505', null, 'unique stripe_webhook_events.stripe_event_id');
select throws_ok($$insert into public.events (source, external_id) values ('stripe', 'evt_T1')$$, '23505', null, 'unique events(source, external_id)');
select lives_ok($$insert into public.events (source, external_id) values ('stripe', 'evt_T1') on conflict (source, external_id) do nothing$$, 'events upsert target (source, external_id) works');

-- ---------------------------------------------------------------- stripe_webhook_events rules
select is((select processing_status from public.stripe_webhook_events where stripe_event_id = 'evt_T1'), 'pending', 'processing_status defaults to pending');
select is((select retry_count from public.stripe_webhook_events where stripe_event_id = 'evt_T1'), 0, 'retry_count defaults to 0');
select throws_ok($$insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status) values ('evt_T2', 'x', '{}', 'bogus')$$, '23514', null, 'processing_status check rejects bogus');
select throws_ok($$update public.stripe_webhook_events set processing_status = 'bogus' where stripe_event_id = 'evt_T1'$$, '23514', null, 'processing_status check rejects bogus on update');
select lives_ok($$update public.stripe_webhook_events set processing_status = 'dead' where stripe_event_id = 'evt_T1'$$, 'processing_status dead accepted');

-- ---------------------------------------------------------------- time-ordered keys
select is((select count(*) from (select public.uuid_v7() u from generate_series(1, 50)) x
            where substr(u::text, 15, 1) = '7' and substr(u::text, 20, 1) in ('8', '9', 'a', 'b')), 50::bigint,
          'uuid_v7: version 7, RFC 9562 variant');
select ok(abs(extract(epoch from clock_timestamp())
              - ('x' || substr(replace(public.uuid_v7()::text, '-', ''), 1, 12))::bit(48)::bigint / 1000.0) < 5,
          'uuid_v7: its first 48 bits are the current Unix milliseconds');
create function pg_temp.uuid_v7_later_sorts_after() returns boolean language plpgsql as $$
declare
  v_earlier uuid := public.uuid_v7();
begin
  perform pg_sleep(0.002);
  return v_earlier < public.uuid_v7();
end
$$;
select ok(pg_temp.uuid_v7_later_sorts_after(), 'uuid_v7: a key made later sorts after an earlier one');
select lives_ok($$insert into public.stripe_webhook_events (stripe_event_id, event_type, event_data)
                   values ('evt_T3', 'x', '{}'), ('evt_T4', 'x', '{}')$$, 'event rows inserted without an id');
select is((select count(*) from public.stripe_webhook_events
            where stripe_event_id in ('evt_T3', 'evt_T4') and substr(id::text, 15, 1) = '7'), 2::bigint,
          'stripe_webhook_events: ids come from uuid_v7');
select is((select count(*) from pg_attrdef d join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
            where a.attname = 'id' and pg_get_expr(d.adbin, d.adrelid) like '%uuid_v7()'
              and d.adrelid in ('public.stripe_webhook_events'::regclass, 'public.access_grants'::regclass,
                                'public.events'::regclass)), 3::bigint,
          'the event log, the grants and the billing history default to uuid_v7');
select ok(not has_function_privilege('anon', 'public.uuid_v7()', 'execute')
          and has_function_privilege('service_role', 'public.uuid_v7()', 'execute'),
          'uuid_v7: not for anon, executable by service_role (whose inserts use the default)');

select * from finish();
rollback;
