//! invoice.paid / invoice.payment_succeeded / invoice.payment_failed for subscriptions.
//!
//! The subscription is `parent.subscription_details.subscription` from API 2025-03-31.basil
//! on, `subscription` before. A paid cycle invoice records its period as paid (the period's
//! voucher exists afterwards, whatever the order of the subscription events); every invoice
//! payment and failure is a billing history row.

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::json;

use super::object::expandable_id;
use super::provision;
use super::{billing, Applied, Handler, HandlerError};
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct Invoice {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
    #[serde(default)]
    parent: Option<Parent>,
    #[serde(default)]
    amount_paid: Option<i64>,
    #[serde(default)]
    amount_due: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    billing_reason: Option<String>,
    #[serde(default)]
    attempt_count: Option<i64>,
    #[serde(default)]
    lines: Option<Lines>,
}

#[derive(Deserialize)]
struct Parent {
    #[serde(default)]
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Deserialize)]
struct SubscriptionDetails {
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
}

#[derive(Deserialize, Default)]
struct Lines {
    #[serde(default)]
    data: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    period: Option<Period>,
}

#[derive(Deserialize, Clone, Copy)]
struct Period {
    start: i64,
    end: i64,
}

impl Invoice {
    fn subscription_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| d.subscription.as_deref())
            .or(self.subscription.as_deref())
    }

    /// The billing period the invoice pays: its line reaching furthest.
    fn period(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let p = self
            .lines
            .as_ref()?
            .data
            .iter()
            .filter_map(|l| l.period)
            .max_by_key(|p| (p.end, -p.start))?;
        Some((
            Utc.timestamp_opt(p.start, 0).single()?,
            Utc.timestamp_opt(p.end, 0).single()?,
        ))
    }
}

const SUBSCRIPTION: &str = "select user_id, price_id from public.subscriptions where id = $1";
const RECORD_PERIOD: &str =
    "select public.record_subscription_period($1, $2, $3, 'active', $4, $5)";

pub struct Invoices;

impl Handler for Invoices {
    type Object = Invoice;
    type Prepared = ();
    const OBJECT: &'static str = "invoice";
    const EVENT_TYPES: &'static [&'static str] = &[
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
    ];

    async fn apply(
        &self,
        inv: Invoice,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let Some(sub) = inv.subscription_id().map(str::to_owned) else {
            return Ok(Applied::note(format!(
                "invoice {} is not for a subscription",
                inv.id
            )));
        };
        let stmt = tx.prepare_cached(SUBSCRIPTION).await?;
        let row = tx.query_opt(&stmt, &[&sub]).await?;
        let user_id = match &row {
            Some(r) => Some(r.get::<_, uuid::Uuid>(0)),
            None => provision::resolve_customer(tx, inv.customer.as_deref()).await?,
        };
        let paid = event.event_type != "invoice.payment_failed";
        let period = inv.period();
        if paid {
            // Only cycle and first invoices pay a whole period; proration invoices of a plan
            // change pay a part of the current one, which already has its voucher.
            let pays_period = matches!(
                inv.billing_reason.as_deref(),
                Some("subscription_create" | "subscription_cycle") | None
            );
            if let (true, Some((start, end))) = (pays_period, period) {
                let Some(row) = &row else {
                    return Err(HandlerError::NotYet(format!(
                        "subscription {sub} of invoice {} is not stored yet",
                        inv.id
                    )));
                };
                let price: Option<String> = row.get(1);
                let stmt = tx.prepare_cached(RECORD_PERIOD).await?;
                tx.execute(
                    &stmt,
                    &[&sub, &row.get::<_, uuid::Uuid>(0), &price, &start, &end],
                )
                .await?;
            }
        }
        let Some(user_id) = user_id else {
            return Err(HandlerError::NotYet(format!(
                "customer of invoice {} is not mapped to a user yet",
                inv.id
            )));
        };
        let meta = json!({
            "invoice": inv.id, "subscription": sub, "customer": inv.customer,
            "billing_reason": inv.billing_reason, "attempt_count": inv.attempt_count,
            "period_start": period.map(|p| p.0), "period_end": period.map(|p| p.1),
        });
        // invoice.paid and invoice.payment_succeeded report one payment: one row per invoice.
        let external = if paid {
            inv.id.clone()
        } else {
            event.id.clone()
        };
        let amount = if paid {
            inv.amount_paid
        } else {
            inv.amount_due
        };
        let entry = billing::Entry {
            user_id: Some(user_id),
            amount_minor: amount,
            currency: inv.currency.as_deref(),
            external_id: &external,
            metadata: meta,
        };
        billing::record(tx, event, entry).await?;
        let note = (!paid).then(|| {
            "payment failed: the subscription's own events carry its new status".to_owned()
        });
        Ok(Applied {
            user_id: Some(user_id),
            note,
            ..Applied::default()
        })
    }
}
