//! payment_intent.succeeded / processing / payment_failed / canceled: the intent in its latest
//! state. A succeeded intent of a buyer nobody knows yet provisions them (from `receipt_email`,
//! the directory of Stripe customers, or the Stripe API). What the payment buys (when its
//! metadata names a price) and its billing history row are derived in SQL; an invoice's intent
//! (it names the invoice before API 2025-03-31.basil) buys nothing by itself.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::invoice::link_payment;
use super::object::{expandable_id, metadata};
use super::provision::{self, PreparedBuyer};
use super::{billing, ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct Intent {
    id: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    receipt_email: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    invoice: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

impl Intent {
    fn status(&self, event_type: &str) -> &str {
        self.status.as_deref().unwrap_or(match event_type {
            "payment_intent.succeeded" => "succeeded",
            "payment_intent.canceled" => "canceled",
            "payment_intent.payment_failed" => "requires_payment_method",
            _ => "processing",
        })
    }
}

/// Orders same-second snapshots of one intent: later states rank higher.
fn status_rank(status: &str) -> i64 {
    match status {
        "requires_payment_method" => 1,
        "requires_confirmation" => 2,
        "requires_action" => 3,
        "processing" => 4,
        "requires_capture" => 5,
        "canceled" => 6,
        "succeeded" => 7,
        _ => 0,
    }
}

/// Terminal states stay terminal (a late `processing` never undoes `succeeded`); the owner, once
/// known, stays; the price a Checkout Session names wins over the intent's own metadata; the
/// amount an intent's own event reports wins over the session's total ($11); `paid_at` keeps
/// the earliest report of the payment. Parameters: `IntentRow`.
const UPSERT: &str = "
insert into public.payment_intents
  (stripe_payment_intent_id, status, amount, currency, customer_id, receipt_email,
   stripe_customer_id, price_id, checkout_session_id, paid_at, livemode)
values ($1, $2, $3, lower($4), $5, $6, $7, $8, $9, $10, $12)
on conflict (stripe_payment_intent_id) do update
set status = case when payment_intents.status in ('succeeded', 'canceled')
                  then payment_intents.status else excluded.status end,
    amount = case when $11 then excluded.amount else payment_intents.amount end,
    currency = case when $11 then excluded.currency else payment_intents.currency end,
    customer_id = coalesce(payment_intents.customer_id, excluded.customer_id),
    receipt_email = coalesce(excluded.receipt_email, payment_intents.receipt_email),
    stripe_customer_id = coalesce(payment_intents.stripe_customer_id, excluded.stripe_customer_id),
    price_id = coalesce(case when excluded.checkout_session_id is not null then excluded.price_id end,
                        payment_intents.price_id, excluded.price_id),
    checkout_session_id = coalesce(payment_intents.checkout_session_id, excluded.checkout_session_id),
    paid_at = least(payment_intents.paid_at, excluded.paid_at),
    livemode = coalesce(excluded.livemode, payment_intents.livemode)
returning id, customer_id";

/// `UPSERT`'s parameters, in their order ($1 … $12).
pub struct IntentRow<'a> {
    pub stripe_id: &'a str,
    pub status: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub user_id: Option<Uuid>,
    pub receipt_email: Option<&'a str>,
    pub stripe_customer: Option<&'a str>,
    pub price_id: Option<&'a str>,
    pub checkout_session: Option<&'a str>,
    pub paid_at: Option<DateTime<Utc>>,
    /// The intent's own event: its amount is the one received.
    pub authoritative: bool,
    pub livemode: bool,
}

impl IntentRow<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 12] {
        [
            &self.stripe_id,
            &self.status,
            &self.amount,
            &self.currency,
            &self.user_id,
            &self.receipt_email,
            &self.stripe_customer,
            &self.price_id,
            &self.checkout_session,
            &self.paid_at,
            &self.authoritative,
            &self.livemode,
        ]
    }
}

/// Writes the intent; returns its row id and owner.
pub async fn upsert(
    tx: &EventTx,
    row: &IntentRow<'_>,
) -> Result<(Uuid, Option<Uuid>), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(UPSERT).await?;
    let params = row.params();
    // The customer row the intent references, then the intent: one round trip. Both are
    // prepared first, so they reach the server in this order.
    let r = match row.user_id {
        Some(user) => {
            let ensure = tx.prepare_cached(provision::ENSURE_CUSTOMER_ROW).await?;
            let user: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&user];
            let (_, r) =
                futures_util::try_join!(tx.execute(&ensure, &user), tx.query_one(&stmt, &params))?;
            r
        }
        None => tx.query_one(&stmt, &params).await?,
    };
    Ok((r.get(0), r.get(1)))
}

