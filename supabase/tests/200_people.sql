-- People: auth users the way GoTrue needs them, one user per person whatever the case of the
-- address or a change of email in Stripe, and one numbered account per user. Writes as the
-- worker does (postgres) and checks the rows. Rolled back at the end.
begin;
select plan(41);

select has_function('public', 'find_auth_user', array['text'], 'find_auth_user(text)');
select has_function('public', 'find_or_create_auth_user', array['text', 'text', 'boolean'], 'find_or_create_auth_user(text, text, boolean)');
select has_function('public', 'ensure_account', array['uuid'], 'ensure_account(uuid)');
select is_definer('public', 'find_or_create_auth_user', array['text', 'text', 'boolean'], 'find_or_create_auth_user is security definer');
select ok(not has_function_privilege('anon', 'public.find_or_create_auth_user(text, text, boolean)', 'execute')
      and not has_function_privilege('authenticated', 'public.find_or_create_auth_user(text, text, boolean)', 'execute')
      and has_function_privilege('service_role', 'public.find_or_create_auth_user(text, text, boolean)', 'execute'),
          'find_or_create_auth_user: service_role only');
select ok(not has_function_privilege('anon', 'public.ensure_account(uuid)', 'execute')
      and not has_function_privilege('authenticated', 'public.ensure_account(uuid)', 'execute'),
          'ensure_account: not for the API roles');

-- ---------------------------------------------------------------- auth users
select isnt(public.find_or_create_auth_user('Buyer.A@Example.com', 'Buyer A'), null, 'creates an auth user');
select is(public.find_or_create_auth_user('  buyer.a@EXAMPLE.com ', null),
          (select id from auth.users where email = 'buyer.a@example.com'),
          'same email in another case finds the same user');
select is((select count(*)::int from auth.users where lower(email) = 'buyer.a@example.com'), 1, 'exactly one auth user for the email');
select ok((select instance_id = '00000000-0000-0000-0000-000000000000' and aud = 'authenticated' and role = 'authenticated'
              and email_confirmed_at is null and encrypted_password = '' and is_super_admin = false
              and confirmation_token = '' and recovery_token = '' and email_change_token_new = '' and email_change = ''
              and raw_app_meta_data = '{"provider": "email", "providers": ["email"]}'::jsonb
              and raw_user_meta_data ->> 'full_name' = 'Buyer A'
              and created_at is not null and updated_at is not null
             from auth.users where email = 'buyer.a@example.com'),
          'auth user has the columns GoTrue needs (not confirmed by default, empty tokens, not super admin, email provider)');
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
select isnt(public.ensure_account((select id from auth.users where email = 'buyer.a@example.com')), null,
            'ensure_account for buyer A');
select ok((select account_number ~ '^[1-9][0-9]{15}$' from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'the account has a 16-digit account number');
select is(public.ensure_account((select id from auth.users where email = 'buyer.a@example.com')),
          (select id from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'ensure_account twice returns the same account');

select is((select count(*)::int from public.accounts where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          1, 'one account per user');
select ok((select status = 'active' and expiry = '' from public.accounts
            where user_id = (select id from auth.users where email = 'buyer.a@example.com')),
          'new account is active with an empty expiry');
select isnt(public.ensure_account((select id from auth.users where email = 'buyer.b@example.com')), null,
            'ensure_account for buyer B');
select ok((select abs(b.account_number::numeric - a.account_number::numeric) > 1000
             from public.accounts a, public.accounts b
            where a.user_id = (select id from auth.users where email = 'buyer.a@example.com')
              and b.user_id = (select id from auth.users where email = 'buyer.b@example.com')),
          'two users get different, non-sequential numbers');
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
          '00000000-0000-4000-8000-0000000c0001'::uuid, 'the oldest account is used');
select ok((select account_number is not null from public.accounts where id = '00000000-0000-4000-8000-0000000c0001')
      and (select count(*) = 2 from public.accounts where user_id = (select id from auth.users where email = 'legacy.c@example.com')),
          'no third account created');


-- ---------------------------------------------------------------- confirmation is the caller's choice
select isnt(public.find_or_create_auth_user('confirmed@example.com', null, true), null, 'a user created as confirmed');
select ok((select email_confirmed_at is not null from auth.users where email = 'confirmed@example.com')
      and (select (i.identity_data ->> 'email_verified')::boolean from auth.identities i
             join auth.users u on u.id = i.user_id where u.email = 'confirmed@example.com'),
          'confirmed: email_confirmed_at and email_verified set');

-- ---------------------------------------------------------------- one person, one user
-- A Stripe customer of buyer A reports a new address: a purchase with it finds A.
insert into public.stripe_customers (stripe_customer_id, user_id, email)
select 'cus_t_alias', id, 'a.new@example.com' from auth.users where email = 'buyer.a@example.com';
select is(public.find_auth_user('A.New@example.com'), (select id from auth.users where email = 'buyer.a@example.com'),
          'an address a mapped Stripe customer reported finds that user');
select is(public.find_or_create_auth_user('a.new@example.com', null), (select id from auth.users where email = 'buyer.a@example.com'),
          'find_or_create_auth_user reuses that user');
select is((select count(*)::int from auth.users where email = 'a.new@example.com'), 0, 'no second auth user for the new address');
select is((select email::text from auth.users where id = (select id from auth.users where email = 'buyer.a@example.com')),
          'buyer.a@example.com', 'the sign-in address is not changed');
-- Who signs in with an address wins over a Stripe customer that reported it.
select isnt(public.find_or_create_auth_user('owner@example.com', null), null, 'a user who signs in as owner@');
insert into public.stripe_customers (stripe_customer_id, user_id, email)
select 'cus_t_claims_owner', id, 'owner@example.com' from auth.users where email = 'buyer.b@example.com';
select is(public.find_auth_user('owner@example.com'), (select id from auth.users where email = 'owner@example.com'),
          'the sign-in address decides over an alias');
select is(public.find_auth_user('nobody@example.com'), null, 'unknown address: no user');

select * from finish();
rollback;
