-- A Checkout purchase reaches the intent twice: payment_intent.succeeded and
-- checkout.session.completed each write it, and whichever comes second names the session
-- (or finds it named). Which session paid matters to the purchase's grant only while no price
-- is known: a payment that names neither buys nothing. So naming the session on an intent
-- that has its price no longer derives the grant again (the grant, its voucher, status and the
-- account's coverage came out unchanged, at about 1.3 ms of PostgreSQL time per purchase).
-- The billing row still follows the session (its metadata names it).

create or replace function public.derive_grants_from_payment_intent()
returns trigger
language plpgsql
security definer
set search_path = ''
set plan_cache_mode = force_generic_plan
as $$
begin
  if tg_op = 'UPDATE'
     and (new.status, new.customer_id, new.price_id, new.paid_at,
          new.checkout_session_id is null and new.price_id is null)
         is not distinct from
         (old.status, old.customer_id, old.price_id, old.paid_at,
          old.checkout_session_id is null and old.price_id is null) then
    return null;
  end if;
  if new.status = 'succeeded' or (tg_op = 'UPDATE' and old.status = 'succeeded') then
    perform public.sync_purchase_grant(new.id);
  end if;
  return null;
end
$$;
