//! stripe-worker: turns Stripe webhooks into provisioned customers in a Supabase database.
//!
//! The modules follow the path of an event. Each uses only modules listed after it, never one
//! before it (`tests/api/architecture.rs` checks this against the README's table):
//!
//! - `cli`: the command line (`serve`, `migrate`, `replay`, `backfill`, `trigger`, `status`)
//! - `startup`: builds the application: pipeline, HTTP server, retrier
//! - `http`: routes (webhook, `/healthz`, `/readyz`, `/metrics`) and their shared state
//! - `retrier`: the background loop that retries due events
//! - `ingest`: the event log's state machine, one transaction per event
//! - `handlers`: one file per Stripe object, routed by event type; buyer provisioning
//! - `stripe_events`, `fixtures`: backfill's listing of events; `trigger`'s realistic events
//! - `stripe_api`, `supabase_auth`: the external APIs
//! - `db`: pool and connections, migrations, statement splitting
//! - `metrics`, `telemetry`: Prometheus text, tracing set-up
//! - `config`: typed settings, parsed once
//! - `signature`, `envelope`: authenticating and parsing a delivery
//! - `email`, `secret`: values parsed at the edge that never leak into logs

// serde_json::json! of full Stripe objects (src/fixtures) nests deeper than the default.
#![recursion_limit = "256"]

pub mod cli;
pub mod config;
pub mod db;
pub mod email;
pub mod envelope;
pub mod fixtures;
pub mod handlers;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod retrier;
pub mod secret;
pub mod signature;
pub mod startup;
pub mod stripe_api;
pub mod stripe_events;
pub mod supabase_auth;
pub mod telemetry;
