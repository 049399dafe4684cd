//! Signature cross-checks: the real signed delivery (golden vector) and the official SDK's own
//! header generator (stripe-python, installed by scripts/test.sh).

use std::process::Command;
use std::time::Duration;

use stripe_worker::signature::{SignatureError, Verifier, WebhookSecret};

use crate::helpers::{fresh_db, spawn_app_with};

const PAYLOAD: &[u8] = include_bytes!("../fixtures/stripe-real-signed-event/payload.txt");
const HEADER: &str = include_str!("../fixtures/stripe-real-signed-event/header.txt");
const SECRET: &str = include_str!("../fixtures/stripe-real-signed-event/secret.txt");

fn golden_timestamp() -> i64 {
    HEADER
        .trim()
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .unwrap()
        .parse()
        .unwrap()
}

fn verifier(secret: &str, tolerance: Duration) -> Verifier {
    Verifier::new(
        vec![WebhookSecret::parse(secret.trim()).unwrap()],
        tolerance,
    )
}

#[test]
fn the_real_stripe_delivery_verifies_and_any_change_breaks_it() {
    let v = verifier(SECRET, Duration::from_secs(300));
    let t = golden_timestamp();
    assert_eq!(v.verify(Some(HEADER.trim()), PAYLOAD, t + 10), Ok(()));
    // Today it is far too old, as it should be.
    assert!(matches!(
        v.verify(Some(HEADER.trim()), PAYLOAD, chrono::Utc::now().timestamp()),
        Err(SignatureError::TimestampTooOld { .. })
    ));
    // Re-serializing the body (what a framework's JSON parser would do) breaks the signature.
    let reserialized =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(PAYLOAD).unwrap()).unwrap();
    assert_eq!(
        v.verify(Some(HEADER.trim()), &reserialized, t),
        Err(SignatureError::Mismatch)
    );
    let mut flipped = PAYLOAD.to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(
        v.verify(Some(HEADER.trim()), &flipped, t),
        Err(SignatureError::Mismatch)
    );
    // Our signer reproduces Stripe's v1 exactly.
    let ours = WebhookSecret::parse(SECRET.trim())
        .unwrap()
        .sign(t, PAYLOAD);
    assert!(HEADER.contains(ours.split_once(",v1=").unwrap().1));
}

#[tokio::test]
async fn the_real_delivery_is_accepted_end_to_end() {
    // A tolerance of ten years lets the 2025 delivery through.
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("STRIPE_WEBHOOK_SECRET", SECRET.trim()),
            ("STRIPE_WEBHOOK_TOLERANCE_SECS", "315360000"),
        ],
    )
    .await;
    let answer = app.post_raw(PAYLOAD.to_vec(), Some(HEADER.trim())).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["event_id"], "evt_1RMgagCMHTTliF5iVoysIuMJ");
    let stored: serde_json::Value = app
        .sql
        .query_one("select event_data from stripe_webhook_events where stripe_event_id = 'evt_1RMgagCMHTTliF5iVoysIuMJ'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        serde_json::from_slice::<serde_json::Value>(PAYLOAD).unwrap()
    );
}

/// Asks stripe-python for the header of each (payload, secret, timestamp).
fn python_headers(cases: &[(String, String, i64)]) -> Vec<String> {
    let input = serde_json::to_string(cases).unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, stripe\n\
             for payload, secret, t in json.loads(sys.argv[1]):\n\
             \x20   print(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=t))",
            &input,
        ])
        .output()
        .expect("python3 runs (scripts/test.sh installs stripe-python)");
    assert!(
        out.status.success(),
        "stripe-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn headers_from_the_official_sdk_verify_and_match_ours() {
    let now = chrono::Utc::now().timestamp();
    let cases: Vec<(String, String, i64)> = vec![
        (
            r#"{"id":"evt_1","type":"product.created"}"#.into(),
            "whsec_abc".into(),
            now,
        ),
        (
            "{\n  \"id\": \"evt_2\",\n  \"name\": \"Caf\u{e9} \u{1F600}\"\n}".into(),
            "whsec_other".into(),
            now - 299,
        ),
        (String::new(), "whsec_empty_body".into(), now + 3600),
        ("x".repeat(100_000), "whsec_big".into(), now),
    ];
    let headers = python_headers(&cases);
    assert_eq!(headers.len(), cases.len());
    for ((payload, secret, t), header) in cases.iter().zip(&headers) {
        let v = verifier(secret, Duration::from_secs(300));
        assert_eq!(
            v.verify(Some(header), payload.as_bytes(), now),
            Ok(()),
            "{header}"
        );
        assert_eq!(
            &WebhookSecret::parse(secret)
                .unwrap()
                .sign(*t, payload.as_bytes()),
            header
        );
        // The SDK's header with the wrong secret or a stale clock is refused.
        assert_eq!(
            verifier("whsec_wrong", Duration::from_secs(300)).verify(
                Some(header),
                payload.as_bytes(),
                now
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(v.verify(Some(header), payload.as_bytes(), t + 301).is_err());
    }
}
