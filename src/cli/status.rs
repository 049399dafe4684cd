//! `stripe-worker status`: what the event log looks like now (see `ingest::report`) and the
//! catch-up's state (see `catchup`), as a table or as JSON.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;

use crate::catchup::{self, CatchUpState};
use crate::config::{DatabaseSettings, Source};
use crate::db;
use crate::ingest::report::{self, RetryQueue, StatusReport, StuckEvent};

/// Show event counts, the retry queue, the oldest failures and the catch-up.
///
/// Counts by processing status and by type for the last 24 h and 7 d (by receipt time), the
/// retry queue (due now, later, pending, held, expired leases), the oldest failed and dead
/// events with their errors, and the catch-up's high-water mark, lag and last run.
#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// What `status` shows: the event log's report, and the catch-up's state per mode.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub events: StatusReport,
    pub catch_up: Vec<CatchUpState>,
}

impl std::ops::Deref for Status {
    type Target = StatusReport;

    fn deref(&self) -> &StatusReport {
        &self.events
    }
}

pub async fn run(
    args: &StatusArgs,
    src: &dyn Source,
    out: &mut dyn Write,
) -> anyhow::Result<Status> {
    let settings = DatabaseSettings::from_source(src)?;
    let client = db::connect(&settings.url).await?;
    let status = Status {
        events: report::collect(&client).await?,
        catch_up: catchup::read_all(&client).await?,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        render(&status.events, out)?;
        render_catch_up(&status, out)?;
    }
    Ok(status)
}

fn render_catch_up(s: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(out)?;
    if s.catch_up.is_empty() {
        return writeln!(
            out,
            "catch-up: never ran (it runs inside serve when STRIPE_SECRET_KEY is set)"
        );
    }
    for c in &s.catch_up {
        let lag = (s.generated_at - c.mark()).num_seconds().max(0);
        writeln!(
            out,
            "catch-up ({}): high-water mark {} (lag {lag} s){}",
            c.stream,
            time(c.high_water_mark.or(Some(c.watching_since))),
            match (&c.running_on, c.lease_until) {
                (Some(holder), Some(until)) if until > s.generated_at =>
                    format!(", running on {holder}"),
                _ => String::new(),
            }
        )?;
        let run = &c.last_run;
        writeln!(
            out,
            "  last run: {} {} .. {}, listed {}, ingested {} (recovered {}), errors {}, rate limited {}",
            run.status.as_deref().unwrap_or("never"),
            time(run.started_at),
            time(run.finished_at),
            run.listed,
            run.ingested,
            run.recovered,
            run.errors,
            run.rate_limited
        )?;
        if let Some(e) = &run.last_error {
            writeln!(out, "  last error: {e}")?;
        }
        writeln!(
            out,
            "  since {}: listed {}, ingested {}, recovered {}, errors {}",
            time(Some(c.created_at)),
            c.listed_total,
            c.ingested_total,
            c.recovered_total,
            c.errors_total
        )?;
    }
    Ok(())
}

/// Error messages are cut to this many characters in the table (the JSON has them whole).
const ERROR_WIDTH: usize = 100;

fn render(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "stripe_webhook_events at {}",
        r.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    )?;
    writeln!(out)?;
    render_counts(r, out)?;
    writeln!(out)?;
    render_queue(&r.retry_queue, out)?;
    for (title, list) in [
        ("oldest failed", &r.oldest_failed),
        ("oldest dead", &r.oldest_dead),
    ] {
        writeln!(out)?;
        render_stuck(title, list, out)?;
    }
    Ok(())
}

fn render_counts(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{:<12} {:>10} {:>10}", "status", "last 24h", "last 7d")?;
    let (a, b) = (&r.by_status_24h, &r.by_status_7d);
    for (name, x, y) in [
        ("processed", a.processed, b.processed),
        ("ignored", a.ignored, b.ignored),
        ("failed", a.failed, b.failed),
        ("dead", a.dead, b.dead),
        ("pending", a.pending, b.pending),
        ("processing", a.processing, b.processing),
        ("total", a.total(), b.total()),
    ] {
        writeln!(out, "{name:<12} {x:>10} {y:>10}")?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<44} {:>10} {:>10} {:>14}",
        "event type", "last 24h", "last 7d", "failed/dead"
    )?;
    for t in &r.by_type {
        writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>14}",
            t.event_type, t.last_24h, t.last_7d, t.failed_or_dead_7d
        )?;
    }
    if r.by_type.is_empty() {
        writeln!(out, "(no events in the last 7 days)")?;
    }
    Ok(())
}

fn render_queue(q: &RetryQueue, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "retry queue: {} due now, {} later (next {}); due now includes {} pending and {} expired leases; {} processing",
        q.due_now,
        q.later,
        q.next_attempt_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into()),
        q.pending,
        q.expired_leases,
        q.processing
    )?;
    if let Some(age) = q.oldest_pending_seconds {
        writeln!(out, "oldest pending/processing event: {age:.0} s old")?;
    }
    writeln!(
        out,
        "all time: {} failed, {} dead",
        q.failed_total, q.dead_total
    )
}

fn render_stuck(title: &str, list: &[StuckEvent], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{title}:")?;
    if list.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for e in list {
        let error = e.error.as_deref().unwrap_or("-");
        let error: String = if error.chars().count() > ERROR_WIDTH {
            error.chars().take(ERROR_WIDTH).chain("…".chars()).collect()
        } else {
            error.to_owned()
        };
        writeln!(
            out,
            "  {} {} received {} attempts {}  error: {error}",
            e.event_id,
            e.event_type,
            e.received_at.format("%Y-%m-%d %H:%M:%S UTC"),
            e.retry_count
        )?;
    }
    Ok(())
}
