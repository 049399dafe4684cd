-- Row-level security matrix: plays PostgREST exactly. Fixtures are inserted as
-- postgres; then each API role (anon, user A, user B, service_role) is entered with
--   set local role <role>; set local request.jwt.claims = '<claims>';
-- as PostgREST does per request, and `reset role` goes back to postgres. For every table:
-- SELECT sees exactly the expected rows (count and ids), INSERT/UPDATE/DELETE/TRUNCATE are
-- refused (42501) or, where RLS filters a permitted UPDATE, change nothing (checked as postgres).
-- Runs in a transaction that is rolled back (supabase test db / pg_prove). Needs pgtap.
begin;
select plan(312);
set local timezone = 'UTC';

-- Deterministic fixtures: the ledger and billing triggers would derive grants, vouchers and
-- history rows from the facts below. They are tested elsewhere; here they are switched off while
-- the fixtures are written (rolled back with the test).
alter table public.subscriptions disable trigger user;
alter table public.payment_intents disable trigger user;
alter table public.charges disable trigger user;
alter table public.vouchers disable trigger user;
alter table public.refunds disable trigger user;
alter table public.disputes disable trigger user;
alter table public.invoices disable trigger user;
alter table public.invoice_payments disable trigger user;
alter table public.access_grants disable trigger user;

-- Users A and B (public.users rows come from on_auth_user_created), and C without any data.
insert into auth.users (id, aud, role, email, raw_user_meta_data, created_at) values
  ('a0000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'rls-a@example.com',
   '{"full_name": "User A"}', now()),
  ('b0000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'rls-b@example.com',
   '{"full_name": "User B"}', now()),
  ('c0000000-0000-4000-8000-000000000001', 'authenticated', 'authenticated', 'rls-c@example.com',
   '{"full_name": "User C"}', now());
update public.users set type = 'customer', billing_address = '{"country": "DE"}', avatar_url = 'a.png'
 where id = 'a0000000-0000-4000-8000-000000000001';
update public.users set type = 'customer', billing_address = '{"country": "FR"}', avatar_url = 'b.png'
 where id = 'b0000000-0000-4000-8000-000000000001';

insert into public.customers (id, stripe_customer_id) values
  ('a0000000-0000-4000-8000-000000000001', 'cus_rls_a'),
  ('b0000000-0000-4000-8000-000000000001', 'cus_rls_b');

-- Catalog: an active and an archived product/price; A's subscription is on the archived one.
insert into public.products (id, active, name) values
  ('prod_rls_active', true, 'RLS active'),
  ('prod_rls_inactive', false, 'RLS archived');
insert into public.prices (id, product_id, active, unit_amount, currency, type, interval, interval_count) values
  ('price_rls_active', 'prod_rls_active', true, 900, 'usd', 'recurring', 'month', 1),
  ('price_rls_inactive', 'prod_rls_inactive', false, 700, 'usd', 'recurring', 'month', 1);

-- A has two accounts, B one; one account belongs to nobody.
insert into public.accounts (id, account_number, status, expiry, user_id, cryptotoken) values
  ('a0000000-0000-4000-8000-0000000000a1', 'RLS-A-0001', 'active', '2030-01-31T00:00:00Z', 'a0000000-0000-4000-8000-000000000001', 'tok-a1'),
  ('a0000000-0000-4000-8000-0000000000a2', 'RLS-A-0002', 'active', '', 'a0000000-0000-4000-8000-000000000001', 'tok-a2'),
  ('b0000000-0000-4000-8000-0000000000b1', 'RLS-B-0001', 'active', '2031-06-30T00:00:00Z', 'b0000000-0000-4000-8000-000000000001', 'tok-b1'),
  ('d0000000-0000-4000-8000-0000000000d1', 'RLS-ORPHAN', 'active', '', null, 'tok-orphan');

