//! Ingestion: the event log (`stripe_webhook_events`) and its state machine. An event is
//! stored and its effects applied in one transaction.
//!
//! Live path: the handler's `prepare` runs first, outside any transaction and holding no
//! connection while it calls Stripe or Supabase Auth. Then one pipelined batch opens the
//! transaction, looks the id up (a finished one is a duplicate; one waiting for a retry is
//! taken over) and opens a savepoint, `apply` runs, and a first delivery's row is inserted with
//! its final status, COMMIT right behind it, so it is written once and never updated (see
//! `attempt`). Concurrent deliveries of one id take turns (a transaction-scoped advisory lock
//! on the id, first after BEGIN): the later ones find the row stored and are answered
//! `duplicate` without running the handler. Should one still meet the row at its final insert
//! (another writer inserted it without the lock), the insert fails, the COMMIT behind it rolls
//! the whole attempt back, and it is answered `duplicate` too. If the commit itself fails
//! nothing was stored and the caller answers 503, so Stripe delivers again.
//!
//! Errors are classified once: a handler error is retried with backoff (`NotYet`, `External`,
//! `Database`) or is fatal (`Invalid`: the row is `dead` at once, logged at ERROR, and replayed
//! after a fix); only an unreachable database is the caller's problem (`IngestError`).
//!
//! Round trips are the cost that counts (each one wakes a backend on a busy database): BEGIN,
//! the look-up, the retake of a waiting row and the savepoint go out as one pipelined batch, the
//! final write and COMMIT as another (`db::EventTx`), and the status check before any work is
//! made only for an id this process received before (`recent`), which answers a redelivery
//! with that one probe, shared by the redeliveries that arrive together (`finished`).

mod attempt;
mod backoff;
mod finished;
mod recent;
mod replay;
pub mod report;
mod sql;
mod status;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tracing::Instrument;
use uuid::Uuid;

pub use backoff::retry_delay;
use finished::FinishedProbe;
use recent::RecentIds;
pub use replay::{NotSelected, ReplayCandidate, ReplayFilter, ReplayOutcome};
pub use status::{Attempt, DeliveryStatus, Status};

use self::attempt::{Plan, Row, SAVEPOINT};
use self::sql::NewEvent;
use crate::config::{PipelineSettings, RetrySettings};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;
use crate::handlers::{self, HandlerError, PrepareContext, Route, Services};
use crate::metrics::Metrics;
use crate::stripe_api::StripeApi;
use crate::supabase_auth::AuthAdmin;

/// The database is out of reach: nothing about the event is known to be stored. A delivery is
/// answered 503 (Stripe delivers again); the retrier and the CLI try later.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database unavailable: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
}

impl IngestError {
    /// Whether the database is really out of reach (what the outage metric counts), rather
    /// than answering with an error of its own (a conflict, a timeout, a schema problem).
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            Self::Database(e) => {
                matches!(sqlstate_class(e), None | Some("08" | "53" | "57" | "58"))
            }
        }
    }

    /// Why PostgreSQL refuses the event's data itself (SQLSTATE class 22, e.g. a number beyond
    /// `numeric`): such an event can never be stored as it is, so redelivering it is pointless.
    pub fn unstorable_reason(&self) -> Option<String> {
        match self {
            Self::Database(e) if sqlstate_class(e) == Some("22") => Some(crate::db::describe(e)),
            _ => None,
        }
    }

    /// The pipeline's error for a handler error that means the database is out of reach; any
    /// other handler error stays the event's.
    fn from_handler(e: HandlerError) -> Result<Self, HandlerError> {
        match e {
            HandlerError::Pool(e) => Ok(Self::Pool(e)),
            HandlerError::Database(e) if crate::db::connection_lost(&e) => Ok(Self::Database(e)),
            other => Err(other),
        }
    }
}

fn sqlstate_class(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| &db.code().code()[..2])
}

/// What became of a row the retrier or `replay` claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimedOutcome {
    /// Attempted; the row now has `attempt.status`.
    Attempted(Attempt),
    /// Another worker took the row over (our lease had run out).
    LeaseLost,
    /// The stored `event_data` does not parse (edited by hand): the row is now `dead`.
    Unreadable,
}

/// Everything needed to process events; shared by the HTTP handler, the retrier and the CLI.
#[derive(Clone)]
pub struct Pipeline {
    pool: Pool,
    retry: RetrySettings,
    livemode: Option<bool>,
    worker_id: String,
    services: Arc<Services>,
    metrics: Arc<Metrics>,
    recent: Arc<RecentIds>,
    finished: Arc<FinishedProbe>,
}

