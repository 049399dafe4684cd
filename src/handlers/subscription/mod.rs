//! customer.subscription.*: the subscription row. Vouchers per paid period follow by SQL
//! trigger (`record_subscription_period`).
//!
//! Ordering: an older snapshot never overwrites a newer one; deletion wins; a stale snapshot
//! that shows a paid period still records that period, so the time a user paid for does not
//! depend on delivery order.

mod object;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use self::object::{
    status_rank, tie_break, ts, PreviousAttributes, PriceRef, Snapshot, Subscription,
};
use super::provision::{self, Buyer, PreparedBuyer};
use super::{billing, ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::email::Email;
use crate::envelope::EventEnvelope;

pub struct Subscriptions;

impl Handler for Subscriptions {
    type Object = Subscription;
    type Prepared = Option<PreparedBuyer>;
    const OBJECT: &'static str = "subscription";
    const EVENT_TYPES: &'static [&'static str] = &[
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.trial_will_end",
    ];
    const CALLS_OUT: bool = true;

    /// A subscription whose customer is not mapped yet can, with STRIPE_SECRET_KEY, be
    /// provisioned from the Stripe customer directly; otherwise it waits (fails, is retried)
    /// for its checkout.
    async fn prepare(
        &self,
        s: &Subscription,
        _: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        let (Some(customer), Some(api)) = (&s.customer, cx.stripe) else {
            return Ok(None);
        };
        if provision::customer_is_mapped(cx, Some(customer)).await? {
            return Ok(None);
        }
        let contact = api.customer(customer).await?;
        let Some(email) = contact.email.as_deref().and_then(Email::parse) else {
            return Ok(None);
        };
        let buyer = Buyer {
            email,
            name: contact.name,
            stripe_customer: Some(customer.clone()),
        };
        provision::prepare_buyer(cx, buyer).await
    }

    async fn apply(
        &self,
        s: Subscription,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "customer.subscription.deleted";
        let status = status_of(&s, deleted)?;
        let snap = s.snapshot();
        let user_id = owner(tx, &s, &snap, prepared.as_ref()).await?;
        let price_id = snap.price.as_ref().map(|p| p.id.as_str());
        let order_key = tie_break(&status, snap.period_end);
        if !ordering::claim(tx, "subscription", &s.id, event, order_key, deleted).await? {
            record_stale_period(tx, &s, event, order_key, user_id, &status, &snap).await?;
            return Ok(Applied {
                note: Some(ordering::stale_note(&s.id)),
                ..Applied::for_user(Some(user_id))
            });
        }
        let row = SubscriptionRow::new(&s, &snap, user_id, &status, event);
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(&stmt, &row.params()).await?;
        let (old_tier, new_tier) = tiers(tx, event, price_id).await?;
        let mut applied = Applied {
            old_tier,
            new_tier,
            ..Applied::for_user(Some(user_id))
        };
        if let (Some(prepared), Some(customer)) = (&prepared, &s.customer) {
            provision::link_customer(tx, user_id, customer, Some(&prepared.buyer.email)).await?;
            applied.linked_customer = Some(customer.clone());
        }
        if deleted {
            record_cancellation(tx, event, &s, user_id, price_id).await?;
        }
        Ok(applied)
    }
}

/// The snapshot's status; a deletion without one is a cancellation.
fn status_of(s: &Subscription, deleted: bool) -> Result<String, HandlerError> {
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
    Ok(status)
}

/// The user the subscription belongs to (provisioned from `prepared` when the customer is not
/// mapped yet), with the catalog rows its price needs written on the way.
async fn owner(
    tx: &Transaction<'_>,
    s: &Subscription,
    snap: &Snapshot,
    prepared: Option<&PreparedBuyer>,
) -> Result<Uuid, HandlerError> {
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
    match (resolved?, prepared) {
        (Some(user), _) => Ok(user),
        (None, Some(buyer)) => provision::provision(tx, buyer).await,
        (None, None) => Err(HandlerError::NotYet(format!(
            "customer {} of subscription {} is not mapped to a user yet (its checkout has not arrived)",
            s.customer.as_deref().unwrap_or("(none)"),
            s.id
        ))),
    }
}

