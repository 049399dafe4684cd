//! The event log as an operator sees it (`stripe-worker status`): counts by processing status
//! and by type (last 24 h and 7 d, by receipt time), the retry queue, and the oldest failed and
//! dead events with their errors.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{IngestError, Pipeline, Status};
use crate::metrics::QueueGauges;

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

/// Over the whole table: the actionable states are few and indexed. "Due" is what the retrier
/// takes on its next pass (`stripe_webhook_event_is_due`); "later" the failed rows that wait.
const QUEUE: &str = "
select count(*) filter (where public.stripe_webhook_event_is_due(e)),
       count(*) filter (where processing_status = 'failed' and not public.stripe_webhook_event_is_due(e)),
       count(*) filter (where processing_status = 'pending'),
       count(*) filter (where processing_status = 'processing' and locked_until >= now()),
       count(*) filter (where processing_status = 'processing' and (locked_until < now() or locked_until is null)),
       count(*) filter (where processing_status = 'failed'),
       count(*) filter (where processing_status = 'dead'),
       min(next_attempt_at) filter (where processing_status = 'failed'),
       extract(epoch from now() - min(created_at) filter (where processing_status in ('pending', 'processing')))::float8
from public.stripe_webhook_events e
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

    pub fn total(&self) -> i64 {
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
    /// Due: the retrier takes them on its next pass (failed and past their next attempt,
    /// pending, or an expired lease).
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

/// What /metrics reports of the event log, read when it is scraped.
const QUEUE_GAUGES: &str = "
select
  count(*) filter (where public.stripe_webhook_event_is_due(e)),
  count(*) filter (where processing_status = 'failed' and not public.stripe_webhook_event_is_due(e)),
  coalesce(extract(epoch from now() - min(created_at)
    filter (where processing_status in ('pending', 'processing', 'failed'))), 0)::float8,
  count(*) filter (where processing_status = 'dead')
from public.stripe_webhook_events e
where processing_status in ('pending', 'processing', 'failed', 'dead')";

/// Which of `$1` are stored already.
const STORED: &str =
    "select stripe_event_id from public.stripe_webhook_events where stripe_event_id = any($1)";

/// Ids checked per query.
const STORED_CHUNK: usize = 1000;

impl Pipeline {
    pub async fn queue_gauges(&self) -> Result<QueueGauges, IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(QUEUE_GAUGES).await?;
        let row = client.query_one(&stmt, &[]).await?;
        Ok(QueueGauges {
            retry_due: row.get(0),
            retry_scheduled: row.get(1),
            oldest_pending_secs: row.get(2),
            dead: row.get(3),
        })
    }

    /// `queue_gauges` on a connection that is free right now, or `None` (every connection is
    /// busy with deliveries, or the database is out of reach): probes never queue for one.
    pub async fn queue_gauges_if_idle(&self) -> Option<QueueGauges> {
        let mut timeouts = self.pool.timeouts();
        timeouts.wait = Some(std::time::Duration::ZERO);
        let client = self.pool.timeout_get(&timeouts).await.ok()?;
        let stmt = client.prepare_cached(QUEUE_GAUGES).await.ok()?;
        let row = client.query_one(&stmt, &[]).await.ok()?;
        Some(QueueGauges {
            retry_due: row.get(0),
            retry_scheduled: row.get(1),
            oldest_pending_secs: row.get(2),
            dead: row.get(3),
        })
    }

    /// The ones of `event_ids` that are stored (in any status).
    pub async fn stored_event_ids(
        &self,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(STORED).await?;
        let mut stored = std::collections::HashSet::new();
        for chunk in event_ids.chunks(STORED_CHUNK) {
            for row in client.query(&stmt, &[&chunk]).await? {
                stored.insert(row.get::<_, String>(0));
            }
        }
        Ok(stored)
    }
}
