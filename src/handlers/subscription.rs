//! customer.subscription.*: the subscription row. Vouchers per paid period follow by SQL
//! trigger (`record_subscription_period`).
//!
//! Both API shapes: before 2025-03-31.basil the current period sits on the subscription, from
//! basil on on its items. Ordering: an older snapshot never overwrites a newer one; deletion
//! wins; a stale snapshot that shows a paid period still records that period, so the time a
//! user paid for does not depend on delivery order.

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Transaction;
use serde::Deserialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::object::{expandable_id, metadata};
use super::{ordering, Applied, HandlerContext, HandlerError, Prepared};
use crate::email::Email;
use crate::envelope::EventEnvelope;
use crate::provision::{self, Buyer};

#[derive(Deserialize)]
struct Subscription {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    items: Option<Items>,
    /// Before prices (API < 2018): the plan at the top level.
    #[serde(default)]
    plan: Option<PriceRef>,
    #[serde(default)]
    quantity: Option<i32>,
    #[serde(default)]
    cancel_at_period_end: Option<bool>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
    #[serde(default)]
    cancel_at: Option<i64>,
    #[serde(default)]
    canceled_at: Option<i64>,
    #[serde(default)]
    ended_at: Option<i64>,
    #[serde(default)]
    trial_start: Option<i64>,
    #[serde(default)]
    trial_end: Option<i64>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct Items {
    #[serde(default)]
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    price: Option<PriceRef>,
    #[serde(default)]
    plan: Option<PriceRef>,
    #[serde(default)]
    quantity: Option<i32>,
    #[serde(default)]
    current_period_start: Option<i64>,
    #[serde(default)]
    current_period_end: Option<i64>,
}

/// A price (or legacy plan) as embedded in a subscription: a full object, or just its id.
#[derive(Deserialize, Default, Clone)]
#[serde(from = "PriceWire")]
struct PriceRef {
    id: String,
    product: Option<String>,
    unit_amount: Option<i64>,
    currency: Option<String>,
    interval: Option<String>,
    interval_count: Option<i32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PriceWire {
    Id(String),
    Object {
        id: String,
        #[serde(default, deserialize_with = "expandable_id")]
        product: Option<String>,
        #[serde(default)]
        unit_amount: Option<i64>,
        /// Plans call it `amount`.
        #[serde(default)]
        amount: Option<i64>,
        #[serde(default)]
        currency: Option<String>,
        #[serde(default)]
        recurring: Option<Recurring>,
        /// Plans carry the interval at the top level.
        #[serde(default)]
        interval: Option<String>,
        #[serde(default)]
        interval_count: Option<i32>,
    },
}

#[derive(Deserialize)]
struct Recurring {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    interval_count: Option<i32>,
}

impl From<PriceWire> for PriceRef {
    fn from(w: PriceWire) -> Self {
        match w {
            PriceWire::Id(id) => Self {
                id,
                ..Self::default()
            },
            PriceWire::Object {
                id,
                product,
                unit_amount,
                amount,
                currency,
                recurring,
                interval,
                interval_count,
            } => {
                let (ri, rc) = recurring
                    .map(|r| (r.interval, r.interval_count))
                    .unwrap_or((None, None));
                Self {
                    id,
                    product,
                    unit_amount: unit_amount.or(amount),
                    currency,
                    interval: ri.or(interval),
                    interval_count: rc.or(interval_count),
                }
            }
        }
    }
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// The facts of one snapshot, normalized across API versions.
struct Snapshot {
    price: Option<PriceRef>,
    quantity: Option<i32>,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
}

impl Subscription {
    fn snapshot(&self) -> Snapshot {
        let first = self.items.as_ref().and_then(|i| i.data.first());
        let price = first
            .and_then(|i| i.price.clone().or_else(|| i.plan.clone()))
            .or_else(|| self.plan.clone());
        // basil moved the period onto the items; older versions have it on the subscription.
        let period_start = self
            .current_period_start
            .or_else(|| first.and_then(|i| i.current_period_start));
        let period_end = self
            .current_period_end
            .or_else(|| first.and_then(|i| i.current_period_end));
        Snapshot {
            price,
            quantity: first.and_then(|i| i.quantity).or(self.quantity),
            period_start: ts(period_start).or(ts(self.created)),
            period_end: ts(period_end).or(ts(period_start)).or(ts(self.created)),
        }
    }
}

/// Status progression within one period, for snapshots of the same second.
fn status_rank(status: &str) -> i64 {
    match status {
        "incomplete" => 1,
        "trialing" => 2,
        "active" => 3,
        "past_due" => 4,
        "unpaid" => 5,
        "paused" => 6,
        "incomplete_expired" => 7,
        "canceled" => 8,
        _ => 0,
    }
}

/// Same-second tie-break: a later period is newer; within a period, the status progression.
fn tie_break(status: &str, period_end: Option<DateTime<Utc>>) -> i64 {
    period_end.map_or(0, |t| t.timestamp()) * 16 + status_rank(status)
}

const ENSURE_PRICE: [&str; 2] = [
    "insert into public.products (id, active) values ($1, false) on conflict (id) do nothing",
    "insert into public.prices (id, product_id, active, unit_amount, currency, type, interval, interval_count)
     values ($1, $2, true, $3, lower($4), 'recurring', $5, $6)
     on conflict (id) do nothing",
];

/// Timestamps are always written, NULL included: the baseline's now() defaults would make a
/// fresh subscription look ended and canceled. The period never moves backwards (an invoice
/// may already have recorded the next one).
const UPSERT: &str = "
insert into public.subscriptions
  (id, stripe_subscription_id, user_id, status, metadata, price_id, quantity, cancel_at_period_end,
   created, current_period_start, current_period_end, ended_at, cancel_at, canceled_at,
   trial_start, trial_end, stripe_customer_id)
values ($1::text, $1::text, $2, $3::text::public.subscription_status, $4, $5, $6, $7, $8, $9, $10, $11, $12,
        $13, $14, $15, $16)
on conflict (id) do update
set user_id = excluded.user_id, status = excluded.status, metadata = excluded.metadata,
    price_id = excluded.price_id, quantity = excluded.quantity,
    cancel_at_period_end = excluded.cancel_at_period_end, created = excluded.created,
    current_period_start = greatest(subscriptions.current_period_start, excluded.current_period_start),
    current_period_end = greatest(subscriptions.current_period_end, excluded.current_period_end),
    ended_at = excluded.ended_at, cancel_at = excluded.cancel_at,
    canceled_at = excluded.canceled_at, trial_start = excluded.trial_start,
    trial_end = excluded.trial_end, stripe_customer_id = excluded.stripe_customer_id";

const RECORD_PERIOD: &str = "select public.record_subscription_period($1, $2, $3, $4, $5, $6)";

const TIER: &str = "
select coalesce(pr.lookup_key, p.name, pr.id) from public.prices pr
left join public.products p on p.id = pr.product_id where pr.id = $1";

#[derive(Deserialize, Default)]
struct PreviousAttributes {
    #[serde(default)]
    items: Option<Items>,
    #[serde(default)]
    plan: Option<PriceRef>,
}

/// A subscription whose customer is not mapped yet can, with STRIPE_SECRET_KEY, be provisioned
/// from the Stripe customer directly; otherwise it waits (fails, is retried) for its checkout.
pub async fn prepare(
    ctx: &HandlerContext,
    client: &impl deadpool_postgres::GenericClient,
    event: &EventEnvelope,
) -> Result<Prepared, HandlerError> {
    let s: Subscription = event
        .object_as()
        .map_err(|e| HandlerError::invalid("subscription", e))?;
    let (Some(customer), Some(api)) = (&s.customer, &ctx.stripe) else {
        return Ok(Prepared::default());
    };
    if provision::resolve_customer(client, Some(customer))
        .await?
        .is_some()
    {
        return Ok(Prepared::default());
    }
    let contact = api.customer(customer).await?;
    let Some(email) = contact.email.as_deref().and_then(Email::parse) else {
        return Ok(Prepared::default());
    };
    let buyer = Buyer {
        email,
        name: contact.name,
        stripe_customer: Some(customer.clone()),
    };
    Prepared::for_buyer(ctx, client, buyer).await
}

pub async fn changed(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    prepared: &Prepared,
) -> Result<Applied, HandlerError> {
    let s: Subscription = event
        .object_as()
        .map_err(|e| HandlerError::invalid("subscription", e))?;
    let deleted = event.event_type == "customer.subscription.deleted";
    let status = match (s.status.as_deref(), deleted) {
        (Some(st), _) => st.to_owned(),
        (None, true) => "canceled".to_owned(),
        (None, false) => return Err(HandlerError::invalid("subscription", "no status")),
    };
    if status_rank(&status) == 0 {
        return Err(HandlerError::invalid(
            "subscription",
            format!("unknown status {status:?}"),
        ));
    }
    let snap = s.snapshot();
    // The customer look-up and the catalog rows are independent: one pipelined round trip. If
    // the customer turns out unknown, the error rolls the catalog rows back with the rest.
    let (resolved, ensured) = futures_util::join!(
        provision::resolve_customer(tx, s.customer.as_deref()),
        async {
            match &snap.price {
                Some(price) => ensure_price(tx, price).await,
                None => Ok(()),
            }
        },
    );
    ensured?;
    let user_id = match resolved? {
        Some(user) => user,
        None => match &prepared.buyer {
            Some(buyer) => provision::provision(tx, buyer, prepared.auth_user, prepared.confirm_email).await?,
            None => {
                return Err(HandlerError::NotYet(format!(
                    "customer {} of subscription {} is not mapped to a user yet (its checkout has not arrived)",
                    s.customer.as_deref().unwrap_or("(none)"),
                    s.id
                )))
            }
        },
    };
    let price_id = snap.price.as_ref().map(|p| p.id.as_str());
    let order_key = tie_break(&status, snap.period_end);
    let applied_now = ordering::claim(tx, "subscription", &s.id, event, order_key, deleted).await?;
    if !applied_now {
        // Stale, but it may show a period that was paid: that period's voucher must exist.
        if stale_period_counts(tx, &s.id, event, order_key).await? {
            let stmt = tx.prepare_cached(RECORD_PERIOD).await?;
            tx.execute(
                &stmt,
                &[
                    &s.id,
                    &user_id,
                    &price_id,
                    &status,
                    &snap.period_start,
                    &snap.period_end,
                ],
            )
            .await?;
        }
        return Ok(Applied {
            user_id: Some(user_id),
            note: Some(ordering::stale_note(&s.id)),
            ..Applied::default()
        });
    }
    let stmt = tx.prepare_cached(UPSERT).await?;
    tx.execute(
        &stmt,
        &[
            &s.id,
            &user_id,
            &status,
            &s.metadata,
            &price_id,
            &snap.quantity,
            &s.cancel_at_period_end,
            &ts(s.created).or(event.created).unwrap_or_else(Utc::now),
            &snap.period_start.unwrap_or_else(Utc::now),
            &snap
                .period_end
                .or(snap.period_start)
                .unwrap_or_else(Utc::now),
            &ts(s.ended_at),
            &ts(s.cancel_at),
            &ts(s.canceled_at),
            &ts(s.trial_start),
            &ts(s.trial_end),
            &s.customer,
        ],
    )
    .await?;
    let (old_tier, new_tier) = tiers(tx, event, price_id).await?;
    if let (Some(buyer), Some(customer)) = (&prepared.buyer, &s.customer) {
        provision::link_customer(tx, user_id, customer, Some(&buyer.email)).await?;
    }
    if deleted {
        let meta =
            serde_json::json!({ "subscription": s.id, "customer": s.customer, "price": price_id });
        let entry = super::billing::Entry {
            user_id: Some(user_id),
            amount_minor: None,
            currency: None,
            external_id: &event.id,
            metadata: meta,
        };
        super::billing::record(tx, event, entry).await?;
    }
    Ok(Applied {
        user_id: Some(user_id),
        old_tier,
        new_tier,
        note: None,
    })
}

/// Whether a stale snapshot's paid period may be recorded: it must be older than the state
/// applied (a snapshot newer than a deletion shows nothing that was paid) and the row the
/// voucher references must exist (it does unless an operator deleted it).
const STALE_PERIOD_COUNTS: &str = "
select (v.event_created_at, v.tie_break) > ($2, $3)
       and exists (select 1 from public.subscriptions s where s.id = $1)
from public.stripe_object_versions v where v.object_id = $1";

async fn stale_period_counts(
    tx: &Transaction<'_>,
    id: &str,
    event: &EventEnvelope,
    tie_break: i64,
) -> Result<bool, tokio_postgres::Error> {
    let stmt = tx.prepare_cached(STALE_PERIOD_COUNTS).await?;
    let created = event.created.unwrap_or(chrono::DateTime::UNIX_EPOCH);
    Ok(tx
        .query_opt(&stmt, &[&id, &created, &tie_break])
        .await?
        .is_some_and(|r| r.get(0)))
}

/// The subscription's price may never have had its own price.created event here (created
/// before the worker, or in the dashboard): the embedded snapshot fills the catalog row, which
/// the voucher duration needs. Existing rows are left to the catalog events.
async fn ensure_price(tx: &Transaction<'_>, price: &PriceRef) -> Result<(), tokio_postgres::Error> {
    let interval = price
        .interval
        .as_deref()
        .filter(|i| matches!(*i, "day" | "week" | "month" | "year"));
    // Both prepared first, so the pipeline keeps their order (the price references the product).
    let product = tx.prepare_cached(ENSURE_PRICE[0]).await?;
    let row = tx.prepare_cached(ENSURE_PRICE[1]).await?;
    let product_id: [&(dyn ToSql + Sync); 1] = [&price.product];
    let price_row: [&(dyn ToSql + Sync); 6] = [
        &price.id,
        &price.product,
        &price.unit_amount,
        &price.currency,
        &interval,
        &price.interval_count,
    ];
    let ensure_product = async {
        match price.product {
            Some(_) => tx.execute(&product, &product_id).await.map(|_| ()),
            None => Ok(()),
        }
    };
    futures_util::try_join!(ensure_product, tx.execute(&row, &price_row))?;
    Ok(())
}

/// Seed 001's tiers: the product name or lookup key before and after a change of price.
async fn tiers(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    price_id: Option<&str>,
) -> Result<(Option<String>, Option<String>), tokio_postgres::Error> {
    let previous: PreviousAttributes = event.previous_attributes_as();
    let old_price = previous
        .items
        .and_then(|i| i.data.into_iter().next())
        .and_then(|i| i.price.or(i.plan))
        .or(previous.plan)
        .map(|p| p.id);
    let created = event.event_type == "customer.subscription.created";
    if old_price.is_none() && !created {
        return Ok((None, None));
    }
    let old = tier_of(tx, old_price.as_deref()).await?;
    let new = tier_of(tx, price_id).await?;
    Ok((old, new))
}

async fn tier_of(
    tx: &Transaction<'_>,
    price_id: Option<&str>,
) -> Result<Option<String>, tokio_postgres::Error> {
    let Some(id) = price_id else { return Ok(None) };
    let stmt = tx.prepare_cached(TIER).await?;
    Ok(Some(
        tx.query_opt(&stmt, &[&id])
            .await?
            .map_or_else(|| id.to_owned(), |r| r.get(0)),
    ))
}

/// checkout.session.completed (mode=subscription) names the buyer of a subscription whose
/// events may have arrived first.
pub async fn link_to_user(
    tx: &Transaction<'_>,
    subscription_id: &str,
    user_id: Uuid,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached(
            "update public.subscriptions set user_id = $2 where id = $1 and user_id <> $2",
        )
        .await?;
    tx.execute(&stmt, &[&subscription_id, &user_id]).await?;
    Ok(())
}
