//! The catch-up's durable progress (`public.stripe_catch_up`, one row per stream): the lease
//! that lets one replica run at a time, the high-water mark, and the counts of the current run
//! and of all runs. Every write after the lease is taken names the holder: a replica whose
//! lease another one took over writes nothing and stops.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;

use super::sweep::SweepError;

/// The stream a worker catches up on: the mode its endpoint processes.
pub fn stream(livemode: Option<bool>) -> &'static str {
    match livemode {
        Some(true) => "live",
        Some(false) => "test",
        None => "any",
    }
}

/// Takes (or renews) the lease, creating the row on first use. Parameters: stream, start
/// lookback (seconds), holder, lease (seconds).
const TAKE: &str = "
insert into public.stripe_catch_up as c (stream, watching_since, locked_by, locked_until)
values ($1, now() - make_interval(secs => $2), $3, now() + make_interval(secs => $4))
on conflict (stream) do update
set locked_by = excluded.locked_by, locked_until = excluded.locked_until, updated_at = now()
where c.locked_until is null or c.locked_until < now() or c.locked_by = excluded.locked_by
returning c.high_water_mark, c.watching_since, c.created_at";

/// Parameters: stream, holder, lease (seconds), from, until.
const BEGIN: &str = "
update public.stripe_catch_up
set run_started_at = now(), run_finished_at = null, run_status = 'running', run_from = $4,
    run_until = $5, run_listed = 0, run_ingested = 0, run_recovered = 0, run_errors = 0,
    run_rate_limited = 0, last_error = null, locked_until = now() + make_interval(secs => $3),
    updated_at = now()
where stream = $1 and locked_by = $2";

/// Parameters: stream, holder, lease (seconds), listed, rate limited.
const PAGE: &str = "
update public.stripe_catch_up
set run_listed = run_listed + $4, listed_total = listed_total + $4,
    run_rate_limited = run_rate_limited + $5, locked_until = now() + make_interval(secs => $3),
    updated_at = now()
where stream = $1 and locked_by = $2";

/// Parameters: stream, holder, lease (seconds), high-water mark, ingested, recovered, errors,
/// last error.
const WINDOW: &str = "
update public.stripe_catch_up
set high_water_mark = greatest(high_water_mark, $4),
    run_ingested = run_ingested + $5, ingested_total = ingested_total + $5,
    run_recovered = run_recovered + $6, recovered_total = recovered_total + $6,
    run_errors = run_errors + $7, errors_total = errors_total + $7,
    last_error = coalesce($8, last_error),
    locked_until = now() + make_interval(secs => $3), updated_at = now()
where stream = $1 and locked_by = $2";

/// Ends the run and releases the lease. Parameters: stream, holder, status, error.
const FINISH: &str = "
update public.stripe_catch_up
set run_status = $3, run_finished_at = now(), last_error = coalesce($4, last_error),
    run_errors = run_errors + case when $4::text is null then 0 else 1 end,
    errors_total = errors_total + case when $4::text is null then 0 else 1 end,
    locked_by = null, locked_until = null, updated_at = now()
where stream = $1 and locked_by = $2";

const STATE: &str = "
select stream, high_water_mark, watching_since, locked_by, locked_until, run_status,
       run_started_at, run_finished_at, run_from, run_until, run_listed, run_ingested,
       run_recovered, run_errors, run_rate_limited, last_error, listed_total, ingested_total,
       recovered_total, errors_total, created_at
from public.stripe_catch_up
order by stream";

/// One stream's progress, as `status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatchUpState {
    pub stream: String,
    /// Every event created up to here was listed and ingested.
    pub high_water_mark: Option<DateTime<Utc>>,
    /// Where the first run started; nothing before it is listed.
    pub watching_since: DateTime<Utc>,
    /// The replica running the catch-up now (with a live lease), if any.
    pub running_on: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_run: Run,
    pub listed_total: i64,
    pub ingested_total: i64,
    pub recovered_total: i64,
    pub errors_total: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Run {
    /// `running`, `ok`, `failed`, `interrupted`; `None` before the first run.
    pub status: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub listed: i64,
    pub ingested: i64,
    pub recovered: i64,
    pub errors: i64,
    pub rate_limited: i64,
    pub last_error: Option<String>,
}

