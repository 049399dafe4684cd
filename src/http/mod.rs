//! HTTP routes: the webhook endpoint and the operational ones.

mod ops;
mod webhook;

use actix_web::web;

use crate::ingest::Pipeline;
use crate::signature::Verifier;

pub use webhook::MAX_BODY_BYTES;

/// What every request handler shares.
pub struct AppState {
    pub pipeline: Pipeline,
    pub verifier: Verifier,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(webhook::receive))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
}
