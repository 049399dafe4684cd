//! What a handler is: the `Handler` trait, what it may use (`Services`, `PrepareContext`),
//! what it reports (`Applied`, `HandlerError`), and the type-erased form the registry holds.
//!
//! An event is handled in two steps. `prepare` runs before the event's transaction and is the
//! only place for external calls (Stripe, Supabase Auth); it holds no database connection while
//! it waits on them. `apply` runs inside the transaction, after a savepoint, and writes facts.
//! The object is parsed once, before `prepare`, and handed to both.

use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::Pool;
use serde::de::DeserializeOwned;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::config::ConfirmCheckoutEmail;
use crate::db::EventTx;
use crate::envelope::EventEnvelope;
use crate::stripe_api::StripeApi;
use crate::supabase_auth::AuthAdmin;

/// One Stripe object's handler. A new handler is a unit struct implementing this trait in its
/// own file, plus its line in the registry (`handlers/mod.rs`).
pub trait Handler: Sync + 'static {
    /// `data.object` as this handler reads it: its own narrow, lenient type (see
    /// `handlers::object`), never a version-pinned Stripe struct.
    type Object: DeserializeOwned + Send + Sync + 'static;
    /// What `prepare` resolved; `()` for a handler without a prepare step.
    type Prepared: Default + Send + 'static;

    /// Names the object in errors ("invalid checkout session: …").
    const OBJECT: &'static str;
    /// The event types routed to this handler.
    const EVENT_TYPES: &'static [&'static str];

    /// Before the event's transaction. External calls go here and nowhere else; database
    /// look-ups go through `cx`, which takes a pooled connection per query and returns it at
    /// once, so a hung dependency never holds a connection.
    fn prepare(
        &self,
        object: &Self::Object,
        event: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> impl Future<Output = Result<Self::Prepared, HandlerError>> + Send {
        let _ = (object, event, cx);
        async { Ok(Self::Prepared::default()) }
    }

    /// Inside the event's transaction: writes the facts. Never commits; an error rolls this
    /// handler's writes back (the event is then retried, or dead when the error is `Invalid`).
    fn apply(
        &self,
        object: Self::Object,
        prepared: Self::Prepared,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> impl Future<Output = Result<Applied, HandlerError>> + Send;
}

/// Dependencies handlers may call besides the database (both optional, by configuration).
#[derive(Debug, Default)]
pub struct Services {
    pub stripe: Option<StripeApi>,
    pub auth_admin: Option<AuthAdmin>,
    /// AUTH_CONFIRM_CHECKOUT_EMAIL: whether auth users created for a buyer count as confirmed.
    pub confirm_checkout_email: ConfirmCheckoutEmail,
}

/// What `prepare` may use: the external APIs, and database look-ups that each take a pooled
/// connection only for the query.
pub struct PrepareContext<'a> {
    pub stripe: Option<&'a StripeApi>,
    pub auth_admin: Option<&'a AuthAdmin>,
    /// Whether an auth user created for a buyer counts as confirmed.
    pub confirm_checkout_email: ConfirmCheckoutEmail,
    pool: &'a Pool,
}

impl<'a> PrepareContext<'a> {
    pub fn new(services: &'a Services, pool: &'a Pool) -> Self {
        Self {
            stripe: services.stripe.as_ref(),
            auth_admin: services.auth_admin.as_ref(),
            confirm_checkout_email: services.confirm_checkout_email,
            pool,
        }
    }

    /// One prepared (cached) query on a connection that goes back to the pool right after.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, HandlerError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, params).await?)
    }
}

