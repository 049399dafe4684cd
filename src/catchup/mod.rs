//! The catch-up inside `serve`: every RECONCILE_INTERVAL_SECS one replica (the holder of a
//! lease in `public.stripe_catch_up`) lists Stripe's events from its high-water mark minus
//! RECONCILE_OVERLAP up to a minute ago (`DELIVERY_GRACE`) and ingests those never stored, through the same sweep
//! as `backfill` and the same pipeline as live deliveries. Progress is written as pages and
//! windows complete, so a restarted or crashed worker resumes where the last one stopped; the
//! very first run starts at now minus RECONCILE_START_LOOKBACK.
//!
//! It costs live deliveries little: one event at a time, so at most one pooled connection, and
//! none while requests wait for one; Stripe reads keep to RECONCILE_READS_PER_SEC and back off
//! on 429. Every replica reads the progress row each interval, so each one's `/metrics` shows
//! the lag.

mod progress;
mod sweep;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub use progress::{read_all, CatchUpState, Run};
pub use sweep::{Fate, Ingested, Observer, Sweep, SweepError, Tally};

use self::progress::{stream, Lease, Taken};
use crate::config::{CatchUpSettings, STRIPE_EVENT_RETENTION};
use crate::ingest::Pipeline;
use crate::stripe_list::{StripeLists, MAX_PAGE};

/// Events younger than this (or than one interval, if shorter) are left to their webhook
/// delivery, which is normally under way: the catch-up counts as recovered only what Stripe
/// did not deliver in that time.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(60);

/// Everything one replica's catch-up needs.
pub struct CatchUp {
    pipeline: Pipeline,
    lists: StripeLists,
    settings: CatchUpSettings,
    stream: &'static str,
    holder: String,
    lease: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Another replica holds the lease.
    Busy,
    Done(Tally),
}

impl CatchUp {
    /// `holder` names this replica in the lease (its worker id); `lease` is how long a crashed
    /// holder keeps others waiting (PROCESSING_LEASE_SECS).
    pub fn new(
        pipeline: Pipeline,
        lists: StripeLists,
        settings: CatchUpSettings,
        livemode: Option<bool>,
        holder: String,
        lease: Duration,
    ) -> Self {
        Self {
            pipeline,
            lists,
            settings,
            stream: stream(livemode),
            holder,
            lease,
        }
    }

