//! Connections: one pool per process, TLS by rustls honouring `sslmode` as libpq does.

pub mod migrate;
pub mod split;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
pub use tls::ConnectOptions;

use crate::config::DatabaseSettings;

/// Builds the pool; connections are opened lazily, so this succeeds while the database is down
/// (the service starts, answers 503, and recovers on its own).
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let options = ConnectOptions::parse(settings.url.expose())
        .map_err(|reason| anyhow::anyhow!("DATABASE_URL is malformed: {reason}"))?;
    let manager = Manager::from_config(
        options.config,
        options.tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.acquire_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}

/// A database error with the server's code, message and detail (tokio-postgres' own Display
/// says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                m.push_str(&format!(" ({detail})"));
            }
            m
        }
        // Connection errors keep their cause (refused, timed out, TLS) in the source chain.
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                m.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            m
        }
    }
}

/// One standalone connection (for `migrate` and the CLI); the connection task is spawned.
pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let options = ConnectOptions::parse(url)
        .map_err(|reason| anyhow::anyhow!("DATABASE_URL is malformed: {reason}"))?;
    let (client, connection) = options
        .config
        .connect(options.tls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}
