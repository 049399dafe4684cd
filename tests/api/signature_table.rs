//! The `Stripe-Signature` header, variant by variant, against the official SDK's own verifier
//! (stripe-python's `WebhookSignature.verify_header`, run at test time; scripts/test.sh installs
//! it). We never accept a header the SDK rejects; where we reject one it accepts, the row says
//! why, and the test fails if that reason stops being true.

use std::collections::HashMap;
use std::process::Command;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use stripe_worker::config::WebhookSettings;
use stripe_worker::signature::{unix_now_rounded_up, Verifier};

const SECRET: &str = "whsec_table_secret";
const BODY: &str = r#"{"id":"evt_table","object":"event","type":"product.created"}"#;

/// What we expect of our verdict relative to the SDK's.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Same verdict as the SDK, whatever it is.
    Agree,
    /// The SDK accepts, we reject, for this reason.
    Stricter(&'static str),
}

struct Case {
    name: &'static str,
    header: String,
    /// STRIPE_WEBHOOK_TOLERANCE_SECS for us, `tolerance=` for the SDK.
    tolerance: i64,
    expect: Expect,
}

/// The v1 MAC Stripe computes: HMAC-SHA256(secret, "<t as sent>." + body), lowercase hex.
fn mac(t: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(BODY.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

const INT_QUIRK: &str = "Python's int() is looser than a decimal timestamp";
const SPLIT_QUIRK: &str = "the SDK's split(\"=\", 2) drops what follows a second '='";
const ZERO_REFUSED: &str =
    "STRIPE_WEBHOOK_TOLERANCE_SECS=0 is refused at start-up: the SDK reads 0 as no age check";
const NEGATIVE_REFUSED: &str = "a negative STRIPE_WEBHOOK_TOLERANCE_SECS is refused at start-up";

fn cases(now: i64) -> Vec<Case> {
    let t = now - 10;
    let s = mac(&t.to_string());
    let old = now - 1000;
    let s_old = mac(&old.to_string());
    let future = now + 3600;
    let s_future = mac(&future.to_string());
    let bad = "0".repeat(64);
    let huge = "99999999999999999999";
    let wide: String = t
        .to_string()
        .chars()
        .map(|c| char::from_u32(0xFF10 + c.to_digit(10).unwrap()).unwrap())
        .collect();
    let underscored = format!("{}_{}", &t.to_string()[..4], &t.to_string()[4..]);
    let case = |name, header: String, expect| Case {
        name,
        header,
        tolerance: 300,
        expect,
    };
    use Expect::*;
    vec![
        case("canonical", format!("t={t},v1={s}"), Agree),
        case(
            "uppercase hex",
            format!("t={t},v1={}", s.to_uppercase()),
            Agree,
        ),
        case("uppercase key T", format!("T={t},v1={s}"), Agree),
        case("uppercase scheme V1", format!("t={t},V1={s}"), Agree),
        case("space after comma", format!("t={t}, v1={s}"), Agree),
        case("tab after comma", format!("t={t},\tv1={s}"), Agree),
        case("space before =", format!("t={t},v1 ={s}"), Agree),
        case("space after = in v1", format!("t={t},v1= {s}"), Agree),
        case("space after v1 value", format!("t={t},v1={s} "), Agree),
        case("tab inside v1 value", format!("t={t},v1=\t{s}"), Agree),
        case("space before t", format!(" t={t},v1={s}"), Agree),
        case("space before = in t", format!("t ={t},v1={s}"), Agree),
        case(
            "space after = in t",
            format!("t= {t},v1={s}"),
            Stricter(INT_QUIRK),
        ),
        case(
            "tab after t value",
            format!("t={t}\t,v1={s}"),
            Stricter(INT_QUIRK),
        ),
        case("t with a plus sign", format!("t=+{t},v1={s}"), Agree),
        case("t with leading zeros", format!("t=000{t},v1={s}"), Agree),
        case(
            "negative t",
            format!("t=-{t},v1={}", mac(&format!("-{t}"))),
            Agree,
        ),
        case(
            "t with underscores",
            format!("t={underscored},v1={s}"),
            Stricter(INT_QUIRK),
        ),
        case(
            "t in full-width digits",
            format!("t={wide},v1={s}"),
            Stricter(INT_QUIRK),
        ),
        case(
            "t beyond 64 bits",
            format!("t={huge},v1={}", mac(huge)),
            Stricter(INT_QUIRK),
        ),
        case("empty t", format!("t=,v1={s}"), Agree),
        case("t not a number", format!("t=abc,v1={s}"), Agree),
        case("no t", format!("v1={s}"), Agree),
        case(
            "duplicate t, first one signed",
            format!("t={t},t={old},v1={s}"),
            Agree,
        ),
        case(
            "duplicate t, second one signed",
            format!("t={old},t={t},v1={s}"),
            Agree,
        ),
        case("a later bare t", format!("t={t},v1={s},t"), Agree),
        case("a bare v1", format!("t={t},v1={s},v1"), Agree),
        case("empty parts", format!(",t={t},,v1={s},"), Agree),
        case("v1 before t", format!("v1={s},t={t}"), Agree),
        case(
            "extra schemes",
            format!("t={t},v0={s},v2=abc,x=y,novalue,v1={s}"),
            Agree,
        ),
        case("only v0", format!("t={t},v0={s}"), Agree),
        case(
            "multiple v1, last matches",
            format!("t={t},v1={bad},v1={s}"),
            Agree,
        ),
        case(
            "multiple v1, none matches",
            format!("t={t},v1={bad},v1={bad}"),
            Agree,
        ),
        case("v1 of another secret", format!("t={t},v1={bad}"), Agree),
        case(
            "v1 value with =x",
            format!("t={t},v1={s}=x"),
            Stricter(SPLIT_QUIRK),
        ),
        case(
            "v1 value padded with =",
            format!("t={t},v1={s}="),
            Stricter(SPLIT_QUIRK),
        ),
        case("empty header", String::new(), Agree),
        case("too old for 300 s", format!("t={old},v1={s_old}"), Agree),
        case("in the future", format!("t={future},v1={s_future}"), Agree),
        Case {
            name: "old, tolerance 0",
            header: format!("t={old},v1={s_old}"),
            tolerance: 0,
            expect: Stricter(ZERO_REFUSED),
        },
        Case {
            name: "fresh, tolerance 0",
            header: format!("t={t},v1={s}"),
            tolerance: 0,
            expect: Stricter(ZERO_REFUSED),
        },
        Case {
            name: "fresh, tolerance -300",
            header: format!("t={t},v1={s}"),
            tolerance: -300,
            expect: Agree,
        },
        Case {
            name: "an hour ahead, tolerance -300",
            header: format!("t={future},v1={s_future}"),
            tolerance: -300,
            expect: Stricter(NEGATIVE_REFUSED),
        },
        Case {
            name: "old, tolerance 2000",
            header: format!("t={old},v1={s_old}"),
            tolerance: 2000,
            expect: Agree,
        },
    ]
}

/// The SDK's verdict on each case: `Ok(())` or its error message.
fn sdk_verdicts(cases: &[Case]) -> Vec<Result<(), String>> {
    let input = json!({
        "payload": BODY,
        "secret": SECRET,
        "cases": cases.iter().map(|c| json!([c.header, c.tolerance])).collect::<Vec<_>>(),
    });
    let script = "import json, sys, stripe\n\
        spec = json.loads(sys.stdin.read())\n\
        out = []\n\
        for header, tolerance in spec['cases']:\n\
        \x20   try:\n\
        \x20       stripe.WebhookSignature.verify_header(spec['payload'], header, spec['secret'], tolerance)\n\
        \x20       out.append(None)\n\
        \x20   except Exception as e:\n\
        \x20       out.append(type(e).__name__ + ': ' + str(e))\n\
        print(json.dumps(out))";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs stripe-python)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "stripe-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    verdicts
        .into_iter()
        .map(|v| v.map_or(Ok(()), Err))
        .collect()
}

/// Our verdict, through the same configuration parsing `serve` uses.
fn our_verdict(case: &Case) -> Result<(), String> {
    let env: HashMap<String, String> = [
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("STRIPE_WEBHOOK_TOLERANCE_SECS", case.tolerance.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = WebhookSettings::from_source(&env).map_err(|e| e.to_string())?;
    Verifier::new(settings.secrets, settings.tolerance)
        .verify(Some(&case.header), BODY.as_bytes(), unix_now_rounded_up())
        .map_err(|e| e.to_string())
}

#[test]
fn header_variants_are_never_accepted_where_the_official_sdk_rejects_them() {
    let now = chrono::Utc::now().timestamp();
    let cases = cases(now);
    assert!(cases.len() >= 25);
    let sdk = sdk_verdicts(&cases);
    assert_eq!(sdk.len(), cases.len());
    let mut problems = Vec::new();
    for (case, sdk) in cases.iter().zip(sdk) {
        let ours = our_verdict(case);
        let verdict = |r: &Result<(), String>| if r.is_ok() { "accepts" } else { "rejects" };
        let fine = match case.expect {
            Expect::Agree => ours.is_ok() == sdk.is_ok(),
            Expect::Stricter(_) => sdk.is_ok() && ours.is_err(),
        };
        if !fine {
            let expected = match case.expect {
                Expect::Agree => "the SDK's verdict".to_owned(),
                Expect::Stricter(why) => format!("the SDK accepts, we reject ({why})"),
            };
            problems.push(format!(
                "{} ({:?}, tolerance {}): SDK {} ({:?}), we {} ({:?}); expected {expected}",
                case.name,
                case.header,
                case.tolerance,
                verdict(&sdk),
                sdk.err(),
                verdict(&ours),
                ours.err(),
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
