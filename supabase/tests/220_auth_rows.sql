-- Auth users created by SQL (migration 20261101001200): never a NULL is_super_admin, and the
-- Checkout email is confirmed only when the caller says so. Rolled back at the end.
begin;
select plan(9);

select has_function('public', 'find_or_create_auth_user', array['text', 'text', 'boolean'],
                    'find_or_create_auth_user(text, text, boolean)');
select is_definer('public', 'find_or_create_auth_user', array['text', 'text', 'boolean'],
                  'the three-argument form is security definer');
select ok(not has_function_privilege('anon', 'public.find_or_create_auth_user(text, text, boolean)', 'execute')
      and not has_function_privilege('authenticated', 'public.find_or_create_auth_user(text, text, boolean)', 'execute')
      and has_function_privilege('service_role', 'public.find_or_create_auth_user(text, text, boolean)', 'execute'),
          'find_or_create_auth_user(text, text, boolean): service_role only');

select isnt(public.find_or_create_auth_user('unconfirmed@example.com', null, false), null, 'creates an unconfirmed user');
select ok((select email_confirmed_at is null and is_super_admin = false
                  and not (i.identity_data ->> 'email_verified')::boolean
             from auth.users u join auth.identities i on i.user_id = u.id
            where u.email = 'unconfirmed@example.com'),
          'not confirmed: email_confirmed_at NULL, identity not verified, is_super_admin false');

select isnt(public.find_or_create_auth_user('confirmed@example.com', 'C', true), null, 'creates a confirmed user');
select ok((select email_confirmed_at is not null and confirmed_at is not null and is_super_admin = false
                  and (i.identity_data ->> 'email_verified')::boolean
             from auth.users u join auth.identities i on i.user_id = u.id
            where u.email = 'confirmed@example.com'),
          'confirmed: email_confirmed_at set, identity verified, is_super_admin false');

-- An existing user is found, never re-confirmed or changed by the flag.
select is(public.find_or_create_auth_user('UNCONFIRMED@example.com', null, true),
          (select id from auth.users where email = 'unconfirmed@example.com'), 'the existing user is found');
select is((select email_confirmed_at from auth.users where email = 'unconfirmed@example.com'), null,
          'finding a user never confirms it');

select * from finish();
rollback;
