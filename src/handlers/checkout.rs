//! checkout.session.completed / async_payment_succeeded: the buyer becomes a user with a
//! profile, customer mapping and account; a one-time payment becomes a succeeded payment
//! intent (whose voucher the SQL trigger issues).

use deadpool_postgres::Transaction;
use serde::Deserialize;

use super::object::{expandable_id, metadata};
use super::payment_intent::{upsert, IntentFacts};
use super::{billing, Applied, HandlerContext, HandlerError, Prepared};
use crate::email::Email;
use crate::envelope::EventEnvelope;
use crate::provision::{self, Buyer};

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
    pub subscription: Option<String>,
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

/// Before the transaction: the buyer's email (`customer_details.email`, else the prefilled
/// `customer_email`, else the Stripe customer's) and, with the admin API, their auth user.
pub async fn prepare(
    ctx: &HandlerContext,
    client: &impl deadpool_postgres::GenericClient,
    event: &EventEnvelope,
) -> Result<Prepared, HandlerError> {
    let s: Session = event
        .object_as()
        .map_err(|e| HandlerError::invalid("checkout session", e))?;
    if !s.is_paid() {
        return Ok(Prepared::default());
    }
    let details = s.customer_details.unwrap_or_default();
    let mut name = details.name.filter(|n| !n.trim().is_empty());
    let mut email = details
        .email
        .as_deref()
        .or(s.customer_email.as_deref())
        .and_then(Email::parse);
    if email.is_none() {
        let Some(customer) = &s.customer else {
            return Err(HandlerError::invalid(
                "checkout session",
                "no buyer email and no customer",
            ));
        };
        let Some(api) = &ctx.stripe else {
            return Err(HandlerError::NotYet(format!(
                "no buyer email in session {}: set STRIPE_SECRET_KEY to look up customer {customer}",
                s.id
            )));
        };
        let contact = api.customer(customer).await?;
        email = contact.email.as_deref().and_then(Email::parse);
        name = name.or(contact.name);
        if email.is_none() {
            return Err(HandlerError::NotYet(format!(
                "Stripe customer {customer} has no email"
            )));
        }
    }
    let buyer = Buyer {
        email: email.expect("checked above"),
        name,
        stripe_customer: s.customer.clone(),
    };
    Prepared::for_buyer(ctx, client, buyer).await
}

pub async fn completed(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    prepared: &Prepared,
) -> Result<Applied, HandlerError> {
    let s: Session = event
        .object_as()
        .map_err(|e| HandlerError::invalid("checkout session", e))?;
    if !s.is_paid() {
        return Ok(Applied::note(format!(
            "session {} is {}: provisioning waits for the payment",
            s.id,
            s.payment_status.as_deref().unwrap_or("unpaid")
        )));
    }
    let buyer = prepared
        .buyer
        .as_ref()
        .ok_or_else(|| HandlerError::NotYet("buyer not resolved".into()))?;
    let user_id =
        provision::provision(tx, buyer, prepared.auth_user, prepared.confirm_email).await?;
    let mut applied = Applied {
        user_id: Some(user_id),
        ..Applied::default()
    };
    match s.mode.as_deref() {
        Some("payment") | None => {
            // A session with nothing to pay has no payment intent; it is keyed by the session.
            let intent = s.payment_intent.clone().unwrap_or_else(|| s.id.clone());
            let price_id = s.metadata.get("price_id").and_then(|v| v.as_str());
            upsert(
                tx,
                &IntentFacts {
                    stripe_id: &intent,
                    status: "succeeded",
                    amount: s.amount_total.unwrap_or(0),
                    currency: s.currency.as_deref().unwrap_or("usd"),
                    user_id: Some(user_id),
                    receipt_email: Some(buyer.email.as_str()),
                    stripe_customer: s.customer.as_deref(),
                    price_id,
                },
            )
            .await?;
            billing::attribute(tx, user_id, &intent).await?;
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
    }
    Ok(applied)
}
