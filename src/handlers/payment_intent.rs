//! payment_intent.succeeded / processing / payment_failed / canceled.

use deadpool_postgres::Transaction;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::object::{expandable_id, metadata};
use super::provision::{self, Buyer, PreparedBuyer};
use super::{billing, ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::email::Email;
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

pub struct IntentFacts<'a> {
    pub stripe_id: &'a str,
    pub status: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub user_id: Option<Uuid>,
    pub receipt_email: Option<&'a str>,
    pub stripe_customer: Option<&'a str>,
    pub price_id: Option<&'a str>,
}

/// Terminal states stay terminal (a late `processing` never undoes `succeeded`); the owner and
/// the price, once known, stay. The voucher trigger watches status, customer_id and price_id.
const UPSERT: &str = "
insert into public.payment_intents
  (stripe_payment_intent_id, status, amount, currency, customer_id, receipt_email,
   stripe_customer_id, price_id)
values ($1, $2, $3, lower($4), $5, $6, $7, (select id from public.prices where id = $8))
on conflict (stripe_payment_intent_id) do update
set status = case when payment_intents.status in ('succeeded', 'canceled')
                  then payment_intents.status else excluded.status end,
    amount = excluded.amount, currency = excluded.currency,
    customer_id = coalesce(payment_intents.customer_id, excluded.customer_id),
    receipt_email = coalesce(excluded.receipt_email, payment_intents.receipt_email),
    stripe_customer_id = coalesce(payment_intents.stripe_customer_id, excluded.stripe_customer_id),
    price_id = coalesce(payment_intents.price_id, excluded.price_id)
returning id";

pub async fn upsert(
    tx: &Transaction<'_>,
    f: &IntentFacts<'_>,
) -> Result<Uuid, tokio_postgres::Error> {
    if let Some(user) = f.user_id {
        provision::ensure_customer_row(tx, user).await?;
    }
    let stmt = tx.prepare_cached(UPSERT).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &f.stripe_id,
                &f.status,
                &f.amount,
                &f.currency,
                &f.user_id,
                &f.receipt_email,
                &f.stripe_customer,
                &f.price_id,
            ],
        )
        .await?;
    Ok(row.get(0))
}

/// A succeeded intent of a buyer we do not know (payment link, API purchase) provisions them
/// from `receipt_email`, else the Stripe customer's email.
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
    const CALLS_OUT: bool = true;

    async fn prepare(
        &self,
        pi: &Intent,
        event: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        let mut email = pi.receipt_email.as_deref().and_then(Email::parse);
        // Without an address and no Stripe API to ask, there is nothing to prepare: skip the
        // look-up.
        if pi.status(&event.event_type) != "succeeded"
            || (email.is_none() && (pi.customer.is_none() || cx.stripe.is_none()))
            || provision::customer_is_mapped(cx, pi.customer.as_deref()).await?
        {
            return Ok(None);
        }
        let mut name = None;
        if email.is_none() {
            if let (Some(customer), Some(api)) = (&pi.customer, cx.stripe) {
                let contact = api.customer(customer).await?;
                email = contact.email.as_deref().and_then(Email::parse);
                name = contact.name;
            }
        }
        // Without an address the intent is stored unlinked; its checkout session links it.
        let Some(email) = email else {
            return Ok(None);
        };
        let buyer = Buyer {
            email,
            name,
            stripe_customer: pi.customer.clone(),
        };
        provision::prepare_buyer(cx, buyer).await
    }

    async fn apply(
        &self,
        pi: Intent,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let status = pi.status(&event.event_type).to_owned();
        if !ordering::claim(
            tx,
            "payment_intent",
            &pi.id,
            event,
            status_rank(&status),
            false,
        )
        .await?
        {
            return Ok(Applied::note(ordering::stale_note(&pi.id)));
        }
        let user_id = match provision::resolve_customer(tx, pi.customer.as_deref()).await? {
            Some(user) => Some(user),
            None => match &prepared {
                Some(buyer) => Some(provision::provision(tx, buyer).await?),
                None => None,
            },
        };
        let currency = pi.currency.as_deref().unwrap_or("usd");
        // 2020-era fixtures show succeeded intents with amount_received 0: fall back to amount.
        let amount = match pi.amount_received {
            Some(received) if status == "succeeded" && received > 0 => Some(received),
            _ => pi.amount,
        };
        upsert(
            tx,
            &IntentFacts {
                stripe_id: &pi.id,
                status: &status,
                amount: amount.unwrap_or(0),
                currency,
                user_id,
                receipt_email: pi.receipt_email.as_deref(),
                stripe_customer: pi.customer.as_deref(),
                price_id: pi.metadata.get("price_id").and_then(|v| v.as_str()),
            },
        )
        .await?;
        if status == "succeeded" {
            let meta = json!({ "payment_intent": pi.id, "customer": pi.customer });
            let entry = billing::Entry {
                user_id,
                amount_minor: amount,
                currency: Some(currency),
                external_id: &event.id,
                metadata: meta,
            };
            billing::record(tx, event, entry).await?;
        }
        let mut applied = Applied::for_user(user_id);
        if let (Some(prepared), Some(user), Some(customer)) = (&prepared, user_id, &pi.customer) {
            provision::link_customer(tx, user, customer, Some(&prepared.buyer.email)).await?;
            applied.linked_customer = Some(customer.clone());
        }
        applied.note = user_id
            .is_none()
            .then(|| "buyer not known yet: stored unlinked".to_owned());
        Ok(applied)
    }
}
