//! One attempt on an event, inside its transaction: the handler's `apply` after the savepoint,
//! then the row's status, with COMMIT right behind it in the same round trip. A first
//! delivery's row is inserted only now, with its final status (one write of the row, never
//! updated after); a stored row is updated. A handler error rolls back to the savepoint, so a
//! `failed` row carries no partial effects; the savepoint is never released on success (COMMIT
//! ends it, one round trip less).

use chrono::Utc;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::sql::{self, Done, Finished, NewEvent};
use super::{retry_delay, Attempt, Pipeline, Status};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;
use crate::handlers::{Applied, HandlerError, Prepared};

/// The handler runs after this savepoint; an error rolls back to it.
pub(super) const SAVEPOINT: &str = "savepoint handler";
const ROLLBACK_TO_SAVEPOINT: &str = "rollback to savepoint handler";

/// The unique constraint a first delivery's row meets when another delivery stored the id.
const EVENT_ID_KEY: &str = "stripe_webhook_events_stripe_event_id_key";

/// What an attempt will do, decided before its transaction.
pub(super) enum Plan {
    /// No handler applies: recorded as `ignored`, with the reason when there is one to tell.
    Ignore(Option<&'static str>),
    /// Parsed and prepared: `apply` runs inside the transaction.
    Apply(Prepared),
    /// Parsing or `prepare` failed: recorded as failed (or dead) without running `apply`.
    Fail(HandlerError),
}

/// What the handler made of the event.
enum Outcome {
    Applied(Applied),
    Ignored(Option<&'static str>),
    /// Rolled back to the savepoint already.
    Failed(HandlerError),
}

/// The row an attempt finishes.
pub(super) enum Row<'a> {
    /// A first delivery: its row is inserted with the attempt's outcome.
    New(NewEvent<'a>),
    /// A stored row (retaken, retried or replayed), locked by this transaction.
    Stored { row_id: Uuid, retry_count: i32 },
}

impl Pipeline {
    /// Runs `plan` inside `tx`, writes the row's status there and commits. The caller has
    /// opened `SAVEPOINT` before. `None`: a new row's id was stored meanwhile by another
    /// delivery, which applied the event; this attempt is rolled back. An error means nothing
    /// of the transaction is stored.
    pub(super) async fn attempt(
        &self,
        tx: &EventTx,
        envelope: &EventEnvelope,
        row: &Row<'_>,
        plan: Plan,
    ) -> Result<Option<Attempt>, tokio_postgres::Error> {
        let started = std::time::Instant::now();
        let outcome = run(tx, envelope, plan).await?;
        let attempt = match outcome {
            Outcome::Applied(applied) => {
                let status = if applied.ignored {
                    Status::Ignored
                } else {
                    Status::Processed
                };
                self.mark_done(tx, row, status, applied).await?
            }
            Outcome::Ignored(reason) => {
                let applied = reason.map(Applied::note).unwrap_or_default();
                self.mark_done(tx, row, Status::Ignored, applied).await?
            }
            Outcome::Failed(error) => self.mark_failed(tx, row, error).await?,
        };
        self.metrics.observe_processing(started.elapsed());
        Ok(attempt)
    }

    async fn mark_done(
        &self,
        tx: &EventTx,
        row: &Row<'_>,
        status: Status,
        applied: Applied,
    ) -> Result<Option<Attempt>, tokio_postgres::Error> {
        let finished = Finished {
            status: status.as_str(),
            user_id: applied.user_id,
            old_tier: applied.old_tier.as_deref(),
            new_tier: applied.new_tier.as_deref(),
            note: applied.note.as_deref(),
            error: None,
            next_attempt_at: None,
            retry_count: 0,
        };
        let done;
        let (write, params): (&'static str, Vec<&(dyn ToSql + Sync)>) = match row {
            Row::New(event) => (sql::INSERT_FINISHED, event.params(&finished).to_vec()),
            Row::Stored { row_id, .. } => {
                done = Done {
                    row_id: *row_id,
                    status: status.as_str(),
                    user_id: applied.user_id,
                    old_tier: applied.old_tier.as_deref(),
                    new_tier: applied.new_tier.as_deref(),
                    note: applied.note.as_deref(),
                };
                (sql::MARK_DONE, done.params().to_vec())
            }
        };
        let wake = applied.linked_customer.as_deref();
        if !finish(tx, write, &params, wake).await? {
            return Ok(None);
        }
        Ok(Some(Attempt {
            status,
            error: None,
            note: applied.note,
        }))
    }