insert into public.subscriptions (id, user_id, status, price_id, cancel_at_period_end, current_period_start,
                                  current_period_end, ended_at, cancel_at, canceled_at, trial_start, trial_end,
                                  stripe_subscription_id) values
  ('sub_rls_a', 'a0000000-0000-4000-8000-000000000001', 'active', 'price_rls_inactive', false,
   '2030-01-01T00:00:00Z', '2030-02-01T00:00:00Z', null, null, null, null, null, 'sub_rls_a'),
  ('sub_rls_a_old', 'a0000000-0000-4000-8000-000000000001', 'canceled', 'price_rls_active', true,
   '2029-01-01T00:00:00Z', '2029-02-01T00:00:00Z', '2029-02-01T00:00:00Z', null, '2029-01-15T00:00:00Z', null, null, 'sub_rls_a_old'),
  ('sub_rls_b', 'b0000000-0000-4000-8000-000000000001', 'active', 'price_rls_active', false,
   '2031-06-01T00:00:00Z', '2031-07-01T00:00:00Z', null, null, null, null, null, 'sub_rls_b');

insert into public.payment_intents (id, stripe_payment_intent_id, status, amount, currency, customer_id) values
  ('a0000000-0000-4000-8000-0000000000e1', 'pi_rls_a', 'succeeded', 4900, 'usd', 'a0000000-0000-4000-8000-000000000001'),
  ('b0000000-0000-4000-8000-0000000000e1', 'pi_rls_b', 'succeeded', 4900, 'usd', 'b0000000-0000-4000-8000-000000000001'),
  ('d0000000-0000-4000-8000-0000000000e1', 'pi_rls_none', 'requires_payment_method', 4900, 'usd', null);

-- ch_a_nocust has no customer_id: A sees it through A's payment intent.
insert into public.charges (id, stripe_charge_id, payment_intent_id, amount, currency, customer_id, status) values
  ('a0000000-0000-4000-8000-0000000000c1', 'ch_rls_a', 'a0000000-0000-4000-8000-0000000000e1', 4900, 'usd', 'a0000000-0000-4000-8000-000000000001', 'succeeded'),
  ('a0000000-0000-4000-8000-0000000000c2', 'ch_rls_a_nocust', 'a0000000-0000-4000-8000-0000000000e1', 4900, 'usd', null, 'failed'),
  ('b0000000-0000-4000-8000-0000000000c1', 'ch_rls_b', 'b0000000-0000-4000-8000-0000000000e1', 4900, 'usd', 'b0000000-0000-4000-8000-000000000001', 'succeeded'),
  ('d0000000-0000-4000-8000-0000000000c1', 'ch_rls_none', 'd0000000-0000-4000-8000-0000000000e1', 4900, 'usd', null, 'failed');

insert into public.payment_methods (id, stripe_payment_method_id, type, last_four, customer_id) values
  ('a0000000-0000-4000-8000-0000000000f1', 'pm_rls_a', 'card', '4242', 'a0000000-0000-4000-8000-000000000001'),
  ('b0000000-0000-4000-8000-0000000000f1', 'pm_rls_b', 'card', '0005', 'b0000000-0000-4000-8000-000000000001');

insert into public.vouchers (id, code, duration_months, is_used, used_at, associated_account, status, created_at) values
  ('a0000000-0000-4000-8000-000000000101', 'RLS-VA1-UNUSED', 12, false, null, 'RLS-A-0001', 'active', '2030-01-01T00:00:00Z'),
  ('a0000000-0000-4000-8000-000000000102', 'RLS-VA1-USED', 1, true, now(), 'RLS-A-0001', 'active', '2030-01-02T00:00:00Z'),
  ('a0000000-0000-4000-8000-000000000103', 'RLS-VA1-CANCELED', 1, false, null, 'RLS-A-0001', 'canceled', '2030-01-03T00:00:00Z'),
  ('a0000000-0000-4000-8000-000000000201', 'RLS-VA2-UNUSED', 3, false, null, 'RLS-A-0002', 'active', '2030-01-04T00:00:00Z'),
  ('b0000000-0000-4000-8000-000000000101', 'RLS-VB1-UNUSED', 6, false, null, 'RLS-B-0001', 'active', '2031-01-01T00:00:00Z'),
  ('d0000000-0000-4000-8000-000000000101', 'RLS-VNOBODY', 1, false, null, null, 'active', '2031-01-01T00:00:00Z');