/// What a handler did, for the event row and for the pipeline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The user the event concerned (`stripe_webhook_events.user_id`).
    pub user_id: Option<Uuid>,
    pub old_tier: Option<String>,
    pub new_tier: Option<String>,
    /// Why nothing or something unusual happened (e.g. a stale snapshot was skipped).
    pub note: Option<String>,
    /// A Stripe customer this event mapped to a user: events waiting for that mapping are
    /// retried at once instead of after their backoff.
    pub linked_customer: Option<String>,
    /// Nothing to apply and nothing to wait for (e.g. a subscription that was never paid, of a
    /// customer nobody knows): the event is recorded as `ignored` with the note.
    pub ignored: bool,
}

impl Applied {
    pub fn note(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
            ..Self::default()
        }
    }

    pub fn ignored(note: impl Into<String>) -> Self {
        Self {
            note: Some(note.into()),
            ignored: true,
            ..Self::default()
        }
    }

    pub fn for_user(user_id: Option<Uuid>) -> Self {
        Self {
            user_id,
            ..Self::default()
        }
    }
}

/// Why a handler did not apply an event. `Invalid` is fatal (retrying cannot help until code or
/// data change: the event is dead at once and replayed after the fix); every other kind is
/// retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The object lacks what the handler needs.
    #[error("invalid {object}: {reason}")]
    Invalid {
        object: &'static str,
        reason: String,
    },
    /// Depends on something that has not arrived yet (e.g. the customer mapping).
    #[error("not yet applicable: {0}")]
    NotYet(String),
    /// Stripe's or Supabase Auth's API failed or timed out.
    #[error("{0}")]
    External(String),
    #[error("database error: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection for a look-up in `prepare`.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl From<crate::stripe_api::StripeApiError> for HandlerError {
    fn from(e: crate::stripe_api::StripeApiError) -> Self {
        Self::External(e.to_string())
    }
}

impl From<crate::supabase_auth::AuthAdminError> for HandlerError {
    fn from(e: crate::supabase_auth::AuthAdminError) -> Self {
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

    /// Retrying may help (everything but `Invalid`).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Invalid { .. })
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler with its types erased, as the registry holds it.
pub trait Route: Sync {
    fn event_types(&self) -> &'static [&'static str];
    /// Parses the object and runs `prepare`.
    fn prepare<'a>(
        &'static self,
        event: &'a EventEnvelope,
        cx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<Prepared, HandlerError>>;
}

impl<H: Handler> Route for H {
    fn event_types(&self) -> &'static [&'static str] {
        H::EVENT_TYPES
    }

    fn prepare<'a>(
        &'static self,
        event: &'a EventEnvelope,
        cx: &'a PrepareContext<'a>,
    ) -> BoxFuture<'a, Result<Prepared, HandlerError>> {
        Box::pin(async move {
            let object: H::Object = event
                .object_as()
                .map_err(|e| HandlerError::invalid(H::OBJECT, e))?;
            let prepared = self.prepare(&object, event, cx).await?;
            Ok(Prepared(Box::new(Ready {
                handler: self,
                object,
                prepared,
            })))
        })
    }
}

/// A parsed and prepared event, waiting for its transaction.
pub struct Prepared(Box<dyn ApplyOnce>);

impl Prepared {
    pub async fn apply(self, event: &EventEnvelope, tx: &EventTx) -> Result<Applied, HandlerError> {
        self.0.apply(event, tx).await
    }
}

trait ApplyOnce: Send {
    fn apply<'a>(
        self: Box<Self>,
        event: &'a EventEnvelope,
        tx: &'a EventTx,
    ) -> BoxFuture<'a, Result<Applied, HandlerError>>;
}

struct Ready<H: Handler> {
    handler: &'static H,
    object: H::Object,
    prepared: H::Prepared,
}

impl<H: Handler> ApplyOnce for Ready<H> {
    fn apply<'a>(
        self: Box<Self>,
        event: &'a EventEnvelope,
        tx: &'a EventTx,
    ) -> BoxFuture<'a, Result<Applied, HandlerError>> {
        let Ready {
            handler,
            object,
            prepared,
        } = *self;
        Box::pin(handler.apply(object, prepared, event, tx))
    }
}
