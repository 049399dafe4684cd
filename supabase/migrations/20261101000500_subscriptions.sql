-- Subscriptions: the subscription row the frontend reads (status, price, period, cancel
-- fields, tier), kept current from customer.subscription.* snapshots. A snapshot never grants
-- access by itself (access comes from paid invoices and trials, see the entitlements migration).
--
-- The production table has now() defaults on ended_at, cancel_at, canceled_at, trial_start and
-- trial_end: a row inserted without them looks ended, canceled and in trial. The frontend may
-- depend on the table as it is, so the defaults stay; the worker always writes these columns
-- explicitly (NULL when Stripe has no value).

-- The Stripe customer, kept for support queries and for a subscription whose customer mapping
-- is gone (customer.deleted): its owner stays user_id.
alter table public.subscriptions add column if not exists stripe_customer_id text;

-- stripe_subscription_id becomes unique. Duplicates first: the id stays on the row whose id
-- equals the Stripe subscription id (the worker's convention), else on the newest row
-- (created, then id); it is set to NULL on the others, which are kept (vouchers reference
-- subscriptions.id). Every changed row is logged.
with ranked as (
  select s.id,
         first_value(s.id) over w as keeper_id,
         row_number() over w as rn
    from public.subscriptions s
   where s.stripe_subscription_id is not null
  window w as (partition by s.stripe_subscription_id
               order by (s.id = s.stripe_subscription_id) desc, s.created desc, s.id desc)
), logged as (
  insert into public.migration_dedup_log (table_name, kept_id, action, removed)
  select 'subscriptions', r.keeper_id, 'nullified', to_jsonb(s)
    from ranked r join public.subscriptions s on s.id = r.id
   where r.rn > 1
)
update public.subscriptions s set stripe_subscription_id = null
  from ranked r where r.id = s.id and r.rn > 1;

do $$
begin
  if not exists (select 1 from pg_constraint where conrelid = 'public.subscriptions'::regclass
                 and conname = 'subscriptions_stripe_subscription_id_key') then
    alter table public.subscriptions
      add constraint subscriptions_stripe_subscription_id_key unique (stripe_subscription_id);
  end if;
end
$$;

create index if not exists subscriptions_user_id_idx on public.subscriptions (user_id);
create index if not exists subscriptions_price_id_idx on public.subscriptions (price_id);

alter table public.subscriptions enable row level security;
revoke all on table public.subscriptions from public, anon, authenticated;
grant all on table public.subscriptions to service_role;
grant select on table public.subscriptions to authenticated;
drop policy if exists subscriptions_select_own on public.subscriptions;
create policy subscriptions_select_own on public.subscriptions
  for select to authenticated
  using (user_id = (select auth.uid()));
