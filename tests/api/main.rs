//! Integration tests: the real application against a real PostgreSQL (see helpers.rs).

mod architecture;
mod auth_rows;
mod catalog;
mod chaos;
mod dependencies;
mod entitlements;
mod fakes;
mod flows;
mod health;
mod helpers;
mod hostile_clients;
mod ingest;
mod ledger_properties;
mod migrate;
mod money;
mod odd_bodies;
mod operator;
mod ops_endpoints;
mod processes;
mod properties;
mod purchase;
mod purchase_paths;
mod signature_table;
mod signature_vectors;
mod subscription;
