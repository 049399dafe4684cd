-- Row-level security, grants and the account view (issue 6).
--
-- The Supabase frontend reads these tables through PostgREST with the user's JWT (role
-- `authenticated`, auth.uid() = the user) or with the public anon key (role `anon`). Supabase's
-- default privileges GRANT ALL on every new table/function in public to anon, authenticated and
-- service_role (sql/platform/00_roles.sql recreates that), so access is restricted here by:
--   * RLS enabled on every table stripe-worker writes, with one SELECT policy per table/role;
--   * explicit REVOKEs: anon/authenticated keep only SELECT on what they may read (users: plus
--     UPDATE of full_name/avatar_url), nothing at all on internal tables;
--   * EXECUTE revoked on internal functions; redeem_voucher for authenticated only.
-- Writes come from the worker (table owner postgres, or service_role, which bypasses RLS).
--
-- The default privileges themselves are deliberately NOT changed: diverging from Supabase's
-- defaults would make local/test databases behave unlike the hosted project. Instead
-- supabase/tests/110_lint.sql fails when a table in public has RLS disabled or anon/authenticated
-- hold privileges outside the allow-list, so every new table or function must get its own
-- policy/grant decision in its migration.
--
-- Only the objects named below are touched: production's public schema may hold tables and
-- functions that are not stripe-worker's (e.g. devices) and that the frontend uses today.
-- Idempotent: every statement can run again (policies are dropped and recreated).

-- ---------------------------------------------------------------------------------------
-- Indexes on every column a policy filters on (most exist already; same names = no-op).
-- users.id and customers.id are primary keys; events.user_id leads events_user_id_occurred_at_idx.
create index if not exists accounts_user_id_idx on public.accounts (user_id);
create index if not exists vouchers_associated_account_idx on public.vouchers (associated_account);
create index if not exists subscriptions_user_id_idx on public.subscriptions (user_id);
create index if not exists subscriptions_price_id_idx on public.subscriptions (price_id);
create index if not exists payment_intents_customer_id_idx on public.payment_intents (customer_id);
create index if not exists charges_customer_id_idx on public.charges (customer_id);
create index if not exists charges_payment_intent_id_idx on public.charges (payment_intent_id);
create index if not exists payment_methods_customer_id_idx on public.payment_methods (customer_id);
create index if not exists events_user_id_occurred_at_idx on public.events (user_id, occurred_at desc);
create index if not exists prices_product_id_idx on public.prices (product_id);

-- ---------------------------------------------------------------------------------------
-- Tables: RLS on, table privileges.
do $$
declare
  t text;
  s regclass;
  -- a signed-in user reads their own rows
  own_tables constant text[] := array['users', 'customers', 'accounts', 'vouchers', 'subscriptions',
                                      'payment_intents', 'charges', 'payment_methods', 'events'];
  -- the public catalog: anon and authenticated read active rows
  catalog_tables constant text[] := array['products', 'prices'];
  -- channel names (vouchers.channel_id): signed-in users only, read-only
  member_tables constant text[] := array['channels'];
  -- worker internals (event log with payloads, ordering keys, retry/lease state, dedup log,
  -- every Stripe customer id of a user: migration 20261101000620, skipped when absent)
  internal_tables constant text[] := array['stripe_webhook_events', 'stripe_object_versions',
                                           'migration_dedup_log', 'stripe_customers'];
begin
  foreach t in array own_tables || catalog_tables || member_tables || internal_tables loop
    if to_regclass(format('public.%I', t)) is null then
      raise notice 'row_level_security: public.% does not exist, skipped', t;
      continue;
    end if;
    execute format('alter table public.%I enable row level security', t);
    -- table-level REVOKE also removes any column-level privileges
    execute format('revoke all on table public.%I from public, anon, authenticated', t);
    execute format('grant all on table public.%I to service_role', t);
    if t = any(own_tables) or t = any(member_tables) then
      execute format('grant select on table public.%I to authenticated', t);
    elsif t = any(catalog_tables) then
      execute format('grant select on table public.%I to anon, authenticated', t);
    end if;
    -- sequences owned by these tables (e.g. migration_dedup_log.id): service_role only
    for s in select d.objid::regclass
               from pg_depend d join pg_class c on c.oid = d.objid and c.relkind = 'S'
              where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
                and d.refobjid = format('public.%I', t)::regclass and d.deptype in ('a', 'i')
    loop
      execute format('revoke all on sequence %s from public, anon, authenticated', s);
      execute format('grant all on sequence %s to service_role', s);
    end loop;
  end loop;
