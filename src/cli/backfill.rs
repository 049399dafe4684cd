//! `stripe-worker backfill`: lists events from Stripe's Events API and ingests, oldest first,
//! the ones not yet stored, exactly as webhook deliveries of them (the catch-up's sweep).

use std::io::Write;

use chrono::{DateTime, Duration as Days, Utc};
use clap::Args;

use super::context::{self, parse_instant};
use super::progress::Progress;
use crate::catchup::{Fate, Ingested, Observer, Sweep, SweepError, Tally};
use crate::config::{CatchUpSettings, ConfigError, Source, StripeApiSettings};
use crate::ingest::DeliveryStatus;
use crate::stripe_list::{RateLimitBackoff, StripeLists, MAX_PAGE};

/// Ingest events from Stripe's Events API that are not stored yet (missed deliveries).
///
/// Needs STRIPE_SECRET_KEY (and honours STRIPE_API_BASE). Stripe keeps events for 30 days
/// only: an earlier --since finds nothing before that. Each listed event is parsed and
/// ingested exactly like a webhook delivery of it, whatever its API version, oldest first;
/// stored ones are counted and left alone, so running it twice is harmless; one that does not
/// parse is reported and skipped. Rate limiting (HTTP 429) is waited out with exponential
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
    /// Listed, but not an event (reported, not stored).
    pub unreadable: usize,
    /// 429 answers waited out.
    pub rate_limited: u32,
}

impl BackfillSummary {
    pub fn ingested(&self) -> usize {
        self.processed + self.ignored + self.failed
    }

    pub fn success(&self) -> bool {
        self.failed == 0 && self.unreadable == 0
    }

    fn line(&self) -> String {
        let mut line = format!(
            "listed {}, already stored {}, ingested {}: processed {}, ignored {}, failed {}",
            self.listed,
            self.already_stored,
            self.ingested(),
            self.processed,
            self.ignored,
            self.failed
        );
        if self.unreadable > 0 {
            line.push_str(&format!("; unreadable {}", self.unreadable));
        }
        line
    }
}

impl From<Tally> for BackfillSummary {
    fn from(t: Tally) -> Self {
        Self {
            listed: t.listed,
            already_stored: t.already_stored,
            processed: t.processed,
            ignored: t.ignored,
            failed: t.failed,
            unreadable: t.unreadable,
            rate_limited: t.rate_limited,
        }
    }
}

pub async fn run(
    args: &BackfillArgs,
    src: &dyn Source,
    out: &mut (dyn Write + Send),
    interactive: bool,
) -> anyhow::Result<BackfillSummary> {
    run_with(args, src, out, interactive, RateLimitBackoff::default()).await
}

/// `run` with the rate-limit back-off given (tests shorten it).
pub async fn run_with(
    args: &BackfillArgs,
    src: &dyn Source,
    out: &mut (dyn Write + Send),
    interactive: bool,
    backoff: RateLimitBackoff,
) -> anyhow::Result<BackfillSummary> {
    let settings = StripeApiSettings::from_source(src)?
        .ok_or(ConfigError::Missing("STRIPE_SECRET_KEY"))
        .map_err(|e| anyhow::anyhow!("{e}: backfill reads Stripe's Events API"))?;
    let until = args.until.unwrap_or_else(Utc::now);
    anyhow::ensure!(until >= args.since, "--until is before --since");
    if args.since < Utc::now() - Days::days(RETENTION_DAYS) {
        writeln!(
            out,
            "note: Stripe's Events API keeps events for {RETENTION_DAYS} days; older ones cannot be listed"
        )?;
    }
    let budget = CatchUpSettings::from_source(src)?.reads_per_sec;
    let lists = StripeLists::new(&settings, budget, backoff)?;
    let pipeline = context::pipeline(src, "backfill")?;
    let sweep = Sweep {
        pipeline: &pipeline,
        lists: &lists,
        request_id: format!("backfill:{}", uuid::Uuid::new_v4()),
        page_size: args.page_size,
        recovered_from: None,
    };
    let mut lines = Lines {
        out,
        interactive,
        progress: None,
        error: None,
    };
    let result = sweep
        .run(args.since.timestamp(), until.timestamp(), &mut lines)
        .await;
    if let Some(p) = &lines.progress {
        p.finish();
    }
    if let Some(e) = lines.error.take() {
        return Err(e.into());
    }
    let summary = BackfillSummary::from(result?);
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

/// One line per event not stored before, with a progress bar per window on a terminal.
struct Lines<'a> {
    out: &'a mut (dyn Write + Send),
    interactive: bool,
    progress: Option<Progress>,
    /// The first write that failed (the sweep goes on; the command reports it).
    error: Option<std::io::Error>,
}

impl Observer for Lines<'_> {
    async fn page_listed(&mut self, _: usize, _: u32) -> Result<(), SweepError> {
        Ok(())
    }

    fn window_listed(&mut self, to_ingest: usize) {
        if let Some(p) = self.progress.take() {
            p.finish();
        }
        self.progress = Some(Progress::new(to_ingest, self.interactive, "ingesting"));
    }

    fn ingested(&mut self, event: &Ingested) {
        let label = match &event.fate {
            Fate::Delivered(DeliveryStatus::Processed) => "processed".to_owned(),
            Fate::Delivered(DeliveryStatus::Ignored) => "ignored".to_owned(),
            Fate::Delivered(DeliveryStatus::Failed) => "failed".to_owned(),
            Fate::Delivered(DeliveryStatus::Duplicate) => "already stored".to_owned(),
            Fate::Unreadable(reason) => format!("unreadable, skipped: {reason}"),
        };
        let line = format!(
            "{} {} -> {label}",
            event.id.as_deref().unwrap_or("(no id)"),
            event.event_type.as_deref().unwrap_or("(no type)")
        );
        if let Some(p) = &self.progress {
            if let Err(e) = p.line(self.out, &line) {
                self.error.get_or_insert(e);
            }
            p.inc();
        }
    }

    async fn window_done(&mut self, _: i64, _: &Tally, _: Option<&str>) -> Result<(), SweepError> {
        Ok(())
    }
}
