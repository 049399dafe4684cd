//! HTTP routes: the webhook endpoint and the operational ones.

mod ops;
mod webhook;

use actix_web::web;

pub use webhook::MAX_BODY_BYTES;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(webhook::receive))
        .route("/healthz", web::get().to(ops::healthz))
        .route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
}
