-- The API surface, checked as a whole after every concern has made its own grants and policies.
--
-- The Supabase frontend reads through PostgREST with the user's JWT (role authenticated,
-- auth.uid() = the user) or the public anon key (role anon). Supabase's default privileges
-- grant every new table and function in public to anon, authenticated and service_role
-- (sql/platform/00_roles.sql recreates that); those defaults are deliberately kept, so local
-- and test databases behave like the hosted project, and each migration revokes what it must.
-- This one removes what an earlier owner of the schema may have left behind on our objects,
-- and supabase/tests/110_lint.sql fails when a new object lacks its decision.
--
-- Only the objects named below are touched: production's public schema may hold tables and
-- functions that are not stripe-worker's (e.g. devices) that the frontend uses today.

-- Any other policy on our tables (e.g. a dashboard template's "Enable read access for all
-- users") is dropped: permissive policies are OR-ed, so one stray `using (true)` would expose
-- every customer's rows. Each drop is reported as a NOTICE.
do $$
declare
  p record;
  ours constant text[] := array[
    'users_select_own', 'users_update_own', 'customers_select_own', 'accounts_select_own',
    'vouchers_select_own', 'subscriptions_select_own', 'payment_intents_select_own',
    'charges_select_own', 'payment_methods_select_own', 'events_select_own',
    'refunds_select_own', 'disputes_select_own', 'invoices_select_own', 'access_grants_select_own',
    'products_select_active', 'products_select_active_or_subscribed',
    'prices_select_active', 'prices_select_active_or_subscribed', 'channels_select_authenticated'];
begin
  for p in select schemaname, tablename, policyname from pg_policies
            where schemaname = 'public'
              and tablename in ('users', 'customers', 'accounts', 'vouchers', 'subscriptions',
                                'payment_intents', 'charges', 'payment_methods', 'events',
                                'refunds', 'disputes', 'invoices', 'invoice_payments', 'access_grants',
                                'voucher_redemption_attempts', 'products', 'prices', 'channels',
                                'stripe_webhook_events', 'stripe_object_versions', 'migration_dedup_log',
                                'stripe_customers', 'stripe_catch_up')
              and not (policyname = any(ours))
  loop
    raise notice 'api_surface: dropping policy % on %.%', p.policyname, p.schemaname, p.tablename;
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end
$$;

-- Functions: trigger functions fire without an EXECUTE check and nobody needs to call them; the
-- production ones (and any future trigger function) are revoked from the API roles here.
-- Every SECURITY DEFINER function gets a fixed search_path: ours use schema-qualified names
-- only, so ''; a foreign one keeps the name resolution it had through PostgREST's path, with
-- pg_temp moved last so temporary objects cannot shadow tables.
do $$
declare
  f record;
  ours constant text[] := array[
    'handle_new_user', 'update_voucher_updated_at', 'accounts_update_trigger', 'update_sse_from_accounts',
    'create_voucher_for_new_subscription', 'update_voucher_on_subscription_change'];
begin
  for f in
    select p.oid::regprocedure as sig, p.proname, p.prosecdef, p.proconfig,
           p.prorettype = 'trigger'::regtype as is_trigger
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = 'public'
       and not exists (select 1 from pg_depend d
                        where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    if f.is_trigger then
      execute format('revoke all on function %s from public, anon, authenticated', f.sig);
      execute format('grant execute on function %s to service_role', f.sig);
    end if;
    if f.prosecdef and not exists (select 1 from unnest(coalesce(f.proconfig, '{}')) c
                                   where c like 'search_path=%') then
      if f.proname = any(ours) then
        execute format('alter function %s set search_path = %L', f.sig, '');
      else
        raise notice 'api_surface: % had no search_path; set to public, extensions, pg_temp', f.sig;
        execute format('alter function %s set search_path = public, extensions, pg_temp', f.sig);
      end if;
    end if;
  end loop;
end
$$;