insert into public.events (id, category, event_type, source, user_id, external_id) values
  ('a0000000-0000-4000-8000-000000000301', 'billing', 'payment.succeeded', 'stripe', 'a0000000-0000-4000-8000-000000000001', 'evt_rls_a'),
  ('b0000000-0000-4000-8000-000000000301', 'billing', 'payment.succeeded', 'stripe', 'b0000000-0000-4000-8000-000000000001', 'evt_rls_b'),
  ('d0000000-0000-4000-8000-000000000301', 'billing', 'payment.failed', 'stripe', null, 'evt_rls_none');

-- Internal tables, one row each (the webhook event even names user A: A still must not see it).
insert into public.stripe_webhook_events (stripe_event_id, event_type, user_id, event_data)
values ('evt_rls_a', 'payment_intent.succeeded', 'a0000000-0000-4000-8000-000000000001', '{"customer_email": "rls-a@example.com"}');
insert into public.stripe_object_versions (object_id, object_type, event_created_at, stripe_event_id)
values ('pi_rls_a', 'payment_intent', now(), 'evt_rls_a');
insert into public.migration_dedup_log (table_name, kept_id, action, removed)
values ('charges', 'x', 'deleted', '{"stripe_charge_id": "ch_rls_dup"}');

insert into public.stripe_customers (stripe_customer_id, user_id, email)
values ('cus_rls_a_guest', 'a0000000-0000-4000-8000-000000000001', 'rls-a@example.com');

-- Refunds, disputes and invoices of A, B and nobody; the link table and the attempt log are internal.
insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at, user_id) values
  ('re_rls_a', 'ch_rls_a', 'pi_rls_a', 100, 'usd', 'succeeded', now(), 'a0000000-0000-4000-8000-000000000001'),
  ('re_rls_b', 'ch_rls_b', 'pi_rls_b', 100, 'usd', 'succeeded', now(), 'b0000000-0000-4000-8000-000000000001'),
  ('re_rls_none', 'ch_rls_none', 'pi_rls_none', 100, 'usd', 'failed', now(), null);
insert into public.disputes (stripe_dispute_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, opened_at, user_id) values
  ('du_rls_a', 'ch_rls_a', 'pi_rls_a', 4900, 'usd', 'needs_response', now(), 'a0000000-0000-4000-8000-000000000001'),
  ('du_rls_b', 'ch_rls_b', 'pi_rls_b', 4900, 'usd', 'lost', now(), 'b0000000-0000-4000-8000-000000000001');
insert into public.invoices (stripe_invoice_id, stripe_customer_id, user_id, stripe_subscription_id, status) values
  ('in_rls_a', 'cus_rls_a', 'a0000000-0000-4000-8000-000000000001', 'sub_rls_a', 'paid'),
  ('in_rls_b', 'cus_rls_b', 'b0000000-0000-4000-8000-000000000001', 'sub_rls_b', 'paid'),
  ('in_rls_none', 'cus_rls_nobody', null, null, 'open');
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_rls_a', 'pi_rls_a');
insert into public.access_grants (account_id, source, kind, months, effective_at, coverage_start, coverage_end) values
  ('a0000000-0000-4000-8000-0000000000a1', 'payment_intent:pi_rls_a', 'purchase', 1, '2030-01-01', '2030-01-01', '2030-01-31'),
  ('a0000000-0000-4000-8000-0000000000a2', 'voucher:rls-a2', 'gift_code', 3, '2030-01-01', null, null),
  ('b0000000-0000-4000-8000-0000000000b1', 'payment_intent:pi_rls_b', 'purchase', 1, '2031-06-01', '2031-06-01', '2031-06-30'),
  ('d0000000-0000-4000-8000-0000000000d1', 'baseline:orphan', 'baseline', null, '-infinity', null, null);
