-- A payment's derivations (its grant, the money returned on it, its billing rows) find their
-- rows through indexes, so an event costs the same in a shop with years of history as in a
-- new one. A shop with 400 earlier payments (some refunded, some disputed) gets one more
-- buyer; this transaction's counters then show how many rows each table gave up to that
-- buyer's events. Sequential scans are then priced out, so a query with no index path reads a
-- whole index instead, and that shows up as rows too. Both ways a refund or dispute can name its
-- payment (the intent, or only the charge, as older API versions do) are exercised, and their
-- outcome checked. Rolled back at the end.
begin;
select plan(8);
set local timezone = 'UTC';

create function pg_temp.buyer(p_email text) returns uuid language sql as $$
  with u as (select public.find_or_create_auth_user(p_email, null) as id)
  insert into public.customers (id) select id from u on conflict (id) do update set id = excluded.id
  returning id
$$;
-- Rows read so far in this transaction (sequentially or through an index), per table that grows
-- with the shop's history.
create temp table rows_read (relname text primary key, n bigint);
create function pg_temp.rows_read_now() returns table (relname text, n bigint) language sql as $$
  select t.relname::text, t.seq_tup_read + coalesce(t.idx_tup_fetch, 0)
    from pg_stat_xact_user_tables t
   where t.schemaname = 'public'
     and t.relname in ('access_grants', 'accounts', 'charges', 'customers', 'disputes', 'events',
                       'invoice_payments', 'invoices', 'payment_intents', 'refunds', 'stripe_customers',
                       'subscriptions', 'users', 'vouchers')
$$;
create function pg_temp.start_counting() returns void language sql as $$
  delete from rows_read;
  insert into rows_read select * from pg_temp.rows_read_now();
$$;
-- Tables that gave up at least p_bound rows since start_counting, with the count.
create function pg_temp.tables_read_beyond(p_bound bigint) returns text[] language sql as $$
  select coalesce(array_agg(a.relname || ' ' || (a.n - coalesce(b.n, 0)) order by a.relname), '{}')
    from pg_temp.rows_read_now() a left join rows_read b using (relname)
   where a.n - coalesce(b.n, 0) >= p_bound
$$;

insert into public.products (id, active, name, metadata) values ('prod_x_pack', true, 'Pack', '{"duration_months": "3"}');
insert into public.prices (id, product_id, unit_amount, currency, type, metadata)
values ('price_x_pack', 'prod_x_pack', 2900, 'usd', 'one_time', '{}');

-- The history: 400 passes of other buyers, every fourth refunded through its charge only,
-- 50 others disputed.
select pg_temp.buyer('old' || i || '@example.com') from generate_series(1, 400) i;
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id,
                                    checkout_session_id, paid_at)
select 'pi_old' || i, 'succeeded', 2900, 'usd', u.id, 'price_x_pack', 'cs_old' || i, '2029-01-01'::timestamptz + i * interval '1 hour'
  from generate_series(1, 400) i join auth.users u on u.email = 'old' || i || '@example.com';
insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
select 'ch_old' || substr(stripe_payment_intent_id, 7), id, 2900, 0, 'usd', 'succeeded'
  from public.payment_intents where stripe_payment_intent_id like 'pi\_old%';
insert into public.refunds (stripe_refund_id, stripe_charge_id, user_id, amount, currency, status, refunded_at)
select 're_old' || i, 'ch_old' || i, pi.customer_id, 2900, 'usd', 'succeeded', '2029-06-01'
  from generate_series(4, 400, 4) i join public.payment_intents pi on pi.stripe_payment_intent_id = 'pi_old' || i;
insert into public.disputes (stripe_dispute_id, stripe_charge_id, user_id, amount, currency, status, opened_at, funds_withdrawn)
select 'du_old' || i, 'ch_old' || i, pi.customer_id, 2900, 'usd', 'needs_response', '2029-06-01', true
  from generate_series(2, 400, 8) i join public.payment_intents pi on pi.stripe_payment_intent_id = 'pi_old' || i;
