//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod architecture;
mod catalog;
mod chaos;
mod dependencies;
mod entitlements;
mod fakes;
mod flows;
mod health;
mod helpers;
mod ingest;
mod ledger_properties;
mod migrate;
mod money;
mod operator;
mod processes;
mod properties;
mod purchase;
mod purchase_paths;
mod signature_vectors;
mod subscription;
