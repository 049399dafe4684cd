//! `stripe-worker replay`: reprocesses stored events through the same pipeline as live
//! deliveries; one line per event and a summary.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::context::{self, parse_instant};
use super::progress::Progress;
use crate::config::Source;
use crate::ingest::{NotSelected, Pipeline, ReplayCandidate, ReplayFilter, ReplayOutcome, Status};

/// Reprocess stored events (default: the failed ones) through the same handlers and
/// transaction rules as live deliveries.
///
/// Each event is claimed like the retrier claims one (row lock, then `processing` with a
/// lease), so a running worker and a replay never process the same event at once; an event
/// held by someone else is reported as skipped (busy). Handlers are idempotent: replaying an
/// applied event changes nothing, but processed and ignored events are replayed only with
/// --force. Exit status 0 when every replayed event ended processed or ignored (and every
/// --event-id exists), 1 otherwise.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "Examples:
  stripe-worker replay                                   # every failed event
  stripe-worker replay --event-id evt_123                # one event (--force if processed)
  stripe-worker replay --status dead --since 2026-01-31  # dead ones after a fix
  stripe-worker replay --status any --type invoice.paid --dry-run")]
pub struct ReplayArgs {
    /// Only this event (repeatable). Without --status, any status is eligible.
    #[arg(long = "event-id", value_name = "ID")]
    pub event_ids: Vec<String>,
    /// Which stored events: failed (default), dead, or any (every status but processed and
    /// ignored; those too with --force).
    #[arg(long, value_enum, overrides_with = "status")]
    pub status: Option<StatusFilter>,
    /// Only events of this type (e.g. checkout.session.completed).
    #[arg(long = "type", value_name = "T", overrides_with = "event_type")]
    pub event_type: Option<String>,
    /// Only events received at or after this instant (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_instant, value_name = "RFC3339", overrides_with = "since")]
    pub since: Option<DateTime<Utc>>,
    /// At most this many events (oldest first).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..), overrides_with = "limit")]
    pub limit: Option<i64>,
    /// List what would be replayed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also replay processed and ignored events (handlers are idempotent).
    #[arg(long)]
    pub force: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Failed,
    Dead,
    Any,
}

/// The counts of one replay run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub processed: usize,
    pub ignored: usize,
    pub failed: usize,
    pub dead: usize,
    /// Busy (held by another worker), changed meanwhile, or not selected by the filter.
    pub skipped: usize,
    /// `--event-id`s that are not stored at all.
    pub not_found: usize,
    /// `--dry-run`: how many would be replayed.
    pub would_replay: usize,
}

impl ReplaySummary {
    pub fn replayed(&self) -> usize {
        self.processed + self.ignored + self.failed + self.dead
    }

    /// Every replayed event ended processed or ignored, and every named event exists.
    pub fn success(&self) -> bool {
        self.failed == 0 && self.dead == 0 && self.not_found == 0
    }

    fn line(&self) -> String {
        format!(
            "replayed {}: processed {}, ignored {}, failed {}, dead {}, skipped {}",
            self.replayed(),
            self.processed,
            self.ignored,
            self.failed,
            self.dead,
            self.skipped + self.not_found
        )
    }
}

impl ReplayArgs {
    /// The statuses eligible for this replay.
    pub fn statuses(&self) -> Vec<Status> {
        let filter = self.status.unwrap_or(if self.event_ids.is_empty() {
            StatusFilter::Failed
        } else {
            StatusFilter::Any
        });
        let mut statuses = match filter {
            StatusFilter::Failed => vec![Status::Failed],
            StatusFilter::Dead => vec![Status::Dead],
            StatusFilter::Any => vec![
                Status::Pending,
                Status::Processing,
                Status::Failed,
                Status::Dead,
            ],
        };
        if self.force && filter == StatusFilter::Any {
            statuses.extend([Status::Processed, Status::Ignored]);
        }
        statuses
    }

    fn filter(&self) -> ReplayFilter {
        ReplayFilter {
            statuses: self.statuses(),
            event_ids: self.event_ids.clone(),
            event_type: self.event_type.clone(),
            since: self.since,
            limit: self.limit,
        }
    }
}

/// Builds the pipeline from `src` (DATABASE_URL, retry settings, …) and replays.
pub async fn run(
    args: &ReplayArgs,
    src: &dyn Source,
    out: &mut dyn Write,
    interactive: bool,
) -> anyhow::Result<ReplaySummary> {
    let pipeline = context::pipeline(src, "replay")?;
    execute(&pipeline, args, out, interactive).await
}

