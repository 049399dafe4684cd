//! stripe-worker: turns Stripe webhooks into provisioned customers in a Supabase database.
//!
//! The modules follow the path of an event. Each uses only modules listed after it, never one
//! before it (`tests/api/architecture.rs` checks this against the README's table):
//!
//! - `cli`: the command line (`serve`, `migrate`, `replay`, `backfill`, `reconcile`, `trigger`,
//!   `status`)
//! - `startup`: builds the application: pipeline, HTTP server, retrier, catch-up
//! - `http`: routes (webhook, `/healthz`, `/readyz`, `/metrics`) and their shared state
//! - `retrier`, `catchup`, `reconcile`: the background loops that retry due events and catch
//!   up on events Stripe never delivered; the comparison of Stripe's state with ours
//! - `ingest`: the event log's state machine, one transaction per event
//! - `handlers`: one file per Stripe object, routed by event type; buyer provisioning
//! - `stripe_events`, `fixtures`: the listing of Stripe's events; `trigger`'s realistic events
//! - `stripe_api`, `stripe_list`, `supabase_auth`: the external APIs (look-ups; raw lists)
//! - `db`: pool and connections, migrations, statement splitting
//! - `metrics`, `telemetry`: Prometheus text, tracing set-up
//! - `config`: typed settings, parsed once
//! - `signature`, `envelope`: authenticating and parsing a delivery
//! - `email`, `secret`: values parsed at the edge that never leak into logs

// serde_json::json! of full Stripe objects (src/fixtures) nests deeper than the default.
#![recursion_limit = "256"]

pub mod catchup;
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
pub mod reconcile;
pub mod retrier;
pub mod secret;
pub mod signature;
pub mod startup;
pub mod stripe_api;
pub mod stripe_events;
pub mod stripe_list;
pub mod supabase_auth;
pub mod telemetry;
