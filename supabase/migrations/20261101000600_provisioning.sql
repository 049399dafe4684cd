-- Provisioning and one-time-purchase vouchers.
--
-- The worker writes FACTS (auth user via find_or_create_auth_user, customers, payment_intents,
-- charges); the triggers below derive accounts, vouchers and accounts.expiry from them:
--   payment_intents -> issue_voucher_for_payment_intent (one voucher per intent, redeemed at once
--                      unless the price/product says voucher_redeem = 'manual')
--   charges         -> revoke_voucher_on_full_refund    (full refund revokes + takes the time back)
-- The frontend redeems gift codes with public.redeem_voucher(code) (PostgREST RPC).
--
-- accounts.expiry is TEXT: written as ISO-8601 UTC 'YYYY-MM-DD"T"HH24:MI:SS"Z"' (format_expiry),
-- read leniently (account_expiry: ISO, plain dates as production has them, unix seconds/ms).
-- Idempotent: rerunning changes nothing. No rows are deleted.

-- ---------------------------------------------------------------------------------------
-- 1. Columns the voucher logic needs.

-- What the worker recorded as bought (checkout line item / invoice line price).
alter table public.payment_intents add column if not exists price_id text;
do $$
begin
  if not exists (select 1 from pg_constraint
                 where conrelid = 'public.payment_intents'::regclass
                   and conname = 'payment_intents_price_id_fkey') then
    alter table public.payment_intents
      add constraint payment_intents_price_id_fkey foreign key (price_id) references public.prices (id);
  end if;
end
$$;
create index if not exists payment_intents_price_id_idx on public.payment_intents (price_id);

alter table public.vouchers
  add column if not exists period_start timestamptz,       -- subscription billing period
  add column if not exists period_end timestamptz,
  add column if not exists revoked_at timestamptz,          -- full refund
  -- true for vouchers the old handler issued twice for one intent / period: they stay valid
  -- and usable, they are only exempt from the "once" unique indexes below.
  add column if not exists legacy_duplicate boolean not null default false;

comment on column public.vouchers.legacy_duplicate is
  'Set by migration 20261101000600 on all but the oldest voucher of a payment intent / subscription '
  'period that existed before the once-indexes. Still valid; only exempt from the unique indexes.';

-- Mark pre-existing duplicates (oldest voucher per intent stays the "real" one). Only rows that
-- are not yet marked are ranked, so a rerun finds nothing.
with ranked as (
  select v.id,
         row_number() over (partition by v.payment_intent_id order by v.created_at, v.id) as rn
    from public.vouchers v
   where v.payment_intent_id is not null and not v.legacy_duplicate
)
update public.vouchers v
   set legacy_duplicate = true
  from ranked r
 where r.id = v.id and r.rn > 1;

with ranked as (
  select v.id,
         row_number() over (partition by v.subscription_id, v.period_start order by v.created_at, v.id) as rn
    from public.vouchers v
   where v.subscription_id is not null and v.period_start is not null and not v.legacy_duplicate
)
update public.vouchers v
   set legacy_duplicate = true
  from ranked r
 where r.id = v.id and r.rn > 1;

-- One voucher per paid intent, one per subscription billing period (ON CONFLICT arbiters).
create unique index if not exists vouchers_payment_intent_once
  on public.vouchers (payment_intent_id)
  where payment_intent_id is not null and not legacy_duplicate;
create unique index if not exists vouchers_subscription_period_once
  on public.vouchers (subscription_id, period_start)
  where subscription_id is not null and period_start is not null and not legacy_duplicate;
-- redeem_voucher looks codes up case-insensitively.
create index if not exists vouchers_code_upper_idx on public.vouchers (upper(code));

-- ---------------------------------------------------------------------------------------
-- 2. Expiry helpers.

-- accounts.expiry text -> timestamptz. NULL / '' / unparseable -> NULL. Text without a zone
-- is read as UTC (production holds plain dates like '2025-01-01').
create or replace function public.account_expiry(p_text text)
returns timestamptz
language plpgsql
stable
set search_path = ''
set timezone = 'UTC'
as $$
declare
  t text := nullif(btrim(p_text), '');
begin
  if t is null or lower(t) in ('now', 'today', 'tomorrow', 'yesterday') then
    return null;
  end if;
  if t ~ '^[0-9]{9,10}$' then                       -- unix seconds
    return to_timestamp(t::bigint);
  end if;
  if t ~ '^[0-9]{12,13}$' then                      -- unix milliseconds
    return to_timestamp(t::bigint / 1000.0);
  end if;
  return t::timestamptz;