impl Pipeline {
    /// A pipeline on its own pool (connections open lazily: this succeeds while the database is
    /// down) with the external APIs the settings configure.
    pub fn new(settings: &PipelineSettings) -> anyhow::Result<Self> {
        let pool = crate::db::pool(&settings.database)?;
        Ok(Self {
            finished: FinishedProbe::for_pool(pool.clone()),
            pool,
            retry: settings.retry.clone(),
            livemode: settings.livemode,
            worker_id: settings.worker_id.clone(),
            services: Arc::new(Services {
                stripe: settings
                    .stripe_api
                    .as_ref()
                    .map(StripeApi::new)
                    .transpose()?,
                auth_admin: settings
                    .supabase_auth
                    .as_ref()
                    .map(AuthAdmin::new)
                    .transpose()?,
                confirm_checkout_email: settings.provisioning.confirm_checkout_email,
            }),
            metrics: Arc::new(Metrics::default()),
            recent: Arc::new(RecentIds::new()),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How often the retrier looks for due events.
    pub fn poll_interval(&self) -> std::time::Duration {
        self.retry.poll_interval
    }

    /// Stores and processes one delivery (the webhook endpoint and `backfill`). `raw_body` is
    /// the body exactly as signed; `envelope` was parsed from its `envelope::storable` form.
    pub async fn deliver(
        &self,
        envelope: &EventEnvelope,
        raw_body: &str,
        request_id: &str,
    ) -> Result<DeliveryStatus, IngestError> {
        let work = async {
            // A redelivery of a finished event is answered from one index probe, before its
            // object is parsed, `prepare` calls out or a transaction opens (three round trips
            // and five statements). Only ids this process received before are probed, so a
            // first delivery does not pay for it; the transaction still tells the others.
            if self.recent.seen_before(&envelope.id)
                && self.finished.is_finished(&envelope.id).await?
            {
                return Ok(DeliveryStatus::Duplicate);
            }
            let plan = self.plan(envelope).await?;
            let client = self.pool.get().await?;
            let turn = client.prepare_cached(sql::LOCK_EVENT_ID).await?;
            let retake = client.prepare_cached(sql::RETAKE_WAITING).await?;
            let stored = client.prepare_cached(sql::CURRENT_STATUS).await?;
            let current = client.prepare_cached(sql::SET_CURRENT_EVENT).await?;
            // jsonb takes the storable form; the exact bytes are kept beside it when it differs.
            let storable = crate::envelope::storable(raw_body);
            let tx = EventTx::new(client);
            let row = match claim(&tx, [&turn, &retake, &stored, &current], &envelope.id).await? {
                Claim::Retaken {
                    row_id,
                    retry_count,
                } => Row::Stored {
                    row_id,
                    retry_count,
                },
                Claim::Taken => {
                    tx.commit().await?;
                    return Ok(DeliveryStatus::Duplicate);
                }
                Claim::New => Row::New(NewEvent {
                    stripe_event_id: &envelope.id,
                    event_type: &envelope.event_type,
                    event_raw_body: matches!(storable, std::borrow::Cow::Owned(_))
                        .then(|| raw_body.as_bytes()),
                    event_data: &storable,
                    livemode: envelope.livemode,
                    api_version: envelope.api_version.as_deref(),
                    event_created_at: envelope.created,
                    request_id,
                }),
            };
            let Some(attempt) = self.attempt(&tx, envelope, &row, plan).await? else {
                return Ok(DeliveryStatus::Duplicate);
            };
            self.record(envelope, &attempt);
            Ok(attempt.delivery_status())
        };
        work.instrument(attempt_span(envelope)).await
    }

    /// Processes one row the retrier or `replay` claimed (status `processing`, locked by us).
    pub async fn process_claimed(&self, row_id: Uuid) -> Result<ClaimedOutcome, IngestError> {
        let body = {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(sql::READ_CLAIMED).await?;
            match client.query_opt(&stmt, &[&row_id, &self.worker_id]).await? {
                Some(row) => row.get::<_, String>(0),
                None => return Ok(ClaimedOutcome::LeaseLost),
            }
        };
        let envelope = match EventEnvelope::parse(body.as_bytes()) {
            Ok(envelope) => envelope,
            Err(e) => {
                // Stored rows always parsed once; one edited by hand may not.
                self.mark_unreadable(row_id, &format!("stored event_data does not parse: {e}"))
                    .await?;
                return Ok(ClaimedOutcome::Unreadable);
            }
        };
        let work = async {
            let plan = self.plan(&envelope).await?;
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(sql::LOCK_CLAIMED).await?;
            let current = client.prepare_cached(sql::SET_CURRENT_EVENT).await?;
            let tx = EventTx::new(client);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                [&row_id, &self.worker_id];
            let id: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&envelope.id];
            let (begun, locked, current, savepoint) = futures_util::join!(
                tx.begin(),
                tx.query_opt(&stmt, &params),
                tx.execute(&current, &id),
                tx.batch_execute(SAVEPOINT)
            );
            begun?;
            let Some(row) = locked? else {
                tx.commit().await?;
                return Ok(ClaimedOutcome::LeaseLost);
            };
            current?;
            savepoint?;
            let stored = Row::Stored {
                row_id,
                retry_count: row.get(0),
            };
            // A stored row is always written.
            let Some(attempt) = self.attempt(&tx, &envelope, &stored, plan).await? else {
                return Ok(ClaimedOutcome::LeaseLost);
            };
            self.record(&envelope, &attempt);
            Ok(ClaimedOutcome::Attempted(attempt))
        };
        work.instrument(attempt_span(&envelope)).await
    }

    /// Claims up to `limit` rows that are due: failed and past `next_attempt_at`, pending, or
    /// processing with an expired lease (a crashed worker). SKIP LOCKED lets replicas share.
    pub async fn claim_due(&self, limit: i64) -> Result<Vec<Uuid>, IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::CLAIM_DUE).await?;
        let rows = client
            .query(&stmt, &[&self.worker_id, &self.lease_seconds(), &limit])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The handler for an event, or why there is none (the event is then `ignored`).
    fn route(&self, envelope: &EventEnvelope) -> Result<&'static dyn Route, Option<&'static str>> {
        if self
            .livemode
            .is_some_and(|expected| envelope.livemode != expected)
        {
            return Err(Some("livemode does not match STRIPE_LIVEMODE"));
        }
        if envelope.is_thin() {
            return Err(Some("thin event: no object snapshot"));
        }
        handlers::route(&envelope.event_type).ok_or(None)
    }

    /// Parses the object and runs the handler's `prepare`, before any transaction.
    async fn plan(&self, envelope: &EventEnvelope) -> Result<Plan, IngestError> {
        let route = match self.route(envelope) {
            Ok(route) => route,
            Err(reason) => return Ok(Plan::Ignore(reason)),
        };
        let cx = PrepareContext::new(&self.services, &self.pool);
        match route.prepare(envelope, &cx).await {
            Ok(prepared) => Ok(Plan::Apply(prepared)),
            Err(e) => IngestError::from_handler(e).map_or_else(|e| Ok(Plan::Fail(e)), Err),
        }
    }

    async fn mark_unreadable(&self, row_id: Uuid, message: &str) -> Result<(), IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::MARK_FAILED).await?;
        client
            .execute(
                &stmt,
                &[
                    &row_id,
                    &Status::Dead.as_str(),
                    &message,
                    &None::<DateTime<Utc>>,
                ],
            )
            .await?;
        tracing::error!(%row_id, error = message, "event is dead: its stored body does not parse");
        Ok(())
    }

    fn lease_seconds(&self) -> f64 {
        self.retry.lease.as_secs_f64()
    }

    fn record(&self, envelope: &EventEnvelope, attempt: &Attempt) {
        self.metrics
            .event_finished(&envelope.event_type, attempt.status.as_str());
        tracing::info!(
            status = attempt.status.as_str(),
            note = attempt.note.as_deref(),
            "event handled"
        );
    }
}

