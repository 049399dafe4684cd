//! `POST /webhooks/stripe`: raw body, signature, envelope, then the pipeline.
//!
//! Answers: 200 once the event row is committed (processed, ignored, duplicate, or failed with a
//! retry scheduled: we own retries, Stripe sees a healthy endpoint); 400 for what the sender
//! got wrong (nothing stored); 413 over 1 MiB; 408 for a body not received in time and 503
//! while the body budget is spent (see `limits`); 503 while the database is unreachable, so
//! Stripe delivers again later.

use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tracing::Instrument;

use super::limits::{read_body, BodyError, BodyLimits};
use super::AppState;
use crate::envelope::EventEnvelope;

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    limits: web::Data<BodyLimits>,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!(
        "delivery",
        request_id = %request_id,
        event_id = tracing::field::Empty,
        event_type = tracing::field::Empty,
    );
    handle(req, payload, state, limits, request_id)
        .instrument(span)
        .await
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    limits: web::Data<BodyLimits>,
    request_id: String,
) -> HttpResponse {
    let metrics = state.pipeline.metrics();
    let body = match read_body(&req, payload, &limits).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            metrics.delivery("rejected", "too_large");
            tracing::warn!(
                outcome = "rejected",
                reason = "too_large",
                "body over 1 MiB"
            );
            return error(StatusCode::PAYLOAD_TOO_LARGE, "payload exceeds 1 MiB");
        }
        Err(BodyError::TimedOut) => {
            metrics.delivery("rejected", "body_timeout");
            tracing::warn!(
                outcome = "rejected",
                reason = "body_timeout",
                "body not received in time"
            );
            // The rest of the body is never read: the connection closes after this answer.
            let mut answer = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body not received within {} s",
                    limits.timeout.as_secs_f64()
                ),
            );
            answer.head_mut().set_connection_type(ConnectionType::Close);
            return answer;
        }
        Err(BodyError::Busy) => {
            metrics.delivery("rejected", "busy");
            tracing::warn!(
                outcome = "rejected",
                reason = "busy",
                "body buffer budget spent"
            );
            let mut answer = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many large bodies at once, retry later",
            );
            answer.head_mut().set_connection_type(ConnectionType::Close);
            return answer;
        }
        Err(BodyError::Broken(e)) => {
            metrics.delivery("rejected", "broken_body");
            return error(StatusCode::BAD_REQUEST, format!("could not read body: {e}"));
        }
    };
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = crate::signature::unix_now_rounded_up();
    if let Err(e) = state.verifier.verify(header, &body, now) {
        metrics.delivery("rejected", e.reason());
        tracing::warn!(outcome = "rejected", reason = e.reason(), "{e}");
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    // Everything after the signature reads the storable form (see `envelope::storable`).
    let Ok(text) = std::str::from_utf8(&body) else {
        metrics.delivery("rejected", "unparseable_body");
        return error(StatusCode::BAD_REQUEST, "body is not UTF-8 JSON");
    };
    let envelope = match EventEnvelope::parse(crate::envelope::storable(text).as_bytes()) {
        Ok(envelope) => envelope,
        Err(e) => {
            metrics.delivery("rejected", "unparseable_body");
            tracing::warn!(outcome = "rejected", reason = "unparseable_body", "{e}");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let span = tracing::Span::current();
    span.record("event_id", envelope.id.as_str());
    span.record("event_type", envelope.event_type.as_str());
    match state.pipeline.deliver(&envelope, text, &request_id).await {
        Ok(status) => {
            let label = match status {
                crate::ingest::DeliveryStatus::Duplicate => "duplicate",
                _ => "accepted",
            };
            metrics.delivery(label, status_label(status));
            tracing::info!(outcome = status_label(status), "delivery answered");
            HttpResponse::Ok().json(json!({ "event_id": envelope.id, "status": status }))
        }
        Err(e) if e.unstorable_reason().is_some() => {
            // The same bytes would fail the same way on every redelivery: say why, once.
            let reason = e.unstorable_reason().unwrap_or_default();
            metrics.delivery("rejected", "unstorable_body");
            tracing::warn!(outcome = "rejected", reason = "unstorable_body", "{reason}");
            error(
                StatusCode::BAD_REQUEST,
                format!("PostgreSQL cannot store this event: {reason}"),
            )
        }
        Err(e) => {
            let reason = if e.is_outage() {
                "database"
            } else {
                "database_error"
            };
            metrics.delivery("unavailable", reason);
            tracing::error!(outcome = "unavailable", reason, error = %e, "event not stored; Stripe will redeliver");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable, retry later",
            )
        }
    }
}

fn status_label(status: crate::ingest::DeliveryStatus) -> &'static str {
    use crate::ingest::DeliveryStatus::*;
    match status {
        Processed => "processed",
        Ignored => "ignored",
        Duplicate => "duplicate",
        Failed => "failed",
    }
}