pub async fn execute(
    pipeline: &Pipeline,
    args: &ReplayArgs,
    out: &mut dyn Write,
    interactive: bool,
) -> anyhow::Result<ReplaySummary> {
    let filter = args.filter();
    let candidates = pipeline.replay_candidates(&filter).await?;
    let not_selected = pipeline.replay_not_selected(&filter, &candidates).await?;
    let mut summary = ReplaySummary::default();
    for n in &not_selected {
        let line = summary.not_selected(n, args.force);
        writeln!(out, "{line}")?;
    }
    if args.dry_run {
        for c in &candidates {
            writeln!(
                out,
                "{} {} {} -> (would replay)",
                c.event_id,
                c.event_type,
                c.status.as_str()
            )?;
        }
        summary.would_replay = candidates.len();
        writeln!(
            out,
            "dry run: would replay {} events, skipped {}; nothing changed",
            candidates.len(),
            summary.skipped + summary.not_found
        )?;
        return Ok(summary);
    }
    let progress = Progress::new(candidates.len(), interactive, "replaying");
    for c in &candidates {
        let outcome = pipeline.replay_one(c, &filter.statuses).await?;
        let line = summary.replayed_one(c, outcome);
        progress.line(out, &line)?;
        progress.inc();
    }
    progress.finish();
    writeln!(out, "{}", summary.line())?;
    Ok(summary)
}

impl ReplaySummary {
    /// Counts an `--event-id` the filter did not select; returns its report line.
    fn not_selected(&mut self, n: &NotSelected, force: bool) -> String {
        let Some((event_type, status)) = &n.found else {
            self.not_found += 1;
            return format!("{} not found", n.event_id);
        };
        self.skipped += 1;
        let why = match status {
            Status::Processed | Status::Ignored if !force => {
                format!("already {}; --force replays it", status.as_str())
            }
            _ => format!("status {} not selected by --status", status.as_str()),
        };
        let s = status.as_str();
        format!("{} {event_type} {s} -> {s}  (skipped: {why})", n.event_id)
    }

    /// Counts one replayed candidate; returns its report line.
    fn replayed_one(&mut self, c: &ReplayCandidate, outcome: ReplayOutcome) -> String {
        match outcome {
            ReplayOutcome::Done { old, new, error } => {
                match new {
                    Status::Processed => self.processed += 1,
                    Status::Ignored => self.ignored += 1,
                    Status::Dead => self.dead += 1,
                    _ => self.failed += 1,
                }
                let mut line = format!(
                    "{} {} {} -> {}",
                    c.event_id,
                    c.event_type,
                    old.as_str(),
                    new.as_str()
                );
                if let Some(e) = error {
                    line.push_str(&format!("  error: {e}"));
                }
                line
            }
            ReplayOutcome::Skipped { current, reason } => {
                self.skipped += 1;
                format!(
                    "{} {} {} -> {}  (skipped: {reason})",
                    c.event_id,
                    c.event_type,
                    c.status.as_str(),
                    current.map(Status::as_str).unwrap_or("gone")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn parse(argv: &[&str]) -> Result<ReplayArgs, clap::Error> {
        Wrap::try_parse_from(std::iter::once("replay").chain(argv.iter().copied())).map(|w| w.args)
    }

    #[test]
    fn the_default_is_failed_and_event_ids_widen_it_to_any() {
        assert_eq!(parse(&[]).unwrap().statuses(), vec![Status::Failed]);
        let a = parse(&["--event-id", "evt_1", "--event-id", "evt_2"]).unwrap();
        assert_eq!(a.event_ids, vec!["evt_1", "evt_2"]);
        assert!(!a.statuses().contains(&Status::Processed));
        assert!(a.statuses().contains(&Status::Dead));
        let forced = parse(&["--status", "any", "--force"]).unwrap();
        assert!(forced.statuses().contains(&Status::Processed));
        assert!(forced.statuses().contains(&Status::Ignored));
        // --force does not widen an explicit failed or dead.
        let dead = parse(&["--status", "dead", "--force"]).unwrap();
        assert_eq!(dead.statuses(), vec![Status::Dead]);
    }

    #[test]
    fn later_flags_override_earlier_ones() {
        let a = parse(&["--status", "failed", "--status", "dead", "--limit", "3"]).unwrap();
        assert_eq!(a.status, Some(StatusFilter::Dead));
        assert_eq!(a.limit, Some(3));
    }

    #[test]
    fn bad_input_is_a_parse_error_not_a_panic() {
        assert!(parse(&["--status", "processed"]).is_err());
        assert!(parse(&["--limit", "0"]).is_err());
        assert!(parse(&["--since", "last week"]).is_err());
    }

    #[test]
    fn the_summary_line_has_the_fixed_shape() {
        let s = ReplaySummary {
            processed: 2,
            ignored: 1,
            failed: 1,
            skipped: 1,
            not_found: 1,
            ..Default::default()
        };
        assert_eq!(
            s.line(),
            "replayed 4: processed 2, ignored 1, failed 1, dead 0, skipped 2"
        );
        assert!(!s.success());
    }
}
