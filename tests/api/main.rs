//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod catalog;
// Until the purchase tests land on this branch, not every fake has a user here.
#[allow(dead_code)]
mod fakes;
mod health;
mod helpers;
mod ingest;
mod migrate;
mod operator;
mod processes;
mod signature_vectors;
