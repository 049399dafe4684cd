//! `/healthz`, `/readyz`, `/metrics`.
//!
//! Neither probe may take pool connections away from webhook deliveries: both take one only
//! when it is free right now (never waiting in the pool's queue), at most one at a time, and
//! reuse a recent answer (queue gauges for `QUEUE_GAUGES_MAX_AGE`, readiness for
//! `READINESS_MAX_AGE`) so a scraper or a probe storm costs the database nothing more.
//! `/readyz` says why it is not ready in one fixed word; the detail goes to the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use deadpool_postgres::Pool;
use serde_json::json;
use tokio_postgres::error::SqlState;

use super::AppState;
use crate::db::migrate;
use crate::metrics::{PoolGauges, QueueGauges};

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const QUEUE_GAUGES_MAX_AGE: Duration = Duration::from_secs(5);
const READINESS_MAX_AGE: Duration = Duration::from_secs(1);

/// Recent answers of the two probes that read the database.
#[derive(Default)]
pub struct ProbeCache {
    queue: Mutex<Option<(Instant, Option<QueueGauges>)>>,
    readiness: Mutex<Option<(Instant, Readiness)>>,
    /// Held by the one request refreshing an answer; others use the last one meanwhile.
    refreshing_queue: tokio::sync::Mutex<()>,
    refreshing_readiness: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readiness {
    Ready,
    NotReady(&'static str),
}

/// A pooled connection only if one is free now: probes never queue behind deliveries.
async fn free_connection(pool: &Pool) -> Result<deadpool_postgres::Client, ProbeError> {
    let mut timeouts = pool.timeouts();
    timeouts.wait = Some(Duration::ZERO);
    pool.timeout_get(&timeouts).await.map_err(|e| match e {
        deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait) => {
            ProbeError::Busy
        }
        other => ProbeError::Database(other.to_string()),
    })
}

enum ProbeError {
    /// Every connection is in use by deliveries.
    Busy,
    Database(String),
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers and every migration compiled in is recorded.
pub async fn readyz(state: web::Data<AppState>, cache: web::Data<ProbeCache>) -> HttpResponse {
    // Only a success is reused while fresh: a failure is checked again (one at a time), so
    // recovery shows at once.
    let recent_success = matches!(
        *cache.readiness.lock().unwrap(),
        Some((at, Readiness::Ready)) if at.elapsed() < READINESS_MAX_AGE
    );
    let readiness = if recent_success {
        Readiness::Ready
    } else if let Ok(_refreshing) = cache.refreshing_readiness.try_lock() {
        let readiness = match check_readiness(state.pipeline.pool()).await {
            Some(checked) => checked,
            // Deliveries hold every connection: the database answered them a moment ago, so
            // the last verdict stands.
            None => last(&cache.readiness).unwrap_or(Readiness::NotReady("busy")),
        };
        *cache.readiness.lock().unwrap() = Some((Instant::now(), readiness));
        readiness
    } else {
        last(&cache.readiness).unwrap_or(Readiness::NotReady("busy"))
    };
    match readiness {
        Readiness::Ready => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Readiness::NotReady(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not ready", "reason": reason })),
    }
}

fn last<T: Copy>(slot: &Mutex<Option<(Instant, T)>>) -> Option<T> {
    slot.lock().unwrap().map(|(_, v)| v)
}

/// `None` when no connection was free to check with.
async fn check_readiness(pool: &Pool) -> Option<Readiness> {
    let check = async {
        let client = free_connection(pool).await?;
        match migrate::pending(&**client).await {
            Ok(pending) => Ok(pending),
            // No migration table yet: nothing is applied.
            Err(e)
                if e.code().is_some_and(|c| {
                    *c == SqlState::UNDEFINED_TABLE || *c == SqlState::INVALID_SCHEMA_NAME
                }) =>
            {
                Ok(vec!["(none applied)"])
            }
            Err(e) => Err(ProbeError::Database(crate::db::describe(&e))),
        }
    };
    Some(match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(pending)) if pending.is_empty() => Readiness::Ready,
        Ok(Ok(pending)) => {
            tracing::warn!(?pending, "not ready: migrations pending");
            Readiness::NotReady("migrations_pending")
        }
        Ok(Err(ProbeError::Busy)) => return None,
        Ok(Err(ProbeError::Database(e))) => {
            tracing::warn!(error = %e, "not ready: database unavailable");
            Readiness::NotReady("database")
        }
        Err(_) => {
            tracing::warn!("not ready: the database did not answer within {PROBE_TIMEOUT:?}");
            Readiness::NotReady("timeout")
        }
    })
}

/// The gauges, read on a connection that is free right now (probes never queue behind deliveries).
async fn read_queue_gauges(pipeline: &crate::ingest::Pipeline) -> Option<QueueGauges> {
    tokio::time::timeout(PROBE_TIMEOUT, pipeline.queue_gauges_if_idle())
        .await
        .ok()
        .flatten()
}

pub async fn metrics(state: web::Data<AppState>, cache: web::Data<ProbeCache>) -> HttpResponse {
    let pipeline = &state.pipeline;
    let stale = !matches!(
        *cache.queue.lock().unwrap(),
        Some((at, _)) if at.elapsed() < QUEUE_GAUGES_MAX_AGE
    );
    if stale {
        if let Ok(_refreshing) = cache.refreshing_queue.try_lock() {
            let gauges = read_queue_gauges(pipeline).await;
            *cache.queue.lock().unwrap() = Some((Instant::now(), gauges));
        }
    }
    let status = pipeline.pool().status();
    let pool = PoolGauges {
        size: status.size,
        available: status.available,
        waiting: status.waiting,
        max_size: status.max_size,
    };
    let text = {
        let queue = cache.queue.lock().unwrap();
        let gauges = queue.as_ref().and_then(|(_, g)| g.as_ref());
        pipeline.metrics().render(gauges, &pool)
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(text)
}
