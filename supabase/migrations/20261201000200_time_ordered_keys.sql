-- Keys in arrival order for the tables that grow with every event, and no index nobody reads.
--
-- A random uuid (gen_random_uuid) sends each insert to a random leaf of the primary key: once
-- the index outgrows memory, and after every checkpoint, nearly every insert dirties a leaf
-- no other insert touched and writes it whole to the WAL (a full-page image). A UUIDv7
-- (RFC 9562: 48 bits of Unix milliseconds, then random bits) keeps the type and uniqueness of
-- the existing ids while new keys land on the right-most leaves. Existing rows keep their ids.
--
-- The Stripe-side timestamp of an event (event_created_at) is stored and shown, but no query
-- looks rows up or ranges over it (replay and the ops queries sort on it, after their filters
-- chose the rows), so its index only cost every delivery a random insert. The queries that
-- range over the arrival time (the 7-day counts of `status`, `replay --since`, the retention
-- purge, failed_by_error.sql) get a BRIN index on created_at: arrival order is table order, the
-- index is a few pages, and an insert into the newest, not yet summarized range writes nothing.
-- That also serves `status`' counts by type, the one regular reader of the index on
-- (event_type, created_at); the other, `replay --type`, selects by status first (the partial
-- index on the actionable states), except `--force --status any`, a rare operator command that
-- may read the table. So every delivery stops paying for that index too.

create or replace function public.uuid_v7()
returns uuid
language sql
volatile
parallel safe
set search_path = ''
as $$
  select pg_catalog.encode(
           pg_catalog.set_bit(
             pg_catalog.set_bit(
               overlay(
                 pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                 placing substring(
                   pg_catalog.int8send((extract(epoch from pg_catalog.clock_timestamp()) * 1000)::bigint)
                   from 3)
                 from 1 for 6),
               52, 1),
             53, 1),
           'hex')::uuid
$$;

comment on function public.uuid_v7() is
  'A version 7 UUID (RFC 9562): Unix milliseconds then random bits, so new keys sort after old ones.';

revoke all on function public.uuid_v7() from public, anon, authenticated;
grant execute on function public.uuid_v7() to service_role;

alter table public.stripe_webhook_events alter column id set default public.uuid_v7();
alter table public.access_grants alter column id set default public.uuid_v7();
alter table public.events alter column id set default public.uuid_v7();

drop index if exists public.idx_stripe_webhooks_event_created;
drop index if exists public.idx_stripe_webhooks_type_created;

create index if not exists stripe_webhook_events_created_brin
  on public.stripe_webhook_events using brin (created_at);
