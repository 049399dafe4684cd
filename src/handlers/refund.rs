//! refund.created / refund.updated / refund.failed, and charge.refund.updated (the name older API
//! versions use): the refund in its latest state. Older versions also list a charge's refunds
//! inside the charge; the charge handler records those through `record` as well. Whether a
//! refund takes access back, and its billing history row, are derived in SQL.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use super::object::expandable_id;
use super::{ordering, Applied, Handler, HandlerError};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

pub struct Refunds;

#[derive(Deserialize)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default, deserialize_with = "expandable_id")]
    pub charge: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
    /// Missing in the oldest API versions, where a listed refund had succeeded.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub created: Option<i64>,
}

impl Refund {
    fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("succeeded")
    }
}

/// Same-second snapshots of one refund: later states rank higher.
fn status_rank(status: &str) -> i64 {
    match status {
        "pending" => 1,
        "requires_action" => 2,
        "succeeded" => 3,
        "failed" | "canceled" => 4,
        _ => 0,
    }
}

const UPSERT: &str = "
insert into public.refunds
  (stripe_refund_id, stripe_charge_id, stripe_payment_intent_id, amount, currency, status, reason,
   refunded_at, livemode)
values ($1, $2, $3, $4, lower($5), $6, $7, $8, $9)
on conflict (stripe_refund_id) do update
set stripe_charge_id = coalesce(excluded.stripe_charge_id, refunds.stripe_charge_id),
    stripe_payment_intent_id = coalesce(excluded.stripe_payment_intent_id, refunds.stripe_payment_intent_id),
    amount = excluded.amount, currency = excluded.currency, status = excluded.status,
    reason = excluded.reason, refunded_at = excluded.refunded_at, updated_at = now()
where (refunds.stripe_charge_id, refunds.stripe_payment_intent_id, refunds.amount, refunds.currency,
       refunds.status, refunds.reason, refunds.refunded_at)
      is distinct from
      (coalesce(excluded.stripe_charge_id, refunds.stripe_charge_id),
       coalesce(excluded.stripe_payment_intent_id, refunds.stripe_payment_intent_id),
       excluded.amount, excluded.currency, excluded.status, excluded.reason, excluded.refunded_at)";

/// Records one refund snapshot unless a newer one is applied. `charge`/`payment_intent` fill
/// in what an embedded refund leaves out. Returns whether it was applied.
pub async fn record(
    tx: &EventTx,
    event: &EventEnvelope,
    r: &Refund,
    charge: Option<&str>,
    payment_intent: Option<&str>,
) -> Result<bool, HandlerError> {
    let status = r.status();
    if !ordering::claim(tx, "refund", &r.id, event, status_rank(status), false).await? {
        return Ok(false);
    }
    let refunded_at: DateTime<Utc> = r
        .created
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .or(event.created)
        .unwrap_or(DateTime::UNIX_EPOCH);
    let stmt = tx.prepare_cached(UPSERT).await?;
    tx.execute(
        &stmt,
        &[
            &r.id,
            &r.charge.as_deref().or(charge),
            &r.payment_intent.as_deref().or(payment_intent),
            &r.amount,
            &r.currency.as_deref().unwrap_or("usd"),
            &status,
            &r.reason,
            &refunded_at,
            &event.livemode,
        ],
    )
    .await?;
    Ok(true)
}

impl Handler for Refunds {
    type Object = Refund;
    type Prepared = ();
    const OBJECT: &'static str = "refund";
    const EVENT_TYPES: &'static [&'static str] = &[
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refund.updated",
    ];

    async fn apply(
        &self,
        r: Refund,
        _: (),
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        if !record(tx, event, &r, None, None).await? {
            return Ok(Applied::note(ordering::stale_note(&r.id)));
        }
        Ok(Applied::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refund_parses_in_every_shape() {
        let old: Refund =
            serde_json::from_str(r#"{"id":"re_1","object":"refund","amount":500,"charge":"ch_1","currency":"usd","created":1500000000}"#)
                .unwrap();
        assert_eq!(old.status(), "succeeded");
        let new: Refund = serde_json::from_str(
            r#"{"id":"re_2","amount":100,"charge":{"id":"ch_2"},"payment_intent":"pi_2","status":"failed","failure_reason":"expired_or_canceled_card"}"#,
        )
        .unwrap();
        assert_eq!(
            (new.charge.as_deref(), new.status()),
            (Some("ch_2"), "failed")
        );
    }
}
