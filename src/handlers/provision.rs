//! Buyer provisioning: email -> auth user -> profile -> customer mapping -> account.
//! Idempotent: every step finds what exists before creating.
//!
//! A Stripe customer already mapped to a user wins over the email (the buyer may have changed
//! their address); otherwise the auth user is found by email case-insensitively or created.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{HandlerError, PrepareContext};
use crate::config::ConfirmCheckoutEmail;
use crate::db::EventTx;
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

/// The user the Stripe customer `$param` (an SQL expression) is mapped to, as an SQL
/// expression (null when none): the directory's mapping, else the customer row that names it.
/// A deleted Stripe customer keeps its mapping: its later events (the cancellation Stripe sends
/// with the deletion) still belong to the same person. Two scalar look-ups by key, with no
/// `user_id is not null` qual: that qual would let the planner, on statistics older than the
/// table, read the whole partial e-mail index (`where user_id is not null`) instead of the key.
macro_rules! customer_user_sql {
    ($param:literal) => {
        concat!(
            "coalesce((select sc.user_id from public.stripe_customers sc where sc.stripe_customer_id = ",
            $param,
            "), (select cu.id from public.customers cu where cu.stripe_customer_id = ",
            $param,
            "))"
        )
    };
}
pub(crate) use customer_user_sql;

const RESOLVE_CUSTOMER: &str = concat!("select ", customer_user_sql!("$1"));

/// The user a Stripe customer is mapped to, if any.
pub async fn resolve_customer(
    client: &impl GenericClient,
    stripe_customer_id: Option<&str>,
) -> Result<Option<Uuid>, tokio_postgres::Error> {
    let Some(id) = stripe_customer_id else {
        return Ok(None);
    };
    let stmt = client.prepare_cached(RESOLVE_CUSTOMER).await?;
    Ok(client.query_one(&stmt, &[&id]).await?.get(0))
}

/// `resolve_customer` before the transaction, on a connection held only for the query.
pub async fn customer_is_mapped(
    cx: &PrepareContext<'_>,
    stripe_customer_id: Option<&str>,
) -> Result<bool, HandlerError> {
    let Some(id) = stripe_customer_id else {
        return Ok(false);
    };
    let row = cx.query_opt(RESOLVE_CUSTOMER, &[&id]).await?;
    Ok(row.and_then(|r| r.get::<_, Option<Uuid>>(0)).is_some())
}

/// The same look-up `find_or_create_auth_user` makes (the sign-in address, else an address a
/// mapped Stripe customer reported).
const FIND_AUTH_USER: &str = "select public.find_auth_user($1)";

async fn find_auth_user(
    cx: &PrepareContext<'_>,
    email: &Email,
) -> Result<Option<Uuid>, HandlerError> {
    Ok(cx
        .query_opt(FIND_AUTH_USER, &[&email.as_str()])
        .await?
        .and_then(|r| r.get(0)))
}

/// What the directory of Stripe customers knows of one (customer.* events).
const DIRECTORY_CONTACT: &str = "
select email, name from public.stripe_customers where stripe_customer_id = $1 and email is not null";

