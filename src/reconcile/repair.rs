//! Repairs: what Stripe shows is ingested through the normal pipeline as a synthetic event, so
//! the handlers and triggers do the writing and the event log records the repair. The event
//! says what it is (`evt_reconcile_<object id>_<hash>`, the type of an update of that object),
//! carries the object byte for byte as Stripe showed it, and is `created` when Stripe showed
//! it: a real event about a later change still wins the per-object ordering.

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::drift::{ObjectKind, Seen};

/// The prefix of every repair event id.
pub const EVENT_PREFIX: &str = "evt_reconcile_";

/// A repair event, ready for `Pipeline::deliver`.
pub struct Synthetic {
    pub id: String,
    pub event_type: &'static str,
    pub body: String,
}

fn event_type(object: ObjectKind, deleted: bool) -> &'static str {
    match (object, deleted) {
        (ObjectKind::Customer, true) => "customer.deleted",
        (ObjectKind::Customer, false) => "customer.updated",
        (ObjectKind::Subscription, _) => "customer.subscription.updated",
        (ObjectKind::Invoice, _) => "invoice.updated",
    }
}

#[derive(Deserialize, Default)]
struct Mode {
    #[serde(default)]
    livemode: Option<bool>,
}

/// The event that ingests `seen` (the object `object_id`, in `api_version`). `livemode`: the
/// mode when the object does not say (a deleted customer's stub).
pub fn synthetic(
    object: ObjectKind,
    object_id: &str,
    seen: &Seen,
    api_version: Option<&str>,
    livemode: bool,
) -> Synthetic {
    let event_type = event_type(object, seen.deleted);
    let created = seen.at.timestamp();
    let mut hash = Sha256::new();
    hash.update(event_type.as_bytes());
    hash.update(created.to_be_bytes());
    hash.update(seen.raw.get().as_bytes());
    let hash = hex::encode(hash.finalize());
    let short_id: String = object_id.chars().take(64).collect();
    let id = format!("{EVENT_PREFIX}{short_id}_{}", &hash[..16]);
    let livemode = serde_json::from_str::<Mode>(seen.raw.get())
        .unwrap_or_default()
        .livemode
        .unwrap_or(livemode);
    // The object goes in as Stripe sent it; only the envelope around it is written here.
    let head = json!({
        "id": id,
        "object": "event",
        "api_version": api_version,
        "created": created,
    });
    let tail = json!({
        "livemode": livemode,
        "pending_webhooks": 0,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
    });
    let (head, tail) = (head.to_string(), tail.to_string());
    let body = format!(
        "{},\"data\":{{\"object\":{}}},{}",
        &head[..head.len() - 1],
        seen.raw.get(),
        &tail[1..]
    );
    Synthetic {
        id,
        event_type,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    #[test]
    fn a_repair_event_carries_the_object_as_seen_and_says_what_it_is() {
        let raw =
            r#"{"id":"sub_1","object":"subscription","livemode":true,"status":"active","n":1.50}"#;
        let seen = Seen {
            raw: RawValue::from_string(raw.into()).unwrap(),
            at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            deleted: false,
        };
        let e = synthetic(
            ObjectKind::Subscription,
            "sub_1",
            &seen,
            Some("2025-03-31.basil"),
            false,
        );
        assert!(e.id.starts_with("evt_reconcile_sub_1_"), "{}", e.id);
        assert_eq!(e.event_type, "customer.subscription.updated");
        assert!(
            e.body.contains(&format!("\"data\":{{\"object\":{raw}}}")),
            "{}",
            e.body
        );
        let parsed = crate::envelope::EventEnvelope::parse(e.body.as_bytes()).unwrap();
        assert_eq!(parsed.id, e.id);
        assert_eq!(parsed.created.unwrap().timestamp(), 1_800_000_000);
        assert!(parsed.livemode, "the object's mode");
        assert_eq!(parsed.api_version.as_deref(), Some("2025-03-31.basil"));
        // The same snapshot seen at the same second is the same event; another moment is not.
        assert_eq!(
            synthetic(ObjectKind::Subscription, "sub_1", &seen, None, false).id,
            e.id
        );
        let later = Seen {
            at: seen.at + chrono::Duration::seconds(1),
            ..seen.clone()
        };
        assert_ne!(
            synthetic(ObjectKind::Subscription, "sub_1", &later, None, false).id,
            e.id
        );
        let gone = Seen {
            raw: RawValue::from_string(
                r#"{"id":"cus_1","object":"customer","deleted":true}"#.into(),
            )
            .unwrap(),
            deleted: true,
            ..seen
        };
        let e = synthetic(ObjectKind::Customer, "cus_1", &gone, None, false);
        assert_eq!(e.event_type, "customer.deleted");
        assert!(
            !crate::envelope::EventEnvelope::parse(e.body.as_bytes())
                .unwrap()
                .livemode
        );
    }
}
