//! `stripe-worker status`: what the event log looks like now (see `ingest::report`), as a
//! table or as JSON.

use std::io::Write;

use clap::Args;

use crate::config::{DatabaseSettings, Source};
use crate::db;
use crate::ingest::report::{self, RetryQueue, StatusReport, StuckEvent};

/// Show event counts, the retry queue and the oldest failures.
///
/// Counts by processing status and by type for the last 24 h and 7 d (by receipt time), the
/// retry queue (due now, later, pending, held, expired leases), and the oldest failed and dead
/// events with their errors.
#[derive(Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    args: &StatusArgs,
    src: &dyn Source,
    out: &mut dyn Write,
) -> anyhow::Result<StatusReport> {
    let settings = DatabaseSettings::from_source(src)?;
    let client = db::connect(&settings.url).await?;
    let report = report::collect(&client).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        render(&report, out)?;
    }
    Ok(report)
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
