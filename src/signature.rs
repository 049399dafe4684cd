//! Stripe webhook signatures, isolated from everything else.
//!
//! `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]`. The MAC is HMAC-SHA256 keyed
//! with the whole endpoint secret (`whsec_…` included) over `"<t>." + raw body`, lowercase hex.
//!
//! The header is read exactly as the official SDK reads it (stripe-python's
//! `WebhookSignature._get_timestamp_and_signatures`,
//! https://github.com/stripe/stripe-python/blob/master/stripe/_webhook.py), never more leniently:
//! items split on `,`, key and value on `=`, nothing trimmed; the key must be exactly `t` or
//! `v1`; the first `t` is the timestamp; a bare `t` or `v1` item (no `=`) makes the header
//! malformed; every `v1` is tried and compared with the lowercase hex MAC in constant time, so
//! uppercase or padded values never match; `v0` and other schemes are ignored. Where Python's
//! `int()` is looser than Stripe's scheme (whitespace, `_`, Unicode digits, values beyond
//! 64 bits) and where the SDK cuts a value at a second `=`, we refuse: those are quirks of the
//! language and of `split("=", 2)`, not forms Stripe sends.
//!
//! Age: a timestamp more than the tolerance in the past is rejected (the SDK's
//! `timestamp < time.time() - tolerance`); timestamps in the future pass, as in the SDKs.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

/// One endpoint signing secret (`whsec_…`).
#[derive(Clone, Debug)]
pub struct WebhookSecret(Secret);

impl WebhookSecret {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        if !raw.starts_with("whsec_") || raw.len() <= "whsec_".len() {
            return Err("each secret must be an endpoint signing secret starting with whsec_");
        }
        Ok(Self(Secret::new(raw)))
    }

    fn mac(&self, timestamp: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(self.0.expose().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// The header Stripe would send for `body` at `timestamp` (used by `trigger` and tests).
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        format!(
            "t={timestamp},v1={}",
            hex::encode(self.mac(timestamp, body))
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    #[error("no v1 signature in Stripe-Signature header")]
    NoV1Signature,
    #[error("signature does not match the payload")]
    Mismatch,
    #[error("signature timestamp is too old ({age_secs}s > {tolerance_secs}s tolerance)")]
    TimestampTooOld { age_secs: i64, tolerance_secs: i64 },
}

impl SignatureError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_signature",
            Self::Malformed(_) | Self::NoV1Signature => "malformed_signature",
            Self::Mismatch => "invalid_signature",
            Self::TimestampTooOld { .. } => "stale_timestamp",
        }
    }
}

/// The parsed `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeSignatureHeader {
    pub timestamp: i64,
    /// Every well-formed `v1` value; a malformed one could never match and is dropped.
    pub v1: Vec<[u8; 32]>,
}

impl FromStr for StripeSignatureHeader {
    type Err = SignatureError;

    fn from_str(header: &str) -> Result<Self, Self::Err> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                // The SDK indexes the value of every `t` and `v1` item: a bare one is an error
                // there, so it is one here; other bare items are skipped by both.
                return match item {
                    "t" => Err(SignatureError::Malformed("t without a value")),
                    "v1" => Err(SignatureError::Malformed("v1 without a value")),
                    _ => continue,
                };
            };
            match key {
                "t" if timestamp.is_none() => timestamp = Some(parse_timestamp(value)?),
                "v1" => {
                    if let Some(mac) = parse_lowercase_mac(value) {
                        v1.push(mac);
                    }
                }
                _ => {} // a later `t`, v0 and schemes we do not know
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed("no t= timestamp"))?;
        if v1.is_empty() {
            return Err(SignatureError::NoV1Signature);
        }
        Ok(Self { timestamp, v1 })
    }
}

/// A decimal integer with an optional sign, as Rust and Go parse one (a subset of what
/// Python's `int()` takes: no whitespace, no `_`, ASCII digits only, 64 bits).
fn parse_timestamp(value: &str) -> Result<i64, SignatureError> {
    let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed("t is not a unix timestamp"));
    }
    value
        .parse::<i64>()
        .map_err(|_| SignatureError::Malformed("t is not a unix timestamp"))
}

/// 64 lowercase hex digits, the only form the SDK's comparison with `hexdigest()` can match;
/// anything else can never match and is dropped.
fn parse_lowercase_mac(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64
        || !value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut mac = [0u8; 32];
    hex::decode_to_slice(value, &mut mac).ok()?;
    Some(mac)
}

/// The current unix time rounded up to the next whole second: comparing whole seconds with
/// it is never more lenient than the SDK's comparison with the fractional `time.time()`.
pub fn unix_now_rounded_up() -> i64 {
    let now = chrono::Utc::now();
    now.timestamp() + i64::from(now.timestamp_subsec_nanos() > 0)
}

