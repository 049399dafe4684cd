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

/// PostgreSQL's jsonb refuses two escapes that are valid JSON: `\u0000` and a UTF-16
/// surrogate without its pair (`\ud800` alone, a lone `\udc00`). Such an event could never be
/// stored and Stripe would redeliver it for days. After the signature is checked, each of those
/// escapes is replaced with `\ufffd` (the replacement character), the only change ever made to
/// a stored event; the exact body is then kept beside it (`event_raw_body`). Borrowed when
/// nothing needed replacing.
pub fn storable(raw: &str) -> std::borrow::Cow<'_, str> {
    let bytes = raw.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `raw` already in `out`
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        // In JSON a backslash only starts an escape; the character after it is never one.
        let Some(unit) = utf16_escape(bytes, i) else {
            i += 2;
            continue;
        };
        let paired = match unit {
            0xD800..=0xDBFF => {
                let next = utf16_escape(bytes, i + 6);
                if next.is_some_and(|n| (0xDC00..=0xDFFF).contains(&n)) {
                    i += 12;
                    continue;
                }
                false
            }
            0xDC00..=0xDFFF | 0 => false,
            _ => true,
        };
        if !paired {
            let out = out.get_or_insert_with(|| String::with_capacity(raw.len()));
            out.push_str(&raw[copied..i]);
            out.push_str("\\ufffd");
            copied = i + 6;
        }
        i += 6;
    }
    match out {
        None => std::borrow::Cow::Borrowed(raw),
        Some(mut out) => {
            out.push_str(&raw[copied..]);
            std::borrow::Cow::Owned(out)
        }
    }
}

/// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
fn utf16_escape(bytes: &[u8], at: usize) -> Option<u16> {
    let escape = bytes.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    if !escape[2..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(&escape[2..]).ok()?, 16).ok()
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
    fn unpaired_surrogate_escapes_become_replacement_characters_and_pairs_stay() {
        assert_eq!(storable(r#"{"a":"\ud800"}"#), r#"{"a":"\ufffd"}"#);
        assert_eq!(storable(r#"{"a":"\uDC00x"}"#), r#"{"a":"\ufffdx"}"#);
        assert_eq!(
            storable(r#"{"a":"\ud800\u0041\ud83d\ude00"}"#),
            r#"{"a":"\ufffd\u0041\ud83d\ude00"}"#
        );
        assert_eq!(
            storable(r#"{"a":"\ud800\ud800"}"#),
            r#"{"a":"\ufffd\ufffd"}"#
        );
        assert_eq!(storable(r#"{"a":"\\ud800"}"#), r#"{"a":"\\ud800"}"#);
        assert_eq!(storable(r#"{"a":"\ud8"}"#), r#"{"a":"\ud8"}"#);
        assert_eq!(
            storable("{\"a\":\"\\ud800\u{e9}\"}"),
            "{\"a\":\"\\ufffd\u{e9}\"}"
        );
        assert!(matches!(
            storable(r#"{"a":"\ud83d\ude00 \u00e9"}"#),
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