/// Timestamps are always written, NULL included: the baseline's now() defaults would make a
/// fresh subscription look ended and canceled. The period never moves backwards (an invoice
/// may already have recorded the next one). Parameters: `SubscriptionRow`.
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

/// `UPSERT`'s parameters, in their order ($1 … $16).
struct SubscriptionRow<'a> {
    id: &'a str,
    user_id: Uuid,
    status: &'a str,
    metadata: &'a serde_json::Value,
    price_id: Option<&'a str>,
    quantity: Option<i32>,
    cancel_at_period_end: Option<bool>,
    created: DateTime<Utc>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    cancel_at: Option<DateTime<Utc>>,
    canceled_at: Option<DateTime<Utc>>,
    trial_start: Option<DateTime<Utc>>,
    trial_end: Option<DateTime<Utc>>,
    stripe_customer_id: Option<&'a str>,
}

impl<'a> SubscriptionRow<'a> {
    fn new(
        s: &'a Subscription,
        snap: &'a Snapshot,
        user_id: Uuid,
        status: &'a str,
        event: &EventEnvelope,
    ) -> Self {
        Self {
            id: &s.id,
            user_id,
            status,
            metadata: &s.metadata,
            price_id: snap.price.as_ref().map(|p| p.id.as_str()),
            quantity: snap.quantity,
            cancel_at_period_end: s.cancel_at_period_end,
            created: ts(s.created).or(event.created).unwrap_or_else(Utc::now),
            period_start: snap.period_start.unwrap_or_else(Utc::now),
            period_end: snap
                .period_end
                .or(snap.period_start)
                .unwrap_or_else(Utc::now),
            ended_at: ts(s.ended_at),
            cancel_at: ts(s.cancel_at),
            canceled_at: ts(s.canceled_at),
            trial_start: ts(s.trial_start),
            trial_end: ts(s.trial_end),
            stripe_customer_id: s.customer.as_deref(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.id,
            &self.user_id,
            &self.status,
            self.metadata,
            &self.price_id,
            &self.quantity,
            &self.cancel_at_period_end,
            &self.created,
            &self.period_start,
            &self.period_end,
            &self.ended_at,
            &self.cancel_at,
            &self.canceled_at,
            &self.trial_start,
            &self.trial_end,
            &self.stripe_customer_id,
        ]
    }
}

const RECORD_PERIOD: &str = "select public.record_subscription_period($1, $2, $3, $4, $5, $6)";

/// A stale snapshot may still show a period that was paid: that period's voucher must exist.
async fn record_stale_period(
    tx: &Transaction<'_>,
    s: &Subscription,
    event: &EventEnvelope,
    order_key: i64,
    user_id: Uuid,
    status: &str,
    snap: &Snapshot,
) -> Result<(), tokio_postgres::Error> {
    if !stale_period_counts(tx, &s.id, event, order_key).await? {
        return Ok(());
    }
    let price_id = snap.price.as_ref().map(|p| p.id.as_str());
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
    Ok(())
}

/// A cancellation is billing history.
async fn record_cancellation(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    s: &Subscription,
    user_id: Uuid,
    price_id: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    let meta =
        serde_json::json!({ "subscription": s.id, "customer": s.customer, "price": price_id });
    let entry = billing::Entry {
        user_id: Some(user_id),
        amount_minor: None,
        currency: None,
        external_id: &event.id,
        metadata: meta,
    };
    billing::record(tx, event, entry).await
}

const ENSURE_PRICE: [&str; 2] = [
    "insert into public.products (id, active) values ($1, false) on conflict (id) do nothing",
    "insert into public.prices (id, product_id, active, unit_amount, currency, type, interval, interval_count)
     values ($1, $2, true, $3, lower($4), 'recurring', $5, $6)
     on conflict (id) do nothing",
];

const TIER: &str = "
select coalesce(pr.lookup_key, p.name, pr.id) from public.prices pr
left join public.products p on p.id = pr.product_id where pr.id = $1";

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

/// The tiers the event row records (`old_tier`, `new_tier`): the lookup key or product name of
/// the price before and after a change of price.
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
