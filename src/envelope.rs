//! The part of a Stripe event that ingestion needs, parsed leniently.
//!
//! Any API version from 2017 to today passes: unknown fields are ignored, optional ones may be
//! missing, and `data.object` stays raw JSON for the handler to read into its own narrow type.
//! Thin events (API v2: no `data`, `created` as an RFC 3339 string) parse too and are ignored
//! downstream.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("body is not a JSON event: {0}")]
    NotJson(String),
    #[error("event has no {0}")]
    MissingField(&'static str),
    #[error("event {0} is too long")]
    TooLong(&'static str),
}

#[derive(Debug)]
pub struct EventEnvelope {
    pub id: String,
    pub event_type: String,
    pub created: Option<DateTime<Utc>>,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// `data.object`; `None` for thin events.
    pub object: Option<Box<RawValue>>,
    pub previous_attributes: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Created {
    Unix(i64),
    Text(String),
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type", default)]
    event_type: Option<String>,
    #[serde(default)]
    created: Option<Created>,
    #[serde(default)]
    livemode: Option<bool>,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    data: Option<WireData>,
}

#[derive(Deserialize)]
struct WireData {
    #[serde(default)]
    object: Option<Box<RawValue>>,
    #[serde(default)]
    previous_attributes: Option<Box<RawValue>>,
}

const MAX_ID_LEN: usize = 255;

impl EventEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: Wire =
            serde_json::from_slice(body).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let id = wire
            .id
            .filter(|s| !s.trim().is_empty())
            .ok_or(EnvelopeError::MissingField("id"))?;
        let event_type = wire
            .event_type
            .filter(|s| !s.trim().is_empty())
            .ok_or(EnvelopeError::MissingField("type"))?;
        if id.len() > MAX_ID_LEN {
            return Err(EnvelopeError::TooLong("id"));
        }
        if event_type.len() > MAX_ID_LEN {
            return Err(EnvelopeError::TooLong("type"));
        }
        let created = match wire.created {
            Some(Created::Unix(secs)) => Utc.timestamp_opt(secs, 0).single(),
            Some(Created::Text(text)) => DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            None => None,
        };
        let (object, previous_attributes) = match wire.data {
            Some(data) => (
                data.object.filter(|o| o.get() != "null"),
                data.previous_attributes.filter(|o| o.get() != "null"),
            ),
            None => (None, None),
        };
        Ok(Self {
            id,
            event_type,
            created,
            livemode: wire.livemode.unwrap_or(false),
            api_version: wire.api_version,
            object,
            previous_attributes,
        })
    }

    /// A thin event carries no object snapshot: there is nothing to apply.
    pub fn is_thin(&self) -> bool {
        self.object.is_none()
    }

    /// Reads `data.object` into a handler's own narrow type.
    pub fn object_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        let raw = self.object.as_deref().map(RawValue::get).unwrap_or("null");
        serde_json::from_str(raw)
    }

    pub fn previous_attributes_as<'a, T: Deserialize<'a> + Default>(&'a self) -> T {
        self.previous_attributes
            .as_deref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
}

/// PostgreSQL's jsonb refuses the escape `\u0000`, which is valid JSON: such an event could
/// never be stored and Stripe would redeliver it for days. After the signature is checked, the
/// escape is replaced with U+FFFD (the replacement character), the only change ever made to a
/// stored event.
pub fn storable(raw: &str) -> std::borrow::Cow<'_, str> {
    const NUL: &str = "\\u0000";
    if !raw.contains(NUL) {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find(NUL) {
        // An escape only when the backslash run before `u0000` is odd (`\\u0000` is text).
        let run = rest[..=at]
            .bytes()
            .rev()
            .take_while(|b| *b == b'\\')
            .count();
        out.push_str(&rest[..at]);
        out.push_str(if run % 2 == 1 { "\\ufffd" } else { NUL });
        rest = &rest[at + NUL.len()..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_become_replacement_characters_and_nothing_else_changes() {
        assert_eq!(
            storable(r#"{"a":"x\u0000y\u0000"}"#),
            r#"{"a":"x\ufffdy\ufffd"}"#
        );
        // An escaped backslash followed by the text u0000 is not an escape; three backslashes are.
        assert_eq!(storable(r#"{"a":"\\u0000"}"#), r#"{"a":"\\u0000"}"#);
        assert_eq!(storable(r#"{"a":"\\\u0000"}"#), r#"{"a":"\\\ufffd"}"#);
        assert!(matches!(
            storable(r#"{"a":"plain"}"#),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_classic_event_parses() {
        let e = EventEnvelope::parse(
            br#"{"id":"evt_1","object":"event","api_version":"2020-03-02","created":1600000000,
                "data":{"object":{"id":"prod_1","object":"product"},"previous_attributes":{"name":"x"}},
                "livemode":true,"pending_webhooks":1,"request":{"id":null},"type":"product.updated"}"#,
        )
        .unwrap();
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.event_type, "product.updated");
        assert_eq!(e.created.unwrap().timestamp(), 1_600_000_000);
        assert!(e.livemode);
        assert_eq!(e.api_version.as_deref(), Some("2020-03-02"));
        assert!(!e.is_thin());
        assert!(e.previous_attributes.is_some());
    }

    #[test]
    fn a_2017_event_without_optional_fields_parses() {
        // 2017-era events had no api_version on some accounts and `request` as a string.
        let e = EventEnvelope::parse(
            br#"{"id":"evt_old","type":"charge.succeeded","created":1500000000,"request":"req_1","data":{"object":{"id":"ch_1"}}}"#,
        )
        .unwrap();
        assert_eq!(e.api_version, None);
        assert!(!e.livemode);
    }

    #[test]
    fn a_thin_event_parses_and_is_thin() {
        let e = EventEnvelope::parse(
            br#"{"id":"evt_test_65R","object":"v2.core.event","type":"v1.billing.meter.error_report_triggered",
                "livemode":false,"created":"2024-09-17T06:20:52.246Z","related_object":{"id":"mtr_1","type":"billing.meter"}}"#,
        )
        .unwrap();
        assert!(e.is_thin());
        assert_eq!(e.created.unwrap().timestamp(), 1_726_554_052);
    }

    #[test]
    fn garbage_and_missing_fields_are_errors() {
        assert!(matches!(
            EventEnvelope::parse(b"not json"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            EventEnvelope::parse(b"[1,2]"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            EventEnvelope::parse(&[0xff, 0xfe]),
            Err(EnvelopeError::NotJson(_))
        ));
        assert_eq!(
            EventEnvelope::parse(br#"{"type":"x"}"#).unwrap_err(),
            EnvelopeError::MissingField("id")
        );
        assert_eq!(
            EventEnvelope::parse(br#"{"id":"evt_1"}"#).unwrap_err(),
            EnvelopeError::MissingField("type")
        );
        assert_eq!(
            EventEnvelope::parse(br#"{"id":"evt_1","type":""}"#).unwrap_err(),
            EnvelopeError::MissingField("type")
        );
        let long = format!(r#"{{"id":"{}","type":"x"}}"#, "e".repeat(300));
        assert_eq!(
            EventEnvelope::parse(long.as_bytes()).unwrap_err(),
            EnvelopeError::TooLong("id")
        );
    }

    #[test]
    fn wrong_types_in_fields_we_do_not_need_are_fine() {
        let e = EventEnvelope::parse(
            br#"{"id":"evt_1","type":"x.y","created":1600000000,"pending_webhooks":"many","data":{"object":{"id":"o"},"extra":1}}"#,
        )
        .unwrap();
        assert_eq!(e.event_type, "x.y");
    }
}