end
$$;

-- What the frontend writes today: a user edits their own name and avatar, nothing else.
grant update (full_name, avatar_url) on table public.users to authenticated;

-- ---------------------------------------------------------------------------------------
-- Policies. Any other policy on these tables (e.g. a dashboard template's "Enable read access
-- for all users" in production) is dropped: permissive policies are OR-ed, so one stray
-- `using (true)` would expose every customer's rows. Each drop is reported as a NOTICE.
do $$
declare
  p record;
  ours constant text[] := array[
    'users_select_own', 'users_update_own', 'customers_select_own', 'accounts_select_own',
    'vouchers_select_own', 'subscriptions_select_own', 'payment_intents_select_own',
    'charges_select_own', 'payment_methods_select_own', 'events_select_own',
    'products_select_active', 'products_select_active_or_subscribed',
    'prices_select_active', 'prices_select_active_or_subscribed', 'channels_select_authenticated'];
begin
  for p in select schemaname, tablename, policyname from pg_policies
            where schemaname = 'public'
              and tablename in ('users', 'customers', 'accounts', 'vouchers', 'subscriptions',
                                'payment_intents', 'charges', 'payment_methods', 'events',
                                'products', 'prices', 'channels', 'stripe_webhook_events',
                                'stripe_object_versions', 'migration_dedup_log', 'stripe_customers')
              and not (policyname = any(ours))
  loop
    raise notice 'row_level_security: dropping policy % on %.%', p.policyname, p.schemaname, p.tablename;
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end
$$;

-- auth.uid() is wrapped in a scalar subquery so it is evaluated once per statement (initplan),
-- not once per row (Supabase's RLS performance advice; checked by 110_lint.sql).

drop policy if exists users_select_own on public.users;
create policy users_select_own on public.users
  for select to authenticated
  using (id = (select auth.uid()));

-- Column privileges (above) limit which columns; this limits which row.
drop policy if exists users_update_own on public.users;
create policy users_update_own on public.users
  for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

drop policy if exists customers_select_own on public.customers;
create policy customers_select_own on public.customers
  for select to authenticated
  using (id = (select auth.uid()));

drop policy if exists accounts_select_own on public.accounts;
create policy accounts_select_own on public.accounts
  for select to authenticated
  using (user_id = (select auth.uid()));

-- Through the caller's accounts (the subquery is itself filtered by accounts_select_own).
-- `= any (array(subquery))` rather than `in (subquery)`: sublinks in policies are not turned into
-- joins, and `in` becomes a hashed SubPlan filter = a sequential scan of every voucher; the array
-- is an InitPlan computed once, and `= any ($1)` uses vouchers_associated_account_idx.
drop policy if exists vouchers_select_own on public.vouchers;
create policy vouchers_select_own on public.vouchers
  for select to authenticated
  using (associated_account = any (array(select a.account_number from public.accounts a
                                          where a.user_id = (select auth.uid()))));

drop policy if exists subscriptions_select_own on public.subscriptions;
create policy subscriptions_select_own on public.subscriptions
  for select to authenticated
  using (user_id = (select auth.uid()));

drop policy if exists payment_intents_select_own on public.payment_intents;
create policy payment_intents_select_own on public.payment_intents
  for select to authenticated
  using (customer_id = (select auth.uid()));

-- A charge is the caller's when it names them, or when its payment intent is theirs (charges
-- recorded before the customer was known have customer_id NULL).
drop policy if exists charges_select_own on public.charges;
create policy charges_select_own on public.charges
  for select to authenticated
  using (customer_id = (select auth.uid())
         or payment_intent_id = any (array(select pi.id from public.payment_intents pi
                                            where pi.customer_id = (select auth.uid()))));

drop policy if exists payment_methods_select_own on public.payment_methods;
create policy payment_methods_select_own on public.payment_methods
  for select to authenticated
  using (customer_id = (select auth.uid()));

drop policy if exists events_select_own on public.events;
create policy events_select_own on public.events
  for select to authenticated
  using (user_id = (select auth.uid()));

-- Catalog: active rows for everyone (pricing page). A signed-in user additionally sees the
-- (possibly archived) prices they pay or paid for (their subscriptions, and their payment
-- intents when payment_intents.price_id exists, migration 20261101000600) and those prices'
-- products, so the account page can still embed the plan of a legacy customer. One policy per
-- role and action (no overlapping permissive policies). Placeholder products (active = false,
-- written before their product event arrived) and rows with active NULL stay hidden otherwise.
drop policy if exists products_select_active on public.products;
create policy products_select_active on public.products
  for select to anon
  using (active is true);

drop policy if exists prices_select_active on public.prices;
create policy prices_select_active on public.prices
  for select to anon
  using (active is true);

do $$
declare
  own_price_ids text := 'select s.price_id from public.subscriptions s where s.user_id = (select auth.uid())';
begin
  if exists (select 1 from information_schema.columns
              where table_schema = 'public' and table_name = 'payment_intents' and column_name = 'price_id') then
    own_price_ids := own_price_ids || ' union all select pi.price_id from public.payment_intents pi'
                                   || ' where pi.customer_id = (select auth.uid())';
  end if;

  execute 'drop policy if exists prices_select_active_or_subscribed on public.prices';
  execute format($p$
    create policy prices_select_active_or_subscribed on public.prices
      for select to authenticated
      using (active is true or id in (%s))
  $p$, own_price_ids);

  execute 'drop policy if exists products_select_active_or_subscribed on public.products';
  execute format($p$
    create policy products_select_active_or_subscribed on public.products
      for select to authenticated
      using (active is true
             or id in (select pr.product_id from public.prices pr where pr.id in (%s)))
  $p$, own_price_ids);
end
$$;

-- Channels hold only a name; signed-in users may read them (voucher display). anon: no grant.
drop policy if exists channels_select_authenticated on public.channels;
create policy channels_select_authenticated on public.channels
  for select to authenticated
  using (true);

-- stripe_webhook_events, stripe_object_versions, migration_dedup_log, stripe_customers: RLS on,
-- no policy, no grants to anon/authenticated (above) = invisible to the API; the worker (owner,
-- service_role) is unaffected.

-- ---------------------------------------------------------------------------------------
-- Functions.
do $$
declare
  f record;
  -- the worker's and the triggers' helpers (20261101000500/0600/0610 included): nothing the
  -- frontend calls. shift_account_expiry is SECURITY DEFINER and must never be callable.
  internal_names constant text[] := array[
    'claim_object_version', 'find_or_create_auth_user', 'ensure_account', 'record_subscription_period',
    'generate_account_number', 'generate_voucher_code', 'shift_account_expiry',
    'format_expiry', 'add_months_utc', 'metadata_months', 'price_period_months', 'price_voucher_terms',
    'handle_new_user', 'handle_user_email_change'];
  -- called by the security-invoker view my_account, so its caller needs EXECUTE (pure parser)
  view_helpers constant text[] := array['account_expiry'];
  -- functions whose bodies are ours and use only schema-qualified names
  ours constant text[] := internal_names || view_helpers || array[
    'redeem_voucher', 'set_updated_at', 'update_voucher_updated_at', 'accounts_update_trigger',
    'update_sse_from_accounts', 'create_voucher_for_new_subscription',
    'update_voucher_on_subscription_change', 'issue_voucher_for_payment_intent',
    'adjust_voucher_on_late_price', 'revoke_voucher_on_full_refund'];
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
    -- Trigger functions fire without an EXECUTE check; nobody needs to call them directly.
    -- Internal functions: the worker (owner) and service_role only.
    if f.is_trigger or f.proname = any(internal_names) then
      execute format('revoke all on function %s from public, anon, authenticated', f.sig);
      execute format('grant execute on function %s to service_role', f.sig);
    elsif f.proname = 'redeem_voucher' or f.proname = any(view_helpers) then
      execute format('revoke all on function %s from public, anon', f.sig);
      execute format('grant execute on function %s to authenticated, service_role', f.sig);
    end if;

    -- Every SECURITY DEFINER function gets a fixed search_path. Ours use schema-qualified names
    -- only, so ''. A foreign one (production may have some) keeps the name resolution it had
    -- through PostgREST's path, with pg_temp moved last so temp objects cannot shadow tables.
    if f.prosecdef and not exists (select 1 from unnest(coalesce(f.proconfig, '{}')) c
                                   where c like 'search_path=%') then
      if f.proname = any(ours) then
        execute format('alter function %s set search_path = %L', f.sig, '');
      else
        raise notice 'row_level_security: % had no search_path; set to public, extensions, pg_temp', f.sig;
        execute format('alter function %s set search_path = public, extensions, pg_temp', f.sig);
      end if;
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------------------------------
-- public.my_account: everything the account page needs in one round trip, for the caller only.
-- SECURITY INVOKER, so the caller's RLS policies apply to every table it reads; the explicit
-- auth.uid() filters are for the planner, not for security. One row per account of the caller
-- (one row with NULL account fields when they have none yet); nothing for anon (no grant) or for
-- a session without a JWT subject.
--   expiry            accounts.expiry as stored (text)
--   expiry_at         the same as timestamptz: account_expiry() when that function exists,
--                     else a guarded cast (NULL when the text is not an ISO date/timestamp)
--   subscription_*    the caller's current subscription: active/trialing first, then past_due,
--                     latest current_period_end
--   unused_vouchers   jsonb array of {code, duration_months, created_at} of the account's
--                     vouchers that are neither used nor inactive/revoked, oldest first
do $$
declare
  expiry_expr text;
  voucher_filter text := 'not v.is_used and v.used_at is null and coalesce(v.status, ''active'') = ''active''';
begin
  if to_regprocedure('public.account_expiry(text)') is not null then
    expiry_expr := 'public.account_expiry(a.expiry)::timestamptz';
  else
    -- nested CASEs: the day check runs only on text the pattern accepted (AND has no order)
    expiry_expr := $e$case when a.expiry ~ '^[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([ T]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$'
                       then case when substr(a.expiry, 9, 2)::int
                                      <= extract(day from date_trunc('month', to_date(substr(a.expiry, 1, 7), 'YYYY-MM'))
                                                          + interval '1 month - 1 day')
                                 then a.expiry::timestamptz end end$e$;
  end if;
  if exists (select 1 from information_schema.columns
              where table_schema = 'public' and table_name = 'vouchers' and column_name = 'revoked_at') then
    voucher_filter := voucher_filter || ' and v.revoked_at is null';
  end if;

  execute 'drop view if exists public.my_account';
  execute format($v$
    create view public.my_account with (security_invoker = true) as
    select me.user_id,
           a.id as account_id,
           a.account_number,
           a.status,
           a.expiry,
           %s as expiry_at,
           s.id as subscription_id,
           s.status as subscription_status,
           s.current_period_end,
           s.cancel_at_period_end,
           s.price_id,
           coalesce(uv.unused_vouchers, '[]'::jsonb) as unused_vouchers
      from (select (select auth.uid()) as user_id) me
      left join public.accounts a on a.user_id = me.user_id
      left join lateral (
             select s.id, s.status, s.current_period_end, s.cancel_at_period_end, s.price_id
               from public.subscriptions s
              where s.user_id = me.user_id
                and s.status in ('active', 'trialing', 'past_due')
              order by (s.status in ('active', 'trialing')) desc, s.current_period_end desc, s.id
              limit 1) s on true
      left join lateral (
             select jsonb_agg(jsonb_build_object('code', v.code,
                                                 'duration_months', v.duration_months,
                                                 'created_at', v.created_at)
                              order by v.created_at, v.code) as unused_vouchers
               from public.vouchers v
              where v.associated_account = a.account_number
                and %s) uv on true
     where me.user_id is not null
  $v$, expiry_expr, voucher_filter);
end
$$;

comment on view public.my_account is
  'The signed-in user''s accounts with expiry, current subscription and unused vouchers (security invoker: RLS applies). Read by the frontend''s account page.';

revoke all on table public.my_account from public, anon, authenticated;
grant select on table public.my_account to authenticated;
grant select on table public.my_account to service_role;
