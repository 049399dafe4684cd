-- Benchmark only (scripts/bench.sh, BENCH_ROWS / BENCH_GROWTH): adds :rows rows of history to
-- stripe_webhook_events, as a busy shop's years of events look: received over the last seven
-- years in time order, ~0.8 KB of event_data each, the types' usual mix, half of them linked to
-- one of 10,000 users, almost all processed or ignored, a few failed or dead. The rows take the
-- table's own default id, like the worker's own inserts.
--
-- What matters for the speed of new inserts is the size of the indexes (new rows land at the
-- heap's end, whatever the old rows hold), so event_data is kept small to spare the disk.
\set ON_ERROR_STOP on

-- Users the history belongs to (created once; the auth trigger makes their profiles).
select count(public.find_or_create_auth_user('history.' || g || '@example.com', null, false))
from generate_series(1, 10000) g
where not exists (select 1 from auth.users where email = 'history.10000@example.com');

create temporary table history_users as
  select row_number() over (order by id) - 1 as n, id
  from auth.users where email like 'history.%@example.com';

-- Types and their share in a shop with subscriptions and one-time sales.
create temporary table history_types (n int, event_type text, prefix text, object text);
insert into history_types values
  (0, 'invoice.paid', 'in', 'invoice'), (1, 'invoice.payment_succeeded', 'in', 'invoice'),
  (2, 'invoice.finalized', 'in', 'invoice'), (3, 'invoice.created', 'in', 'invoice'),
  (4, 'payment_intent.succeeded', 'pi', 'payment_intent'), (5, 'payment_intent.created', 'pi', 'payment_intent'),
  (6, 'charge.succeeded', 'ch', 'charge'), (7, 'customer.subscription.updated', 'sub', 'subscription'),
  (8, 'invoice_payment.paid', 'inpay', 'invoice_payment'), (9, 'customer.updated', 'cus', 'customer'),
  (10, 'checkout.session.completed', 'cs_live', 'checkout.session'), (11, 'customer.created', 'cus', 'customer'),
  (12, 'payment_method.attached', 'pm', 'payment_method'), (13, 'product.updated', 'prod', 'product'),
  (14, 'price.updated', 'price', 'price'), (15, 'invoice.payment_failed', 'in', 'invoice');

-- Row g of the history is received at g / 5 M of the way through the seven years (a fill
-- continues where an earlier one stopped), and is stored in that order, as a live table's rows
-- are: index look-ups into the small tables keep generate_series' order, where a hash join
-- would shuffle it.
select count(*) as history_have from public.stripe_webhook_events \gset
create index on history_types (n);
create index on history_users (n);
analyze history_types, history_users;
set enable_hashjoin = off;
set enable_mergejoin = off;

insert into public.stripe_webhook_events
  (stripe_event_id, event_type, user_id, processed_at, event_data, processing_status,
   error_message, retry_count, created_at, livemode, api_version, event_created_at,
   next_attempt_at, request_id, updated_at)
select 'evt_1' || left(encode(sha256(('history:' || g)::bytea), 'base64'), 23),
       t.event_type,
       case when g % 2 = 0 then u.id end,
       ts,
       jsonb_build_object(
         'id', 'evt_1' || left(encode(sha256(('history:' || g)::bytea), 'base64'), 23),
         'object', 'event', 'api_version', '2025-03-31.basil',
         'created', extract(epoch from ts)::bigint, 'livemode', true, 'pending_webhooks', 0,
         'request', jsonb_build_object('id', null, 'idempotency_key', null),
         'type', t.event_type,
         'data', jsonb_build_object('object', jsonb_build_object(
           'id', t.prefix || '_' || left(md5('o' || g), 24),
           'object', t.object,
           'customer', 'cus_' || left(md5('c' || (g % 200000)), 24),
           'amount', 900 + g % 9100, 'currency', 'usd', 'status', 'succeeded',
           'created', extract(epoch from ts)::bigint, 'livemode', true,
           'description', 'Subscription update ' || md5('d' || g),
           'metadata', jsonb_build_object('order', md5('m' || g)),
           'lines', jsonb_build_array(jsonb_build_object(
             'id', 'il_' || left(md5('l' || g), 24), 'price', 'price_' || left(md5('p' || (g % 40)), 24),
             'period', jsonb_build_object('start', extract(epoch from ts)::bigint,
                                          'end', extract(epoch from ts)::bigint + 2592000)))))),
       case when g % 5000 = 17 then 'dead' when g % 5000 = 42 then 'failed'
            when t.event_type in ('invoice.created', 'payment_intent.created') then 'ignored'
            else 'processed' end,
       case when g % 5000 in (17, 42) then 'not yet applicable: customer not mapped' end,
       case when g % 5000 in (17, 42) then 3 else 0 end,
       ts, true, '2025-03-31.basil', ts,
       case when g % 5000 = 42 then now() + interval '1 day' end,
       'history', ts
from generate_series(:history_have::bigint + 1, :history_have::bigint + :rows) g
cross join lateral (
  select now() - interval '7 years' + (interval '7 years' - interval '1 day') * least(g / 5e6, 1)::float8 as ts) clock
join history_types t on t.n = (g * 7919) % 16
join history_users u on u.n = (g * 104729) % 10000;
