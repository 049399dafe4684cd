-- Gift codes: a manual price gives the buyer an unused voucher; redeeming it grants its months
-- from that moment. redeem_voucher (PostgREST RPC) answers the same for every code the caller
-- cannot redeem, counts failures per user, refuses anonymous sign-ins. Played the way PostgREST
-- calls it: set local role authenticated + request.jwt.claims. Rolled back at the end.
begin;
select plan(24);
set local timezone = 'UTC';

create function pg_temp.buyer(p_email text) returns uuid language sql as $$
  with u as (select public.find_or_create_auth_user(p_email, null) as id)
  insert into public.customers (id) select id from u on conflict (id) do update set id = excluded.id
  returning id
$$;
create function pg_temp.as_user(p_email text) returns void language sql as $$
  select set_config('request.jwt.claims',
                    json_build_object('sub', (select id from auth.users where email = p_email), 'role', 'authenticated')::text, true)
$$;
grant execute on function pg_temp.as_user(text) to authenticated;

insert into public.products (id, active, name, metadata) values ('prod_t_gift', true, 'Gift', '{"voucher_redeem": "manual"}');
insert into public.prices (id, product_id, unit_amount, currency, type, metadata)
values ('price_t_gift', 'prod_t_gift', 2900, 'usd', 'one_time', '{"duration_months": "6"}');

-- B buys two gift codes; A has an account of their own.
insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id, price_id, checkout_session_id, paid_at)
values ('pi_g1', 'succeeded', 2900, 'usd', pg_temp.buyer('giver@example.com'), 'price_t_gift', 'cs_g1', '2030-01-01'),
       ('pi_g2', 'succeeded', 2900, 'usd', pg_temp.buyer('giver@example.com'), 'price_t_gift', 'cs_g2', '2030-01-01');
insert into public.charges (stripe_charge_id, payment_intent_id, amount, currency, status)
select 'ch_' || stripe_payment_intent_id, id, amount, 'usd', 'succeeded' from public.payment_intents where stripe_payment_intent_id like 'pi_g%';
select public.ensure_account(pg_temp.buyer('other@example.com'));
insert into public.vouchers (code, duration_months, status) values ('OPEN-CODE-0001', 2, 'active'), ('CANCELED-CODE-1', 1, 'canceled');

create temp table t_codes on commit drop as
  select (select code from public.vouchers where source = 'payment_intent:pi_g1') as g1,
         (select code from public.vouchers where source = 'payment_intent:pi_g2') as g2;
grant select on t_codes to authenticated;

select ok((select bool_and(not is_used and status = 'active' and duration_months = 6) from public.vouchers where source like 'payment_intent:pi_g%'),
          'a manual purchase gives an unused 6-month voucher');
select is((select count(*)::int from public.access_grants g join public.accounts a on a.id = g.account_id
             join auth.users u on u.id = a.user_id where u.email = 'giver@example.com'), 0, 'and no grant yet');

-- Someone else cannot redeem (or probe) the buyer's code: the same answer as an unknown code.
select pg_temp.as_user('other@example.com');
set local role authenticated;
select is((select public.redeem_voucher(g1) from t_codes), '{"error": "this code cannot be redeemed"}'::jsonb,
          'another user''s code: cannot be redeemed');
select is(current_setting('response.status', true), '404', 'answered 404');
select is(public.redeem_voucher('NOPE-NOPE-NOPE-NOPE'), '{"error": "this code cannot be redeemed"}'::jsonb, 'unknown code: the same answer');
select is(public.redeem_voucher('CANCELED-CODE-1'), '{"error": "this code cannot be redeemed"}'::jsonb, 'canceled code: the same answer');
select is((public.redeem_voucher('open-code-0001') ->> 'duration_months'), '2', 'a code tied to no account works for its holder');
select is(public.redeem_voucher('OPEN-CODE-0001'), '{"error": "this code cannot be redeemed"}'::jsonb, 'a used code: the same answer');
reset role;
select is((select array_agg(succeeded order by id) from public.voucher_redemption_attempts
            where user_id = (select id from auth.users where email = 'other@example.com')),
          array[false, false, false, true, false], 'every attempt is recorded (the failures commit)');

-- The buyer redeems their code: a grant of 6 months from now.
select pg_temp.as_user('giver@example.com');
set local role authenticated;
select is((select (public.redeem_voucher(' ' || lower(g1) || ' ') ->> 'duration_months') from t_codes), '6',
          'the owner redeems (trimmed, case-insensitive)');
reset role;
select is((select kind || ' ' || months || ' ' || status from public.access_grants where source like 'voucher:%'
            and account_id = public.ensure_account((select id from auth.users where email = 'giver@example.com'))),
          'gift_code 6 active', 'a gift_code grant of 6 months');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'giver@example.com')),
          public.format_expiry(public.add_months_utc(date_trunc('second', now()), 6)), 'expiry = redemption + 6 months');
select ok((select is_used from public.vouchers where source = 'payment_intent:pi_g1'), 'the voucher is used');

-- The gift's payment is refunded in full: the grant goes; an unused gift voucher is revoked.
update public.charges set amount_refunded = 2900 where stripe_charge_id in ('ch_pi_g1', 'ch_pi_g2');
select is((select status || ' ' || revoked_reason from public.access_grants where source like 'voucher:%'
            and account_id = public.ensure_account((select id from auth.users where email = 'giver@example.com'))),
          'revoked refunded', 'refunding the gift revokes the redeemed grant');
select is((select expiry from public.accounts where user_id = (select id from auth.users where email = 'giver@example.com')),
          null, 'and its time');
select is((select status from public.vouchers where source = 'payment_intent:pi_g2'), 'revoked', 'the unused gift voucher is revoked');
select pg_temp.as_user('giver@example.com');
set local role authenticated;
select is((select public.redeem_voucher(g2) from t_codes), '{"error": "this code cannot be redeemed"}'::jsonb,
          'a revoked code: the same answer');
reset role;

-- Guessing is limited: after 10 failures in an hour, 429 for everything.
select pg_temp.as_user('other@example.com');
set local role authenticated;
select public.redeem_voucher('GUESS-' || i) from generate_series(1, 6) i;
select is(public.redeem_voucher('GUESS-LAST'), '{"error": "too many attempts: try again in an hour"}'::jsonb,
          'the 11th failure within an hour is refused');
select is(current_setting('response.status', true), '429', 'answered 429');
select is((select public.redeem_voucher(g2) from t_codes), '{"error": "too many attempts: try again in an hour"}'::jsonb,
          'even a real code is refused then');
reset role;
select is((select count(*)::int from public.voucher_redemption_attempts
            where user_id = (select id from auth.users where email = 'other@example.com') and not succeeded), 10,
          'refused attempts are not counted again');

-- Anonymous sign-ins and requests without a user cannot redeem.
select set_config('request.jwt.claims',
                  json_build_object('sub', (select id from auth.users where email = 'giver@example.com'),
                                    'role', 'authenticated', 'is_anonymous', true)::text, true);
set local role authenticated;
select throws_ok($$select public.redeem_voucher('OPEN-CODE-0001')$$, '42501', null, 'an anonymous sign-in cannot redeem');
select set_config('request.jwt.claims', '{"role": "authenticated"}', true);
select throws_ok($$select public.redeem_voucher('OPEN-CODE-0001')$$, '42501', 'not signed in', 'no JWT subject: not signed in');
reset role;
set local role anon;
select throws_ok($$select public.redeem_voucher('OPEN-CODE-0001')$$, '42501', null, 'anon cannot execute redeem_voucher');
reset role;

select * from finish();
rollback;
