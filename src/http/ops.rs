//! `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::db::migrate;
use crate::metrics::{PoolGauges, QueueGauges};

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

const QUEUE_GAUGES: &str = "
select
  count(*) filter (where processing_status = 'failed' and next_attempt_at <= now()),
  count(*) filter (where processing_status = 'failed' and next_attempt_at > now()),
  coalesce(extract(epoch from now() - min(created_at)
    filter (where processing_status in ('pending', 'processing', 'failed'))), 0)::float8,
  count(*) filter (where processing_status = 'dead')
from public.stripe_webhook_events
where processing_status in ('pending', 'processing', 'failed', 'dead')";

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pipeline = &state.pipeline;
    let queue = async {
        let client = pipeline.pool().get().await.ok()?;
        let row = client.query_one(QUEUE_GAUGES, &[]).await.ok()?;
        Some(QueueGauges {
            retry_due: row.get(0),
            retry_scheduled: row.get(1),
            oldest_pending_secs: row.get(2),
            dead: row.get(3),
        })
    };
    let queue = tokio::time::timeout(PROBE_TIMEOUT, queue)
        .await
        .ok()
        .flatten();
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
