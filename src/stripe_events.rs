//! Stripe's Events API (`GET /v1/events`): pages of events created in a time range, newest
//! first as Stripe lists them, each kept byte for byte as Stripe sent it. Stripe lists every
//! event in the API version it was created with, so nothing here reads more of an event than
//! its `id` and `created`; ingestion parses it like a webhook delivery.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::stripe_list::{StripeListError, StripeLists, MAX_PAGE};

/// One listed event.
#[derive(Debug)]
pub struct ListedEvent {
    /// The event as Stripe sent it.
    pub raw: Box<RawValue>,
    /// `None` for an element without a usable `id` (reported, never ingested).
    pub id: Option<String>,
    /// Unix seconds; `None` when missing or not a number.
    pub created: Option<i64>,
}

impl ListedEvent {
    pub fn new(raw: Box<RawValue>) -> Self {
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            created: Option<serde_json::Value>,
        }
        let head = serde_json::from_str::<Head>(raw.get()).ok();
        let (id, created) = match head {
            Some(h) => (
                h.id.and_then(|v| v.as_str().map(str::to_owned))
                    .filter(|s| !s.trim().is_empty()),
                h.created.and_then(|v| v.as_i64()),
            ),
            None => (None, None),
        };
        Self { raw, id, created }
    }
}

/// One page of the listing.
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<ListedEvent>,
    /// The id to continue after (the last event that has one); `None` ends the listing.
    pub next: Option<String>,
    /// 429 answers this page needed before it came.
    pub rate_limited: u32,
}

/// Events created in `[since, until]` (unix seconds, both inclusive), the page after
/// `starting_after`.
pub async fn list_page(
    lists: &StripeLists,
    since: i64,
    until: i64,
    starting_after: Option<&str>,
    page_size: i64,
) -> Result<EventPage, StripeListError> {
    let query = [
        ("created[gte]", since.to_string()),
        ("created[lte]", until.to_string()),
        ("limit", page_size.clamp(1, MAX_PAGE).to_string()),
    ];
    let page = lists
        .page("/v1/events", &query, starting_after, None)
        .await?;
    let events: Vec<ListedEvent> = page.data.into_iter().map(ListedEvent::new).collect();
    let next = if page.has_more {
        events.iter().rev().find_map(|e| e.id.clone())
    } else {
        None
    };
    Ok(EventPage {
        events,
        next,
        rate_limited: page.rate_limited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_event_keeps_its_bytes_and_reads_only_id_and_created() {
        let text = r#"{"id":"evt_1","object":"event","api_version":"2017-02-14","created":1500000000,
            "data":{"object":{"id":"ch_1","amount":12.50}},"livemode":false,"request":"req_1","type":"charge.succeeded"}"#;
        let e = ListedEvent::new(RawValue::from_string(text.to_owned()).unwrap());
        assert_eq!(e.raw.get(), text);
        assert_eq!(e.id.as_deref(), Some("evt_1"));
        assert_eq!(e.created, Some(1_500_000_000));
        let odd = ListedEvent::new(
            RawValue::from_string(r#"{"id":5,"created":"yesterday"}"#.into()).unwrap(),
        );
        assert_eq!((odd.id, odd.created), (None, None));
        let parsed = crate::envelope::EventEnvelope::parse(e.raw.get().as_bytes()).unwrap();
        assert_eq!(parsed.event_type, "charge.succeeded");
    }
}
