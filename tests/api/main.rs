//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod catalog;
mod fakes;
mod health;
mod helpers;
mod ingest;
mod migrate;
mod operator;
mod processes;
mod purchase;
mod signature_vectors;
mod subscription;
