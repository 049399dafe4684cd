//! customer.subscription.*: the subscription row the frontend reads (status, price, period,
//! cancel fields, tiers). A snapshot never grants access: Stripe moves a subscription to its next
//! period before it charges for it; paid invoices and trials grant (in SQL, from the invoice and
//! from this row's trial dates).
//!
//! Ordering: an older snapshot never overwrites a newer one; deletion wins. The owner is the
//! customer's user, else the stored subscription's (the customer may be deleted), else a buyer
//! provisioned now (a trial or a paid subscription of a customer the directory or Stripe knows).
//! A subscription never paid, of a customer nobody knows, is recorded and ignored.

mod object;

pub use self::object::{Snapshot, Subscription};

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use self::object::{status_rank, tie_break, ts, PreviousAttributes, PriceRef};
use super::provision::{self, PreparedBuyer};
use super::{ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::db::EventTx;
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

    /// A trial or a paid subscription of a customer not mapped yet: its buyer, from the
    /// directory of Stripe customers or (with STRIPE_SECRET_KEY) Stripe.
    async fn prepare(
        &self,
        s: &Subscription,
        _: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        let (Some(customer), Some(status)) = (&s.customer, s.status.as_deref()) else {
            return Ok(None);
        };
        if !matches!(
            status,
            "trialing" | "active" | "past_due" | "unpaid" | "paused"
        ) {
            return Ok(None);
        }
        provision::prepare_unmapped(cx, customer, None, None).await
    }

    async fn apply(
        &self,
        s: Subscription,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "customer.subscription.deleted";
        let status = status_of(&s, deleted)?;
        let snap = s.snapshot();
        let Some(user_id) = owner(tx, &s, &snap, &status, prepared.as_ref()).await? else {
            return Ok(Applied::ignored(format!(
                "subscription {} is {status} and its customer {} is known to nobody: nothing was paid",
                s.id,
                s.customer.as_deref().unwrap_or("(none)")
            )));
        };
        let price_id = snap.price.as_ref().map(|p| p.id.as_str());
        let order_key = tie_break(&status, snap.period_end);
        if !ordering::claim(tx, "subscription", &s.id, event, order_key, deleted).await? {
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

/// The subscription's owner, with the catalog rows its price needs written on the way. `None`:
/// never paid, and its customer is known to nobody (nothing to wait for).
async fn owner(
    tx: &EventTx,
    s: &Subscription,
    snap: &Snapshot,
    status: &str,
    prepared: Option<&PreparedBuyer>,
) -> Result<Option<Uuid>, HandlerError> {
    // The customer look-up and the catalog rows are independent: one pipelined round trip. If
    // the customer turns out unknown, the error rolls the catalog rows back with the rest.
    let (resolved, ensured) = futures_util::join!(
        provision::resolve_customer(tx.client(), s.customer.as_deref()),
        async {
            match &snap.price {
                Some(price) => ensure_price(tx, price).await,
                None => Ok(()),
            }
        },
    );
    ensured?;
    if let Some(user) = resolved? {
        return Ok(Some(user));
    }
    let stmt = tx.prepare_cached(STORED_OWNER).await?;
    if let Some(row) = tx.query_opt(&stmt, &[&s.id]).await? {
        return Ok(Some(row.get(0)));
    }
    if let Some(buyer) = prepared {
        return provision::provision(tx, buyer).await.map(Some);
    }
    if matches!(status, "incomplete" | "incomplete_expired" | "canceled") {
        return Ok(None);
    }
    Err(HandlerError::NotYet(format!(
        "customer {} of subscription {} is not mapped to a user yet (waiting for its payment or its customer's email)",
        s.customer.as_deref().unwrap_or("(none)"),
        s.id
    )))
}

/// The owner a stored subscription already has.
const STORED_OWNER: &str = "select user_id from public.subscriptions where id = $1";

/// Timestamps are always written, NULL included: the production table's now() defaults would
/// make a fresh subscription look ended and canceled. The period never moves backwards.
/// Parameters: `SubscriptionRow`.
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

const ENSURE_PRICE: [&str; 2] = [
    crate::handlers::catalog::ENSURE_PRODUCT,
    // read first, like ENSURE_PRODUCT: an INSERT meeting a row being updated waits for it
    "insert into public.prices (id, product_id, active, unit_amount, currency, type, interval, interval_count)
     select $1::text, $2, true, $3, lower($4), 'recurring', $5, $6
      where not exists (select 1 from public.prices where id = $1::text)
     on conflict (id) do nothing",
];

const TIER: &str = "
select coalesce(pr.lookup_key, p.name, pr.id) from public.prices pr
left join public.products p on p.id = pr.product_id where pr.id = $1";

/// The subscription's price may never have had its own price.created event here (created
/// before the worker, or in the dashboard): the embedded snapshot fills the catalog row, which
/// the entitlement rules read (a period voucher's months). Existing rows are left to the catalog events.
async fn ensure_price(tx: &EventTx, price: &PriceRef) -> Result<(), tokio_postgres::Error> {
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
    tx: &EventTx,
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
    tx: &EventTx,
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
    tx: &EventTx,
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