    /// Runs at start and then every interval until `stop`; a run in progress ends after the
    /// event in hand and lets its lease go.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!(
            interval_secs = self.settings.interval.as_secs_f64(),
            overlap_secs = self.settings.overlap.as_secs(),
            start_lookback_secs = self.settings.start_lookback.as_secs(),
            reads_per_sec = self.settings.reads_per_sec,
            stream = self.stream,
            "catch-up on: lists Stripe's events and ingests the ones never delivered"
        );
        if self.settings.start_lookback > STRIPE_EVENT_RETENTION {
            tracing::warn!(
                "RECONCILE_START_LOOKBACK is longer than the 30 days Stripe keeps events: the first run starts 30 days back"
            );
        }
        loop {
            match self.run_once(&stop).await {
                Ok(RunOutcome::Done(t)) if t.ingested() > 0 || t.unreadable > 0 => {
                    tracing::info!(
                        listed = t.listed,
                        ingested = t.ingested(),
                        recovered = t.recovered,
                        unreadable = t.unreadable,
                        "catch-up stored events that no delivery had brought"
                    )
                }
                Ok(_) => {}
                Err(SweepError::Stopped(reason)) if *stop.borrow() => {
                    tracing::info!(%reason, "catch-up run stopped")
                }
                Err(SweepError::Stopped(reason)) => {
                    tracing::warn!(%reason, "catch-up run given up")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up run failed; trying again next interval")
                }
            }
            self.refresh_metrics().await;
            tokio::select! {
                _ = tokio::time::sleep(self.settings.interval) => {}
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One run, if this replica gets the lease.
    pub async fn run_once(&self, stop: &watch::Receiver<bool>) -> Result<RunOutcome, SweepError> {
        let lease = Lease {
            pool: self.pipeline.pool(),
            stream: self.stream,
            holder: &self.holder,
            seconds: self.lease.as_secs_f64(),
        };
        let lookback = self
            .settings
            .start_lookback
            .min(STRIPE_EVENT_RETENTION)
            .as_secs_f64();
        let Some(taken) = lease.take(lookback).await? else {
            return Ok(RunOutcome::Busy);
        };
        let now = Utc::now();
        let (from, until) = self.range(&taken, now);
        if from > until {
            lease.finish("ok", None).await?;
            return Ok(RunOutcome::Done(Tally::default()));
        }
        lease.begin(from, until).await?;
        let sweep = Sweep {
            pipeline: &self.pipeline,
            lists: &self.lists,
            request_id: format!("catch-up:{}", uuid::Uuid::new_v4()),
            page_size: MAX_PAGE,
            recovered_from: Some(taken.created_at.timestamp()),
        };
        let mut observer = Progress {
            lease: &lease,
            stop,
            pipeline: &self.pipeline,
            renewed: std::time::Instant::now(),
            renew_every: self.lease / 3,
        };
        let result = sweep
            .run(from.timestamp(), until.timestamp(), &mut observer)
            .await;
        match result {
            Ok(tally) => {
                lease.finish("ok", None).await?;
                Ok(RunOutcome::Done(tally))
            }
            Err(SweepError::Stopped(reason)) => {
                // Lease lost: nothing to write. Stopping: let the lease go for the next replica.
                if *stop.borrow() {
                    lease.finish("interrupted", None).await?;
                }
                Err(SweepError::Stopped(reason))
            }
            Err(e) => {
                // Best effort: the database may be what failed (the lease then runs out).
                if let Err(finish) = lease.finish("failed", Some(&e.to_string())).await {
                    tracing::warn!(error = %finish, "could not record the failed catch-up run");
                }
                Err(e)
            }
        }
    }

    /// From the high-water mark minus the overlap (never before where the first run started,
    /// never beyond what Stripe still lists) to the delivery grace ago.
    fn range(&self, taken: &Taken, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let overlap = chrono::Duration::from_std(self.settings.overlap).unwrap_or_default();
        let mut from = match taken.high_water_mark {
            Some(mark) => (mark - overlap).max(taken.watching_since),
            None => taken.watching_since,
        };
        let oldest = now - chrono::Duration::from_std(STRIPE_EVENT_RETENTION).unwrap_or_default()
            + chrono::Duration::minutes(5);
        if from < oldest {
            tracing::warn!(
                from = %from,
                "the catch-up fell behind Stripe's 30-day event retention: events before {oldest} can no longer be listed (run `stripe-worker reconcile`)"
            );
            from = oldest;
        }
        let grace = chrono::Duration::from_std(self.settings.interval.min(DELIVERY_GRACE))
            .unwrap_or_default();
        (from, now - grace)
    }

    /// The lag and last run as the table has them, whichever replica ran.
    async fn refresh_metrics(&self) {
        let state = async {
            let client = self.pipeline.pool().get().await.ok()?;
            read_all(&**client).await.ok()
        };
        let Some(states) = state.await else { return };
        if let Some(s) = states.into_iter().find(|s| s.stream == self.stream) {
            let ok = match s.last_run.status.as_deref() {
                Some("ok") => Some(true),
                Some("failed") => Some(false),
                _ => None,
            };
            self.pipeline
                .metrics()
                .catch_up_state(Some(s.mark()), ok, s.last_run.finished_at);
        }
    }
}

/// The catch-up's observer: progress into the table (each write renews the lease), counters
/// into the metrics.
struct Progress<'a> {
    lease: &'a Lease<'a>,
    stop: &'a watch::Receiver<bool>,
    pipeline: &'a Pipeline,
    renewed: std::time::Instant,
    renew_every: Duration,
}

impl Observer for Progress<'_> {
    async fn page_listed(&mut self, listed: usize, rate_limited: u32) -> Result<(), SweepError> {
        self.pipeline
            .metrics()
            .catch_up_counts(0, u64::from(rate_limited));
        self.renewed = std::time::Instant::now();
        self.lease
            .page(listed as i64, i64::from(rate_limited))
            .await
    }

    /// A long window (handlers that call Stripe, many events) keeps the lease alive.
    async fn heartbeat(&mut self) -> Result<(), SweepError> {
        if self.renewed.elapsed() < self.renew_every {
            return Ok(());
        }
        self.renewed = std::time::Instant::now();
        self.lease.page(0, 0).await
    }

    async fn window_done(
        &mut self,
        until: i64,
        window: &Tally,
        last_error: Option<&str>,
    ) -> Result<(), SweepError> {
        self.pipeline
            .metrics()
            .catch_up_counts(window.recovered as u64, 0);
        self.renewed = std::time::Instant::now();
        let mark = DateTime::from_timestamp(until, 0).unwrap_or_else(Utc::now);
        self.lease
            .window(
                mark,
                window.ingested() as i64,
                window.recovered as i64,
                window.unreadable as i64,
                last_error,
            )
            .await
    }

    fn should_stop(&self) -> bool {
        *self.stop.borrow()
    }
}
