//! What the operator commands share: a pipeline built from the environment (no webhook secret
//! needed) and the parsing of instants given on the command line.

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{
    self, DatabaseSettings, ProvisioningSettings, RetrySettings, Source, StripeApiSettings,
    SupabaseAuthSettings,
};
use crate::ingest::Pipeline;

/// A pipeline configured like `serve`'s (database, retry rules, STRIPE_LIVEMODE, Stripe API and
/// Supabase Auth when set), named `<role>:<WORKER_ID or host:pid>` in `locked_by`.
pub fn pipeline(src: &dyn Source, role: &str) -> anyhow::Result<Pipeline> {
    let mut pipeline = Pipeline::for_cli(
        &DatabaseSettings::from_source(src)?,
        RetrySettings::from_source(src)?,
        StripeApiSettings::from_source(src)?,
        SupabaseAuthSettings::from_source(src)?,
        ProvisioningSettings::from_source(src)?,
        worker_id(src, role),
    )?;
    pipeline.livemode = config::livemode(src)?;
    Ok(pipeline)
}

fn worker_id(src: &dyn Source, role: &str) -> String {
    let base = src.get("WORKER_ID").unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!("{host}:{}", std::process::id())
    });
    format!("{role}:{base}")
}

/// An instant: RFC 3339 (`2026-01-31T12:00:00Z`, any offset) or a date (`2026-01-31`, midnight
/// UTC).
pub fn parse_instant(raw: &str) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!("expected an RFC 3339 instant (2026-01-31T12:00:00Z) or a date (2026-01-31), got {raw:?}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_both_forms_and_garbage_is_an_error() {
        assert_eq!(
            parse_instant("2026-01-31T13:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T12:00:00+00:00"
        );
        assert_eq!(
            parse_instant("2026-01-31").unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert!(parse_instant("yesterday").is_err());
        assert!(parse_instant("2026-02-30").is_err());
    }

    #[test]
    fn worker_ids_name_the_role() {
        let env: std::collections::HashMap<String, String> =
            [("WORKER_ID".to_owned(), "w1".to_owned())].into();
        assert_eq!(worker_id(&env, "replay"), "replay:w1");
    }
}
