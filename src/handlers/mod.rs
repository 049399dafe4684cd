//! The handler registry: the one place that maps Stripe event types to handlers.
//!
//! A handler reads `data.object` into its own narrow, lenient type and writes facts inside the
//! event's transaction (a savepoint). It never commits; an error rolls its writes back.

mod billing;
mod catalog;
mod charge;
mod checkout;
mod customer;
mod invoice;
pub mod object;
mod ordering;
mod payment_intent;
mod payment_method;
mod subscription;

use deadpool_postgres::GenericClient;
use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::envelope::EventEnvelope;
use crate::provision::Buyer;
use crate::stripe_api::StripeApi;
use crate::supabase_auth::AuthAdmin;

/// Dependencies handlers may call besides the database (both optional, by configuration).
#[derive(Debug, Default)]
pub struct HandlerContext {
    pub stripe: Option<StripeApi>,
    pub auth_admin: Option<AuthAdmin>,
    /// AUTH_CONFIRM_CHECKOUT_EMAIL: auth users created for a buyer count as confirmed.
    pub confirm_checkout_email: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Product,
    Price,
    CheckoutCompleted,
    PaymentIntent,
    Charge,
    PaymentMethod,
    Customer,
    Subscription,
    Invoice,
}

/// Event type -> handler. Types not listed are recorded and `ignored` (answered 200), never
/// rejected: Stripe disables endpoints that keep failing.
pub fn route(event_type: &str) -> Option<Handler> {
    Some(match event_type {
        "product.created" | "product.updated" | "product.deleted" => Handler::Product,
        "price.created" | "price.updated" | "price.deleted" => Handler::Price,
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            Handler::CheckoutCompleted
        }
        "payment_intent.succeeded"
        | "payment_intent.processing"
        | "payment_intent.payment_failed"
        | "payment_intent.canceled" => Handler::PaymentIntent,
        "charge.succeeded" | "charge.updated" | "charge.refunded" => Handler::Charge,
        "payment_method.attached"
        | "payment_method.updated"
        | "payment_method.automatically_updated"
        | "payment_method.detached" => Handler::PaymentMethod,
        "customer.created" | "customer.updated" | "customer.deleted" => Handler::Customer,
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed"
        | "customer.subscription.pending_update_applied"
        | "customer.subscription.trial_will_end" => Handler::Subscription,
        "invoice.paid" | "invoice.payment_succeeded" | "invoice.payment_failed" => Handler::Invoice,
        _ => return None,
    })
}

/// What a handler resolved before the event's transaction (external calls never run while
/// the transaction holds locks).
#[derive(Debug, Default)]
pub struct Prepared {
    pub buyer: Option<Buyer>,
    /// The auth user created or found through the Supabase Auth admin API.
    pub auth_user: Option<Uuid>,
    /// Whether an auth user created for the buyer counts as confirmed.
    pub confirm_email: bool,
}

impl Prepared {
    /// A resolved buyer, with their auth user when Supabase Auth's admin API is configured.
    pub async fn for_buyer(
        ctx: &HandlerContext,
        client: &impl GenericClient,
        buyer: Buyer,
    ) -> Result<Self, HandlerError> {
        let auth_user = crate::provision::prepare_auth_user(ctx, client, &buyer).await?;
        Ok(Self {
            buyer: Some(buyer),
            auth_user,
            confirm_email: ctx.confirm_checkout_email,
        })
    }
}

/// Whether the handler has a `prepare` step (which may call Stripe or Supabase Auth).
pub fn has_prepare_step(handler: Handler) -> bool {
    matches!(
        handler,
        Handler::CheckoutCompleted | Handler::PaymentIntent | Handler::Subscription
    )
}

/// The part of a handler that may call Stripe or Supabase Auth; runs outside the transaction.
pub async fn prepare(
    handler: Handler,
    ctx: &HandlerContext,
    client: &impl GenericClient,
    event: &EventEnvelope,
) -> Result<Prepared, HandlerError> {
    match handler {
        Handler::CheckoutCompleted => checkout::prepare(ctx, client, event).await,
        Handler::PaymentIntent => payment_intent::prepare(ctx, client, event).await,
        Handler::Subscription => subscription::prepare(ctx, client, event).await,
        _ => Ok(Prepared::default()),
    }
}

pub async fn run(
    handler: Handler,
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    prepared: &Prepared,
) -> Result<Applied, HandlerError> {
    match handler {
        Handler::Product => catalog::product(tx, event).await,
        Handler::Price => catalog::price(tx, event).await,
        Handler::CheckoutCompleted => checkout::completed(tx, event, prepared).await,
        Handler::PaymentIntent => payment_intent::changed(tx, event, prepared).await,
        Handler::Charge => charge::changed(tx, event).await,
        Handler::PaymentMethod => payment_method::changed(tx, event).await,
        Handler::Customer => customer::changed(tx, event).await,
        Handler::Subscription => subscription::changed(tx, event, prepared).await,
        Handler::Invoice => invoice::changed(tx, event).await,
    }
}

/// What a handler did, for the event row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The user the event concerned (`stripe_webhook_events.user_id`).
    pub user_id: Option<Uuid>,
    pub old_tier: Option<String>,
    pub new_tier: Option<String>,
    /// Why nothing or something unusual happened (e.g. a stale snapshot was skipped).
    pub note: Option<String>,
}

impl Applied {
    pub fn note(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The object lacks what the handler needs; retrying will not help until code or data change.
    #[error("invalid {object}: {reason}")]
    Invalid {
        object: &'static str,
        reason: String,
    },
    /// Depends on something that has not arrived yet (e.g. the customer mapping): retried.
    #[error("not yet applicable: {0}")]
    NotYet(String),
    /// Stripe's or Supabase Auth's API failed: retried.
    #[error("{0}")]
    External(String),
    #[error("database error: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

impl From<crate::stripe_api::StripeApiError> for HandlerError {
    fn from(e: crate::stripe_api::StripeApiError) -> Self {
        Self::External(e.to_string())
    }
}

impl HandlerError {
    pub fn invalid(object: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Invalid {
            object,
            reason: e.to_string(),
        }
    }
}
