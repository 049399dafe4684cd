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
use crate::envelope::{EnvelopeError, EventEnvelope};
use crate::ingest::DeliveryStatus;
use crate::metrics::Metrics;
use crate::signature::{SignatureError, Verifier};

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
    // The event's id and type are fields of the attempt's span (ingest), not repeated here.
    let span = tracing::info_span!("delivery", request_id = %request_id);
    handle(req, payload, state, limits, request_id)
        .instrument(span)
        .await
}

/// Why a delivery is answered 4xx: the sender's mistake, nothing stored. Each is counted and
/// logged once, with its reason, by `reject`.
enum Rejection {
    TooLarge,
    /// The body did not arrive within the deadline; the rest is never read.
    TimedOut(std::time::Duration),
    /// Too many large bodies are being read at once (the shared budget is spent).
    Busy,
    BrokenBody(String),
    Signature(SignatureError),
    NotUtf8,
    Unparseable(EnvelopeError),
}

impl Rejection {
    fn from_body(e: BodyError, limits: &BodyLimits) -> Self {
        match e {
            BodyError::TooLarge => Self::TooLarge,
            BodyError::TimedOut => Self::TimedOut(limits.timeout),
            BodyError::Busy => Self::Busy,
            BodyError::Broken(e) => Self::BrokenBody(e),
        }
    }
}

impl Rejection {
    /// A short stable label for metrics and logs.
    fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::TimedOut(_) => "body_timeout",
            Self::Busy => "busy",
            Self::BrokenBody(_) => "broken_body",
            Self::Signature(e) => e.reason(),
            Self::NotUtf8 | Self::Unparseable(_) => "unparseable_body",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The unread rest of the body is dropped with the connection.
    fn closes_connection(&self) -> bool {
        matches!(self, Self::TimedOut(_) | Self::Busy)
    }

    fn message(&self) -> String {
        match self {
            Self::TooLarge => "payload exceeds 1 MiB".into(),
            Self::TimedOut(limit) => format!("body not received within {} s", limit.as_secs_f64()),
            Self::Busy => "too many large bodies at once, retry later".into(),
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
    let mut answer = error(rejection.status(), message);
    if rejection.closes_connection() {
        answer.head_mut().set_connection_type(ConnectionType::Close);
    }
    answer
}

/// The verified body as signed, and its envelope read from the storable form (see
/// `envelope::storable`; ingest stores both).
fn verify_and_parse<'b>(
    req: &HttpRequest,
    body: &'b [u8],
    verifier: &Verifier,
) -> Result<(&'b str, EventEnvelope), Rejection> {
    let header = req
        .headers()
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = crate::signature::unix_now_rounded_up();
    verifier
        .verify(header, body, now)
        .map_err(Rejection::Signature)?;
    let text = std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
    let envelope = EventEnvelope::parse(crate::envelope::storable(text).as_bytes())
        .map_err(Rejection::Unparseable)?;
    Ok((text, envelope))
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
        Err(e) => return reject(metrics, Rejection::from_body(e, &limits)),
    };
    let (text, envelope) = match verify_and_parse(&req, &body, &state.verifier) {
        Ok(parsed) => parsed,
        Err(rejection) => return reject(metrics, rejection),
    };
    match state.pipeline.deliver(&envelope, text, &request_id).await {
        Ok(status) => {
            let outcome = match status {
                DeliveryStatus::Duplicate => "duplicate",
                _ => "accepted",
            };
            metrics.delivery(outcome, status.as_str());
            tracing::info!(event_id = %envelope.id, outcome = status.as_str(), "delivery answered");
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
            tracing::error!(
                outcome = "unavailable",
                reason,
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
