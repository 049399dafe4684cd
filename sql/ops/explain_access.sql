-- Why does an account expire when it does? Every grant of access of one account (found by the
-- owner's email, case-insensitive, or by account number): what granted it, the money behind
-- it, whether it stands, and the days it covers, in coverage order. Read-only.
--
-- Usage:
--   psql "$DATABASE_URL" -v email=buyer@example.com -f sql/ops/explain_access.sql
--   psql "$DATABASE_URL" -v account=1234567812345678 -f sql/ops/explain_access.sql
\if :{?email}
  \set account ''
\elif :{?account}
  \set email ''
\else
  \echo 'usage: psql "$DATABASE_URL" -v email=buyer@example.com -f sql/ops/explain_access.sql'
  \echo '   or: psql "$DATABASE_URL" -v account=<account number> -f sql/ops/explain_access.sql'
  \quit
\endif

\echo '== accounts =='
select ac.account_number, ac.status, ac.expiry, u.email
from public.accounts ac
join auth.users u on u.id = ac.user_id
where (:'email' <> '' and lower(u.email) = lower(:'email'))
   or (:'account' <> '' and ac.account_number = :'account')
order by ac.created_at;

\echo '== grants, in the order they cover time (the expiry is the last coverage_end) =='
select ac.account_number,
       g.kind,
       coalesce(g.stripe_invoice_id, g.stripe_payment_intent_id, v.code, g.stripe_subscription_id, g.source) as source,
       g.stripe_event_id,
       coalesce(g.months::text || ' months',
                to_char(g.period_start, 'YYYY-MM-DD HH24:MI') || ' .. ' || to_char(g.period_end, 'YYYY-MM-DD HH24:MI')) as bought,
       g.effective_at,
       g.status,
       g.revoked_reason,
       g.coverage_start,
       g.coverage_end
from public.access_grants g
join public.accounts ac on ac.id = g.account_id
join auth.users u on u.id = ac.user_id
left join public.vouchers v on v.id = g.voucher_id
where (:'email' <> '' and lower(u.email) = lower(:'email'))
   or (:'account' <> '' and ac.account_number = :'account')
order by ac.account_number, g.coverage_start nulls last, g.effective_at, g.source;

\echo '== money returned on those grants (refunds, disputes) =='
select r.stripe_refund_id as id, 'refund' as kind, r.stripe_payment_intent_id, r.amount, r.currency, r.status,
       r.refunded_at as at
from public.refunds r
where r.stripe_payment_intent_id in (
        select pi from (
          select g.stripe_payment_intent_id as pi
            from public.access_grants g
            join public.accounts ac on ac.id = g.account_id
            join auth.users u on u.id = ac.user_id
           where (:'email' <> '' and lower(u.email) = lower(:'email'))
              or (:'account' <> '' and ac.account_number = :'account')
          union
          select ip.stripe_payment_intent_id
            from public.invoice_payments ip
            join public.access_grants g on g.stripe_invoice_id = ip.stripe_invoice_id
            join public.accounts ac on ac.id = g.account_id
            join auth.users u on u.id = ac.user_id
           where (:'email' <> '' and lower(u.email) = lower(:'email'))
              or (:'account' <> '' and ac.account_number = :'account')) x)
union all
select d.stripe_dispute_id, 'dispute', d.stripe_payment_intent_id, d.amount, d.currency,
       d.status || case when d.funds_withdrawn then ', funds withdrawn' else '' end
                || case when d.funds_reinstated then ', reinstated' else '' end,
       d.opened_at
from public.disputes d
join public.accounts ac on ac.user_id = d.user_id
join auth.users u on u.id = ac.user_id
where (:'email' <> '' and lower(u.email) = lower(:'email'))
   or (:'account' <> '' and ac.account_number = :'account')
order by 7;
