//! charge.succeeded / updated / refunded. A full refund revokes the voucher (SQL trigger on
//! charges); every refund writes a billing history row.

use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::json;

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

/// Refunds only grow, so `amount_refunded` keeps the largest value seen.
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
        let currency = c.currency.as_deref().unwrap_or("usd");
        let status = c.status.as_deref().unwrap_or("succeeded");
        // The charge may arrive before its intent (and legacy charges have none): the intent row
        // the foreign key needs is created as `processing`; the intent's own events (or checkout)
        // bring its real status together with the price, which the voucher needs.
        let intent = c.payment_intent.as_deref().unwrap_or(&c.id);
        let placeholder_status = if c.payment_intent.is_none() && status == "succeeded" {
            "succeeded"
        } else {
            "processing"
        };
        if let Some(user) = user_id {
            provision::ensure_customer_row(tx, user).await?;
        }
        let stmt = tx.prepare_cached(ENSURE_INTENT).await?;
        let intent_row: uuid::Uuid = tx
            .query_one(
                &stmt,
                &[
                    &intent,
                    &placeholder_status,
                    &c.amount,
                    &currency,
                    &user_id,
                    &c.receipt_email,
                    &c.customer,
                ],
            )
            .await?
            .get(0);
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(
            &stmt,
            &[
                &c.id,
                &intent_row,
                &c.amount,
                &c.amount_refunded,
                &currency,
                &user_id,
                &c.billing_details,
                &status,
                &c.receipt_email,
                &c.customer,
            ],
        )
        .await?;
        if event.event_type == "charge.refunded" {
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
                currency: Some(currency),
                external_id: &event.id,
                metadata: meta,
            };
            billing::record(tx, event, entry).await?;
        }
        Ok(Applied {
            user_id,
            ..Applied::default()
        })
    }
}
