-- Subscription vouchers: completes seed 002's trigger functions (the triggers exist since the
-- baseline and stay as production has them):
--   trigger_create_or_update_voucher_after_subscription_change  AFTER INSERT OR UPDATE -> create_voucher_for_new_subscription
--   trigger_create_voucher_after_subscription_insert            AFTER INSERT           -> create_voucher_for_new_subscription
--   trigger_update_voucher_after_subscription_update            AFTER UPDATE WHEN status changed -> update_voucher_on_subscription_change
-- An INSERT fires create_voucher_for_new_subscription twice, so it is idempotent: one voucher per
-- (subscription, current_period_start), enforced by vouchers_subscription_period_once
-- (migration 20261101000600). subscriptions.user_id is the auth user id.
-- Needs 20261101000600 (ensure_account, format_expiry, account_expiry, generate_voucher_code).

-- Months a billing period is worth: month x count, year = 12 x count, day/week -> 1.
create or replace function public.price_period_months(p_price_id text)
returns integer
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (select case p.interval
              when 'month' then greatest(coalesce(p.interval_count, 1), 1)
              when 'year'  then 12 * greatest(coalesce(p.interval_count, 1), 1)
              else 1
            end
       from public.prices p
      where p.id = p_price_id),
    1)
$$;

-- active / trialing: one voucher per billing period, redeemed at once; the account's expiry
-- covers the paid period end and never moves backwards. A renewal (new current_period_start)
-- adds exactly one voucher; replays and unrelated updates add nothing.
create or replace function public.create_voucher_for_new_subscription()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_months integer;
  v_account text;
  v_voucher_id uuid;
  v_attempt integer := 0;
begin
  if new.status is null or new.status::text not in ('active', 'trialing') then
    return null;
  end if;
  -- This period is served (a legacy duplicate counts too).
  if exists (select 1 from public.vouchers v
              where v.subscription_id = new.id and v.period_start = new.current_period_start) then
    return null;
  end if;

  v_months := public.price_period_months(new.price_id);
  v_account := public.ensure_account(new.user_id);

  loop
    v_attempt := v_attempt + 1;
    insert into public.vouchers
      (code, duration_months, is_used, used_at, associated_account, status, subscription_id,
       period_start, period_end, updated_by)
    values
      (public.generate_voucher_code(), v_months, true, now(), v_account, 'active', new.id,
       new.current_period_start, new.current_period_end, 'stripe-worker')
    on conflict do nothing
    returning id into v_voucher_id;
    exit when v_voucher_id is not null;
    -- the other insert trigger / a concurrent transaction served this period
    if exists (select 1 from public.vouchers v
                where v.subscription_id = new.id and v.period_start = new.current_period_start) then
      return null;
    end if;
    if v_attempt >= 20 then   -- otherwise only a code collision: draw again
      raise exception 'create_voucher_for_new_subscription: could not allocate a voucher code' using errcode = '23505';
    end if;
  end loop;

  -- The expiry covers the paid period; greatest() ignores an empty/unparseable expiry.
  update public.accounts a
     set expiry = public.format_expiry(greatest(public.account_expiry(a.expiry), new.current_period_end))
   where a.account_number = v_account
     and (public.account_expiry(a.expiry) is null or public.account_expiry(a.expiry) < new.current_period_end);
  return null;
end
$$;

-- Status changes. canceled / unpaid / incomplete_expired: the subscription's UNUSED vouchers
-- are canceled; used ones (paid time) and the account's expiry stay. Everything else
-- (past_due, paused, active/trialing again, cancel_at_period_end) changes nothing here.
create or replace function public.update_voucher_on_subscription_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if new.status::text in ('canceled', 'unpaid', 'incomplete_expired') then
    update public.vouchers v
       set status = 'canceled', updated_by = 'stripe-worker'
     where v.subscription_id = new.id
       and not v.is_used
       and v.status is distinct from 'canceled'
       and v.status is distinct from 'revoked';
  end if;
  return null;
end
$$;

revoke all on function public.create_voucher_for_new_subscription() from public, anon, authenticated;
revoke all on function public.update_voucher_on_subscription_change() from public, anon, authenticated;