/// Whether the intent already has an owner (a guest checkout names it before the intent's own
/// events) and whether its Stripe customer is mapped to a user: one round trip for the two
/// questions that end `prepare` for most payments.
const OWNER_OR_MAPPED: &str = concat!(
    "select exists (select 1 from public.payment_intents
                     where stripe_payment_intent_id = $1 and customer_id is not null),
            ",
    provision::customer_user_sql!("$2::text"),
    " is not null"
);

pub struct PaymentIntents;

impl Handler for PaymentIntents {
    type Object = Intent;
    type Prepared = Option<PreparedBuyer>;
    const OBJECT: &'static str = "payment intent";
    const EVENT_TYPES: &'static [&'static str] = &[
        "payment_intent.succeeded",
        "payment_intent.processing",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
    ];

    /// A succeeded payment of a buyer nobody knows yet: who paid.
    async fn prepare(
        &self,
        pi: &Intent,
        event: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        if pi.status(&event.event_type) != "succeeded" {
            return Ok(None);
        }
        let known = cx
            .query_opt(OWNER_OR_MAPPED, &[&pi.id, &pi.customer.as_deref()])
            .await?;
        let (owned, mapped) = known.map_or((false, false), |r| (r.get(0), r.get(1)));
        if owned || mapped {
            return Ok(None);
        }
        match &pi.customer {
            Some(customer) => {
                provision::prepare_unknown(cx, customer, pi.receipt_email.as_deref(), None).await
            }
            None => match provision::find_buyer(cx, None, pi.receipt_email.as_deref(), None).await?
            {
                Some(buyer) => provision::prepare_buyer(cx, buyer).await,
                None => Ok(None),
            },
        }
    }

    async fn apply(
        &self,
        pi: Intent,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        // Which invoice it pays: a fact whatever the snapshot's age.
        if let Some(invoice) = &pi.invoice {
            link_payment(tx, invoice, &pi.id, pi.amount_received).await?;
        }
        let status = pi.status(&event.event_type).to_owned();
        // One round trip: the customer is looked up beside the claim, and unused when stale.
        let (fresh, mut user_id) = futures_util::try_join!(
            ordering::claim(
                tx,
                "payment_intent",
                &pi.id,
                event,
                status_rank(&status),
                false
            ),
            provision::resolve_customer(tx.client(), pi.customer.as_deref()),
        )?;
        if !fresh {
            return Ok(Applied::note(ordering::stale_note(&pi.id)));
        }
        let mut applied = Applied::default();
        if let (None, Some(buyer)) = (user_id, &prepared) {
            let user = provision::provision(tx, buyer).await?;
            user_id = Some(user);
            if let Some(customer) = &pi.customer {
                provision::link_customer(tx, user, customer, Some(&buyer.buyer.email)).await?;
                applied.linked_customer = Some(customer.clone());
            }
        }
        if let (None, None, Some(customer), "succeeded") =
            (user_id, &prepared, &pi.customer, status.as_str())
        {
            provision::wait_if_buyer_arrived(tx, customer).await?;
        }
        let currency = pi.currency.as_deref().unwrap_or("usd");
        // 2020-era fixtures show succeeded intents with amount_received 0: fall back to amount.
        let amount = match pi.amount_received {
            Some(received) if status == "succeeded" && received > 0 => Some(received),
            _ => pi.amount,
        };
        let (_, owner) = upsert(
            tx,
            &IntentRow {
                stripe_id: &pi.id,
                status: &status,
                amount: amount.unwrap_or(0),
                currency,
                user_id,
                receipt_email: pi.receipt_email.as_deref(),
                stripe_customer: pi.customer.as_deref(),
                price_id: pi.metadata.get("price_id").and_then(|v| v.as_str()),
                checkout_session: None,
                paid_at: (status == "succeeded").then_some(event.created).flatten(),
                authoritative: true,
                livemode: event.livemode,
            },
        )
        .await?;
        if event.event_type == "payment_intent.payment_failed" {
            let meta = json!({ "payment_intent": pi.id, "customer": pi.customer,
                               "amount": pi.amount, "invoice": pi.invoice });
            billing::record_failed_payment(tx, event, owner, Some(currency), meta).await?;
        }
        applied.user_id = owner;
        if owner.is_none() && status == "succeeded" {
            applied.note = Some("buyer not known yet: stored unlinked".to_owned());
        }
        Ok(applied)
    }
}
