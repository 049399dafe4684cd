//! `Stripe-Signature` header parsing and verification never panic, whatever the header and body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_worker::signature::{StripeSignatureHeader, Verifier, WebhookSecret};

fuzz_target!(|data: &[u8]| {
    // First line: the header; the rest: the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (header, body) = data.split_at(split);
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let _ = header.parse::<StripeSignatureHeader>();
    let secret = WebhookSecret::parse("whsec_fuzz").unwrap();
    let verifier = Verifier::new(vec![secret.clone()], std::time::Duration::from_secs(300));
    let _ = verifier.verify(Some(header), body, 1_700_000_000);
    let _ = verifier.verify(None, body, i64::MAX);
    // A header signed for this body always verifies at its own timestamp.
    let ts = header.len() as i64;
    let signed = secret.sign(ts, body);
    assert!(verifier.verify(Some(&signed), body, ts).is_ok());
});