/// Who a payment's buyer is, as far as anyone can tell before the transaction: the address the
/// event carries, else the one the directory of Stripe customers holds, else Stripe's own (with
/// STRIPE_SECRET_KEY). `None` when nobody can tell yet: the payment is then stored unlinked and
/// the customer's own event provisions the buyer.
pub async fn find_buyer(
    cx: &PrepareContext<'_>,
    customer: Option<&str>,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<Option<Buyer>, HandlerError> {
    let mut email = email.and_then(Email::parse);
    let mut name = name.filter(|n| !n.trim().is_empty()).map(str::to_owned);
    if let (None, Some(id)) = (&email, customer) {
        if let Some(row) = cx.query_opt(DIRECTORY_CONTACT, &[&id]).await? {
            email = row.get::<_, Option<&str>>(0).and_then(Email::parse);
            name = name.or(row.get(1));
        }
    }
    if let (None, Some(id), Some(api)) = (&email, customer, cx.stripe) {
        let contact = api.customer(id).await?;
        email = contact.email.as_deref().and_then(Email::parse);
        name = name.or(contact.name);
    }
    Ok(email.map(|email| Buyer {
        email,
        name,
        stripe_customer: customer.map(str::to_owned),
    }))
}

/// The buyer of an unmapped Stripe customer's payment, prepared (see `prepare_buyer`), or
/// `None` when the customer is mapped already or nobody can tell yet.
pub async fn prepare_unmapped(
    cx: &PrepareContext<'_>,
    customer: &str,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<Option<PreparedBuyer>, HandlerError> {
    if customer_is_mapped(cx, Some(customer)).await? {
        return Ok(None);
    }
    prepare_unknown(cx, customer, email, name).await
}

/// `prepare_unmapped` for a customer the caller found unmapped already.
pub async fn prepare_unknown(
    cx: &PrepareContext<'_>,
    customer: &str,
    email: Option<&str>,
    name: Option<&str>,
) -> Result<Option<PreparedBuyer>, HandlerError> {
    match find_buyer(cx, Some(customer), email, name).await? {
        Some(buyer) => prepare_buyer(cx, buyer).await,
        None => Ok(None),
    }
}

/// Before the event's transaction: with the Supabase Auth admin API configured, make sure the
/// auth user exists (looked up first; an address registered meanwhile is looked up again).
pub async fn prepare_buyer(
    cx: &PrepareContext<'_>,
    buyer: Buyer,
) -> Result<Option<PreparedBuyer>, HandlerError> {
    let confirm_email = confirmed(cx).await?;
    let auth_user = match cx.auth_admin {
        Some(admin) if !customer_is_mapped(cx, buyer.stripe_customer.as_deref()).await? => {
            match find_auth_user(cx, &buyer.email).await? {
                Some(id) => Some(id),
                None => match admin
                    .create_user(&buyer.email, buyer.name.as_deref(), confirm_email)
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
        confirm_email,
    }))
}

/// Whether a new buyer's address counts as confirmed. `auto` follows the project: where it
/// confirms sign-ups by itself, an unconfirmed user would be confirmed for (and handed to)
/// whoever signs up with the address first, so the buyer's user is created confirmed; where it
/// sends confirmation mails, it is not. Without the admin API the project cannot be asked; when
/// it does not answer, the event waits for it (it could not create the user either).
async fn confirmed(cx: &PrepareContext<'_>) -> Result<bool, HandlerError> {
    Ok(match (cx.confirm_checkout_email, cx.auth_admin) {
        (ConfirmCheckoutEmail::Yes, _) => true,
        (ConfirmCheckoutEmail::No, _) | (ConfirmCheckoutEmail::Auto, None) => false,
        (ConfirmCheckoutEmail::Auto, Some(admin)) => admin.project_autoconfirms().await?,
    })
}

/// `$3`: whether a new user's address counts as confirmed (AUTH_CONFIRM_CHECKOUT_EMAIL).
const CREATE_AUTH_USER: &str = "select public.find_or_create_auth_user($1, $2, $3)";

/// The profile mirrors the auth user's address; a name fills an empty full_name only (the user
/// may have edited theirs). A profile that already says so is not written again (a new user's
/// profile trigger wrote it a moment ago; a returning buyer's is usually unchanged).
const ENSURE_PROFILE: &str = "
insert into public.users (id, email, full_name)
select id, email, $2 from auth.users where id = $1
on conflict (id) do update
set email = excluded.email, full_name = coalesce(public.users.full_name, excluded.full_name)
where public.users.email is distinct from excluded.email
   or (public.users.full_name is null and excluded.full_name is not null)";

const ENSURE_ACCOUNT: &str = "select public.ensure_account($1)";

/// Inside the transaction: the user, their profile, customer row and account. The caller
/// writes its own facts next and calls `link_customer` last: linking hands earlier rows to
/// the user, which fires the voucher trigger, and by then the price must be on the intent.
pub async fn provision(tx: &EventTx, prepared: &PreparedBuyer) -> Result<Uuid, HandlerError> {
    let buyer = &prepared.buyer;
    let user_id = match resolve_customer(tx.client(), buyer.stripe_customer.as_deref()).await? {
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

pub const ENSURE_CUSTOMER_ROW: &str =
    "insert into public.customers (id) values ($1) on conflict (id) do nothing";

/// payment_intents.customer_id references customers(id) (= the user id).
pub async fn ensure_customer_row(tx: &EventTx, user_id: Uuid) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(ENSURE_CUSTOMER_ROW).await?;
    tx.execute(&stmt, &[&user_id]).await?;
    Ok(())
}

/// The directory entry (created by the customer's own events, or here) gets its user.
const LINK: &str = "
insert into public.stripe_customers as sc (stripe_customer_id, user_id, email) values ($2, $1, $3)
on conflict (stripe_customer_id) do update
set user_id = excluded.user_id, email = coalesce(sc.email, excluded.email), updated_at = now()
where sc.user_id is null";

/// The first Stripe customer of a user becomes the mapping public.customers shows.
const SET_PRIMARY: &str = "
update public.customers set stripe_customer_id = $2
where id = $1 and stripe_customer_id is null
  and not exists (select 1 from public.customers where stripe_customer_id = $2)";

/// Rows that arrived before the buyer was known get their owner now; for payment intents and
/// invoices this derives their grants.
const BACKFILL: [&str; 5] = [
    "update public.payment_intents set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
    "update public.charges set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
    "update public.payment_methods set customer_id = $1 where stripe_customer_id = $2 and customer_id is null",
    "update public.invoices set user_id = $1 where stripe_customer_id = $2 and user_id is null",
    "update public.events set user_id = $1
     where source = 'stripe' and user_id is null and metadata ->> 'customer' = $2",
];

/// Serializes, inside their transactions, the events of one Stripe customer that may provision
/// its buyer, so that a payment and the customer's own event never both miss each other.
const LOCK_CUSTOMER: &str = "select pg_advisory_xact_lock(hashtext('stripe-customer:' || $1))";

pub async fn lock_customer(
    tx: &EventTx,
    stripe_customer_id: &str,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(LOCK_CUSTOMER).await?;
    tx.execute(&stmt, &[&stripe_customer_id]).await?;
    Ok(())
}

/// Inside the transaction (after `lock_customer`): the directory's contact for a customer.
pub async fn directory_buyer(
    tx: &EventTx,
    stripe_customer_id: &str,
) -> Result<Option<Buyer>, tokio_postgres::Error> {
    let stmt = tx.prepare_cached(DIRECTORY_CONTACT).await?;
    Ok(tx
        .query_opt(&stmt, &[&stripe_customer_id])
        .await?
        .and_then(|row| {
            Some(Buyer {
                email: row.get::<_, Option<&str>>(0).and_then(Email::parse)?,
                name: row.get(1),
                stripe_customer: Some(stripe_customer_id.to_owned()),
            })
        }))
}

/// A payment of an unmapped customer whose buyer nobody could tell before the transaction:
/// if the directory learned the address meanwhile (the customer's event committed while this
/// one prepared), retry, so the retry provisions them; otherwise the payment is stored
/// unlinked and the customer's own event provisions them later. The lock makes sure one of
/// the two sees the other.
pub async fn wait_if_buyer_arrived(
    tx: &EventTx,
    stripe_customer_id: &str,
) -> Result<(), HandlerError> {
    lock_customer(tx, stripe_customer_id).await?;
    if directory_buyer(tx, stripe_customer_id).await?.is_some() {
        return Err(HandlerError::NotYet(format!(
            "the address of customer {stripe_customer_id} arrived meanwhile: retried to provision the buyer"
        )));
    }
    Ok(())
}

/// Money Stripe received from a customer that no user has yet.
pub const UNLINKED_PAYMENT: &str = "
select exists (select 1 from public.payment_intents
                where stripe_customer_id = $1 and customer_id is null and status = 'succeeded')
    or exists (select 1 from public.invoices
                where stripe_customer_id = $1 and user_id is null and status = 'paid')";

pub async fn has_unlinked_payment(
    client: &impl GenericClient,
    stripe_customer_id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = client.prepare_cached(UNLINKED_PAYMENT).await?;
    Ok(client
        .query_one(&stmt, &[&stripe_customer_id])
        .await?
        .get(0))
}

/// Maps `stripe_customer_id` to the user and hands them the rows that waited for it. The
/// caller reports the customer in `Applied::linked_customer`, so the events waiting for this
/// mapping are retried at once.
pub async fn link_customer(
    tx: &EventTx,
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