select is((select count(*)::int from public.access_grants where status = 'active'), 250,
          'the history: 400 passes, 100 refunded and 50 others disputed');

-- What autovacuum would have done by now: the planner knows the tables' sizes (and plans again).
analyze public.access_grants, public.accounts, public.charges, public.customers, public.disputes, public.events,
        public.invoice_payments, public.invoices, public.payment_intents, public.refunds, public.stripe_customers,
        public.subscriptions, public.users, public.vouchers, auth.users, auth.identities;
set local enable_seqscan = off;
discard plans;

select pg_temp.buyer('lookups@example.com') as uid \gset
select pg_temp.start_counting();

-- Two passes: one refunded by a refund that names its intent, one by a refund that names only
-- its charge; then a dispute on a third, naming only the charge, lost.
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id,
                                    checkout_session_id, paid_at)
values ('pi_x1', 'succeeded', 2900, 'usd', :'uid', 'price_x_pack', 'cs_x1', '2030-01-01'),
       ('pi_x2', 'succeeded', 2900, 'usd', :'uid', 'price_x_pack', 'cs_x2', '2030-02-01'),
       ('pi_x3', 'succeeded', 2900, 'usd', :'uid', 'price_x_pack', 'cs_x3', '2030-03-01');
insert into public.charges (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, status)
select 'ch_' || substr(stripe_payment_intent_id, 4), id, 2900, 0, 'usd', 'succeeded'
  from public.payment_intents where stripe_payment_intent_id in ('pi_x1', 'pi_x2', 'pi_x3');
select is((select expiry from public.accounts where user_id = :'uid'), '2030-10-01T00:00:00Z',
          'three passes of 3 months, back to back');

insert into public.refunds (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, refunded_at)
values ('re_x1', 'ch_x1', 'pi_x1', 2900, 'usd', 'succeeded', '2030-01-05'),
       ('re_x2', 'ch_x2', null, 2900, 'usd', 'succeeded', '2030-02-05');
update public.charges set amount_refunded = 2900 where stripe_charge_id in ('ch_x1', 'ch_x2');
insert into public.disputes (stripe_dispute_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status,
                             opened_at, funds_withdrawn)
values ('du_x3', 'ch_x3', null, 2900, 'usd', 'needs_response', '2030-03-05', true);
update public.disputes set status = 'lost' where stripe_dispute_id = 'du_x3';
insert into public.invoices (stripe_invoice_id, user_id, status, currency, amount_paid, paid_at)
values ('in_x1', :'uid', 'paid', 'usd', 0, '2030-04-01');
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id) values ('in_x1', 'pi_x_unknown');

select is(array(select g.status || ' ' || coalesce(g.revoked_reason, '-')
                  from public.access_grants g join public.accounts a on a.id = g.account_id
                 where a.user_id = :'uid' order by g.source),
          array['revoked refunded', 'revoked refunded', 'revoked disputed'],
          'a refund naming the intent, one naming only the charge, and a lost dispute naming only the charge each revoke their pass');
select is((select expiry from public.accounts where user_id = :'uid'), null, 'no time is left');
select is((select array_agg(v.status order by v.period_start) from public.vouchers v
             join public.accounts a on a.account_number = v.associated_account where a.user_id = :'uid'),
          array['revoked', 'revoked', 'revoked'], 'their vouchers are revoked');
select is((select sum(amount) from public.events where user_id = :'uid'), 0.00,
          'the billing history adds up to nothing kept: 3 × 29 paid, 2 × 29 refunded, 29 disputed');
select is((select count(*)::int from public.events where user_id = :'uid' and external_id in ('re_x2', 'du_x3:withdrawn')), 2,
          'the refund and the dispute that name only their charge are in the history');

select is(pg_temp.tables_read_beyond(100), '{}'::text[],
          'three payments, their charges, two refunds, a dispute and an invoice link read under 100 rows of any table of a 400-payment history');

select * from finish();
rollback;
