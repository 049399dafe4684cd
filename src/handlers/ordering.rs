//! Per-object ordering: an older snapshot never overwrites a newer one.

use crate::db::EventTx;
use crate::envelope::EventEnvelope;

const CLAIM: &str = "select public.claim_object_version($1, $2, $3, $4, $5, $6)";

/// SQL that is true when the claim just made, in the same transaction, made event `$event` the
/// latest snapshot of object `$object` (both parameter placeholders). A write guarded by it can
/// go out in the claim's round trip instead of waiting for its answer: a claim that loses
/// leaves the version row naming another event, so the guarded write does nothing.
macro_rules! claimed_by {
    ($object:literal, $event:literal) => {
        concat!(
            "exists (select 1 from public.stripe_object_versions v where v.object_id = ",
            $object,
            " and v.stripe_event_id = ",
            $event,
            ")"
        )
    };
}

pub(crate) use claimed_by;

/// Prepares the claim's statement (a cache hit after the connection's first). Writes guarded by
/// `claimed_by!` and sent beside the claim need it prepared first: the claim must be sent ahead
/// of them, and a claim still waiting for its statement would go out after them.
pub async fn prepare(tx: &EventTx) -> Result<(), tokio_postgres::Error> {
    tx.prepare_cached(CLAIM).await.map(drop)
}

/// True when `event`'s snapshot of `object_id` may be applied (and is now the latest).
/// `tie_break` orders events of the same second; `deleted` marks a deletion, which wins.
pub async fn claim(
    tx: &EventTx,
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
