-- The catalog: products and prices (Stripe ids; legacy plans are stored as recurring prices),
-- what a price is worth in access, and who may read the catalog.

-- A positive integer from metadata text, else NULL.
create or replace function public.metadata_months(p_value text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select case when btrim(p_value) ~ '^[0-9]{1,4}$' and btrim(p_value)::integer > 0
              then btrim(p_value)::integer end
$$;

-- What a one-time purchase of a price is worth: months from the price's, else the product's,
-- metadata `duration_months` (default 1); `voucher_redeem = manual` on either makes it a gift
-- code the buyer redeems later. `known` is false while the price (or the product it points
-- to) has not arrived yet: the terms are then the default and are completed when it arrives.
create or replace function public.price_voucher_terms(
  p_price_id text,
  out months integer,
  out manual boolean,
  out recurring boolean,
  out known boolean
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
         coalesce(p.type = 'recurring', false),
         p.id is not null
           and (public.metadata_months(p.metadata ->> 'duration_months') is not null
                or (pr.id is not null and pr.name is not null))
    from (select 1) one
    left join public.prices p on p.id = p_price_id
    left join public.products pr on pr.id = p.product_id
$$;

-- Months a billing period of a recurring price is worth (a voucher's duration_months for a
-- paid period): month x count, year = 12 x count, shorter intervals 0.
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
              else 0
            end
       from public.prices p
      where p.id = p_price_id),
    1)
$$;

create index if not exists prices_product_id_idx on public.prices using btree (product_id);

-- ---------------------------------------------------------------------------------------
-- Who may read the catalog: active rows for everyone (pricing page). A signed-in user also
-- sees the (possibly archived) prices they pay or paid for and those prices' products, so the
-- account page can still show the plan of a legacy customer. Placeholder products (written
-- before their product event arrived: active = false) and rows with active NULL stay hidden.
do $$
declare
  t text;
begin
  foreach t in array array['products', 'prices', 'channels'] loop
    execute format('alter table public.%I enable row level security', t);
    execute format('revoke all on table public.%I from public, anon, authenticated', t);
    execute format('grant all on table public.%I to service_role', t);
  end loop;
end
$$;
grant select on table public.products, public.prices to anon, authenticated;
-- Channels hold only a name; signed-in users may read them (voucher display).
grant select on table public.channels to authenticated;

drop policy if exists products_select_active on public.products;
create policy products_select_active on public.products
  for select to anon
  using (active is true);

drop policy if exists prices_select_active on public.prices;
create policy prices_select_active on public.prices
  for select to anon
  using (active is true);

drop policy if exists prices_select_active_or_subscribed on public.prices;
create policy prices_select_active_or_subscribed on public.prices
  for select to authenticated
  using (active is true
         or id in (select s.price_id from public.subscriptions s where s.user_id = (select auth.uid())
                   union all
                   select pi.price_id from public.payment_intents pi where pi.customer_id = (select auth.uid())));

drop policy if exists products_select_active_or_subscribed on public.products;
create policy products_select_active_or_subscribed on public.products
  for select to authenticated
  using (active is true
         or id in (select pr.product_id from public.prices pr
                    where pr.id in (select s.price_id from public.subscriptions s
                                     where s.user_id = (select auth.uid())
                                    union all
                                    select pi.price_id from public.payment_intents pi
                                     where pi.customer_id = (select auth.uid()))));

drop policy if exists channels_select_authenticated on public.channels;
create policy channels_select_authenticated on public.channels
  for select to authenticated
  using (true);

revoke all on function public.metadata_months(text) from public, anon, authenticated;
revoke all on function public.price_voucher_terms(text) from public, anon, authenticated;
revoke all on function public.price_period_months(text) from public, anon, authenticated;
