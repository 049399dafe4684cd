//! Properties: the parsers never panic on arbitrary input, and the real endpoint
//! never answers 5xx to arbitrary bodies and signature headers (the database being up).
//! Case counts are bounded; the cargo-fuzz targets in fuzz/ go further.

use proptest::prelude::*;
use stripe_worker::envelope::EventEnvelope;
use stripe_worker::signature::{StripeSignatureHeader, Verifier, WebhookSecret};

use crate::helpers::{post_raw_to, spawn_app, SECRET};

/// Bodies: raw bytes, or JSON shaped like an event with arbitrary parts (known types included,
/// so handlers see objects they cannot make sense of).
fn body() -> impl Strategy<Value = Vec<u8>> {
    let kind = prop_oneof![
        Just("product.updated".to_owned()),
        Just("price.created".to_owned()),
        Just("checkout.session.completed".to_owned()),
        Just("payment_intent.succeeded".to_owned()),
        Just("customer.subscription.updated".to_owned()),
        Just("invoice.paid".to_owned()),
        "[a-z._]{0,24}",
    ];
    let object = prop_oneof![
        Just("null".to_owned()),
        Just("{}".to_owned()),
        Just(r#"{"id":"x","customer":7,"items":{"data":[{}]},"status":[]}"#.to_owned()),
        r#"\{"id":"[a-z_0-9]{0,8}"(,"[a-z_]{1,12}":("[ -~]{0,12}"|-?[0-9]{1,20}|true|null|\{\}|\[\]))*\}"#,
        "[ -~]{0,40}",
    ];
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (
            "[a-z_0-9]{0,12}",
            kind,
            object,
            any::<i64>(),
            any::<bool>()
        )
            .prop_map(|(id, kind, object, created, livemode)| {
                format!(
                    r#"{{"id":"evt_{id}","type":"{kind}","created":{created},"livemode":{livemode},"data":{{"object":{object}}}}}"#
                )
                .into_bytes()
            }),
    ]
}

/// Headers: printable ASCII (what HTTP carries), shaped like Stripe's or not.
fn header() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        "(t=-?[0-9]{0,20}|v1=[0-9a-f]{0,64}|v0=[0-9a-z]{0,8}|[ -~]{0,6}),{0,3}(t=-?[0-9]{0,20}|v1=[0-9a-f]{0,64}){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_envelope_parser_never_panics(bytes in body()) {
        if let Ok(e) = EventEnvelope::parse(&bytes) {
            prop_assert!(!e.id.trim().is_empty() && !e.event_type.trim().is_empty());
        }
    }

    #[test]
    fn the_signature_parser_and_verifier_never_panic(h in header(), bytes in body(), now in any::<i64>()) {
        let _ = h.parse::<StripeSignatureHeader>();
        let verifier = Verifier::new(
            vec![WebhookSecret::parse(SECRET).unwrap()],
            std::time::Duration::from_secs(300),
        );
        let _ = verifier.verify(Some(&h), &bytes, now);
    }
}

#[test]
fn the_endpoint_never_answers_5xx_to_arbitrary_deliveries() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app());
    let url = app.webhook_url();
    let http = reqwest::Client::new();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    // Signed correctly (so the body reaches the envelope parser and the handlers), signed
    // with a header of arbitrary shape, or not signed at all.
    let case = (body(), header(), 0u8..3);
    proptest::test_runner::TestRunner::new(config)
        .run(&case, |(bytes, h, how)| {
            let signature = match how {
                0 => Some(app.secret.sign(chrono::Utc::now().timestamp(), &bytes)),
                1 => Some(h),
                _ => None,
            };
            let answer = rt.block_on(post_raw_to(&http, &url, bytes, signature.as_deref()));
            prop_assert!(answer.status < 500, "{} {:?}", answer.status, answer.body);
            Ok(())
        })
        .unwrap();
    rt.block_on(async move { drop(app) });
}
