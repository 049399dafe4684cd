//! Stripe's Events API (`GET /v1/events`, async-stripe): pages of events in a time range,
//! newest first as Stripe lists them, with back-off on rate limiting, and each event turned
//! back into the JSON envelope a webhook delivery of it would carry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use stripe_core::event::ListEvent;
use stripe_core::Event;
use stripe_types::{RangeBoundsTs, RangeQueryTs};

use crate::stripe_api::{StripeApi, StripeApiError};

/// Stripe's maximum page size.
pub const MAX_PAGE: i64 = 100;

/// How to wait when Stripe answers 429: `base`, doubled per retry, at most `max_retries` times.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitBackoff {
    pub base: Duration,
    pub max: Duration,
    pub max_retries: u32,
}

impl Default for RateLimitBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retries: 8,
        }
    }
}

impl RateLimitBackoff {
    fn delay(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max)
    }
}

/// One page of the listing.
pub struct EventPage {
    pub events: Vec<Event>,
    pub has_more: bool,
    /// 429 answers this page needed before it came.
    pub rate_limited: u32,
}

/// Events created in `[since, until]` (inclusive), one page after `starting_after`.
pub async fn list_page(
    api: &StripeApi,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    starting_after: Option<&str>,
    page_size: i64,
    backoff: RateLimitBackoff,
) -> Result<EventPage, StripeApiError> {
    let mut request = ListEvent::new()
        .created(RangeQueryTs::Bounds(RangeBoundsTs {
            gte: Some(since.timestamp()),
            lte: until.map(|t| t.timestamp()),
            ..Default::default()
        }))
        .limit(page_size.clamp(1, MAX_PAGE));
    if let Some(after) = starting_after {
        request = request.starting_after(after);
    }
    let mut rate_limited = 0;
    loop {
        match request
            .send(api.client())
            .await
            .map_err(StripeApiError::from)
        {
            Ok(list) => {
                return Ok(EventPage {
                    events: list.data,
                    has_more: list.has_more,
                    rate_limited,
                })
            }
            Err(StripeApiError::RateLimited) if rate_limited < backoff.max_retries => {
                let wait = backoff.delay(rate_limited);
                rate_limited += 1;
                tracing::warn!(
                    ?wait,
                    retry = rate_limited,
                    "Stripe rate limit; backing off"
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn to_json(value: &miniserde::json::Value) -> Value {
    // miniserde and serde_json write and read the same JSON.
    serde_json::from_str(&miniserde::json::to_string(value)).unwrap_or(Value::Null)
}

/// The event as its webhook delivery would carry it (what ingestion stores and parses).
pub fn envelope(event: &Event) -> Value {
    let mut data = json!({ "object": to_json(&event.data.object) });
    if let Some(previous) = &event.data.previous_attributes {
        data["previous_attributes"] = to_json(previous);
    }
    let mut envelope = json!({
        "id": event.id.as_str(),
        "object": "event",
        "api_version": event.api_version,
        "created": event.created,
        "data": data,
        "livemode": event.livemode,
        "pending_webhooks": event.pending_webhooks,
        "request": event.request.as_ref().map(|r| json!({
            "id": r.id,
            "idempotency_key": r.idempotency_key,
        })),
        "type": event.type_.as_str(),
    });
    if let Some(account) = &event.account {
        envelope["account"] = json!(account);
    }
    if let Some(context) = &event.context {
        envelope["context"] = json!(context);
    }
    envelope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_event_becomes_the_envelope_of_its_delivery() {
        let raw = r#"{"id":"evt_1","object":"event","api_version":"2020-03-02","created":1623149335,
            "data":{"object":{"id":"prod_1","object":"product","name":"Café","price":12.5,"n":-3,"tags":[null,true]},
                    "previous_attributes":{"name":"old"}},
            "livemode":false,"pending_webhooks":3,"request":{"id":"req_1","idempotency_key":null},
            "type":"product.updated"}"#;
        let event: Event = miniserde::json::from_str(raw).unwrap();
        let got = envelope(&event);
        let want: Value = serde_json::from_str(raw).unwrap();
        assert_eq!(got, want);
        let parsed = crate::envelope::EventEnvelope::parse(got.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.event_type, "product.updated");
        assert_eq!(parsed.created.unwrap().timestamp(), 1_623_149_335);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = RateLimitBackoff::default();
        assert_eq!(b.delay(0), Duration::from_millis(500));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(20), Duration::from_secs(30));
    }
}