insert into public.voucher_redemption_attempts (user_id, succeeded) values ('a0000000-0000-4000-8000-000000000001', false);

alter table public.subscriptions enable trigger user;
alter table public.payment_intents enable trigger user;
alter table public.charges enable trigger user;
alter table public.vouchers enable trigger user;
alter table public.refunds enable trigger user;
alter table public.disputes enable trigger user;
alter table public.invoices enable trigger user;
alter table public.invoice_payments enable trigger user;
alter table public.access_grants enable trigger user;

-- The column each write test touches, per table.
create temp table rls_tables (t text primary key, col text not null, kind text not null) on commit drop;
insert into rls_tables values
  ('users', 'type', 'own'), ('customers', 'stripe_customer_id', 'own'), ('accounts', 'status', 'own'),
  ('vouchers', 'is_used', 'own'), ('subscriptions', 'quantity', 'own'), ('payment_intents', 'status', 'own'),
  ('charges', 'status', 'own'), ('payment_methods', 'last_four', 'own'), ('events', 'category', 'own'),
  ('products', 'name', 'catalog'), ('prices', 'description', 'catalog'), ('channels', 'name', 'member'),
  ('stripe_webhook_events', 'processing_status', 'internal'), ('stripe_object_versions', 'tie_break', 'internal'),
  ('migration_dedup_log', 'action', 'internal'), ('stripe_customers', 'email', 'internal'),
  ('refunds', 'status', 'own'), ('disputes', 'status', 'own'), ('invoices', 'status', 'own'),
  ('access_grants', 'status', 'own'), ('invoice_payments', 'status', 'internal'),
  ('voucher_redemption_attempts', 'succeeded', 'internal'), ('stripe_catch_up', 'run_status', 'internal');
grant select on rls_tables to public;

-- Row counts as postgres (service_role must see exactly these), kept in transaction-local settings
-- so every role can read them.
do $$
declare t text; n bigint;
begin
  for t in select r.t from rls_tables r loop
    execute format('select count(*) from public.%I', t) into n;
    perform set_config('rls_test.count_' || t, n::text, true);
  end loop;
  select count(*) into n from public.products where active is true;
  perform set_config('rls_test.active_products', n::text, true);
  select count(*) into n from public.prices where active is true;
  perform set_config('rls_test.active_prices', n::text, true);
end
$$;

-- ======================================================================================= anon
set local role anon;
set local request.jwt.claims = '{"role": "anon"}';

-- SELECT: only the active catalog.
select throws_ok(format('select * from public.%I', t), '42501', null,
                 format('anon: select on %s is denied', t))
  from rls_tables where kind <> 'catalog' order by t;
select is((select count(*) from public.products), current_setting('rls_test.active_products')::bigint,
          'anon: sees every active product');
select is((select count(*) from public.products where active is not true), 0::bigint, 'anon: sees no inactive product');
select set_eq($$select id from public.products where id like 'prod_rls_%'$$, array['prod_rls_active'],
              'anon: fixture products = the active one');
select is((select count(*) from public.prices), current_setting('rls_test.active_prices')::bigint,
          'anon: sees every active price');
select set_eq($$select id from public.prices where id like 'price_rls_%'$$, array['price_rls_active'],
              'anon: fixture prices = the active one');
select throws_ok('select * from public.my_account', '42501', null, 'anon: my_account is denied');
select throws_ok('select * from public.account_access', '42501', null, 'anon: account_access is denied');

-- Writes: all refused.
select throws_ok(format('insert into public.%I default values', t), '42501', null,
                 format('anon: insert into %s is denied', t))
  from rls_tables order by t;
select throws_ok(format('update public.%I set %I = %I', t, col, col), '42501', null,
                 format('anon: update of %s is denied', t))
  from rls_tables order by t;
select throws_ok(format('delete from public.%I', t), '42501', null,
                 format('anon: delete from %s is denied', t))
  from rls_tables order by t;
