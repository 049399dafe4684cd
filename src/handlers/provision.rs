//! Buyer provisioning: email -> auth user -> profile -> customer mapping -> account.
//! Idempotent: every step finds what exists before creating.
//!
//! A Stripe customer already mapped to a user wins over the email (the buyer may have changed
//! their address); otherwise the auth user is found by email case-insensitively or created.

use deadpool_postgres::GenericClient;
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{HandlerError, PrepareContext};
use crate::email::Email;
use crate::supabase_auth::Created;

/// Who bought, as far as the event (or a Stripe look-up) tells.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub email: Email,
    pub name: Option<String>,
    pub stripe_customer: Option<String>,
}

/// A buyer resolved before the transaction, with the auth user Supabase Auth's admin API
/// created or found (when it is configured).
#[derive(Debug)]
pub struct PreparedBuyer {
    pub buyer: Buyer,
    pub auth_user: Option<Uuid>,
    /// Whether an auth user created for the buyer counts as confirmed.
    pub confirm_email: bool,
}

const RESOLVE_CUSTOMER: &str = "
select user_id from public.stripe_customers where stripe_customer_id = $1
union all
select id from public.customers where stripe_customer_id = $1
limit 1";

/// The user a Stripe customer is mapped to, if any.
pub async fn resolve_customer(
    client: &impl GenericClient,
    stripe_customer_id: Option<&str>,
) -> Result<Option<Uuid>, tokio_postgres::Error> {
    let Some(id) = stripe_customer_id else {
        return Ok(None);
    };
    let stmt = client.prepare_cached(RESOLVE_CUSTOMER).await?;
    Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| r.get(0)))
}

/// `resolve_customer` before the transaction, on a connection held only for the query.
pub async fn customer_is_mapped(
    cx: &PrepareContext<'_>,
    stripe_customer_id: Option<&str>,
) -> Result<bool, HandlerError> {
    let Some(id) = stripe_customer_id else {
        return Ok(false);
    };
    Ok(cx.query_opt(RESOLVE_CUSTOMER, &[&id]).await?.is_some())
}

/// The same look-up as `find_or_create_auth_user`: the instance_id condition lets it use
/// auth.users' (instance_id, lower(email)) index.
const FIND_AUTH_USER: &str = "
select id from auth.users
where lower(email::text) = lower(btrim($1))
  and (instance_id = '00000000-0000-0000-0000-000000000000' or instance_id is null)
  and not is_sso_user and deleted_at is null
order by created_at nulls last, id limit 1";

async fn find_auth_user(
    cx: &PrepareContext<'_>,
    email: &Email,
) -> Result<Option<Uuid>, HandlerError> {
    Ok(cx
        .query_opt(FIND_AUTH_USER, &[&email.as_str()])
        .await?
        .map(|r| r.get(0)))
}

/// Before the event's transaction: with the Supabase Auth admin API configured, make sure the
/// auth user exists (looked up first; an address registered meanwhile is looked up again).
pub async fn prepare_buyer(
    cx: &PrepareContext<'_>,
    buyer: Buyer,
) -> Result<Option<PreparedBuyer>, HandlerError> {
    let auth_user = match cx.auth_admin {
        Some(admin) if !customer_is_mapped(cx, buyer.stripe_customer.as_deref()).await? => {
            match find_auth_user(cx, &buyer.email).await? {
                Some(id) => Some(id),
                None => match admin
                    .create_user(&buyer.email, buyer.name.as_deref(), cx.confirm_checkout_email)
                    .await?
                {
                    Created::New(id) => Some(id),
                    Created::AlreadyRegistered => Some(
                        find_auth_user(cx, &buyer.email).await?.ok_or_else(|| {
                            HandlerError::NotYet(
                                "Supabase Auth reports the address registered but no auth user has it yet"
                                    .into(),
                            )
                        })?,
                    ),
                },
            }
        }
        _ => None,
    };
    Ok(Some(PreparedBuyer {
        buyer,
        auth_user,
        confirm_email: cx.confirm_checkout_email,
    }))
}

/// `$3`: whether a new user's address counts as confirmed (AUTH_CONFIRM_CHECKOUT_EMAIL).
const CREATE_AUTH_USER: &str = "select public.find_or_create_auth_user($1, $2, $3)";

