//! Per-object ordering: an older snapshot never overwrites a newer one.

use deadpool_postgres::Transaction;

use crate::envelope::EventEnvelope;

const CLAIM: &str = "select public.claim_object_version($1, $2, $3, $4, $5, $6)";

/// True when `event`'s snapshot of `object_id` may be applied (and is now the latest).
/// `tie_break` orders events of the same second; `deleted` marks a deletion, which wins.
pub async fn claim(
    tx: &Transaction<'_>,
    object_type: &str,
    object_id: &str,
    event: &EventEnvelope,
    tie_break: i64,
    deleted: bool,
) -> Result<bool, tokio_postgres::Error> {
    // An event without `created` (never seen from Stripe) sorts first: it cannot override.
    let created = event.created.unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let stmt = tx.prepare_cached(CLAIM).await?;
    let row = tx
        .query_one(
            &stmt,
            &[
                &object_id,
                &object_type,
                &created,
                &tie_break,
                &event.id,
                &deleted,
            ],
        )
        .await?;
    Ok(row.get(0))
}

pub fn stale_note(object_id: &str) -> String {
    format!("stale: a newer state of {object_id} is already applied")
}
