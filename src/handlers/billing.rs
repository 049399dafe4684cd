//! Billing history (`public.events`, the table the frontend's history page reads): one row per
//! money event, keyed by the Stripe event id, so replays write nothing twice.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::Value;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::envelope::EventEnvelope;

/// Parameters: `HistoryRow`.
const INSERT: &str = "
insert into public.events
  (category, event_type, source, user_id, amount, currency, occurred_at, external_id, metadata)
values ('billing', $1, 'stripe', $2, $3::int8::numeric / (10::numeric ^ $4::int4), $5,
        coalesce($6, now()), $7, $8)
on conflict (source, external_id) do nothing";

/// `INSERT`'s parameters, in their order ($1 … $8).
struct HistoryRow<'a> {
    event_type: String,
    user_id: Option<Uuid>,
    /// In the currency's minor unit; divided by 10^`decimals` in SQL.
    amount_minor: Option<i64>,
    decimals: i32,
    currency: Option<&'a str>,
    /// The Stripe event's `created` (now when it has none).
    occurred_at: Option<DateTime<Utc>>,
    external_id: &'a str,
    metadata: &'a Value,
}

impl HistoryRow<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.event_type,
            &self.user_id,
            &self.amount_minor,
            &self.decimals,
            &self.currency,
            &self.occurred_at,
            &self.external_id,
            self.metadata,
        ]
    }
}

/// Stripe amounts are in the currency's minor unit; most have two decimals, these not.
fn decimals(currency: &str) -> i32 {
    match currency {
        "bif" | "clp" | "djf" | "gnf" | "jpy" | "kmf" | "krw" | "mga" | "pyg" | "rwf" | "ugx"
        | "vnd" | "vuv" | "xaf" | "xof" | "xpf" => 0,
        "bhd" | "jod" | "kwd" | "omr" | "tnd" => 3,
        _ => 2,
    }
}

/// One billing history row. `amount_minor` is signed (refunds are negative); `external_id`
/// is the event id, or the invoice id where two event types report one payment.
pub struct Entry<'a> {
    pub user_id: Option<Uuid>,
    pub amount_minor: Option<i64>,
    pub currency: Option<&'a str>,
    pub external_id: &'a str,
    pub metadata: Value,
}

pub async fn record(
    tx: &Transaction<'_>,
    event: &EventEnvelope,
    entry: Entry<'_>,
) -> Result<(), tokio_postgres::Error> {
    let currency = entry.currency.map(str::to_ascii_lowercase);
    let row = HistoryRow {
        event_type: format!("stripe.{}", event.event_type),
        user_id: entry.user_id,
        amount_minor: entry.amount_minor,
        decimals: currency.as_deref().map_or(2, decimals),
        currency: currency.as_deref(),
        occurred_at: event.created,
        external_id: entry.external_id,
        metadata: &entry.metadata,
    };
    let stmt = tx.prepare_cached(INSERT).await?;
    tx.execute(&stmt, &row.params()).await?;
    Ok(())
}

const ATTRIBUTE: &str = "
update public.events set user_id = $1
where source = 'stripe' and user_id is null and metadata->>'payment_intent' = $2";

/// History written before the buyer was known is attributed once they are.
pub async fn attribute(
    tx: &Transaction<'_>,
    user_id: Uuid,
    payment_intent: &str,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(ATTRIBUTE).await?;
    tx.execute(&stmt, &[&user_id, &payment_intent]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn zero_and_three_decimal_currencies() {
        assert_eq!(super::decimals("usd"), 2);
        assert_eq!(super::decimals("jpy"), 0);
        assert_eq!(super::decimals("kwd"), 3);
    }
}
