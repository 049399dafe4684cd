-- Security lint: the checks Supabase's splinter linter makes, plus this project's
-- allow-lists. Supabase's default privileges grant every NEW table/function in public to anon and
-- authenticated (kept on purpose, see the api_surface migration), so these checks are what catches
-- a new object that lacks RLS, policies or revokes. Each check returns the offending objects, so
-- a failure names them. Objects that belong to extensions (pgtap) are ignored.
-- Fixing a failure: give the new object its decision in a migration (enable RLS + policies,
-- revoke from anon/authenticated, set search_path) and, if it is meant to be exposed, add it to
-- the allow-lists below.
begin;
select plan(17);

create temp view lint_objects as
select c.oid, c.relname, c.relkind, c.relrowsecurity, c.reloptions
  from pg_class c
 where c.relnamespace = 'public'::regnamespace
   and not exists (select 1 from pg_depend d
                    where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e');

create temp view lint_functions as
select p.oid, p.oid::regprocedure::text as sig, p.proname, p.prosecdef, p.proconfig
  from pg_proc p
 where p.pronamespace = 'public'::regnamespace
   and not exists (select 1 from pg_depend d
                    where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e');

-- What the API roles may read (everything else in public is internal).
create temp table lint_allow (relname text, role text) on commit drop;
insert into lint_allow values
  ('products', 'anon'), ('prices', 'anon'),
  ('products', 'authenticated'), ('prices', 'authenticated'), ('channels', 'authenticated'),
  ('users', 'authenticated'), ('customers', 'authenticated'), ('accounts', 'authenticated'),
  ('vouchers', 'authenticated'), ('subscriptions', 'authenticated'), ('payment_intents', 'authenticated'),
  ('charges', 'authenticated'), ('payment_methods', 'authenticated'), ('events', 'authenticated'),
  ('refunds', 'authenticated'), ('disputes', 'authenticated'), ('invoices', 'authenticated'),
  ('access_grants', 'authenticated'), ('account_access', 'authenticated'), ('my_account', 'authenticated');

-- 1. splinter rls_disabled_in_public
select is(array(select relname::text from lint_objects where relkind in ('r', 'p') and not relrowsecurity order by 1),
          '{}'::text[], 'every table in public has RLS enabled');

-- 2. splinter function_search_path_mutable (SECURITY DEFINER functions)
select is(array(select sig from lint_functions
                 where prosecdef
                   and not exists (select 1 from unnest(coalesce(proconfig, '{}')) c where c like 'search_path=%')
                 order by 1),
          '{}'::text[], 'every SECURITY DEFINER function in public has a fixed search_path');

-- 3. splinter security_definer_view / materialized_view_in_api
select is(array(select relname::text from lint_objects
                 where relkind = 'v'
                   and not exists (select 1 from unnest(coalesce(reloptions, '{}')) o
                                    where lower(o) in ('security_invoker=true', 'security_invoker=on',
                                                       'security_invoker=1', 'security_invoker=yes'))
                 order by 1),
          '{}'::text[], 'every view in public is security_invoker');
select is(array(select relname::text from lint_objects
                 where relkind = 'm'
                   and (has_table_privilege('anon', oid, 'SELECT') or has_table_privilege('authenticated', oid, 'SELECT'))
                 order by 1),
          '{}'::text[], 'no materialized view in public is readable by anon/authenticated');

-- 4. anon: no privilege at all on internal objects, only SELECT on the allow-list.
select is(array(select relname::text from lint_objects o
                 where relkind in ('r', 'p', 'v', 'm', 'f', 'S')
                   and (   has_table_privilege('anon', o.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                        or has_any_column_privilege('anon', o.oid, 'INSERT, UPDATE, REFERENCES')
                        or (relkind = 'S' and has_sequence_privilege('anon', o.oid, 'USAGE, SELECT, UPDATE'))
                        or (    (has_table_privilege('anon', o.oid, 'SELECT') or has_any_column_privilege('anon', o.oid, 'SELECT'))
                            and not exists (select 1 from lint_allow a where a.relname = o.relname and a.role = 'anon')))
                 order by 1),
          '{}'::text[], 'anon: SELECT on the allow-list only, nothing on internal tables');

-- 5. authenticated: SELECT on the allow-list; UPDATE only of users.full_name/avatar_url.
select is(array(select relname::text from lint_objects o
                 where relkind in ('r', 'p', 'v', 'm', 'f', 'S')
                   and (   has_table_privilege('authenticated', o.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                        or has_any_column_privilege('authenticated', o.oid, 'INSERT, REFERENCES')
                        or (relkind = 'S' and has_sequence_privilege('authenticated', o.oid, 'USAGE, SELECT, UPDATE'))
                        or (    (has_table_privilege('authenticated', o.oid, 'SELECT')
                                 or has_any_column_privilege('authenticated', o.oid, 'SELECT'))
                            and not exists (select 1 from lint_allow a where a.relname = o.relname and a.role = 'authenticated')))
                 order by 1),
          '{}'::text[], 'authenticated: SELECT on the allow-list only, nothing on internal tables');
select is(array(select format('%s.%s', c.relname, a.attname)
                  from lint_objects c
                  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                 where has_column_privilege('authenticated', c.oid, a.attnum, 'UPDATE')
                 order by 1),
          array['users.avatar_url', 'users.full_name'],
          'authenticated may UPDATE exactly users.full_name and users.avatar_url');

-- 6. splinter auth_rls_initplan: auth.uid()/jwt()/role() only as (select auth.xxx()).
select is(array(select format('%s.%s', tablename, policyname) from pg_policies
                 where schemaname = 'public'
                   and regexp_replace(coalesce(qual, '') || ' ' || coalesce(with_check, ''),
                                      '\(\s*SELECT\s+auth\.(uid|jwt|role)\(\)(\s+AS\s+\w+)?\s*\)', '', 'gi')
                       ~* 'auth\.(uid|jwt|role)\(\)|current_setting\('
                 order by 1),
          '{}'::text[], 'policies call auth.uid()/jwt()/role() only through (select ...)');

-- 7. every column a policy filters on leads an index (splinter unindexed_foreign_keys, RLS side).
select is(array(select format('%s.%s', t, col)
                  from (values ('users', 'id'), ('customers', 'id'), ('accounts', 'user_id'), ('accounts', 'account_number'),
                               ('vouchers', 'associated_account'), ('subscriptions', 'user_id'), ('subscriptions', 'price_id'),
                               ('payment_intents', 'customer_id'), ('charges', 'customer_id'), ('charges', 'payment_intent_id'),
                               ('payment_methods', 'customer_id'), ('events', 'user_id'), ('prices', 'product_id'),
                               ('refunds', 'user_id'), ('disputes', 'user_id'), ('invoices', 'user_id'),
                               ('access_grants', 'account_id'), ('accounts', 'id')) v(t, col)
                 where not exists (select 1 from pg_index i
                                     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
                                    where i.indrelid = format('public.%I', t)::regclass and a.attname = col)
                 order by 1),
          '{}'::text[], 'every column the policies filter on leads an index');

-- 8. a table the API roles may SELECT has a SELECT policy for that role (else the app sees nothing).
select is(array(select format('%s/%s', a.relname, a.role) from lint_allow a join lint_objects o on o.relname = a.relname
                 where o.relkind in ('r', 'p')
                   and not exists (select 1 from pg_policies p
                                    where p.schemaname = 'public' and p.tablename = a.relname
                                      and p.cmd in ('SELECT', 'ALL')
                                      and (a.role = any(p.roles) or 'public' = any(p.roles)))
                 order by 1),
          '{}'::text[], 'every readable table has a SELECT policy for each role that may read it');

-- 9. the exact policy inventory (a dropped or an extra permissive policy is a finding).
select set_eq($$select format('%s %s %s %s', tablename, policyname, cmd, array_to_string(roles, ','))
                  from pg_policies where schemaname = 'public'$$,
              array['users users_select_own SELECT authenticated',
                    'users users_update_own UPDATE authenticated',
                    'customers customers_select_own SELECT authenticated',
                    'accounts accounts_select_own SELECT authenticated',
                    'vouchers vouchers_select_own SELECT authenticated',
                    'subscriptions subscriptions_select_own SELECT authenticated',
                    'payment_intents payment_intents_select_own SELECT authenticated',
                    'charges charges_select_own SELECT authenticated',
                    'payment_methods payment_methods_select_own SELECT authenticated',
                    'events events_select_own SELECT authenticated',
                    'refunds refunds_select_own SELECT authenticated',
                    'disputes disputes_select_own SELECT authenticated',
                    'invoices invoices_select_own SELECT authenticated',
                    'access_grants access_grants_select_own SELECT authenticated',
                    'products products_select_active SELECT anon',
                    'products products_select_active_or_subscribed SELECT authenticated',
                    'prices prices_select_active SELECT anon',
                    'prices prices_select_active_or_subscribed SELECT authenticated',
                    'channels channels_select_authenticated SELECT authenticated'],
              'policy inventory in public is exactly the reviewed set');

-- 10. functions: anon executes nothing in public; authenticated only the RPC and the view helper.
select is(array(select sig from lint_functions where has_function_privilege('anon', oid, 'EXECUTE') order by 1),
          '{}'::text[], 'anon can execute no function in public');
select is(array(select sig from lint_functions
                 where has_function_privilege('authenticated', oid, 'EXECUTE')
                   and sig not in ('redeem_voucher(text)', 'account_expiry(text)')
                 order by 1),
          '{}'::text[], 'authenticated can execute only redeem_voucher(text) and account_expiry(text)');

-- 11. Realtime / LISTEN payloads (the production triggers accounts_update and sse_accounts). A NOTIFY is only
-- delivered at commit, and these tests roll back, so the payload is checked on the function
-- definitions: each sends exactly json_build_object('id', 'user_id', 'operation') and nothing
-- serializes a whole row. (The live payload was also checked once by hand with psql LISTEN.)
select is(array(select f from unnest(array['accounts_update_trigger', 'update_sse_from_accounts']) f
                 where (select count(*) from regexp_matches(pg_get_functiondef(format('public.%I()', f)::regprocedure),
                                                            'pg_notify\(', 'g')) <> 1
                    or pg_get_functiondef(format('public.%I()', f)::regprocedure)
                       !~ 'pg_notify\(''(accounts_update|sse_accounts)'',\s*json_build_object\(''id'', r\.id, ''user_id'', r\.user_id, ''operation'', tg_op\)::text\)'
                 order by 1),
          '{}'::text[], 'account notifications carry only id, user_id and operation');
select is(array(select sig from lint_functions
                 where pg_get_functiondef(oid) ~* 'pg_notify|\mnotify\M'
                   and pg_get_functiondef(oid) ~* 'row_to_json|to_jsonb?\s*\(\s*(new|old|r)\M|hstore\s*\(|(new|old)\s*::\s*text|\m(new|old)\.\*|cryptotoken|account_number|apple_'
                 order by 1),
          '{}'::text[], 'no notifying function in public serializes a row or a secret column');
select is(array(select format('%s on %s', t.tgname, t.tgrelid::regclass) from pg_trigger t
                 join pg_proc p on p.oid = t.tgfoid
                where not t.tgisinternal
                  and t.tgrelid in (select oid from lint_objects)
                  and pg_get_functiondef(p.oid) ~* 'pg_notify|\mnotify\M'
                  and p.proname not in ('accounts_update_trigger', 'update_sse_from_accounts')
                order by 1),
          '{}'::text[], 'no other trigger on a public table sends notifications');

-- 12. the catch-up's progress (stripe-worker internal): RLS on, no policy, no API role reaches it.
select ok((select relrowsecurity from pg_class where oid = 'public.stripe_catch_up'::regclass)
          and not exists (select 1 from pg_policies where schemaname = 'public' and tablename = 'stripe_catch_up')
          and not has_table_privilege('anon', 'public.stripe_catch_up', 'SELECT, INSERT, UPDATE, DELETE')
          and not has_table_privilege('authenticated', 'public.stripe_catch_up', 'SELECT, INSERT, UPDATE, DELETE'),
          'stripe_catch_up is internal: RLS on, no policy, nothing for anon/authenticated');

select * from finish();
rollback;
