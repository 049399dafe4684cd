//! What the operator commands share: a pipeline built from the environment (no webhook secret
//! needed) and the parsing of instants given on the command line.

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{PipelineSettings, Source};
use crate::ingest::Pipeline;

/// A pipeline configured like `serve`'s (database, retry rules, STRIPE_LIVEMODE, Stripe API and
/// Supabase Auth when set), named `<role>:<WORKER_ID or host:pid>` in `locked_by`.
pub fn pipeline(src: &dyn Source, role: &str) -> anyhow::Result<Pipeline> {
    Pipeline::new(&PipelineSettings::from_source(src)?.for_role(role))
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
}
