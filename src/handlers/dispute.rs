//! charge.dispute.created / updated / funds_withdrawn / funds_reinstated / closed: the dispute
//! in its latest state. Whether money left or came back only ever becomes true (from the event
//! type or the dispute's balance transactions), so it does not depend on delivery order; the
//! status is the latest snapshot's. What a dispute does to access and to the billing history is
//! derived in SQL.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::object::expandable_id;
use super::{ordering, Applied, Handler, HandlerError};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

pub struct Disputes;

#[derive(Deserialize)]
pub struct Dispute {
    id: String,
    #[serde(default)]
    amount: i64,
    #[serde(default, deserialize_with = "expandable_id")]
    charge: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    payment_intent: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    balance_transactions: Vec<BalanceTransaction>,
}

#[derive(Deserialize)]
struct BalanceTransaction {
    #[serde(default)]
    amount: i64,
}

/// Same-second snapshots: the dispute's progression.
fn status_rank(status: &str) -> i64 {
    match status {
        "warning_needs_response" | "needs_response" => 1,
        "warning_under_review" | "under_review" => 2,
        "warning_closed" | "won" | "lost" | "prevented" => 3,
        _ => 0,
    }
}

/// `$10` says whether this snapshot is the latest: only then does the status follow. `$13` is
/// when this event reports the dispute: the earliest report of each movement is its time.
const UPSERT: &str = "
insert into public.disputes
  (stripe_dispute_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, reason,
   funds_withdrawn, funds_reinstated, opened_at, livemode, funds_withdrawn_at, funds_reinstated_at)
values ($1, $2, $3, $4, lower($5), $6, $7, $8, $9, $11, $12,
        case when $8 then $13::timestamptz end, case when $9 then $13::timestamptz end)
on conflict (stripe_dispute_id) do update
set stripe_charge_id = coalesce(disputes.stripe_charge_id, excluded.stripe_charge_id),
    stripe_payment_intent_id = coalesce(disputes.stripe_payment_intent_id, excluded.stripe_payment_intent_id),
    amount = case when $10 then excluded.amount else disputes.amount end,
    status = case when $10 then excluded.status else disputes.status end,
    reason = case when $10 then excluded.reason else disputes.reason end,
    funds_withdrawn = disputes.funds_withdrawn or excluded.funds_withdrawn,
    funds_reinstated = disputes.funds_reinstated or excluded.funds_reinstated,
    funds_withdrawn_at = least(disputes.funds_withdrawn_at, excluded.funds_withdrawn_at),
    funds_reinstated_at = least(disputes.funds_reinstated_at, excluded.funds_reinstated_at),
    updated_at = now()";

impl Handler for Disputes {
    type Object = Dispute;
    type Prepared = ();
    const OBJECT: &'static str = "dispute";
    const EVENT_TYPES: &'static [&'static str] = &[
        "charge.dispute.created",
        "charge.dispute.updated",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "charge.dispute.closed",
    ];

    async fn apply(
        &self,
        d: Dispute,
        _: (),
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let status = d
            .status
            .clone()
            .unwrap_or_else(|| "needs_response".to_owned());
        let latest =
            ordering::claim(tx, "dispute", &d.id, event, status_rank(&status), false).await?;
        let withdrawn = event.event_type == "charge.dispute.funds_withdrawn"
            || d.balance_transactions.iter().any(|b| b.amount < 0);
        let reinstated = event.event_type == "charge.dispute.funds_reinstated"
            || d.balance_transactions.iter().any(|b| b.amount > 0);
        let opened_at: DateTime<Utc> = d
            .created
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
            .or(event.created)
            .unwrap_or(DateTime::UNIX_EPOCH);
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(
            &stmt,
            &[
                &d.id,
                &d.charge,
                &d.payment_intent,
                &d.amount,
                &d.currency.as_deref().unwrap_or("usd"),
                &status,
                &d.reason,
                &withdrawn,
                &reinstated,
                &latest,
                &opened_at,
                &event.livemode,
                &event.created,
            ],
        )
        .await?;
        Ok(if latest {
            Applied::default()
        } else {
            Applied::note(ordering::stale_note(&d.id))
        })
    }
}
