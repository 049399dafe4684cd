//! Connections: one pool per process, TLS by rustls honouring `sslmode` as libpq does.

mod event_tx;
pub mod migrate;
pub mod split;
mod tls;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use crate::config::{DatabaseSettings, DatabaseUrl};

pub use event_tx::EventTx;

/// Builds the pool; connections are opened lazily, so this succeeds while the database is down
/// (the service starts, answers 503, and recovers on its own).
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let tls = tls::connector(&settings.url.tls)
        .map_err(|reason| anyhow::anyhow!("DATABASE_URL: {reason}"))?;
    let manager = Manager::from_config(
        settings.url.postgres.clone(),
        tls,
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

/// One standalone connection (for `migrate` and the CLI); the connection task is spawned.
pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<tokio_postgres::Client> {
    let tls =
        tls::connector(&url.tls).map_err(|reason| anyhow::anyhow!("DATABASE_URL: {reason}"))?;
    let (client, connection) = url
        .postgres
        .connect(tls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
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

/// Whether `e` means the connection is gone (or never came), rather than a statement the server
/// refused: then nothing of the transaction can be stored.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_none()
}
