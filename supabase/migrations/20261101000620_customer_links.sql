-- Every Stripe customer id a user is known by. Checkout creates a new Stripe customer for each
-- guest purchase, so one user can have several; public.customers keeps the first (the mapping
-- the frontend already reads, one per user). Internal to the worker.
create table if not exists public.stripe_customers (
  stripe_customer_id text primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  email text,
  created_at timestamptz not null default now()
);
create index if not exists stripe_customers_user_id_idx on public.stripe_customers (user_id);
alter table public.stripe_customers enable row level security;
revoke all on public.stripe_customers from anon, authenticated;

-- Existing mappings are links too.
insert into public.stripe_customers (stripe_customer_id, user_id)
select c.stripe_customer_id, c.id
from public.customers c
where c.stripe_customer_id is not null
on conflict (stripe_customer_id) do nothing;

-- The Stripe customer behind a payment row, kept even while the buyer is unknown, so that the
-- row can be linked (and its voucher issued by trigger) the moment the customer is mapped.
alter table public.payment_intents add column if not exists stripe_customer_id text;
alter table public.charges add column if not exists stripe_customer_id text;
alter table public.payment_methods add column if not exists stripe_customer_id text;
create index if not exists payment_intents_unlinked_idx
  on public.payment_intents (stripe_customer_id) where customer_id is null;
create index if not exists charges_unlinked_idx
  on public.charges (stripe_customer_id) where customer_id is null;
create index if not exists payment_methods_unlinked_idx
  on public.payment_methods (stripe_customer_id) where customer_id is null;

-- Where a subscription's customer is not mapped yet its event fails and is retried; the Stripe
-- customer id is kept on the row for support queries.
alter table public.subscriptions add column if not exists stripe_customer_id text;
