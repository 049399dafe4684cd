//! charge.succeeded / updated / refunded / captured / failed: the charge in its latest state,
//! the refunds older API versions list inside it, and (before API 2025-03-31.basil) the invoice
//! it paid. Whether a refund takes access back, and the billing history, are derived in SQL
//! from these rows; a charge is attributed to its payment intent's owner there too.

use serde::Deserialize;

use super::invoice::link_payment;
use super::object::expandable_id;
use super::refund::{self, Refund};
use super::{ordering, provision, Applied, Handler, HandlerError};
use crate::db::EventTx;
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
    #[serde(default, deserialize_with = "expandable_id")]
    invoice: Option<String>,
    /// Listed inside the charge before API 2022-11-15.
    #[serde(default)]
    refunds: Option<RefundList>,
}

#[derive(Deserialize, Default)]
struct RefundList {
    #[serde(default)]
    data: Vec<Refund>,
}

/// The intent row the charge references. A charge may arrive before its intent (and legacy
/// charges have none: they are their own intent): the row is created as `processing`, and the
/// intent's own events (or checkout) bring its real state.
const ENSURE_INTENT: &str = "
with created as (
  insert into public.payment_intents
    (stripe_payment_intent_id, status, amount, currency, customer_id, receipt_email, stripe_customer_id, livemode)
  values ($1, $2, $3, lower($4), $5, $6, $7, $8)
  on conflict (stripe_payment_intent_id) do nothing
  returning id)
select id from created
union all
select id from public.payment_intents where stripe_payment_intent_id = $1
limit 1";

/// The latest snapshot's refunded amount (it goes down again when a refund fails);
/// `refunded_at` keeps the earliest report of a refund.
const UPSERT: &str = "
insert into public.charges
  (stripe_charge_id, payment_intent_id, amount, amount_refunded, currency, customer_id,
   billing_details, status, receipt_email, stripe_customer_id, refunded_at, livemode)
values ($1, $2, $3, $4, lower($5), $6, $7, $8, $9, $10, $11, $12)
on conflict (stripe_charge_id) do update
set amount = excluded.amount, amount_refunded = excluded.amount_refunded,
    currency = excluded.currency, status = excluded.status,
    customer_id = coalesce(charges.customer_id, excluded.customer_id),
    billing_details = coalesce(excluded.billing_details, charges.billing_details),
    receipt_email = coalesce(excluded.receipt_email, charges.receipt_email),
    stripe_customer_id = coalesce(charges.stripe_customer_id, excluded.stripe_customer_id),
    refunded_at = least(charges.refunded_at, excluded.refunded_at),
    livemode = excluded.livemode
returning customer_id";

pub struct Charges;

impl Handler for Charges {
    type Object = Charge;
    type Prepared = ();
    const OBJECT: &'static str = "charge";
    const EVENT_TYPES: &'static [&'static str] = &[
        "charge.succeeded",
        "charge.updated",
        "charge.refunded",
        "charge.captured",
        "charge.failed",
    ];

    async fn apply(
        &self,
        c: Charge,
        _: (),
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let intent = c.payment_intent.as_deref().unwrap_or(&c.id);
        // Facts that hold whatever the snapshot's age: the invoice it paid, and each listed
        // refund (ordered by its own events).
        if let Some(invoice) = &c.invoice {
            link_payment(tx, invoice, intent, Some(c.amount)).await?;
        }
        for r in c.refunds.as_ref().map_or(&[][..], |l| &l.data) {
            refund::record(tx, event, r, Some(&c.id), c.payment_intent.as_deref()).await?;
        }
        // Same-second snapshots: more refunded is later.
        if !ordering::claim(tx, "charge", &c.id, event, c.amount_refunded, false).await? {
            return Ok(Applied::note(ordering::stale_note(&c.id)));
        }
        let user_id = provision::resolve_customer(tx.client(), c.customer.as_deref()).await?;
        let currency = c.currency.as_deref().unwrap_or("usd");
        let status = c.status.as_deref().unwrap_or("succeeded");
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
                    &event.livemode,
                ],
            )
            .await?
            .get(0);
        let refunded_at = (c.amount_refunded > 0).then_some(event.created).flatten();
        let stmt = tx.prepare_cached(UPSERT).await?;
        let owner = tx
            .query_one(
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
                    &refunded_at,
                    &event.livemode,
                ],
            )
            .await?
            .get(0);
        Ok(Applied::for_user(owner))
    }
}
