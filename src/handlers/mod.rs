//! The handler registry: the one place that maps Stripe event types to handlers.
//!
//! A handler reads `data.object` into its own narrow, lenient type and writes facts inside the
//! event's transaction (a savepoint). It never commits; an error rolls its writes back.

mod catalog;
pub mod object;
mod ordering;

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::envelope::EventEnvelope;

/// Dependencies handlers may call besides the database.
#[derive(Debug, Default)]
pub struct HandlerContext {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Product,
    Price,
}

/// Event type -> handler. Types not listed are recorded and `ignored` (answered 200), never
/// rejected: Stripe disables endpoints that keep failing.
pub fn route(event_type: &str) -> Option<Handler> {
    Some(match event_type {
        "product.created" | "product.updated" | "product.deleted" => Handler::Product,
        "price.created" | "price.updated" | "price.deleted" => Handler::Price,
        _ => return None,
    })
}

pub async fn run(
    handler: Handler,
    _ctx: &HandlerContext,
    tx: &Transaction<'_>,
    event: &EventEnvelope,
) -> Result<Applied, HandlerError> {
    match handler {
        Handler::Product => catalog::product(tx, event).await,
        Handler::Price => catalog::price(tx, event).await,
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
    #[error("database error: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

impl HandlerError {
    pub fn invalid(object: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Invalid {
            object,
            reason: e.to_string(),
        }
    }
}