/// Where a delivered event stands before its attempt.
enum Claim {
    /// Not stored: its row is written when the attempt is over.
    New,
    /// Stored and waiting for a retry, now locked by this transaction.
    Retaken { row_id: Uuid, retry_count: i32 },
    /// Stored and finished, or held by another worker: a duplicate.
    Taken,
}

/// Opens the transaction and looks the delivered event up in one round trip: waits for its
/// turn (`LOCK_EVENT_ID`, held until commit, so concurrent deliveries of one id run one after
/// the other and the later ones find the row stored); takes over its row if it waits for a
/// retry and nobody holds it (Stripe's redelivery, a dashboard "resend", `RETAKE_WAITING`),
/// else tells whether it is stored at all; names the event for the SQL it runs and opens the
/// handler's savepoint. A delivery of the same id committed after these statements is found by
/// the final insert, which then fails and rolls the attempt back (`Pipeline::attempt` answers
/// `None`).
async fn claim(
    tx: &EventTx,
    [turn, retake, stored, current]: [&tokio_postgres::Statement; 4],
    event_id: &str,
) -> Result<Claim, tokio_postgres::Error> {
    let id: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&event_id];
    let (begun, turn, retaken, stored, current, savepoint) = futures_util::join!(
        tx.begin(),
        tx.execute(turn, &id),
        tx.query_opt(retake, &id),
        tx.query_opt(stored, &id),
        tx.execute(current, &id),
        tx.batch_execute(SAVEPOINT),
    );
    begun?;
    turn?;
    let (retaken, stored) = (retaken?, stored?);
    current?;
    savepoint?;
    Ok(match (retaken, stored) {
        (Some(row), _) => Claim::Retaken {
            row_id: row.get(0),
            retry_count: row.get(1),
        },
        (None, Some(_)) => Claim::Taken,
        (None, None) => Claim::New,
    })
}

/// The span of one attempt on one event (live, backfill, retrier or replay): its log lines
/// carry the event's id and type from here.
fn attempt_span(envelope: &EventEnvelope) -> tracing::Span {
    tracing::info_span!(
        "attempt",
        event_id = %envelope.id,
        event_type = %envelope.event_type
    )
}
