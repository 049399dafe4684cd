//! `stripe-worker status`: what the event log looks like now: counts by processing status and
//! by type (last 24 h and 7 d), the retry queue, the oldest failed and dead events, and the
//! catch-up's state.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use crate::catchup::{self, CatchUpState};
use crate::config::{DatabaseSettings, Source};
use crate::db;
use crate::ingest::Status;

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

const BY_STATUS: &str = "
select processing_status,
       count(*) filter (where created_at >= now() - interval '24 hours'),
       count(*)
from public.stripe_webhook_events
where created_at >= now() - interval '7 days'
group by processing_status";

const BY_TYPE: &str = "
select event_type,
       count(*) filter (where created_at >= now() - interval '24 hours'),
       count(*),
       count(*) filter (where processing_status in ('failed', 'dead'))
from public.stripe_webhook_events
where created_at >= now() - interval '7 days'
group by event_type
order by count(*) desc, event_type";

/// Over the whole table: the actionable states are few and indexed.
const QUEUE: &str = "
select count(*) filter (where processing_status = 'failed' and next_attempt_at <= now()),
       count(*) filter (where processing_status = 'failed' and (next_attempt_at > now() or next_attempt_at is null)),
       count(*) filter (where processing_status = 'pending'),
       count(*) filter (where processing_status = 'processing' and locked_until >= now()),
       count(*) filter (where processing_status = 'processing' and (locked_until < now() or locked_until is null)),
       count(*) filter (where processing_status = 'failed'),
       count(*) filter (where processing_status = 'dead'),
       min(next_attempt_at) filter (where processing_status = 'failed'),
       extract(epoch from now() - min(created_at) filter (where processing_status in ('pending', 'processing')))::float8
from public.stripe_webhook_events
where processing_status in ('failed', 'pending', 'processing', 'dead')";

const OLDEST: &str = "
select stripe_event_id, event_type, created_at, retry_count, next_attempt_at, error_message
from public.stripe_webhook_events
where processing_status = $1
order by created_at, stripe_event_id
limit $2";

/// How many of the oldest failed and dead events are listed.
const OLDEST_LIMIT: i64 = 5;

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct StatusCounts {
    pub pending: i64,
    pub processing: i64,
    pub processed: i64,
    pub ignored: i64,
    pub failed: i64,
    pub dead: i64,
}

impl StatusCounts {
    fn add(&mut self, status: Status, n: i64) {
        let slot = match status {
            Status::Pending => &mut self.pending,
            Status::Processing => &mut self.processing,
            Status::Processed => &mut self.processed,
            Status::Ignored => &mut self.ignored,
            Status::Failed => &mut self.failed,
            Status::Dead => &mut self.dead,
        };
        *slot += n;
    }