    /// A retryable error schedules the next attempt with backoff until the attempts run out;
    /// an invalid object is dead at once (retrying cannot help; an operator replays it after
    /// the fix). A dead event is logged at ERROR.
    async fn mark_failed(
        &self,
        tx: &EventTx,
        row: &Row<'_>,
        error: HandlerError,
    ) -> Result<Option<Attempt>, tokio_postgres::Error> {
        let retry_count = match row {
            Row::New(_) => 0,
            Row::Stored { retry_count, .. } => *retry_count,
        };
        let attempts = retry_count + 1;
        let retry_at = (error.is_retryable() && attempts < self.retry.max_attempts)
            .then(|| Utc::now() + retry_delay(&self.retry, attempts));
        let status = if retry_at.is_some() {
            Status::Failed
        } else {
            Status::Dead
        };
        let message = error.to_string();
        match row {
            Row::New(event) => {
                let finished = Finished {
                    status: status.as_str(),
                    user_id: None,
                    old_tier: None,
                    new_tier: None,
                    note: None,
                    error: Some(&message),
                    next_attempt_at: retry_at,
                    retry_count: attempts,
                };
                if !finish(tx, sql::INSERT_FINISHED, &event.params(&finished), None).await? {
                    // Another delivery stored the event meanwhile; its outcome stands.
                    return Ok(None);
                }
            }
            Row::Stored { row_id, .. } => {
                let params: [&(dyn ToSql + Sync); 4] =
                    [row_id, &status.as_str(), &message, &retry_at];
                finish(tx, sql::MARK_FAILED, &params, None).await?;
            }
        }
        match retry_at {
            Some(next_attempt_at) => tracing::warn!(
                attempts,
                error = %message,
                %next_attempt_at,
                "event failed; retry scheduled"
            ),
            None if error.is_retryable() => tracing::error!(
                attempts,
                error = %message,
                "event is dead: no more automatic retries"
            ),
            None => tracing::error!(
                attempts,
                error = %message,
                "event is dead: invalid, retrying cannot help (replay it after a fix)"
            ),
        }
        Ok(Some(Attempt {
            status,
            error: Some(message),
            note: None,
        }))
    }
}

/// Writes the row that ends an attempt (`write` with `params`) and commits right behind it, in
/// one round trip; with `wake`, also makes the events waiting for that newly mapped customer
/// due. False: a first delivery's row met its id stored by another delivery meanwhile, which
/// aborted the transaction, so the COMMIT rolled this attempt back. On any other error nothing
/// of the transaction is stored either.
async fn finish(
    tx: &EventTx,
    write: &'static str,
    params: &[&(dyn ToSql + Sync)],
    wake: Option<&str>,
) -> Result<bool, tokio_postgres::Error> {
    // Prepared first: inside the join each statement must go out when first polled, ahead of
    // the COMMIT.
    let write = tx.prepare_cached(write).await?;
    let waking = match wake {
        Some(customer) => Some((tx.prepare_cached(sql::WAKE_WAITING).await?, customer)),
        None => None,
    };
    let (written, woken, committed) = futures_util::join!(
        tx.execute(&write, params),
        async {
            match &waking {
                Some((stmt, customer)) => tx.execute(stmt, &[customer]).await.map(drop),
                None => Ok(()),
            }
        },
        tx.commit(),
    );
    match written {
        Err(e) if is_stored_meanwhile(&e) => return Ok(false),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    woken?;
    committed?;
    Ok(true)
}

fn is_stored_meanwhile(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(EVENT_ID_KEY)
    })
}

async fn run(
    tx: &EventTx,
    envelope: &EventEnvelope,
    plan: Plan,
) -> Result<Outcome, tokio_postgres::Error> {
    let prepared = match plan {
        Plan::Ignore(reason) => return Ok(Outcome::Ignored(reason)),
        Plan::Fail(error) => return Ok(Outcome::Failed(error)),
        Plan::Apply(prepared) => prepared,
    };
    match prepared.apply(envelope, tx).await {
        Ok(applied) => Ok(Outcome::Applied(applied)),
        // The connection is gone: nothing can be stored, the caller answers 503.
        Err(HandlerError::Database(e)) if crate::db::connection_lost(&e) => Err(e),
        Err(error) => {
            tx.batch_execute(ROLLBACK_TO_SAVEPOINT).await?;
            Ok(Outcome::Failed(error))
        }
    }
}
