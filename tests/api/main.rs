//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod architecture;
mod catalog;
mod catch_up;
mod chaos;
mod dependencies;
mod fakes;
mod flows;
mod health;
mod helpers;
mod ingest;
mod migrate;
mod operator;
mod processes;
mod properties;
mod purchase;
mod reconcile;
mod signature_vectors;
mod subscription;