select throws_ok($$update public.users set full_name = 'anon was here'$$, '42501', null,
                 'anon: update of users.full_name is denied');
select throws_ok('truncate public.products', '42501', null, 'anon: truncate products is denied');
select throws_ok($$select nextval('public.migration_dedup_log_id_seq')$$, '42501', null,
                 'anon: internal sequence is denied');
reset role;

-- ================================================================================== user A
set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-000000000001", "role": "authenticated"}';

select set_eq('select id from public.users', array['a0000000-0000-4000-8000-000000000001'::uuid], 'A: users = A');
select set_eq('select id from public.customers', array['a0000000-0000-4000-8000-000000000001'::uuid], 'A: customers = A');
select set_eq('select id from public.accounts',
              array['a0000000-0000-4000-8000-0000000000a1', 'a0000000-0000-4000-8000-0000000000a2']::uuid[],
              'A: accounts = A1, A2');
select set_eq('select code from public.vouchers',
              array['RLS-VA1-UNUSED', 'RLS-VA1-USED', 'RLS-VA1-CANCELED', 'RLS-VA2-UNUSED'],
              'A: vouchers = the vouchers of A1 and A2');
select set_eq('select id from public.subscriptions', array['sub_rls_a', 'sub_rls_a_old'], 'A: subscriptions = A''s two');
select set_eq('select stripe_payment_intent_id from public.payment_intents', array['pi_rls_a'], 'A: payment_intents = pi_rls_a');
select set_eq('select stripe_charge_id from public.charges', array['ch_rls_a', 'ch_rls_a_nocust'],
              'A: charges = own + the customer-less charge of A''s intent');
select set_eq('select stripe_payment_method_id from public.payment_methods', array['pm_rls_a'], 'A: payment_methods = pm_rls_a');
select set_eq('select external_id from public.events', array['evt_rls_a'], 'A: events = evt_rls_a');
select set_eq('select stripe_refund_id from public.refunds', array['re_rls_a'], 'A: refunds = re_rls_a');
select set_eq('select stripe_dispute_id from public.disputes', array['du_rls_a'], 'A: disputes = du_rls_a');
select set_eq('select stripe_invoice_id from public.invoices', array['in_rls_a'], 'A: invoices = in_rls_a');
select set_eq('select source from public.access_grants', array['payment_intent:pi_rls_a', 'voucher:rls-a2'],
              'A: access_grants = the grants of A1 and A2');
select set_eq('select kind || '' '' || account_number from public.account_access',
              array['purchase RLS-A-0001', 'gift_code RLS-A-0002'],
              'A: account_access = A''s grants with their accounts');
select set_eq($$select id from public.products where id like 'prod_rls_%'$$, array['prod_rls_active', 'prod_rls_inactive'],
              'A: products = active + the archived product A subscribes to');
select is((select count(*) from public.products), current_setting('rls_test.active_products')::bigint + 1,
          'A: products = every active one + 1');
select set_eq($$select id from public.prices where id like 'price_rls_%'$$, array['price_rls_active', 'price_rls_inactive'],
              'A: prices = active + the archived price A subscribes to');
select is((select count(*) from public.prices), current_setting('rls_test.active_prices')::bigint + 1,
          'A: prices = every active one + 1');
select is((select count(*) from public.channels), current_setting('rls_test.count_channels')::bigint, 'A: sees all channels');
select throws_ok(format('select * from public.%I', t), '42501', null, format('A: select on %s is denied', t))
  from rls_tables where kind = 'internal' order by t;

-- Writes other than users.full_name/avatar_url: refused.
select throws_ok(format('insert into public.%I default values', t), '42501', null,
                 format('A: insert into %s is denied', t))
  from rls_tables order by t;
select throws_ok(format('update public.%I set %I = %I', t, col, col), '42501', null,
                 format('A: update of %s is denied', t))
  from rls_tables order by t;
select throws_ok(format('delete from public.%I', t), '42501', null,
                 format('A: delete from %s is denied', t))
  from rls_tables order by t;