/// The profile mirrors the auth user's address; a name fills an empty full_name only (the user
/// may have edited theirs).
const ENSURE_PROFILE: &str = "
insert into public.users (id, email, full_name)
select id, email, $2 from auth.users where id = $1
on conflict (id) do update
set email = excluded.email, full_name = coalesce(public.users.full_name, excluded.full_name)";

const ENSURE_ACCOUNT: &str = "select public.ensure_account($1)";

/// Inside the transaction: the user, their profile, customer row and account. The caller
/// writes its own facts next and calls `link_customer` last: linking hands earlier rows to
/// the user, which fires the voucher trigger, and by then the price must be on the intent.
pub async fn provision(
    tx: &Transaction<'_>,
    prepared: &PreparedBuyer,
) -> Result<Uuid, HandlerError> {
    let buyer = &prepared.buyer;
    let user_id = match resolve_customer(tx, buyer.stripe_customer.as_deref()).await? {
        Some(mapped) => mapped,
        None => match prepared.auth_user {
            Some(id) => id,
            None => {
                let stmt = tx.prepare_cached(CREATE_AUTH_USER).await?;
                tx.query_one(
                    &stmt,
                    &[&buyer.email.as_str(), &buyer.name, &prepared.confirm_email],
                )
                .await?
                .get(0)
            }
        },
    };
    // Profile, customer row, account: independent of each other's results, so one pipelined
    // round trip (the server still runs them in this order).
    let profile = tx.prepare_cached(ENSURE_PROFILE).await?;
    let customer = tx.prepare_cached(ENSURE_CUSTOMER_ROW).await?;
    let account = tx.prepare_cached(ENSURE_ACCOUNT).await?;
    let both: [&(dyn ToSql + Sync); 2] = [&user_id, &buyer.name];
    let user: [&(dyn ToSql + Sync); 1] = [&user_id];
    futures_util::try_join!(
        tx.execute(&profile, &both),
        tx.execute(&customer, &user),
        tx.execute(&account, &user),
    )?;
    Ok(user_id)
}

const ENSURE_CUSTOMER_ROW: &str =
    "insert into public.customers (id) values ($1) on conflict (id) do nothing";

/// payment_intents.customer_id references customers(id) (= the user id).
pub async fn ensure_customer_row(
    tx: &Transaction<'_>,
    user_id: Uuid,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(ENSURE_CUSTOMER_ROW).await?;
    tx.execute(&stmt, &[&user_id]).await?;
    Ok(())
}

const LINK: &str = "
insert into public.stripe_customers (stripe_customer_id, user_id, email) values ($2, $1, $3)
on conflict (stripe_customer_id) do nothing";

/// The first Stripe customer of a user becomes the mapping public.customers shows.
const SET_PRIMARY: &str = "
update public.customers set stripe_customer_id = $2
where id = $1 and stripe_customer_id is null
  and not exists (select 1 from public.customers where stripe_customer_id = $2)";

/// Rows that arrived before the buyer was known get their owner now; for payment intents this
/// fires the voucher trigger.
const BACKFILL: [&str; 3] = [
    "update public.payment_intents set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
    "update public.charges set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
    "update public.payment_methods set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
];

/// Maps `stripe_customer_id` to the user and hands them the rows that waited for it. The
/// caller reports the customer in `Applied::linked_customer`, so the events waiting for this
/// mapping are retried at once.
pub async fn link_customer(
    tx: &Transaction<'_>,
    user_id: Uuid,
    stripe_customer_id: &str,
    email: Option<&Email>,
) -> Result<(), tokio_postgres::Error> {
    let email = email.map(Email::as_str);
    let mut statements = Vec::with_capacity(2 + BACKFILL.len());
    for sql in [LINK, SET_PRIMARY].into_iter().chain(BACKFILL) {
        statements.push(tx.prepare_cached(sql).await?);
    }
    let link: [&(dyn ToSql + Sync); 3] = [&user_id, &stripe_customer_id, &email];
    let pair: [&(dyn ToSql + Sync); 2] = [&user_id, &stripe_customer_id];
    // All independent: one pipelined round trip, run by the server in this order.
    futures_util::future::try_join_all(statements.iter().enumerate().map(|(i, stmt)| {
        let params: &[&(dyn ToSql + Sync)] = if i == 0 { &link } else { &pair };
        tx.execute(stmt, params)
    }))
    .await?;
    Ok(())
}
