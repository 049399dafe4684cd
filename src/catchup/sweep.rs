//! A sweep: lists Stripe's events of a time range and ingests, oldest first, the ones never
//! stored, exactly as webhook deliveries of them would be (each listed event byte for byte,
//! parsed by `EventEnvelope`, through `Pipeline::deliver`). Shared by the catch-up and
//! `backfill`.
//!
//! The range is cut into windows, oldest first. A window is listed whole (Stripe lists newest
//! first), its events not yet stored are kept, then ingested oldest first; when it is done,
//! every event created up to its end is stored, which is what the catch-up's high-water mark
//! records. Windows start at six hours; one holding too many events to keep is halved and
//! listed again, and spans grow back after quiet windows. An event that does not parse is
//! reported and skipped; it never stops the sweep.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use crate::envelope::{self, EventEnvelope};
use crate::ingest::{DeliveryStatus, IngestError, Pipeline};
use crate::stripe_events::{self, ListedEvent};
use crate::stripe_list::{StripeListError, StripeLists, MAX_PAGE};

/// The widest window.
const MAX_SPAN: i64 = 6 * 3_600;

/// Events of one window kept for ingestion at most (a wider window is halved).
const HELD_CAP: usize = 5_000;

/// Which of `$1` are stored already.
const STORED: &str =
    "select stripe_event_id from public.stripe_webhook_events where stripe_event_id = any($1)";

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing Stripe's events failed: {0}")]
    Stripe(#[from] StripeListError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("database error: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The observer stopped the sweep (e.g. the catch-up lost its lease).
    #[error("{0}")]
    Stopped(String),
}

/// What became of one listed event that was not stored before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    Delivered(DeliveryStatus),
    /// It does not parse as an event: reported, not stored.
    Unreadable(String),
}

/// One listed event that was not stored before, after its ingestion.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub created: Option<i64>,
    pub fate: Fate,
}

/// Counts of a window or a whole sweep.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub listed: usize,
    pub already_stored: usize,
    pub processed: usize,
    pub ignored: usize,
    /// Stored, but the handler failed (retry scheduled, or dead).
    pub failed: usize,
    /// Listed but not an event (no id, no type, not JSON): reported, not stored.
    pub unreadable: usize,
    /// Stored by this sweep and created at or after `Sweep::recovered_from`.
    pub recovered: usize,
    /// 429 answers waited out.
    pub rate_limited: u32,
}

impl Tally {
    pub fn ingested(&self) -> usize {
        self.processed + self.ignored + self.failed
    }

    fn add(&mut self, other: &Tally) {
        self.listed += other.listed;
        self.already_stored += other.already_stored;
        self.processed += other.processed;
        self.ignored += other.ignored;
        self.failed += other.failed;
        self.unreadable += other.unreadable;
        self.recovered += other.recovered;
        self.rate_limited += other.rate_limited;
    }
}

/// What a sweep reports as it goes; an error stops it.
pub trait Observer: Send {
    /// A page came (the catch-up renews its lease and counts).
    fn page_listed(
        &mut self,
        listed: usize,
        rate_limited: u32,
    ) -> impl Future<Output = Result<(), SweepError>> + Send;
    /// A window is listed: this many of its events are to be ingested.
    fn window_listed(&mut self, to_ingest: usize) {
        let _ = to_ingest;
    }
    fn ingested(&mut self, event: &Ingested) {
        let _ = event;
    }
    /// Called after each ingested event (the catch-up renews its lease now and then).
    fn heartbeat(&mut self) -> impl Future<Output = Result<(), SweepError>> + Send {
        async { Ok(()) }
    }
    /// Every event created up to `until` (unix seconds) is stored.
    fn window_done(
        &mut self,
        until: i64,
        window: &Tally,
        last_error: Option<&str>,
    ) -> impl Future<Output = Result<(), SweepError>> + Send;
    /// Checked between events: stop after the one in hand.
    fn should_stop(&self) -> bool {
        false
    }
}

pub struct Sweep<'a> {
    pub pipeline: &'a Pipeline,
    pub lists: &'a StripeLists,
    /// `request_id` of every event this sweep stores (`catch-up:…`, `backfill:…`).
    pub request_id: String,
    pub page_size: i64,
    /// Events created at or after this (unix seconds) count as recovered.
    pub recovered_from: Option<i64>,
}

