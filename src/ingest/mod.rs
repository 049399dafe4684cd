//! Ingestion: store an event and apply its effects in one transaction.
//!
//! Live path: `INSERT … ON CONFLICT DO NOTHING` claims the event id (a concurrent delivery of
//! the same id waits on the unique index and then sees it stored), the handler runs after a
//! savepoint, and the final status commits together with the effects. A handler error rolls
//! back to the savepoint, so a `failed` row carries no partial effects. If the commit itself
//! fails nothing was stored and the caller answers 503, so Stripe delivers again.
//!
//! Round trips are the cost that counts (each one wakes a backend on a busy database): the
//! claim, the retake of a waiting row and the savepoint go out as one pipelined batch, the
//! savepoint is never released (COMMIT ends it), and the status check before any work is
//! made only where `prepare` may call an external API.

mod backoff;
mod build;
mod replay;
mod sql;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use uuid::Uuid;

pub use backoff::retry_delay;
pub use replay::{NotSelected, ReplayCandidate, ReplayFilter, ReplayOutcome};

/// The handler runs after this savepoint; an error rolls back to it.
const SAVEPOINT: &str = "savepoint handler";
const ROLLBACK_TO_SAVEPOINT: &str = "rollback to savepoint handler";

use crate::config::RetrySettings;
use crate::envelope::EventEnvelope;
use crate::handlers::{self, Applied, HandlerContext, HandlerError, Prepared};
use crate::metrics::Metrics;

/// `processing_status` values (the contract's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Processing,
    Processed,
    Ignored,
    Failed,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Failed => "failed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "processing" => Self::Processing,
            "processed" => Self::Processed,
            "ignored" => Self::Ignored,
            "failed" => Self::Failed,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// What a delivery is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Processed,
    Ignored,
    Duplicate,
    /// Stored, retry scheduled (also when the attempts ran out: the row is `dead`).
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Nothing is known to be stored: Stripe must deliver again.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error of its own (a conflict, a timeout, a schema
    /// problem): nothing stored, a later delivery may succeed; not an outage.
    #[error("database error: {0}")]
    Database(String),
    /// PostgreSQL refuses the event's data itself (SQLSTATE class 22, e.g. a number beyond
    /// `numeric`): it can never be stored as it is, so redelivering it is pointless.
    #[error("PostgreSQL cannot store this event: {0}")]
    Unstorable(String),
}

impl IngestError {
    /// Whether the database is really out of reach (what the outage metric counts).
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for IngestError {
    fn from(e: tokio_postgres::Error) -> Self {
        let described = crate::db::describe(&e);
        match e.as_db_error().map(|db| &db.code().code()[..2]) {
            // No answer at all, connection exceptions, resources, operator intervention.
            None | Some("08" | "53" | "57" | "58") => Self::Unavailable(described),
            Some("22") => Self::Unstorable(described),
            Some(_) => Self::Database(described),
        }
    }
}

impl From<deadpool_postgres::PoolError> for IngestError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// The outcome of one attempt on one stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub status: Status,
    pub error: Option<String>,
    pub note: Option<String>,
}

/// Everything needed to process events; shared by the HTTP handler, the retrier and the CLI.
#[derive(Clone)]
pub struct Pipeline {
    pub pool: Pool,
    pub retry: RetrySettings,
    pub livemode: Option<bool>,
    pub worker_id: String,
    pub handlers: Arc<HandlerContext>,
    pub metrics: Arc<Metrics>,
}

/// A stored row being worked on.
pub struct Claimed {
    pub row_id: Uuid,
    pub retry_count: i32,
}