    fn total(&self) -> i64 {
        self.pending + self.processing + self.processed + self.ignored + self.failed + self.dead
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TypeCounts {
    pub event_type: String,
    pub last_24h: i64,
    pub last_7d: i64,
    /// Of the last 7 days, now failed or dead.
    pub failed_or_dead_7d: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct RetryQueue {
    /// Failed and due: the retrier takes them on its next pass.
    pub due_now: i64,
    /// Failed, scheduled later.
    pub later: i64,
    pub pending: i64,
    /// Held by a worker with a live lease.
    pub processing: i64,
    /// Processing with an expired lease (a crashed worker): reclaimed by the retrier.
    pub expired_leases: i64,
    pub failed_total: i64,
    pub dead_total: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Age of the oldest pending or processing event.
    pub oldest_pending_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StuckEvent {
    pub event_id: String,
    pub event_type: String,
    pub received_at: DateTime<Utc>,
    pub retry_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub by_status_24h: StatusCounts,
    pub by_status_7d: StatusCounts,
    pub by_type: Vec<TypeCounts>,
    pub retry_queue: RetryQueue,
    pub oldest_failed: Vec<StuckEvent>,
    pub oldest_dead: Vec<StuckEvent>,
    /// One entry per stream the catch-up ran for; empty when it never ran.
    pub catch_up: Vec<CatchUpState>,
}

pub async fn run(
    args: &StatusArgs,
    src: &dyn Source,
    out: &mut dyn Write,
) -> anyhow::Result<StatusReport> {
    let settings = DatabaseSettings::from_source(src)?;
    let client = db::connect(&settings.url).await?;
    let report = collect(&client).await?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        render(&report, out)?;
    }
    Ok(report)
}

pub async fn collect(
    client: &tokio_postgres::Client,
) -> Result<StatusReport, tokio_postgres::Error> {
    let mut by_status_24h = StatusCounts::default();
    let mut by_status_7d = StatusCounts::default();
    for row in client.query(BY_STATUS, &[]).await? {
        if let Some(status) = Status::parse(row.get(0)) {
            by_status_24h.add(status, row.get(1));
            by_status_7d.add(status, row.get(2));
        }
    }
    let by_type = client
        .query(BY_TYPE, &[])
        .await?
        .iter()
        .map(|r| TypeCounts {
            event_type: r.get(0),
            last_24h: r.get(1),
            last_7d: r.get(2),
            failed_or_dead_7d: r.get(3),
        })
        .collect();
    let q = client.query_one(QUEUE, &[]).await?;
    let retry_queue = RetryQueue {
        due_now: q.get(0),
        later: q.get(1),
        pending: q.get(2),
        processing: q.get(3),
        expired_leases: q.get(4),
        failed_total: q.get(5),
        dead_total: q.get(6),
        next_attempt_at: q.get(7),
        oldest_pending_seconds: q.get(8),
    };
    Ok(StatusReport {
        generated_at: Utc::now(),
        by_status_24h,
        by_status_7d,
        by_type,
        retry_queue,
        oldest_failed: oldest(client, Status::Failed).await?,
        oldest_dead: oldest(client, Status::Dead).await?,
        catch_up: catchup::read_all(client).await?,
    })
}

async fn oldest(
    client: &tokio_postgres::Client,
    status: Status,
) -> Result<Vec<StuckEvent>, tokio_postgres::Error> {
    Ok(client
        .query(OLDEST, &[&status.as_str(), &OLDEST_LIMIT])
        .await?
        .iter()
        .map(|r| StuckEvent {
            event_id: r.get(0),
            event_type: r.get(1),
            received_at: r.get(2),
            retry_count: r.get(3),
            next_attempt_at: r.get(4),
            error: r.get(5),
        })
        .collect())
}

fn render_catch_up(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    writeln!(out)?;
    if r.catch_up.is_empty() {
        return writeln!(
            out,
            "catch-up: never ran (it runs inside serve when STRIPE_SECRET_KEY is set)"
        );
    }
    for c in &r.catch_up {
        let lag = (r.generated_at - c.mark()).num_seconds().max(0);
        writeln!(
            out,
            "catch-up ({}): high-water mark {} (lag {lag} s){}",
            c.stream,
            time(c.high_water_mark.or(Some(c.watching_since))),
            match (&c.running_on, c.lease_until) {
                (Some(holder), Some(until)) if until > r.generated_at =>
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
    writeln!(out)?;
    let q = &r.retry_queue;
    writeln!(
        out,
        "retry queue: {} due now, {} later (next {}), {} pending, {} processing, {} expired leases",
        q.due_now,
        q.later,
        q.next_attempt_at
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into()),
        q.pending,
        q.processing,
        q.expired_leases
    )?;
    if let Some(age) = q.oldest_pending_seconds {
        writeln!(out, "oldest pending/processing event: {age:.0} s old")?;
    }
    writeln!(
        out,
        "all time: {} failed, {} dead",
        q.failed_total, q.dead_total
    )?;
    render_catch_up(r, out)?;
    for (title, list) in [
        ("oldest failed", &r.oldest_failed),
        ("oldest dead", &r.oldest_dead),
    ] {
        writeln!(out)?;
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
    }
    Ok(())
}
