//! checkout.session.completed / async_payment_succeeded (Checkout and Payment Links): the buyer
//! becomes a user with a profile, customer mapping and account; a one-time payment becomes a
//! succeeded payment intent marked as bought through this session, with the price its metadata
//! names (what it grants is derived in SQL); a subscription gets its owner.

use serde::Deserialize;

use super::object::{expandable_id, metadata};
use super::payment_intent::{upsert, IntentRow};
use super::provision::{self, PreparedBuyer};
use super::{Applied, Handler, HandlerError, PrepareContext};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct Session {
    id: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    customer_details: Option<CustomerDetails>,
    #[serde(default)]
    customer_email: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    payment_intent: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
    #[serde(default)]
    amount_total: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

#[derive(Deserialize, Default)]
struct CustomerDetails {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Session {
    /// Async methods (bank debits) complete the session unpaid; provisioning waits for
    /// checkout.session.async_payment_succeeded.
    fn is_paid(&self) -> bool {
        matches!(
            self.payment_status.as_deref(),
            Some("paid" | "no_payment_required")
        )
    }
}

pub struct CheckoutCompleted;

/// What `prepare` found: the buyer, and (when the session's metadata does not name it) the
/// price its first line item sold, from Stripe's API.
#[derive(Default)]
pub struct Sale {
    buyer: Option<PreparedBuyer>,
    price_from_line_items: Option<String>,
}

impl Session {
    fn metadata_price(&self) -> Option<&str> {
        self.metadata.get("price_id").and_then(|v| v.as_str())
    }
}

impl Handler for CheckoutCompleted {
    type Object = Session;
    type Prepared = Sale;
    const OBJECT: &'static str = "checkout session";
    const EVENT_TYPES: &'static [&'static str] = &[
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
    ];

    /// The buyer's email (`customer_details.email`, else the prefilled `customer_email`, else
    /// the directory's or Stripe's for the session's customer) and, with the admin API, their
    /// auth user; for a one-time payment whose metadata names no price, the price of its first
    /// line item (with STRIPE_SECRET_KEY: the webhook's session does not list them).
    async fn prepare(
        &self,
        s: &Session,
        _: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Sale, HandlerError> {
        if !s.is_paid() {
            return Ok(Sale::default());
        }
        let buyer = buyer(s, cx).await?;
        let price_from_line_items = match (s.mode.as_deref(), s.metadata_price(), cx.stripe) {
            (Some("payment") | None, None, Some(api)) => api
                .checkout_line_items(&s.id)
                .await?
                .into_iter()
                .find_map(|item| item.price),
            _ => None,
        };
        Ok(Sale {
            buyer,
            price_from_line_items,
        })
    }

    async fn apply(
        &self,
        s: Session,
        sale: Sale,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        if !s.is_paid() {
            return Ok(Applied::note(format!(
                "session {} is {}: provisioning waits for the payment",
                s.id,
                s.payment_status.as_deref().unwrap_or("unpaid")
            )));
        }
        let prepared = sale
            .buyer
            .ok_or_else(|| HandlerError::NotYet("buyer not resolved".into()))?;
        let buyer = &prepared.buyer;
        let user_id = provision::provision(tx, &prepared).await?;
        let mut applied = Applied::for_user(Some(user_id));
        match s.mode.as_deref() {
            Some("payment") | None => {
                // A session with nothing to pay has no payment intent; it is keyed by the session.
                let intent = s.payment_intent.clone().unwrap_or_else(|| s.id.clone());
                let price_id = s.metadata_price().or(sale.price_from_line_items.as_deref());
                upsert(
                    tx,
                    &IntentRow {
                        stripe_id: &intent,
                        status: "succeeded",
                        amount: s.amount_total.unwrap_or(0),
                        currency: s.currency.as_deref().unwrap_or("usd"),
                        user_id: Some(user_id),
                        receipt_email: Some(buyer.email.as_str()),
                        stripe_customer: s.customer.as_deref(),
                        price_id,
                        checkout_session: Some(&s.id),
                        paid_at: event.created,
                        authoritative: false,
                        livemode: event.livemode,
                    },
                )
                .await?;
            }
            Some("subscription") => {
                if let Some(sub) = &s.subscription {
                    super::subscription::link_to_user(tx, sub, user_id).await?;
                }
            }
            Some(other) => {
                applied.note = Some(format!("mode {other}: buyer provisioned, nothing bought"))
            }
        }
        if let Some(customer) = &s.customer {
            provision::link_customer(tx, user_id, customer, Some(&buyer.email)).await?;
            applied.linked_customer = Some(customer.clone());
        }
        Ok(applied)
    }
}

/// The session's buyer, prepared (see `provision::prepare_buyer`).
async fn buyer(
    s: &Session,
    cx: &PrepareContext<'_>,
) -> Result<Option<PreparedBuyer>, HandlerError> {
    let details = s.customer_details.as_ref();
    let email = details
        .and_then(|d| d.email.as_deref())
        .or(s.customer_email.as_deref());
    let name = details.and_then(|d| d.name.as_deref());
    match provision::find_buyer(cx, s.customer.as_deref(), email, name).await? {
        Some(buyer) => provision::prepare_buyer(cx, buyer).await,
        None => match &s.customer {
            None => Err(HandlerError::invalid(
                "checkout session",
                "no buyer email and no customer",
            )),
            Some(customer) if cx.stripe.is_none() => Err(HandlerError::NotYet(format!(
                "no buyer email in session {}: waiting for customer {customer}'s email (or set STRIPE_SECRET_KEY to look it up)",
                s.id
            ))),
            Some(customer) => Err(HandlerError::NotYet(format!(
                "Stripe customer {customer} has no email"
            ))),
        },
    }
}
