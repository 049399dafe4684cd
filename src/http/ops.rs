//! `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::db::migrate;
use crate::metrics::PoolGauges;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers and every migration compiled in is recorded.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = async {
        let client = state
            .pipeline
            .pool()
            .get()
            .await
            .map_err(|e| e.to_string())?;
        migrate::pending(&**client).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(pending)) if pending.is_empty() => {
            HttpResponse::Ok().json(json!({ "status": "ready" }))
        }
        Ok(Ok(pending)) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "migrations pending", "pending": pending })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "database unavailable", "error": e })),
        Err(_) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "database unavailable", "error": "timed out" })),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pipeline = &state.pipeline;
    // Without the database the gauges are left out; the counters still answer.
    let queue = tokio::time::timeout(PROBE_TIMEOUT, pipeline.queue_gauges())
        .await
        .ok()
        .and_then(Result::ok);
    let status = pipeline.pool().status();
    let pool = PoolGauges {
        size: status.size,
        available: status.available,
        waiting: status.waiting,
        max_size: status.max_size,
    };
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(pipeline.metrics().render(queue.as_ref(), &pool))
}
