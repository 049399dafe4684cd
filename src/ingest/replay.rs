//! `replay`: reprocesses stored events through the same handlers and transaction rules as live
//! deliveries. Each row is claimed like the retrier claims one (`FOR UPDATE SKIP LOCKED`, then
//! `processing` with our lease), so a running worker and a replay never hold the same event;
//! the claimed row then goes through `Pipeline::process_claimed`.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ClaimedOutcome, IngestError, Pipeline, Status};

/// The stored rows a replay is about, oldest event first.
const SELECT_CANDIDATES: &str = "
select id, stripe_event_id, event_type, processing_status
from public.stripe_webhook_events
where processing_status = any($1)
  and ($2::text[] is null or stripe_event_id = any($2))
  and ($3::text is null or event_type = $3)
  and ($4::timestamptz is null or created_at >= $4)
order by coalesce(event_created_at, created_at), created_at, stripe_event_id
limit $5";

/// Explicitly named events and their status (to explain why one was not selected).
const LOOKUP_IDS: &str = "
select stripe_event_id, event_type, processing_status
from public.stripe_webhook_events where stripe_event_id = any($1)";

/// Takes one row if its status is still one we replay and nobody holds it (a live lease or a
/// row lock means someone else is on it). Returns the status it had.
const CLAIM_ONE: &str = "
with target as (
  select id, processing_status as old_status
  from public.stripe_webhook_events
  where id = $1
    and processing_status = any($2)
    and (processing_status <> 'processing' or locked_until is null or locked_until < now())
  for update skip locked)
update public.stripe_webhook_events e
set processing_status = 'processing', locked_by = $3,
    locked_until = now() + make_interval(secs => $4)
from target
where e.id = target.id
returning target.old_status";

const CURRENT: &str = "
select processing_status, locked_by, error_message
from public.stripe_webhook_events where id = $1";

/// Which stored events to replay (parsed from the command line).
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Statuses eligible for a replay (`processed`/`ignored` only with `--force`).
    pub statuses: Vec<Status>,
    /// Only these event ids (all when empty).
    pub event_ids: Vec<String>,
    pub event_type: Option<String>,
    /// Stored (received) at or after this instant.
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
}

/// A stored event a replay selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayCandidate {
    pub row_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub status: Status,
}

/// An event named with `--event-id` that the filter did not select, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotSelected {
    pub event_id: String,
    /// `None`: no such event is stored.
    pub found: Option<(String, Status)>,
}

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Processed again; the row's new status and error.
    Done {
        old: Status,
        new: Status,
        error: Option<String>,
    },
    /// Not replayed: another worker holds it, or its status changed since it was selected.
    Skipped {
        current: Option<Status>,
        reason: String,
    },
}

fn status_names(statuses: &[Status]) -> Vec<&'static str> {
    statuses.iter().map(|s| s.as_str()).collect()
}

fn parse_status(raw: &str) -> Status {
    // The table's check constraint allows only these; an unknown value reads as pending.
    Status::parse(raw).unwrap_or(Status::Pending)
}

impl Pipeline {
    /// The events a replay with `filter` would process, oldest first.
    pub async fn replay_candidates(
        &self,
        filter: &ReplayFilter,
    ) -> Result<Vec<ReplayCandidate>, IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(SELECT_CANDIDATES).await?;
        let ids = (!filter.event_ids.is_empty()).then_some(&filter.event_ids);
        let rows = client
            .query(
                &stmt,
                &[
                    &status_names(&filter.statuses),
                    &ids,
                    &filter.event_type,
                    &filter.since,
                    &filter.limit,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ReplayCandidate {
                row_id: r.get(0),
                event_id: r.get(1),
                event_type: r.get(2),
                status: parse_status(r.get(3)),
            })
            .collect())
    }

    /// The `--event-id`s that are not among `selected`, with their stored status if any.
    pub async fn replay_not_selected(
        &self,
        filter: &ReplayFilter,
        selected: &[ReplayCandidate],
    ) -> Result<Vec<NotSelected>, IngestError> {
        let missing: Vec<&String> = filter
            .event_ids
            .iter()
            .filter(|id| !selected.iter().any(|c| &c.event_id == *id))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(LOOKUP_IDS).await?;
        let rows = client.query(&stmt, &[&missing]).await?;
        let mut out = Vec::new();
        for id in missing {
            if out.iter().any(|n: &NotSelected| &n.event_id == id) {
                continue; // named twice
            }
            let found = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == id.as_str())
                .map(|r| (r.get::<_, String>(1), parse_status(r.get(2))));
            out.push(NotSelected {
                event_id: id.clone(),
                found,
            });
        }
        Ok(out)
    }

    /// Claims `candidate` (if still eligible and free) and processes it like the retrier would.
    pub async fn replay_one(
        &self,
        candidate: &ReplayCandidate,
        statuses: &[Status],
    ) -> Result<ReplayOutcome, IngestError> {
        let old = {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(CLAIM_ONE).await?;
            let claimed = client
                .query_opt(
                    &stmt,
                    &[
                        &candidate.row_id,
                        &status_names(statuses),
                        &self.worker_id,
                        &self.lease_seconds(),
                    ],
                )
                .await?;
            match claimed {
                Some(row) => parse_status(row.get(0)),
                None => return self.skipped(candidate.row_id, statuses, None).await,
            }
        };
        match self.process_claimed(candidate.row_id).await? {
            ClaimedOutcome::Attempted(attempt) => Ok(ReplayOutcome::Done {
                old,
                new: attempt.status,
                error: attempt.error,
            }),
            // A stored body that no longer parses (now dead), or the lease was lost and
            // whoever took the row over may have failed it: report the row as it is.
            ClaimedOutcome::Unreadable | ClaimedOutcome::LeaseLost => {
                let (current, error) = self.current(candidate.row_id).await?;
                match current {
                    Some(new @ (Status::Dead | Status::Failed)) => {
                        Ok(ReplayOutcome::Done { old, new, error })
                    }
                    _ => {
                        self.skipped(candidate.row_id, statuses, Some("lease lost"))
                            .await
                    }
                }
            }
        }
    }

    async fn current(&self, row_id: Uuid) -> Result<(Option<Status>, Option<String>), IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(CURRENT).await?;
        Ok(match client.query_opt(&stmt, &[&row_id]).await? {
            Some(row) => (Some(parse_status(row.get(0))), row.get(2)),
            None => (None, None),
        })
    }

    async fn skipped(
        &self,
        row_id: Uuid,
        statuses: &[Status],
        reason: Option<&str>,
    ) -> Result<ReplayOutcome, IngestError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(CURRENT).await?;
        let row = client.query_opt(&stmt, &[&row_id]).await?;
        let current = row.as_ref().map(|r| parse_status(r.get(0)));
        let reason = match (reason, &row, current) {
            (Some(reason), _, _) => reason.to_owned(),
            (None, None, _) => "deleted meanwhile".to_owned(),
            (None, Some(r), Some(Status::Processing)) => format!(
                "busy: held by {}",
                r.get::<_, Option<&str>>(1).unwrap_or("another worker")
            ),
            // Still eligible yet not claimable: another transaction holds the row lock.
            (None, Some(_), Some(s)) if statuses.contains(&s) => "busy: row locked".to_owned(),
            (None, Some(_), Some(s)) => format!("now {}", s.as_str()),
            (None, Some(_), None) => "busy".to_owned(),
        };
        Ok(ReplayOutcome::Skipped { current, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_are_the_column_values() {
        assert_eq!(
            status_names(&[Status::Failed, Status::Dead]),
            vec!["failed", "dead"]
        );
    }
}
