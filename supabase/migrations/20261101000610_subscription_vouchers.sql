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
-- One voucher per paid billing period, redeemed at once: the account's expiry covers the
-- period end (never moves backwards). Idempotent: (subscription_id, period_start) is unique,
-- so seed 002's two insert triggers, replays and renewals seen twice add nothing.
-- Called by the trigger below and by the worker for a snapshot that arrived stale (a newer
-- state is already applied) but shows a period paid: the periods a user paid for do not
-- depend on the order Stripe delivered the events in.
create or replace function public.record_subscription_period(
  p_subscription_id text,
  p_user_id uuid,
  p_price_id text,
  p_status text,
  p_period_start timestamptz,
  p_period_end timestamptz
) returns void
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
  if p_status is null or p_status not in ('active', 'trialing') or p_period_start is null then
    return;
  end if;
  if exists (select 1 from public.vouchers v
              where v.subscription_id = p_subscription_id and v.period_start = p_period_start) then
    return;
  end if;

  v_months := public.price_period_months(p_price_id);
  v_account := public.ensure_account(p_user_id);

  loop
    v_attempt := v_attempt + 1;
    insert into public.vouchers
      (code, duration_months, is_used, used_at, associated_account, status, subscription_id,
       period_start, period_end, updated_by)
    values
      (public.generate_voucher_code(), v_months, true, now(), v_account, 'active', p_subscription_id,
       p_period_start, p_period_end, 'stripe-worker')
    on conflict do nothing
    returning id into v_voucher_id;
    exit when v_voucher_id is not null;
    if exists (select 1 from public.vouchers v
                where v.subscription_id = p_subscription_id and v.period_start = p_period_start) then
      return;
    end if;
    if v_attempt >= 20 then   -- otherwise only a code collision: draw again
      raise exception 'record_subscription_period: could not allocate a voucher code' using errcode = '23505';
    end if;
  end loop;

  update public.accounts a
     set expiry = public.format_expiry(greatest(public.account_expiry(a.expiry), p_period_end))
   where a.account_number = v_account
     and (public.account_expiry(a.expiry) is null or public.account_expiry(a.expiry) < p_period_end);
end
$$;

create or replace function public.create_voucher_for_new_subscription()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  perform public.record_subscription_period(new.id, new.user_id, new.price_id, new.status::text,
                                            new.current_period_start, new.current_period_end);
  return null;
end
$$;

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
revoke all on function public.record_subscription_period(text, uuid, text, text, timestamptz, timestamptz)
  from public, anon, authenticated;
revoke all on function public.update_voucher_on_subscription_change() from public, anon, authenticated;
