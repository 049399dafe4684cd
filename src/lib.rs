//! stripe-worker: turns Stripe webhooks into provisioned customers in a Supabase database.
//!
//! The modules follow the path of an event: `http` receives it, `signature` authenticates it,
//! `envelope` parses what ingestion needs, `ingest` stores it and runs its handler from
//! `handlers` in one transaction, and the `retrier` takes care of the ones that failed.

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
pub mod provision;
pub mod retrier;
pub mod secret;
pub mod signature;
pub mod startup;
pub mod stripe_api;
pub mod stripe_events;
pub mod supabase_auth;
pub mod telemetry;