exception
  when data_exception then
    return null;
end
$$;

-- timestamptz -> the canonical accounts.expiry text (UTC, second precision).
create or replace function public.format_expiry(p_ts timestamptz)
returns text
language sql
stable
set search_path = ''
as $$
  select case
           when p_ts is null then null
           when isfinite(p_ts) then to_char(p_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           else p_ts::text
         end
$$;

-- Calendar-month arithmetic in UTC (independent of the session time zone).
create or replace function public.add_months_utc(p_ts timestamptz, p_months integer)
returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select ((p_ts at time zone 'UTC') + make_interval(months => p_months)) at time zone 'UTC'
$$;

-- Voucher duration from metadata text: a positive integer, else NULL.
create or replace function public.metadata_months(p_value text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select case when btrim(p_value) ~ '^[0-9]{1,4}$' and btrim(p_value)::integer > 0
              then btrim(p_value)::integer end
$$;

-- ---------------------------------------------------------------------------------------
-- 3. Random identifiers (core sha256 + gen_random_uuid: no pgcrypto dependency).

-- 16 digits, first digit 1-9 (same shape as production's account numbers), random, not
-- sequential, not present in accounts. A concurrent transaction may still pick the same
-- number: callers insert with ON CONFLICT / retry on unique_violation.
create or replace function public.generate_account_number()
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_rand bigint;
  v_number text;
begin
  loop
    v_rand := ('x' || encode(substr(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())), 1, 8), 'hex'))::bit(64)::bigint
              & 9223372036854775807;
    v_number := (1000000000000000 + v_rand % 9000000000000000)::text;
    exit when not exists (select 1 from public.accounts a where a.account_number = v_number);
  end loop;
  return v_number;
end
$$;

-- 'XXXX-XXXX-XXXX-XXXX' over a 32-letter alphabet without 0/O/1/I (80 random bits).
create or replace function public.generate_voucher_code()
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_alphabet constant text := 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  v_bytes bytea;
  v_code text;
begin
  loop
    v_bytes := sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
    v_code := '';
    for i in 0..15 loop
      if i > 0 and i % 4 = 0 then
        v_code := v_code || '-';
      end if;
      v_code := v_code || substr(v_alphabet, (get_byte(v_bytes, i) % 32) + 1, 1);
    end loop;
    exit when not exists (select 1 from public.vouchers v where upper(v.code) = v_code);
  end loop;
  return v_code;
end
$$;

-- ---------------------------------------------------------------------------------------
-- 4. Auth user + account.

-- Finds the (non-SSO, not deleted) auth user for an email, case-insensitively, or creates one
-- GoTrue can sign in by magic link / password reset (confirmed email, no password, '' tokens,
-- an email identity). Serialized per email so concurrent calls create one user.
create or replace function public.find_or_create_auth_user(p_email text, p_full_name text default null)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_name text := nullif(btrim(p_full_name), '');
  v_id uuid;
begin
  if v_email is null or v_email = '' or position('@' in v_email) < 2 then
    raise exception 'find_or_create_auth_user: invalid email %', coalesce(p_email, 'NULL')
      using errcode = '22023';
  end if;

  perform pg_advisory_xact_lock(hashtext('auth-user:' || v_email));

  -- (instance_id, lower(email)) is indexed in auth.users; both arms can use it.
  select u.id into v_id
    from auth.users u
   where lower(u.email::text) = v_email
     and (u.instance_id = '00000000-0000-0000-0000-000000000000' or u.instance_id is null)
     and u.is_sso_user = false
     and u.deleted_at is null
   order by u.created_at nulls last, u.id
   limit 1;

  if v_id is null then
    v_id := gen_random_uuid();
    insert into auth.users (
      instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
      confirmation_token, recovery_token, email_change_token_new, email_change,
      raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    values (
      '00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', v_email, '', now(),
      '', '', '', '',
      '{"provider": "email", "providers": ["email"]}'::jsonb,
      case when v_name is null then '{}'::jsonb else jsonb_build_object('full_name', v_name) end,
      now(), now());

    insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (
      v_id::text, v_id,
      jsonb_build_object('sub', v_id::text, 'email', v_email, 'email_verified', true, 'phone_verified', false),
      'email', null, now(), now());
    -- on_auth_user_created (handle_new_user) has created public.users.
  else
    -- Existing user: make sure the profile row exists and fill a missing name.
    insert into public.users as pu (id, email, full_name)
    select u.id, u.email, v_name from auth.users u where u.id = v_id
    on conflict (id) do update
      set full_name = coalesce(pu.full_name, excluded.full_name),
          email = coalesce(pu.email, excluded.email)
      where (pu.full_name is null and excluded.full_name is not null)
         or (pu.email is null and excluded.email is not null);
  end if;

  return v_id;
end
$$;

-- The user's account number: the oldest account (created_at, id), numbered if it had no number,
-- else a new active account. Never creates a second account for a user.
create or replace function public.ensure_account(p_user_id uuid)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account_id uuid;
  v_number text;
  v_attempt integer := 0;
begin
  if p_user_id is null then
    raise exception 'ensure_account: user id is null' using errcode = '22004';
  end if;

  perform pg_advisory_xact_lock(hashtext('account:' || p_user_id::text));

  select a.id, a.account_number into v_account_id, v_number
    from public.accounts a
   where a.user_id = p_user_id
   order by a.created_at, a.id
   limit 1
   for update;

  if v_account_id is not null then
    while v_number is null loop
      v_attempt := v_attempt + 1;
      begin
        v_number := public.generate_account_number();
        update public.accounts set account_number = v_number where id = v_account_id;
      exception when unique_violation then
        v_number := null;
        if v_attempt >= 20 then raise; end if;
      end;
    end loop;
    return v_number;
  end if;

  -- accounts.user_id references public.users: legacy auth users may lack the profile row.
  insert into public.users (id, email)
  select u.id, u.email from auth.users u where u.id = p_user_id
  on conflict (id) do nothing;

  loop
    v_attempt := v_attempt + 1;
    insert into public.accounts (user_id, account_number, status)
    values (p_user_id, public.generate_account_number(), 'active')
    on conflict do nothing
    returning account_number into v_number;
    exit when v_number is not null;
    if v_attempt >= 20 then
      raise exception 'ensure_account: could not allocate an account number' using errcode = '23505';
    end if;
  end loop;
  return v_number;
end
$$;

-- Moves an account's expiry by p_months. Positive: from max(now, current expiry). Negative
-- (refund): back from the current expiry (nothing when it has none). Returns the new expiry.
-- One UPDATE statement, so concurrent extensions of one account compose (row lock + recheck).
create or replace function public.shift_account_expiry(p_account_number text, p_months integer)
returns text
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_expiry text;
begin
  if p_months > 0 then
    update public.accounts a
       set expiry = public.format_expiry(public.add_months_utc(
             greatest(now(), coalesce(public.account_expiry(a.expiry), now())), p_months))
     where a.account_number = p_account_number
    returning a.expiry into v_expiry;
  elsif p_months < 0 then
    update public.accounts a
       set expiry = public.format_expiry(public.add_months_utc(public.account_expiry(a.expiry), p_months))
     where a.account_number = p_account_number
       and public.account_expiry(a.expiry) is not null
    returning a.expiry into v_expiry;
  end if;
  return v_expiry;
end
$$;

-- ---------------------------------------------------------------------------------------
-- 5. One-time purchases: a succeeded intent with a customer gets exactly one voucher.
-- What a one-time purchase of a price is worth: months from the price's, else the product's,
-- metadata `duration_months` (default 1); `voucher_redeem = manual` on either makes it a gift
-- code. Recurring prices are paid per period by the subscription triggers instead. The one
-- place this rule lives: issuing a voucher and correcting it for a late price must agree.
create or replace function public.price_voucher_terms(
  p_price_id text,
  out months integer,
  out manual boolean,
  out recurring boolean
)
language sql
stable
set search_path = ''
as $$
  select coalesce(public.metadata_months(p.metadata ->> 'duration_months'),
                  public.metadata_months(pr.metadata ->> 'duration_months'),
                  1),
         coalesce(lower(btrim(p.metadata ->> 'voucher_redeem')) = 'manual', false)
           or coalesce(lower(btrim(pr.metadata ->> 'voucher_redeem')) = 'manual', false),
         coalesce(p.type = 'recurring', false)
    from (select 1) one
    left join public.prices p on p.id = p_price_id
    left join public.products pr on pr.id = p.product_id
$$;

create or replace function public.issue_voucher_for_payment_intent()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_recurring boolean;
  v_months integer;
  v_manual boolean;
  v_account text;
  v_voucher_id uuid;
  v_attempt integer := 0;
  v_refunded boolean;
begin
  if new.status is distinct from 'succeeded' or new.customer_id is null then
    return null;
  end if;
  -- Updates act on the transition only (became succeeded / got its customer). A replayed
  -- event, or a pre-migration intent that was already succeeded, issues nothing.
  if tg_op = 'UPDATE' and old.status = 'succeeded' and old.customer_id is not null then
    return null;
  end if;
  -- Any voucher for the intent (a legacy duplicate too) means it was served.
  if exists (select 1 from public.vouchers v where v.payment_intent_id = new.id) then
    return null;
  end if;

  select t.months, t.manual, t.recurring into v_months, v_manual, v_recurring
    from public.price_voucher_terms(new.price_id) t;
  -- Subscription invoices are paid by intents too: their time comes from the subscription
  -- triggers (one voucher per billing period), never from here.
  if v_recurring then
    return null;
  end if;

  v_account := public.ensure_account(new.customer_id);   -- customers.id is the auth user id
  -- Events arrive in any order: a full refund may be known before the buyer is. The voucher
  -- is then issued already revoked, so the final rows do not depend on delivery order.
  v_refunded := exists (select 1 from public.charges c
                        where c.payment_intent_id = new.id and c.amount > 0
                          and c.amount_refunded >= c.amount);

  loop
    v_attempt := v_attempt + 1;
    insert into public.vouchers
      (code, duration_months, is_used, used_at, associated_account, status, payment_intent_id,
       updated_by, revoked_at)
    values
      (public.generate_voucher_code(), v_months, not v_manual and not v_refunded,
       case when not v_manual and not v_refunded then now() end,
       v_account, case when v_refunded then 'revoked' else 'active' end, new.id, 'stripe-worker',
       case when v_refunded then now() end)
    on conflict do nothing
    returning id into v_voucher_id;
    exit when v_voucher_id is not null;
    -- a concurrent transaction issued it (vouchers_payment_intent_once): nothing to do
    if exists (select 1 from public.vouchers v where v.payment_intent_id = new.id) then
      return null;
    end if;
    if v_attempt >= 20 then   -- otherwise only a code collision: draw again
      raise exception 'issue_voucher_for_payment_intent: could not allocate a voucher code' using errcode = '23505';
    end if;
  end loop;

  if not v_manual and not v_refunded then
    perform public.shift_account_expiry(v_account, v_months);
  end if;
  return null;
end
$$;

create or replace trigger trigger_issue_voucher_for_payment_intent
  after insert or update of status, customer_id, price_id on public.payment_intents
  for each row execute function public.issue_voucher_for_payment_intent();

-- A returning buyer's payment_intent.succeeded (without price metadata) may arrive before
-- the checkout session that names the price: the voucher was then issued with the default
-- duration. When the price arrives, the duration (and a redeemed voucher's expiry) follow.
create or replace function public.adjust_voucher_on_late_price()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_recurring boolean;
  v_months integer;
  v record;
begin
  if old.price_id is not null or new.price_id is null then
    return null;
  end if;
  select t.months, t.recurring into v_months, v_recurring
    from public.price_voucher_terms(new.price_id) t;
  if v_recurring then
    return null;
  end if;
  for v in
    select vo.id, vo.duration_months, vo.is_used, vo.associated_account
      from public.vouchers vo
     where vo.payment_intent_id = new.id and vo.status = 'active' and not vo.legacy_duplicate
       and vo.duration_months <> v_months
       for update
  loop
    update public.vouchers set duration_months = v_months, updated_by = 'stripe-worker'
     where id = v.id;
    if v.is_used and v.associated_account is not null then
      perform public.shift_account_expiry(v.associated_account, v_months - v.duration_months);
    end if;
  end loop;
  return null;
end
$$;

-- Fires before trigger_issue_voucher_for_payment_intent (triggers run in name order), so an
-- update that brings customer and price together issues the right voucher at once.
create or replace trigger trigger_adjust_voucher_on_late_price
  after update of price_id on public.payment_intents
  for each row execute function public.adjust_voucher_on_late_price();

-- ---------------------------------------------------------------------------------------
-- 6. Full refund: the intent's vouchers are revoked and redeemed time is taken back.
create or replace function public.revoke_voucher_on_full_refund()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v record;
begin
  if new.amount is null or new.amount <= 0 or coalesce(new.amount_refunded, 0) < new.amount then
    return null;   -- partial refunds change nothing
  end if;

  for v in
    select vo.id, vo.is_used, vo.associated_account, vo.duration_months
      from public.vouchers vo
     where vo.payment_intent_id = new.payment_intent_id
       and vo.revoked_at is null
       and vo.status is distinct from 'revoked'
     order by vo.created_at, vo.id
       for update
  loop
    update public.vouchers
       set status = 'revoked', revoked_at = now(), updated_by = 'stripe-worker'
     where id = v.id;
    if v.is_used and v.associated_account is not null and v.duration_months > 0 then
      perform public.shift_account_expiry(v.associated_account, -v.duration_months);
    end if;
  end loop;
  return null;
end
$$;

create or replace trigger trigger_revoke_voucher_on_full_refund
  after insert or update of amount, amount_refunded, status on public.charges
  for each row execute function public.revoke_voucher_on_full_refund();

-- ---------------------------------------------------------------------------------------
-- 7. Redeeming a code (frontend, PostgREST RPC as role authenticated).
-- The parameter is named `code` because PostgREST passes RPC arguments by name.
create or replace function public.redeem_voucher(code text)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  v_uid uuid := auth.uid();
  v_code text := upper(btrim(redeem_voucher.code));
  v_voucher public.vouchers%rowtype;
  v_account text;
  v_expiry text;
begin
  if v_uid is null then
    raise exception 'not signed in' using errcode = '42501';
  end if;
  if v_code is null or v_code = '' then
    raise exception 'voucher code not found' using errcode = 'P0002';
  end if;

  select * into v_voucher
    from public.vouchers v
   where upper(v.code) = v_code
   order by (v.code = btrim(redeem_voucher.code)) desc, v.created_at, v.id
   limit 1
   for update;

  -- Owner only: a code tied to another user's account answers exactly like an unknown one,
  -- so codes cannot be probed. Unassigned codes (issued by an operator) are anyone's.
  if not found
     or (v_voucher.associated_account is not null
         and not exists (select 1 from public.accounts a
                         where a.account_number = v_voucher.associated_account
                           and a.user_id = v_uid)) then
    raise exception 'voucher code not found' using errcode = 'P0002';
  end if;
  if v_voucher.revoked_at is not null or v_voucher.status = 'revoked' then
    raise exception 'voucher is revoked' using errcode = '22023';
  end if;
  if v_voucher.status = 'canceled' then
    raise exception 'voucher is canceled' using errcode = '22023';
  end if;
  if v_voucher.is_used then
    raise exception 'voucher already used' using errcode = '22023';
  end if;
  if v_voucher.status is not null and v_voucher.status <> 'active' then
    raise exception 'voucher is %', v_voucher.status using errcode = '22023';
  end if;

  v_account := coalesce(v_voucher.associated_account, public.ensure_account(v_uid));
  v_expiry := public.shift_account_expiry(v_account, v_voucher.duration_months);

  update public.vouchers
     set is_used = true,
         used_at = now(),
         associated_account = v_account,
         updated_by = v_uid::text
   where id = v_voucher.id;

  return jsonb_build_object(
    'account_number', v_account,
    'expiry', v_expiry,
    'duration_months', v_voucher.duration_months);
end
$$;

-- ---------------------------------------------------------------------------------------
-- Grants. Supabase's default privileges give every new function to anon/authenticated:
-- take them back everywhere except redeem_voucher (authenticated) and the pure helpers.
revoke all on function public.find_or_create_auth_user(text, text) from public, anon, authenticated;
revoke all on function public.ensure_account(uuid) from public, anon, authenticated;
revoke all on function public.generate_account_number() from public, anon, authenticated;
revoke all on function public.generate_voucher_code() from public, anon, authenticated;
revoke all on function public.shift_account_expiry(text, integer) from public, anon, authenticated;
revoke all on function public.issue_voucher_for_payment_intent() from public, anon, authenticated;
revoke all on function public.adjust_voucher_on_late_price() from public, anon, authenticated;
revoke all on function public.price_voucher_terms(text) from public, anon, authenticated;
revoke all on function public.revoke_voucher_on_full_refund() from public, anon, authenticated;
revoke all on function public.redeem_voucher(text) from public, anon;
grant execute on function public.find_or_create_auth_user(text, text) to service_role;
grant execute on function public.ensure_account(uuid) to service_role;
grant execute on function public.generate_account_number() to service_role;
grant execute on function public.redeem_voucher(text) to authenticated, service_role;
