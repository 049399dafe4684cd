//! Billing history rows that are events rather than facts: a failed payment attempt. Every
//! money movement (payments, refunds, disputes) gets its row from the facts, in SQL.

use serde_json::Value;
use uuid::Uuid;

use crate::db::EventTx;
use crate::envelope::EventEnvelope;

/// Keyed by the event, amount 0 (no money moved), status failed; attributed to the user once
/// the customer (`metadata.customer`) is mapped.
const FAILED_PAYMENT: &str = "select public.put_billing_row($1, $2, $3, 0, $4, $5, 'failed', $6)";

pub async fn record_failed_payment(
    tx: &EventTx,
    event: &EventEnvelope,
    user_id: Option<Uuid>,
    currency: Option<&str>,
    metadata: Value,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(FAILED_PAYMENT).await?;
    tx.execute(
        &stmt,
        &[
            &event.id,
            &format!("stripe.{}", event.event_type),
            &user_id,
            &currency.unwrap_or("usd"),
            &event.created,
            &metadata,
        ],
    )
    .await?;
    Ok(())
}
