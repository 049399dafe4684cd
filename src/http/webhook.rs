//! `POST /webhooks/stripe`: raw body, signature, envelope, then the pipeline.
//!
//! Answers: 200 once the event row is committed (processed, ignored, duplicate, or failed with a
//! retry scheduled: we own retries, Stripe sees a healthy endpoint); 400 for what the sender
//! got wrong (nothing stored); 413 over 1 MiB; 503 while the database is unreachable, so
//! Stripe delivers again later.

use std::borrow::Cow;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;
use tracing::Instrument;

use super::AppState;
use crate::envelope::{EnvelopeError, EventEnvelope};
use crate::ingest::DeliveryStatus;
use crate::metrics::Metrics;
use crate::signature::{SignatureError, Verifier};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;

fn error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads the body without ever buffering more than the limit.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<web::BytesMut, BodyError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(8192).min(MAX_BODY_BYTES));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    // The event's id and type are fields of the attempt's span (ingest), not repeated here.
    let span = tracing::info_span!("delivery", request_id = %request_id);
    handle(req, payload, state, request_id)
        .instrument(span)
        .await
}

/// Why a delivery is answered 4xx: the sender's mistake, nothing stored. Each is counted and
/// logged once, with its reason, by `reject`.
enum Rejection {
    TooLarge,
    BrokenBody(String),
    Signature(SignatureError),
    NotUtf8,
    Unparseable(EnvelopeError),
}

impl From<BodyError> for Rejection {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge => Self::TooLarge,
            BodyError::Broken(e) => Self::BrokenBody(e),
        }
    }
}

impl Rejection {
    /// A short stable label for metrics and logs.
    fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::BrokenBody(_) => "broken_body",
            Self::Signature(e) => e.reason(),
            Self::NotUtf8 | Self::Unparseable(_) => "unparseable_body",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::TooLarge => "payload exceeds 1 MiB".into(),
            Self::BrokenBody(e) => format!("could not read body: {e}"),
            Self::Signature(e) => e.to_string(),
            Self::NotUtf8 => "body is not UTF-8 JSON".into(),
            Self::Unparseable(e) => e.to_string(),
        }
    }
}

fn reject(metrics: &Metrics, rejection: Rejection) -> HttpResponse {
    let (reason, message) = (rejection.reason(), rejection.message());
    metrics.delivery("rejected", reason);
    tracing::warn!(outcome = "rejected", reason, "{message}");
    error(rejection.status(), message)
}

/// The verified body in its storable form (see `envelope::storable`) and its envelope.
fn verify_and_parse<'b>(
    req: &HttpRequest,
    body: &'b [u8],
    verifier: &Verifier,
) -> Result<(Cow<'b, str>, EventEnvelope), Rejection> {
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    verifier
        .verify(header, body, now)
        .map_err(Rejection::Signature)?;
    let text = std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
    let raw = crate::envelope::storable(text);
    let envelope = EventEnvelope::parse(raw.as_bytes()).map_err(Rejection::Unparseable)?;
    Ok((raw, envelope))
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: String,
) -> HttpResponse {
    let metrics = state.pipeline.metrics();
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(e) => return reject(metrics, e.into()),
    };
    let (raw, envelope) = match verify_and_parse(&req, &body, &state.verifier) {
        Ok(parsed) => parsed,
        Err(rejection) => return reject(metrics, rejection),
    };
    match state.pipeline.deliver(&envelope, &raw, &request_id).await {
        Ok(status) => {
            let outcome = match status {
                DeliveryStatus::Duplicate => "duplicate",
                _ => "accepted",
            };
            metrics.delivery(outcome, status.as_str());
            tracing::info!(event_id = %envelope.id, outcome = status.as_str(), "delivery answered");
            HttpResponse::Ok().json(json!({ "event_id": envelope.id, "status": status }))
        }
        Err(e) => {
            metrics.delivery("unavailable", "database");
            tracing::error!(
                outcome = "unavailable",
                event_id = %envelope.id,
                error = %e,
                "event not stored; Stripe will redeliver"
            );
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable, retry later",
            )
        }
    }
}