select throws_ok(format('truncate public.%I', t), '42501', null, format('A: truncate %s is denied', t))
  from (values ('users'), ('payment_intents'), ('products')) v(t);
select throws_ok($$update public.users set email = 'evil@example.com' where id = 'a0000000-0000-4000-8000-000000000001'$$,
                 '42501', null, 'A: own users.email is not writable');
select throws_ok($$update public.users set type = 'admin' where id = 'a0000000-0000-4000-8000-000000000001'$$,
                 '42501', null, 'A: own users.type is not writable');
select throws_ok($$update public.users set billing_address = '{}' where id = 'a0000000-0000-4000-8000-000000000001'$$,
                 '42501', null, 'A: own users.billing_address is not writable');
select throws_ok($$update public.users set id = 'b0000000-0000-4000-8000-000000000001' where id = 'a0000000-0000-4000-8000-000000000001'$$,
                 '42501', null, 'A: users.id is not writable');
select is_empty($$update public.users set full_name = 'hacked by A' where id = 'b0000000-0000-4000-8000-000000000001' returning id$$,
                'A: update of B''s full_name affects 0 rows');
select is_empty($$update public.users set avatar_url = 'hacked.png' where id <> 'a0000000-0000-4000-8000-000000000001' returning id$$,
                'A: update of other users'' avatar_url affects 0 rows');
select results_eq($$update public.users set full_name = 'A renamed', avatar_url = 'a2.png' returning id$$,
                  $$values ('a0000000-0000-4000-8000-000000000001'::uuid)$$,
                  'A: unqualified update of full_name/avatar_url reaches only A''s row');
select throws_ok($$select public.claim_object_version('x', 'y', now(), 0, 'evt', false)$$, '42501', null,
                 'A: internal function claim_object_version is not callable');

-- my_account: A's two accounts, A's active subscription, unused vouchers only.
select set_eq('select account_number from public.my_account', array['RLS-A-0001', 'RLS-A-0002'], 'A: my_account rows = A1, A2');
select is((select count(*) from public.my_account where user_id is distinct from 'a0000000-0000-4000-8000-000000000001'), 0::bigint,
          'A: my_account has no other user''s row');
select set_eq('select subscription_id from public.my_account', array['sub_rls_a'], 'A: my_account subscription = the active one');
select is((select unused_vouchers from public.my_account where account_number = 'RLS-A-0001') #>> '{0,code}', 'RLS-VA1-UNUSED',
          'A: my_account A1 unused voucher code');
select is((select jsonb_array_length(unused_vouchers) from public.my_account where account_number = 'RLS-A-0001'), 1,
          'A: my_account A1 lists only the unused, active voucher');
select is((select unused_vouchers from public.my_account where account_number = 'RLS-A-0002'),
          '[{"code": "RLS-VA2-UNUSED", "duration_months": 3, "created_at": "2030-01-04T00:00:00+00:00"}]'::jsonb,
          'A: my_account A2 unused_vouchers (code, duration_months, created_at)');
select is((select expiry_at from public.my_account where account_number = 'RLS-A-0001'), '2030-01-31T00:00:00Z'::timestamptz,
          'A: my_account expiry_at parsed');
select is((select expiry from public.my_account where account_number = 'RLS-A-0001'), '2030-01-31T00:00:00Z',
          'A: my_account expiry text');
select ok((select expiry_at is null from public.my_account where account_number = 'RLS-A-0002'), 'A: empty expiry -> expiry_at NULL');
select is((select row(subscription_status::text, current_period_end, cancel_at_period_end, price_id)::text
             from public.my_account where account_number = 'RLS-A-0001'),
          row('active', '2030-02-01T00:00:00Z'::timestamptz, false, 'price_rls_inactive')::text,
          'A: my_account subscription fields');
