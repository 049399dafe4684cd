//! `stripe-worker migrate`: applies `supabase/migrations` (and with `--platform` first
//! `sql/platform`) and records them in `supabase_migrations.schema_migrations` exactly like the
//! Supabase CLI, so `supabase db push` and this command agree on what is applied.

use tokio_postgres::Client;

use super::split;

include!(concat!(env!("OUT_DIR"), "/embedded_sql.rs"));

/// Any constant works; it only has to be the same for every process that migrates.
const MIGRATION_LOCK: i64 = 0x5354_5249_5045_4d47; // "STRIPEMG"

#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: &'static str,
    pub name: &'static str,
    pub file: &'static str,
    pub sql: &'static str,
}

/// The migrations compiled into this binary, in version order.
pub fn migrations() -> Vec<Migration> {
    MIGRATIONS
        .iter()
        .map(|(file, sql)| {
            let stem = file.trim_end_matches(".sql");
            let (version, name) = stem.split_once('_').unwrap_or((stem, ""));
            Migration {
                version,
                name,
                file,
                sql,
            }
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{file}: statement {index} (line {line}) failed: {message}\n  statement: {snippet}")]
    Statement {
        file: String,
        index: usize,
        line: usize,
        snippet: String,
        message: String,
    },
    #[error("{0}")]
    Database(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(super::describe(&e))
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub platform_files: usize,
    pub applied: Vec<String>,
    pub already_applied: usize,
}

const HISTORY_DDL: &str = "
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
";

pub async fn run(client: &mut Client, with_platform: bool) -> Result<Report, MigrateError> {
    // Session-level lock: concurrent runs wait here and then find everything applied.
    client
        .execute("select pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_all(client, with_platform).await;
    let unlock = client
        .execute("select pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn apply_all(client: &mut Client, with_platform: bool) -> Result<Report, MigrateError> {
    let mut report = Report::default();
    if with_platform {
        for (file, sql) in PLATFORM {
            apply_file(client, file, sql, None).await?;
            report.platform_files += 1;
        }
    }
    client.batch_execute(HISTORY_DDL).await?;
    let applied = applied_versions(client).await?;
    for m in migrations() {
        if applied.iter().any(|v| v == m.version) {
            report.already_applied += 1;
            continue;
        }
        apply_file(client, m.file, m.sql, Some(&m)).await?;
        tracing::info!(file = m.file, "migration applied");
        report.applied.push(m.file.to_owned());
    }
    // PostgREST caches the schema; this is how Supabase tells it to look again.
    client
        .batch_execute("notify pgrst, 'reload schema'")
        .await?;
    Ok(report)
}

async fn apply_file(
    client: &mut Client,
    file: &str,
    sql: &str,
    record: Option<&Migration>,
) -> Result<(), MigrateError> {
    let statements = split::statements(sql);
    let tx = client.transaction().await?;
    for (i, st) in statements.iter().enumerate() {
        if let Err(e) = tx.batch_execute(st.sql).await {
            let snippet: String = st
                .sql
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect();
            return Err(MigrateError::Statement {
                file: file.to_owned(),
                index: i + 1,
                line: st.line,
                snippet,
                message: super::describe(&e),
            });
        }
    }
    if let Some(m) = record {
        let recorded: Vec<&str> = statements.iter().map(|s| s.sql).collect();
        tx.execute(
            "insert into supabase_migrations.schema_migrations (version, name, statements) values ($1, $2, $3)",
            &[&m.version, &m.name, &recorded],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn applied_versions(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select version from supabase_migrations.schema_migrations",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Versions compiled into the binary but not recorded in the database (for `/readyz`).
pub async fn pending(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select version from supabase_migrations.schema_migrations where version = any($1)",
            &[&migrations().iter().map(|m| m.version).collect::<Vec<_>>()],
        )
        .await?;
    let recorded: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(migrations()
        .into_iter()
        .map(|m| m.version)
        .filter(|v| !recorded.iter().any(|r| r == v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_migrations_are_well_named_and_ordered() {
        let all = migrations();
        assert!(!all.is_empty());
        for m in &all {
            assert_eq!(m.version.len(), 14, "{}", m.file);
            assert!(m.version.chars().all(|c| c.is_ascii_digit()), "{}", m.file);
            assert!(!m.name.is_empty(), "{}", m.file);
        }
        assert!(all.windows(2).all(|w| w[0].version < w[1].version));
    }
}
