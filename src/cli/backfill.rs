//! `stripe-worker backfill`: lists events from Stripe's Events API and ingests, oldest first,
//! the ones not yet stored, through the same pipeline as webhook deliveries.

use std::io::Write;

use chrono::{DateTime, Duration as Days, Utc};
use clap::Args;

use super::context::{self, parse_instant};
use super::progress::Progress;
use crate::config::{ConfigError, Source, StripeApiSettings};
use crate::envelope::EventEnvelope;
use crate::ingest::{DeliveryStatus, Pipeline};
use crate::stripe_api::StripeApi;
use crate::stripe_events::{self, RateLimitBackoff, MAX_PAGE};

/// Ingest events from Stripe's Events API that are not stored yet (missed deliveries).
///
/// Needs STRIPE_SECRET_KEY (and honours STRIPE_API_BASE). Stripe keeps events for 30 days
/// only: an earlier --since finds nothing before that. Events are ingested oldest first
/// through the same pipeline as webhook deliveries; stored ones are counted and left alone,
/// so running it twice is harmless. Rate limiting (HTTP 429) is waited out with exponential
/// back-off. Exit status 0 when every ingested event ended processed or ignored.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  stripe-worker backfill --since 2026-01-30
  stripe-worker backfill --since 2026-01-30T08:00:00Z --until 2026-01-30T12:00:00Z")]
pub struct BackfillArgs {
    /// Events created at or after this instant (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_instant, value_name = "RFC3339")]
    pub since: DateTime<Utc>,
    /// Events created at or before this instant (default: now).
    #[arg(long, value_parser = parse_instant, value_name = "RFC3339")]
    pub until: Option<DateTime<Utc>>,
    /// Events per page (Stripe allows at most 100).
    #[arg(long, default_value_t = MAX_PAGE, hide = true,
          value_parser = clap::value_parser!(i64).range(1..=MAX_PAGE))]
    pub page_size: i64,
}

/// Which of `$1` are stored already.
const STORED: &str =
    "select stripe_event_id from public.stripe_webhook_events where stripe_event_id = any($1)";

/// Ids checked per query.
const STORED_CHUNK: usize = 1000;

/// How long Stripe keeps events.
const RETENTION_DAYS: i64 = 30;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackfillSummary {
    pub listed: usize,
    pub already_stored: usize,
    pub processed: usize,
    pub ignored: usize,
    /// Stored, but the handler failed (retry scheduled, or dead).
    pub failed: usize,
    /// 429 answers waited out.
    pub rate_limited: u32,
}

impl BackfillSummary {
    pub fn ingested(&self) -> usize {
        self.processed + self.ignored + self.failed
    }

    pub fn success(&self) -> bool {
        self.failed == 0
    }

    fn line(&self) -> String {
        format!(
            "listed {}, already stored {}, ingested {}: processed {}, ignored {}, failed {}",
            self.listed,
            self.already_stored,
            self.ingested(),
            self.processed,
            self.ignored,
            self.failed
        )
    }
}

pub async fn run(
    args: &BackfillArgs,
    src: &dyn Source,
    out: &mut dyn Write,
    interactive: bool,
) -> anyhow::Result<BackfillSummary> {
    run_with(args, src, out, interactive, RateLimitBackoff::default()).await
}

/// `run` with the rate-limit back-off given (tests shorten it).
pub async fn run_with(
    args: &BackfillArgs,
    src: &dyn Source,
    out: &mut dyn Write,
    interactive: bool,
    backoff: RateLimitBackoff,
) -> anyhow::Result<BackfillSummary> {
    let settings = StripeApiSettings::from_source(src)?
        .ok_or(ConfigError::Missing("STRIPE_SECRET_KEY"))
        .map_err(|e| anyhow::anyhow!("{e}: backfill reads Stripe's Events API"))?;
    if let Some(until) = args.until {
        anyhow::ensure!(until >= args.since, "--until is before --since");
    }
    if args.since < Utc::now() - Days::days(RETENTION_DAYS) {
        writeln!(
            out,
            "note: Stripe's Events API keeps events for {RETENTION_DAYS} days; older ones cannot be listed"
        )?;
    }
    let api = StripeApi::new(&settings)?;
    let pipeline = context::pipeline(src, "backfill")?;
    let mut summary = BackfillSummary::default();

    // Stripe lists newest first: collect everything, then ingest oldest first.
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = stripe_events::list_page(
            &api,
            args.since,
            args.until,
            after.as_deref(),
            args.page_size,
            backoff,
        )
        .await?;
        summary.rate_limited += page.rate_limited;
        after = page.events.last().map(|e| e.id.as_str().to_owned());
        let more = page.has_more && after.is_some();
        events.extend(page.events);
        if !more {
            break;
        }
    }
    summary.listed = events.len();
    events.reverse();
    // Stable: events of the same second keep Stripe's (reversed) order.
    events.sort_by_key(|e| e.created);

    let ids: Vec<String> = events.iter().map(|e| e.id.as_str().to_owned()).collect();
    let stored = stored_ids(&pipeline, &ids).await?;
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !stored.contains(e.id.as_str()))
        .collect();
    summary.already_stored = events.len() - missing.len();

    let request_id = format!("backfill:{}", uuid::Uuid::new_v4());
    let progress = Progress::new(missing.len(), interactive, "ingesting");
    for event in missing {
        let body = stripe_events::envelope(event).to_string();
        let envelope = EventEnvelope::parse(crate::envelope::storable(&body).as_bytes())?;
        let status = pipeline.deliver(&envelope, &body, &request_id).await?;
        let label = match status {
            DeliveryStatus::Processed => {
                summary.processed += 1;
                "processed"
            }
            DeliveryStatus::Ignored => {
                summary.ignored += 1;
                "ignored"
            }
            DeliveryStatus::Failed => {
                summary.failed += 1;
                "failed"
            }
            // Stored meanwhile (a webhook delivery of it arrived).
            DeliveryStatus::Duplicate => {
                summary.already_stored += 1;
                "already stored"
            }
        };
        progress.line(
            out,
            &format!("{} {} -> {label}", envelope.id, envelope.event_type),
        )?;
        progress.inc();
    }
    progress.finish();
    if summary.rate_limited > 0 {
        writeln!(
            out,
            "rate limited {} times (waited and retried)",
            summary.rate_limited
        )?;
    }
    writeln!(out, "{}", summary.line())?;
    Ok(summary)
}

async fn stored_ids(
    pipeline: &Pipeline,
    ids: &[String],
) -> anyhow::Result<std::collections::HashSet<String>> {
    let client = pipeline.pool().get().await?;
    let stmt = client.prepare_cached(STORED).await?;
    let mut stored = std::collections::HashSet::new();
    for chunk in ids.chunks(STORED_CHUNK) {
        for row in client.query(&stmt, &[&chunk]).await? {
            stored.insert(row.get::<_, String>(0));
        }
    }
    Ok(stored)
}