select ok(not has_table_privilege('authenticated', 'public.my_account', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'A: my_account is read-only (select only)');
reset role;

-- Checked as postgres: the refused/filtered writes changed nothing, the permitted one happened.
select is((select row(full_name, avatar_url, email, type)::text from public.users where id = 'b0000000-0000-4000-8000-000000000001'),
          row('User B', 'b.png', 'rls-b@example.com', 'customer')::text, 'B''s profile is unchanged after A''s attempts');
select is((select row(full_name, avatar_url, email, type)::text from public.users where id = 'a0000000-0000-4000-8000-000000000001'),
          row('A renamed', 'a2.png', 'rls-a@example.com', 'customer')::text, 'A''s own name/avatar changed, email/type did not');
select is((select count(*) from public.vouchers where code like 'RLS-%'), 6::bigint, 'vouchers unchanged after the denied writes');

-- ================================================================================== user B
set local role authenticated;
set local request.jwt.claims = '{"sub": "b0000000-0000-4000-8000-000000000001", "role": "authenticated"}';

select set_eq('select id from public.users', array['b0000000-0000-4000-8000-000000000001'::uuid], 'B: users = B');
select set_eq('select id from public.customers', array['b0000000-0000-4000-8000-000000000001'::uuid], 'B: customers = B');
select set_eq('select account_number from public.accounts', array['RLS-B-0001'], 'B: accounts = B1');
select set_eq('select code from public.vouchers', array['RLS-VB1-UNUSED'], 'B: vouchers = B1''s');
select set_eq('select id from public.subscriptions', array['sub_rls_b'], 'B: subscriptions = sub_rls_b');
select set_eq('select stripe_payment_intent_id from public.payment_intents', array['pi_rls_b'], 'B: payment_intents = pi_rls_b');
select set_eq('select stripe_charge_id from public.charges', array['ch_rls_b'], 'B: charges = ch_rls_b');
select set_eq('select stripe_payment_method_id from public.payment_methods', array['pm_rls_b'], 'B: payment_methods = pm_rls_b');
select set_eq('select external_id from public.events', array['evt_rls_b'], 'B: events = evt_rls_b');
select set_eq('select stripe_refund_id from public.refunds', array['re_rls_b'], 'B: refunds = re_rls_b');
select set_eq('select stripe_dispute_id from public.disputes', array['du_rls_b'], 'B: disputes = du_rls_b');
select set_eq('select stripe_invoice_id from public.invoices', array['in_rls_b'], 'B: invoices = in_rls_b');
select set_eq('select source from public.access_grants', array['payment_intent:pi_rls_b'], 'B: access_grants = B1''s');
select set_eq('select grant_id::text from public.account_access',
              'select id::text from public.access_grants where source = ''payment_intent:pi_rls_b''',
              'B: account_access = B''s grant only');
select set_eq($$select id from public.products where id like 'prod_rls_%'$$, array['prod_rls_active'], 'B: products = the active one');
select is((select count(*) from public.products where active is not true), 0::bigint, 'B: sees no inactive product');
select set_eq($$select id from public.prices where id like 'price_rls_%'$$, array['price_rls_active'], 'B: prices = the active one');
select is((select count(*) from public.prices where active is not true), 0::bigint, 'B: sees no inactive price');
select throws_ok(format('select * from public.%I', t), '42501', null, format('B: select on %s is denied', t))
  from rls_tables where kind = 'internal' order by t;
select is_empty($$update public.users set full_name = 'hacked by B' where id = 'a0000000-0000-4000-8000-000000000001' returning id$$,
                'B: update of A''s full_name affects 0 rows');
select throws_ok($$delete from public.accounts where account_number = 'RLS-A-0001'$$, '42501', null, 'B: delete of A''s account is denied');
select set_eq('select account_number from public.my_account', array['RLS-B-0001'], 'B: my_account = B1 only');
select is((select unused_vouchers #>> '{0,code}' from public.my_account), 'RLS-VB1-UNUSED', 'B: my_account unused voucher');
select is((select subscription_id from public.my_account), 'sub_rls_b', 'B: my_account subscription');
reset role;
select is((select full_name from public.users where id = 'a0000000-0000-4000-8000-000000000001'), 'A renamed',
          'A''s profile is unchanged after B''s attempt');

-- ============================================== signed in without data / without subject
set local role authenticated;
set local request.jwt.claims = '{"sub": "c0000000-0000-4000-8000-000000000001", "role": "authenticated"}';
select set_eq('select id from public.users', array['c0000000-0000-4000-8000-000000000001'::uuid], 'C: users = C');
select is((select count(*) from public.accounts) + (select count(*) from public.vouchers) + (select count(*) from public.subscriptions)
          + (select count(*) from public.payment_intents) + (select count(*) from public.charges) + (select count(*) from public.customers)
          + (select count(*) from public.payment_methods) + (select count(*) from public.events)
          + (select count(*) from public.refunds) + (select count(*) from public.disputes)
          + (select count(*) from public.invoices) + (select count(*) from public.access_grants)
          + (select count(*) from public.account_access), 0::bigint,
          'C: no billing rows at all');
select is((select count(*) from public.my_account where account_number is not null), 0::bigint, 'C: my_account has no account');
select is((select count(*) from public.my_account), 1::bigint, 'C: my_account still answers one (empty) row');
set local request.jwt.claims = '{"role": "authenticated"}';
select is((select count(*) from public.users) + (select count(*) from public.accounts) + (select count(*) from public.my_account),
          0::bigint, 'authenticated without sub: sees nothing');
reset role;

-- =========================================================================== service_role
set local role service_role;
set local request.jwt.claims = '{"role": "service_role"}';

select results_eq(format('select count(*) from public.%I', t),
                  format('values (%s::bigint)', current_setting('rls_test.count_' || t)),
                  format('service_role: sees every row of %s', t))
  from rls_tables order by t;
select lives_ok(format('update public.%I set %I = %I', t, col, col), format('service_role: may update %s', t))
  from rls_tables order by t;
select lives_ok($$insert into public.products (id, active, name) values ('prod_rls_service', false, 'by service_role')$$,
                'service_role: may insert');
select lives_ok($$delete from public.charges where stripe_charge_id = 'ch_rls_none'$$, 'service_role: may delete');
select lives_ok($$delete from public.stripe_object_versions where object_id = 'pi_rls_a'$$, 'service_role: may delete internal rows');
select is((select count(*) from public.my_account), 0::bigint, 'service_role: my_account is empty (no JWT subject)');
reset role;

select ok(exists (select 1 from public.products where id = 'prod_rls_service')
          and not exists (select 1 from public.charges where stripe_charge_id = 'ch_rls_none'),
          'service_role writes took effect');

-- ================================================================ function privileges (RPC)
select ok(not has_function_privilege('anon', f, 'execute'), format('anon cannot execute %s', f))
  from unnest(array['public.claim_object_version(text,text,timestamptz,bigint,text,boolean)',
                    'public.handle_new_user()', 'public.accounts_update_trigger()']) f;
select ok(to_regprocedure('public.redeem_voucher(text)') is null
          or (has_function_privilege('authenticated', 'public.redeem_voucher(text)', 'execute')
              and not has_function_privilege('anon', 'public.redeem_voucher(text)', 'execute')),
          'redeem_voucher(text): authenticated yes, anon no (when present)');
select ok(not exists (select 1 from unnest(array['find_or_create_auth_user', 'ensure_account', 'generate_account_number',
                                                 'generate_voucher_code', 'refresh_account_access', 'put_grant',
                                                 'mirror_voucher_of_grant', 'refresh_status_of_grant',
                                                 'sync_purchase_grant', 'sync_invoice_grant', 'put_billing_row']) n
                        join pg_proc p on p.proname = n and p.pronamespace = 'public'::regnamespace
                       where has_function_privilege('authenticated', p.oid, 'execute')
                          or has_function_privilege('anon', p.oid, 'execute')),
          'provisioning internals are not callable by anon/authenticated (when present)');

select * from finish();
rollback;