impl CatchUpState {
    /// Where the next run lists from, before the overlap: the high-water mark, or where the
    /// first run started.
    pub fn mark(&self) -> DateTime<Utc> {
        self.high_water_mark.unwrap_or(self.watching_since)
    }
}

pub async fn read_all(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<CatchUpState>, tokio_postgres::Error> {
    Ok(client
        .query(STATE, &[])
        .await?
        .iter()
        .map(|r| CatchUpState {
            stream: r.get(0),
            high_water_mark: r.get(1),
            watching_since: r.get(2),
            running_on: r.get(3),
            lease_until: r.get(4),
            last_run: Run {
                status: r.get(5),
                started_at: r.get(6),
                finished_at: r.get(7),
                from: r.get(8),
                until: r.get(9),
                listed: r.get(10),
                ingested: r.get(11),
                recovered: r.get(12),
                errors: r.get(13),
                rate_limited: r.get(14),
                last_error: r.get(15),
            },
            listed_total: r.get(16),
            ingested_total: r.get(17),
            recovered_total: r.get(18),
            errors_total: r.get(19),
            created_at: r.get(20),
        })
        .collect())
}

/// What the lease holder learns when it takes the lease.
#[derive(Debug, Clone)]
pub struct Taken {
    pub high_water_mark: Option<DateTime<Utc>>,
    pub watching_since: DateTime<Utc>,
    /// When the row was created: events created since then that only the catch-up finds are
    /// recovered deliveries.
    pub created_at: DateTime<Utc>,
}

/// The lease of one holder on one stream; each write takes a pooled connection for one
/// statement.
pub struct Lease<'a> {
    pub pool: &'a Pool,
    pub stream: &'static str,
    pub holder: &'a str,
    pub seconds: f64,
}

impl Lease<'_> {
    /// `None` when another replica holds a live lease.
    pub async fn take(&self, start_lookback_secs: f64) -> Result<Option<Taken>, SweepError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(TAKE).await?;
        let row = client
            .query_opt(
                &stmt,
                &[
                    &self.stream,
                    &start_lookback_secs,
                    &self.holder,
                    &self.seconds,
                ],
            )
            .await?;
        Ok(row.map(|r| Taken {
            high_water_mark: r.get(0),
            watching_since: r.get(1),
            created_at: r.get(2),
        }))
    }

    pub async fn begin(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Result<(), SweepError> {
        self.write(BEGIN, &[&from, &until]).await
    }

    pub async fn page(&self, listed: i64, rate_limited: i64) -> Result<(), SweepError> {
        self.write(PAGE, &[&listed, &rate_limited]).await
    }

    pub async fn window(
        &self,
        high_water_mark: DateTime<Utc>,
        ingested: i64,
        recovered: i64,
        errors: i64,
        last_error: Option<&str>,
    ) -> Result<(), SweepError> {
        self.write(
            WINDOW,
            &[
                &high_water_mark,
                &ingested,
                &recovered,
                &errors,
                &last_error,
            ],
        )
        .await
    }

    /// Ends the run with `status` and lets the lease go.
    pub async fn finish(&self, status: &str, error: Option<&str>) -> Result<(), SweepError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(FINISH).await?;
        client
            .execute(&stmt, &[&self.stream, &self.holder, &status, &error])
            .await?;
        Ok(())
    }

    /// One update that renews the lease; none matching means the lease is lost.
    async fn write(
        &self,
        sql: &str,
        rest: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), SweepError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&self.stream, &self.holder, &self.seconds];
        params.extend_from_slice(rest);
        if client.execute(&stmt, &params).await? == 0 {
            return Err(SweepError::Stopped(
                "another replica took over the catch-up (its lease ran out)".into(),
            ));
        }
        Ok(())
    }
}