impl Sweep<'_> {
    /// Lists and ingests `[since, until]` (unix seconds, inclusive), window by window.
    pub async fn run(
        &self,
        since: i64,
        until: i64,
        observer: &mut impl Observer,
    ) -> Result<Tally, SweepError> {
        let mut total = Tally::default();
        let mut from = since;
        let mut span = MAX_SPAN.min(until - since + 1).max(1);
        while from <= until {
            let to = (from + span - 1).min(until);
            let capped = to > from;
            let Some((mut window, events)) = self.list(from, to, capped, observer).await? else {
                span = (span / 2).max(1);
                continue;
            };
            observer.window_listed(events.len());
            let last_error = self.ingest_window(events, &mut window, observer).await?;
            observer
                .window_done(to, &window, last_error.as_deref())
                .await?;
            let quiet = window.listed < HELD_CAP / 4;
            total.add(&window);
            from = to + 1;
            if quiet {
                span = (span * 2).min(MAX_SPAN);
            }
        }
        Ok(total)
    }

    /// Ingests a window's events in order, counting them into `window`; the last error, if an
    /// event did not parse.
    async fn ingest_window(
        &self,
        events: Vec<ListedEvent>,
        window: &mut Tally,
        observer: &mut impl Observer,
    ) -> Result<Option<String>, SweepError> {
        let mut last_error = None;
        for event in events {
            if observer.should_stop() {
                return Err(SweepError::Stopped("the worker is stopping".into()));
            }
            self.yield_to_deliveries(observer).await;
            let done = self.ingest(event).await?;
            let stored_now = match &done.fate {
                Fate::Delivered(DeliveryStatus::Processed) => {
                    window.processed += 1;
                    true
                }
                Fate::Delivered(DeliveryStatus::Ignored) => {
                    window.ignored += 1;
                    true
                }
                Fate::Delivered(DeliveryStatus::Failed) => {
                    window.failed += 1;
                    true
                }
                // A webhook delivery of it arrived meanwhile.
                Fate::Delivered(DeliveryStatus::Duplicate) => {
                    window.already_stored += 1;
                    false
                }
                Fate::Unreadable(reason) => {
                    window.unreadable += 1;
                    let id = done.id.as_deref().unwrap_or("(no id)");
                    tracing::warn!(event_id = id, reason = %reason, "listed event does not parse; skipped");
                    last_error = Some(format!("listed event {id} does not parse: {reason}"));
                    false
                }
            };
            let recovered = self
                .recovered_from
                .is_some_and(|from| done.created.is_some_and(|c| c >= from));
            if stored_now && recovered {
                window.recovered += 1;
            }
            observer.ingested(&done);
            observer.heartbeat().await?;
        }
        Ok(last_error)
    }

    /// The window's events not stored yet, oldest first; `None` when `capped` and there are
    /// more than can be kept.
    async fn list(
        &self,
        from: i64,
        to: i64,
        capped: bool,
        observer: &mut impl Observer,
    ) -> Result<Option<(Tally, Vec<ListedEvent>)>, SweepError> {
        let mut tally = Tally::default();
        let mut missing: Vec<ListedEvent> = Vec::new();
        let mut seen = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = stripe_events::list_page(
                self.lists,
                from,
                to,
                after.as_deref(),
                self.page_size.clamp(1, MAX_PAGE),
            )
            .await?;
            tally.listed += page.events.len();
            tally.rate_limited += page.rate_limited;
            observer
                .page_listed(page.events.len(), page.rate_limited)
                .await?;
            let ids: Vec<&str> = page.events.iter().filter_map(|e| e.id.as_deref()).collect();
            let stored = self.stored(&ids).await?;
            for event in page.events {
                match &event.id {
                    Some(id) if stored.contains(id) => tally.already_stored += 1,
                    Some(id) if !seen.insert(id.clone()) => {}
                    _ => missing.push(event),
                }
            }
            if capped && missing.len() > HELD_CAP {
                return Ok(None);
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        // Stripe lists newest first; a stable sort keeps same-second events oldest first.
        missing.reverse();
        missing.sort_by_key(|e| e.created.unwrap_or(i64::MIN));
        Ok(Some((tally, missing)))
    }

    async fn stored(&self, ids: &[&str]) -> Result<HashSet<String>, SweepError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let client = self.pipeline.pool().get().await?;
        let stmt = client.prepare_cached(STORED).await?;
        Ok(client
            .query(&stmt, &[&ids])
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect())
    }

    /// Parsed and delivered exactly as a webhook delivery of the same bytes would be.
    async fn ingest(&self, event: ListedEvent) -> Result<Ingested, IngestError> {
        let text = envelope::storable(event.raw.get());
        let (event_type, fate) = match EventEnvelope::parse(text.as_bytes()) {
            Err(e) => (None, Fate::Unreadable(e.to_string())),
            Ok(parsed) => {
                let status = self
                    .pipeline
                    .deliver(&parsed, &text, &self.request_id)
                    .await?;
                (Some(parsed.event_type), Fate::Delivered(status))
            }
        };
        Ok(Ingested {
            id: event.id,
            event_type,
            created: event.created,
            fate,
        })
    }

    /// Live deliveries first: while requests wait for a database connection, wait.
    async fn yield_to_deliveries(&self, observer: &impl Observer) {
        while self.pipeline.pool().status().waiting > 0 && !observer.should_stop() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
