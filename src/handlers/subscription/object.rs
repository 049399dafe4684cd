//! A subscription as Stripe sends it in any API version, read leniently, and the facts of one
//! snapshot normalized across versions: before 2025-03-31.basil the current period sits on the
//! subscription, from basil on on its items; before prices (API < 2018) the plan sits at the top.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

use crate::handlers::object::{expandable_id, metadata};

#[derive(Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    pub customer: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub items: Option<Items>,
    /// Before prices (API < 2018): the plan at the top level.
    #[serde(default)]
    pub plan: Option<PriceRef>,
    #[serde(default)]
    pub quantity: Option<i32>,
    #[serde(default)]
    pub cancel_at_period_end: Option<bool>,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub cancel_at: Option<i64>,
    #[serde(default)]
    pub canceled_at: Option<i64>,
    #[serde(default)]
    pub ended_at: Option<i64>,
    #[serde(default)]
    pub trial_start: Option<i64>,
    #[serde(default)]
    pub trial_end: Option<i64>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: serde_json::Value,
}

#[derive(Deserialize, Default)]
pub struct Items {
    #[serde(default)]
    pub data: Vec<Item>,
}

#[derive(Deserialize)]
pub struct Item {
    #[serde(default)]
    pub price: Option<PriceRef>,
    #[serde(default)]
    pub plan: Option<PriceRef>,
    #[serde(default)]
    pub quantity: Option<i32>,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A price (or legacy plan) as embedded in a subscription: a full object, or just its id.
#[derive(Deserialize, Default, Clone)]
#[serde(from = "PriceWire")]
pub struct PriceRef {
    pub id: String,
    pub product: Option<String>,
    pub unit_amount: Option<i64>,
    pub currency: Option<String>,
    pub interval: Option<String>,
    pub interval_count: Option<i32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PriceWire {
    Id(String),
    Object {
        id: String,
        #[serde(default, deserialize_with = "expandable_id")]
        product: Option<String>,
        #[serde(default)]
        unit_amount: Option<i64>,
        /// Plans call it `amount`.
        #[serde(default)]
        amount: Option<i64>,
        #[serde(default)]
        currency: Option<String>,
        #[serde(default)]
        recurring: Option<Recurring>,
        /// Plans carry the interval at the top level.
        #[serde(default)]
        interval: Option<String>,
        #[serde(default)]
        interval_count: Option<i32>,
    },
}

#[derive(Deserialize)]
struct Recurring {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    interval_count: Option<i32>,
}

impl From<PriceWire> for PriceRef {
    fn from(w: PriceWire) -> Self {
        match w {
            PriceWire::Id(id) => Self {
                id,
                ..Self::default()
            },
            PriceWire::Object {
                id,
                product,
                unit_amount,
                amount,
                currency,
                recurring,
                interval,
                interval_count,
            } => {
                let (ri, rc) = recurring
                    .map(|r| (r.interval, r.interval_count))
                    .unwrap_or((None, None));
                Self {
                    id,
                    product,
                    unit_amount: unit_amount.or(amount),
                    currency,
                    interval: ri.or(interval),
                    interval_count: rc.or(interval_count),
                }
            }
        }
    }
}

pub fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// The facts of one snapshot, normalized across API versions.
pub struct Snapshot {
    pub price: Option<PriceRef>,
    pub quantity: Option<i32>,
    pub period_start: Option<DateTime<Utc>>,
    pub period_end: Option<DateTime<Utc>>,
}

impl Subscription {
    pub fn snapshot(&self) -> Snapshot {
        let first = self.items.as_ref().and_then(|i| i.data.first());
        let price = first
            .and_then(|i| i.price.clone().or_else(|| i.plan.clone()))
            .or_else(|| self.plan.clone());
        // basil moved the period onto the items; older versions have it on the subscription.
        let period_start = self
            .current_period_start
            .or_else(|| first.and_then(|i| i.current_period_start));
        let period_end = self
            .current_period_end
            .or_else(|| first.and_then(|i| i.current_period_end));
        Snapshot {
            price,
            quantity: first.and_then(|i| i.quantity).or(self.quantity),
            period_start: ts(period_start).or(ts(self.created)),
            period_end: ts(period_end).or(ts(period_start)).or(ts(self.created)),
        }
    }
}

/// Status progression within one period, for snapshots of the same second.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "incomplete" => 1,
        "trialing" => 2,
        "active" => 3,
        "past_due" => 4,
        "unpaid" => 5,
        "paused" => 6,
        "incomplete_expired" => 7,
        "canceled" => 8,
        _ => 0,
    }
}

/// Same-second tie-break: a later period is newer; within a period, the status progression.
pub fn tie_break(status: &str, period_end: Option<DateTime<Utc>>) -> i64 {
    period_end.map_or(0, |t| t.timestamp()) * 16 + status_rank(status)
}

#[derive(Deserialize, Default)]
pub struct PreviousAttributes {
    #[serde(default)]
    pub items: Option<Items>,
    #[serde(default)]
    pub plan: Option<PriceRef>,
}
