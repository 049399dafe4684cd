//! charge.succeeded / updated / refunded. A full refund revokes the voucher (SQL trigger on
//! charges); every refund writes a billing history row.

use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::object::expandable_id;
use super::provision;
use super::{billing, ordering, Applied, Handler, HandlerError};
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct Charge {
    id: String,
    #[serde(default)]
    amount: i64,
    #[serde(default)]
    amount_refunded: i64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    billing_details: Option<serde_json::Value>,
    #[serde(default)]
    receipt_email: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    payment_intent: Option<String>,
}

#[derive(Deserialize, Default)]
struct PreviousRefund {
    #[serde(default)]
    amount_refunded: Option<i64>,
}

pub struct Charges;

impl Handler for Charges {
    type Object = Charge;
    type Prepared = ();
    const OBJECT: &'static str = "charge";
    const EVENT_TYPES: &'static [&'static str] =
        &["charge.succeeded", "charge.updated", "charge.refunded"];

    async fn apply(
        &self,
        c: Charge,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        // Same-second snapshots: more refunded is later.
        if !ordering::claim(tx, "charge", &c.id, event, c.amount_refunded, false).await? {
            return Ok(Applied::note(ordering::stale_note(&c.id)));
        }
        let user_id = provision::resolve_customer(tx, c.customer.as_deref()).await?;
        if let Some(user) = user_id {
            provision::ensure_customer_row(tx, user).await?;
        }
        let intent = PlaceholderIntent::new(&c, user_id);
        let stmt = tx.prepare_cached(ENSURE_INTENT).await?;
        let intent_row: Uuid = tx.query_one(&stmt, &intent.params()).await?.get(0);
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(&stmt, &ChargeRow::new(&c, intent_row, user_id).params())
            .await?;
        if event.event_type == "charge.refunded" {
            record_refund(tx, event, &c, intent.stripe_id, user_id).await?;
        }
        Ok(Applied::for_user(user_id))
    }
}

impl Charge {
    fn currency(&self) -> &str {
        self.currency.as_deref().unwrap_or("usd")
    }

    fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("succeeded")
    }
}

/// Every refund is billing history: the amount refunded by this event, negative.
async fn record_refund(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    c: &Charge,
    intent: &str,
    user_id: Option<Uuid>,
) -> Result<(), tokio_postgres::Error> {
    let before = event
        .previous_attributes_as::<PreviousRefund>()
        .amount_refunded
        .unwrap_or(0);
    let refunded_now = (c.amount_refunded - before).max(0);
    let meta = json!({ "charge": c.id, "payment_intent": intent, "customer": c.customer,
                       "amount_refunded_total": c.amount_refunded, "full_refund": c.amount_refunded >= c.amount });
    let entry = billing::Entry {
        user_id,
        amount_minor: Some(-refunded_now),
        currency: Some(c.currency()),
        external_id: &event.id,
        metadata: meta,
    };
    billing::record(tx, event, entry).await
}

/// The charge may arrive before its intent (and legacy charges have none): the intent row the
/// foreign key needs is created as `processing`; the intent's own events (or checkout) bring
/// its real status together with the price, which the voucher needs. Parameters:
/// `PlaceholderIntent`.
const ENSURE_INTENT: &str = "
with created as (
  insert into public.payment_intents
    (stripe_payment_intent_id, status, amount, currency, customer_id, receipt_email, stripe_customer_id)
  values ($1, $2, $3, lower($4), $5, $6, $7)
  on conflict (stripe_payment_intent_id) do nothing
  returning id)
select id from created
union all
select id from public.payment_intents where stripe_payment_intent_id = $1
limit 1";

/// Refunds only grow, so `amount_refunded` keeps the largest value seen. Parameters:
/// `ChargeRow`.
const UPSERT: &str = "
insert into public.charges
  (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, customer_id,
   billing_details, status, receipt_email, stripe_customer_id)
values ($1, $2, $3, $4, lower($5), $6, $7, $8, $9, $10)
on conflict (stripe_charge_id) do update
set amount = excluded.amount,
    amount_refunded = greatest(charges.amount_refunded, excluded.amount_refunded),
    currency = excluded.currency, status = excluded.status,
    customer_id = coalesce(charges.customer_id, excluded.customer_id),
    billing_details = coalesce(excluded.billing_details, charges.billing_details),
    receipt_email = coalesce(excluded.receipt_email, charges.receipt_email),
    stripe_customer_id = coalesce(charges.stripe_customer_id, excluded.stripe_customer_id)";

/// `ENSURE_INTENT`'s parameters, in their order ($1 … $7).
struct PlaceholderIntent<'a> {
    stripe_id: &'a str,
    status: &'static str,
    amount: i64,
    currency: &'a str,
    user_id: Option<Uuid>,
    receipt_email: Option<&'a str>,
    stripe_customer_id: Option<&'a str>,
}

impl<'a> PlaceholderIntent<'a> {
    fn new(c: &'a Charge, user_id: Option<Uuid>) -> Self {
        // A legacy charge is its own payment: its status is the intent's.
        let status = if c.payment_intent.is_none() && c.status() == "succeeded" {
            "succeeded"
        } else {
            "processing"
        };
        Self {
            stripe_id: c.payment_intent.as_deref().unwrap_or(&c.id),
            status,
            amount: c.amount,
            currency: c.currency(),
            user_id,
            receipt_email: c.receipt_email.as_deref(),
            stripe_customer_id: c.customer.as_deref(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.stripe_id,
            &self.status,
            &self.amount,
            &self.currency,
            &self.user_id,
            &self.receipt_email,
            &self.stripe_customer_id,
        ]
    }
}

/// `UPSERT`'s parameters, in their order ($1 … $10).
struct ChargeRow<'a> {
    stripe_charge_id: &'a str,
    payment_intent_id: Uuid,
    amount: i64,
    amount_refunded: i64,
    currency: &'a str,
    user_id: Option<Uuid>,
    billing_details: &'a Option<serde_json::Value>,
    status: &'a str,
    receipt_email: Option<&'a str>,
    stripe_customer_id: Option<&'a str>,
}

impl<'a> ChargeRow<'a> {
    fn new(c: &'a Charge, payment_intent_id: Uuid, user_id: Option<Uuid>) -> Self {
        Self {
            stripe_charge_id: &c.id,
            payment_intent_id,
            amount: c.amount,
            amount_refunded: c.amount_refunded,
            currency: c.currency(),
            user_id,
            billing_details: &c.billing_details,
            status: c.status(),
            receipt_email: c.receipt_email.as_deref(),
            stripe_customer_id: c.customer.as_deref(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 10] {
        [
            &self.stripe_charge_id,
            &self.payment_intent_id,
            &self.amount,
            &self.amount_refunded,
            &self.currency,
            &self.user_id,
            self.billing_details,
            &self.status,
            &self.receipt_email,
            &self.stripe_customer_id,
        ]
    }
}
