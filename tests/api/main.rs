//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod catalog;
mod health;
mod helpers;
mod ingest;
mod migrate;
mod operator;
mod processes;
mod signature_vectors;