/// The signing secrets this endpoint accepts (several during a rotation).
#[derive(Clone)]
pub struct Verifier {
    secrets: Vec<WebhookSecret>,
    tolerance_secs: i64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Verifier {
    /// `tolerance` is the maximum age of a timestamp taken literally: zero rejects every
    /// timestamp in the past. (The configuration refuses zero: the SDKs read it as "no check".)
    pub fn new(secrets: Vec<WebhookSecret>, tolerance: std::time::Duration) -> Self {
        Self {
            secrets,
            tolerance_secs: i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Checks `header` against the raw `body` at time `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header: StripeSignatureHeader = header.ok_or(SignatureError::MissingHeader)?.parse()?;
        let matched = self.secrets.iter().any(|secret| {
            let expected = secret.mac(header.timestamp, body);
            // Fold over every candidate so the time taken does not depend on which one matched.
            header
                .v1
                .iter()
                .fold(subtle::Choice::from(0), |acc, candidate| {
                    acc | expected.ct_eq(candidate)
                })
                .into()
        });
        if !matched {
            return Err(SignatureError::Mismatch);
        }
        let age = now.saturating_sub(header.timestamp);
        if age > self.tolerance_secs {
            return Err(SignatureError::TimestampTooOld {
                age_secs: age,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn secret(s: &str) -> WebhookSecret {
        WebhookSecret::parse(s).unwrap()
    }

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(
            secrets.iter().map(|s| secret(s)).collect(),
            Duration::from_secs(300),
        )
    }

    const BODY: &[u8] = br#"{"id":"evt_1","type":"product.created"}"#;
    const NOW: i64 = 1_700_000_000;

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let header = secret("whsec_test").sign(NOW, BODY);
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW),
            Ok(())
        );
    }

    #[test]
    fn a_known_vector_matches_an_independent_hmac() {
        // printf '%s' '1700000000.{"id":"evt_1","type":"product.created"}' |
        //   openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            secret("whsec_test").sign(NOW, BODY),
            "t=1700000000,v1=63d14b611d04761db5090f792b7954ea0046d0423637c66571ff05ba83ce9499"
        );
    }

    #[test]
    fn every_v1_is_tried_and_v0_and_unknown_schemes_are_ignored() {
        let good = secret("whsec_test").sign(NOW, BODY);
        let good_mac = &good[good.find("v1=").unwrap() + 3..];
        let header = format!(
            "t={NOW},v0=abc,v1={},v1={good_mac},x9=zzz,novalue",
            "0".repeat(64)
        );
        assert_eq!(
            verifier(&["whsec_test"]).verify(Some(&header), BODY, NOW),
            Ok(())
        );
    }

    #[test]
    fn any_secret_of_a_rotation_is_accepted() {
        let header = secret("whsec_new").sign(NOW, BODY);
        assert_eq!(
            verifier(&["whsec_old", "whsec_new"]).verify(Some(&header), BODY, NOW),
            Ok(())
        );
    }

    #[test]
    fn header_problems_are_told_apart() {
        let v = verifier(&["whsec_test"]);
        assert_eq!(
            v.verify(None, BODY, NOW),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            v.verify(Some(""), BODY, NOW),
            Err(SignatureError::Malformed("no t= timestamp"))
        );
        assert_eq!(
            v.verify(Some("t=abc,v1=00"), BODY, NOW),
            Err(SignatureError::Malformed("t is not a unix timestamp"))
        );
        assert_eq!(
            v.verify(Some(&format!("t={NOW},v0=abcd")), BODY, NOW),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            v.verify(Some(&format!("t={NOW},v1=nothex")), BODY, NOW),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            v.verify(Some(&format!("t={NOW},v1={}", "ab".repeat(32))), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_wrong_secret_or_changed_timestamp_do_not_verify() {
        let header = secret("whsec_test").sign(NOW, BODY);
        let v = verifier(&["whsec_test"]);
        assert_eq!(
            v.verify(Some(&header), b"{\"id\":\"evt_2\"}", NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verifier(&["whsec_other"]).verify(Some(&header), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        let shifted = header.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            v.verify(Some(&shifted), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn only_old_timestamps_are_rejected() {
        let v = verifier(&["whsec_test"]);
        let at = |t: i64| secret("whsec_test").sign(t, BODY);
        assert_eq!(v.verify(Some(&at(NOW - 300)), BODY, NOW), Ok(()));
        assert_eq!(
            v.verify(Some(&at(NOW - 301)), BODY, NOW),
            Err(SignatureError::TimestampTooOld {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        // The SDKs accept timestamps in the future (clock skew on our side).
        assert_eq!(v.verify(Some(&at(NOW + 3600)), BODY, NOW), Ok(()));
    }

    #[test]
    fn only_the_sdks_exact_form_is_read() {
        let v = verifier(&["whsec_test"]);
        let good = secret("whsec_test").sign(NOW, BODY);
        let mac = good.split_once(",v1=").unwrap().1.to_owned();
        let rejected = [
            format!("t={NOW}, v1={mac}"),
            format!("t={NOW},v1 ={mac}"),
            format!("t={NOW},v1= {mac}"),
            format!("t={NOW},v1={mac} "),
            format!(" t={NOW},v1={mac}"),
            format!("t ={NOW},v1={mac}"),
            format!("t={NOW},v1={}", mac.to_uppercase()),
            format!("t={NOW},v1={mac},v1"),
            format!("t,t={NOW},v1={mac}"),
            format!("t={NOW},v1={mac}=x"),
            format!("t= {NOW},v1={mac}"),
            format!("t=1_{},v1={mac}", &NOW.to_string()[1..]),
        ];
        for header in rejected {
            assert!(v.verify(Some(&header), BODY, NOW).is_err(), "{header}");
        }
        let accepted = [
            format!("t=+{NOW},v1={mac}"),
            format!("t=0{NOW},v1={mac}"),
            format!("v0=x,,t={NOW},,v1={mac},t=later,v1=junk,novalue"),
        ];
        for header in accepted {
            assert_eq!(v.verify(Some(&header), BODY, NOW), Ok(()), "{header}");
        }
    }

    #[test]
    fn a_zero_tolerance_is_literal() {
        let v = Verifier::new(vec![secret("whsec_test")], Duration::ZERO);
        let at = |t: i64| secret("whsec_test").sign(t, BODY);
        assert_eq!(v.verify(Some(&at(NOW)), BODY, NOW), Ok(()));
        assert!(v.verify(Some(&at(NOW - 1)), BODY, NOW).is_err());
    }

    #[test]
    fn secrets_must_look_like_endpoint_secrets() {
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("sk_test_123").is_err());
        assert!(!format!("{:?}", secret("whsec_hidden")).contains("hidden"));
    }
}