impl Pipeline {
    /// Stores and processes one delivery (the webhook endpoint and `backfill`). `raw_body` is
    /// the body exactly as signed; `envelope` was parsed from its `envelope::storable` form.
    pub async fn deliver(
        &self,
        envelope: &EventEnvelope,
        raw_body: &str,
        request_id: &str,
    ) -> Result<DeliveryStatus, IngestError> {
        let mut client = self.pool.get().await?;
        // Fast path: a redelivery of a finished event touches nothing. Worth a round trip only
        // where `prepare` may call Stripe or Supabase Auth; otherwise the INSERT below tells.
        if self.prepare_calls_out(envelope) {
            let stmt = client.prepare_cached(sql::CURRENT_STATUS).await?;
            if let Some(row) = client.query_opt(&stmt, &[&envelope.id]).await? {
                let status: &str = row.get(0);
                if matches!(
                    Status::parse(status),
                    Some(Status::Processed | Status::Ignored | Status::Dead)
                ) {
                    return Ok(DeliveryStatus::Duplicate);
                }
            }
        }
        let prepared = self.prepare(&client, envelope).await?;
        let insert = client.prepare_cached(sql::INSERT_PROCESSING).await?;
        let retake = client.prepare_cached(sql::RETAKE_WAITING).await?;
        let tx = client.transaction().await?;
        let lease = self.lease_seconds();
        // jsonb takes the storable form; the exact bytes are kept beside it when that differs.
        let storable = crate::envelope::storable(raw_body);
        let raw_kept = matches!(storable, std::borrow::Cow::Owned(_)).then(|| raw_body.as_bytes());
        let event_data: &str = &storable;
        // One round trip: claim the id; failing that, take over a row waiting for a retry that
        // nobody holds (Stripe's redelivery, a dashboard "resend"); then the handler's
        // savepoint. RETAKE runs after INSERT with its own snapshot, so it sees a row another
        // delivery committed meanwhile, and never matches our own fresh row (lease in future).
        let row: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
            &envelope.id,
            &envelope.event_type,
            &event_data,
            &envelope.livemode,
            &envelope.api_version,
            &envelope.created,
            &request_id,
            &self.worker_id,
            &lease,
            &raw_kept,
        ];
        let id: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&envelope.id];
        let (inserted, retaken, savepoint) = futures_util::join!(
            tx.query_opt(&insert, &row),
            tx.query_opt(&retake, &id),
            tx.batch_execute(SAVEPOINT),
        );
        let (inserted, retaken) = (inserted?, retaken?);
        savepoint?;
        let claimed = match (inserted, retaken) {
            (Some(row), _) => Claimed {
                row_id: row.get(0),
                retry_count: 0,
            },
            (None, Some(row)) => Claimed {
                row_id: row.get(0),
                retry_count: row.get(1),
            },
            (None, None) => {
                tx.commit().await?;
                return Ok(DeliveryStatus::Duplicate);
            }
        };
        let attempt = self.attempt(&tx, envelope, &claimed, prepared).await?;
        tx.commit().await?;
        self.record(envelope, &attempt);
        Ok(match attempt.status {
            Status::Processed => DeliveryStatus::Processed,
            Status::Ignored => DeliveryStatus::Ignored,
            _ => DeliveryStatus::Failed,
        })
    }

    /// Runs the handler for a claimed row inside `tx` and writes the row's new status there.
    /// The caller has opened the savepoint `handler` right after claiming the row.
    pub async fn attempt(
        &self,
        tx: &Transaction<'_>,
        envelope: &EventEnvelope,
        claimed: &Claimed,
        prepared: Result<Prepared, HandlerError>,
    ) -> Result<Attempt, tokio_postgres::Error> {
        let started = std::time::Instant::now();
        let decision = self.decide(tx, envelope, prepared).await?;
        let attempt = match decision {
            Err(handler_error) => {
                let attempts = claimed.retry_count + 1;
                let (status, next) = if attempts >= self.retry.max_attempts {
                    (Status::Dead, None)
                } else {
                    let delay = retry_delay(&self.retry, attempts);
                    (Status::Failed, Some(Utc::now() + delay))
                };
                let stmt = tx.prepare_cached(sql::MARK_FAILED).await?;
                tx.execute(
                    &stmt,
                    &[&claimed.row_id, &status.as_str(), &handler_error, &next],
                )
                .await?;
                if status == Status::Dead {
                    tracing::error!(
                        event_id = %envelope.id,
                        event_type = %envelope.event_type,
                        attempts,
                        error = %handler_error,
                        "event is dead: no more automatic retries"
                    );
                } else {
                    tracing::warn!(
                        event_id = %envelope.id,
                        event_type = %envelope.event_type,
                        attempts,
                        error = %handler_error,
                        next_attempt_at = ?next,
                        "event failed; retry scheduled"
                    );
                }
                Attempt {
                    status,
                    error: Some(handler_error),
                    note: None,
                }
            }
            Ok((status, applied)) => {
                let stmt = tx.prepare_cached(sql::MARK_DONE).await?;
                tx.execute(
                    &stmt,
                    &[
                        &claimed.row_id,
                        &status.as_str(),
                        &applied.user_id,
                        &applied.old_tier,
                        &applied.new_tier,
                        &applied.note,
                    ],
                )
                .await?;
                Attempt {
                    status,
                    error: None,
                    note: applied.note,
                }
            }
        };
        self.metrics.observe_processing(started.elapsed());
        Ok(attempt)
    }

    /// The handler for an event, or why there is none (the event is then `ignored`).
    fn handler_for(
        &self,
        envelope: &EventEnvelope,
    ) -> Result<handlers::Handler, Option<&'static str>> {
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

    /// The handler's work outside the transaction (Stripe / Supabase Auth look-ups). A lost
    /// database connection is the caller's problem (503), any other failure the event's.
    async fn prepare(
        &self,
        client: &impl deadpool_postgres::GenericClient,
        envelope: &EventEnvelope,
    ) -> Result<Result<Prepared, HandlerError>, IngestError> {
        let Ok(handler) = self.handler_for(envelope) else {
            return Ok(Ok(Prepared::default()));
        };
        match handlers::prepare(handler, &self.handlers, client, envelope).await {
            Err(HandlerError::Database(e)) if e.as_db_error().is_none() => Err(e.into()),
            other => Ok(other),
        }
    }

    /// Decides the outcome: ignored, applied, or a handler error (already rolled back to the
    /// savepoint, so a failed event carries no partial effects). The savepoint is not released
    /// on success: COMMIT ends it with the transaction, one round trip less.
    async fn decide(
        &self,
        tx: &Transaction<'_>,
        envelope: &EventEnvelope,
        prepared: Result<Prepared, HandlerError>,
    ) -> Result<Result<(Status, Applied), String>, tokio_postgres::Error> {
        let handler = match self.handler_for(envelope) {
            Ok(handler) => handler,
            Err(reason) => {
                let applied = reason.map(Applied::note).unwrap_or_default();
                return Ok(Ok((Status::Ignored, applied)));
            }
        };
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.to_string())),
        };
        match handlers::run(handler, tx, envelope, &prepared).await {
            Ok(applied) => Ok(Ok((Status::Processed, applied))),
            // The connection is gone: nothing can be stored, the caller answers 503.
            Err(handlers::HandlerError::Database(e)) if e.as_db_error().is_none() => Err(e),
            Err(e) => {
                tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
                Ok(Err(e.to_string()))
            }
        }
    }

    /// Whether `prepare` may call Stripe or Supabase Auth for this event (then a duplicate is
    /// worth recognising before it).
    fn prepare_calls_out(&self, envelope: &EventEnvelope) -> bool {
        let ctx = &self.handlers;
        (ctx.stripe.is_some() || ctx.auth_admin.is_some())
            && self
                .handler_for(envelope)
                .is_ok_and(handlers::has_prepare_step)
    }

    fn lease_seconds(&self) -> f64 {
        self.retry.lease.as_secs_f64()
    }

    fn record(&self, envelope: &EventEnvelope, attempt: &Attempt) {
        self.metrics
            .event_finished(&envelope.event_type, attempt.status);
        tracing::info!(
            event_id = %envelope.id,
            event_type = %envelope.event_type,
            status = attempt.status.as_str(),
            note = attempt.note.as_deref(),
            "event handled"
        );
    }

    /// Processes one row the retrier or `replay` claimed (status `processing`, locked by us).
    pub async fn process_claimed(
        &self,
        row_id: Uuid,
    ) -> Result<Option<(EventEnvelope, Attempt)>, IngestError> {
        let mut client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql::READ_CLAIMED).await?;
        let Some(row) = client.query_opt(&stmt, &[&row_id, &self.worker_id]).await? else {
            return Ok(None); // someone else took it over after our lease ran out
        };
        let body: String = row.get(0);
        let envelope = match EventEnvelope::parse(body.as_bytes()) {
            Ok(e) => e,
            Err(e) => {
                // Stored rows always parsed once; one edited by hand may not.
                let stmt = client.prepare_cached(sql::MARK_FAILED).await?;
                let msg = format!("stored event_data does not parse: {e}");
                client
                    .execute(
                        &stmt,
                        &[
                            &row_id,
                            &Status::Dead.as_str(),
                            &msg,
                            &None::<DateTime<Utc>>,
                        ],
                    )
                    .await?;
                return Ok(None);
            }
        };
        let prepared = self.prepare(&client, &envelope).await?;
        let stmt = client.prepare_cached(sql::LOCK_CLAIMED).await?;
        let tx = client.transaction().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&row_id, &self.worker_id];
        let (locked, savepoint) =
            futures_util::join!(tx.query_opt(&stmt, &params), tx.batch_execute(SAVEPOINT),);
        let Some(row) = locked? else {
            tx.commit().await?;
            return Ok(None);
        };
        savepoint?;
        let retry_count: i32 = row.get(0);
        let attempt = self
            .attempt(
                &tx,
                &envelope,
                &Claimed {
                    row_id,
                    retry_count,
                },
                prepared,
            )
            .await?;
        tx.commit().await?;
        self.record(&envelope, &attempt);
        Ok(Some((envelope, attempt)))
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
}
