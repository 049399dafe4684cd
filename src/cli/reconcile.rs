//! `stripe-worker reconcile`: compares Stripe's current state with the database and the
//! entitlement rules, prints the drift (a table, or JSON), and with `--fix` repairs it through
//! the normal handlers.

use std::io::Write;

use clap::Args;
use serde::Serialize;

use super::context;
use super::progress::Progress;
use crate::config::{CatchUpSettings, ConfigError, PipelineSettings, Source, StripeApiSettings};
use crate::reconcile::{Drift, ObjectKind, Reconcile, Report, Step};
use crate::stripe_list::{RateLimitBackoff, StripeLists};

/// Compare Stripe's current state with the database; repair the drift with --fix.
///
/// Needs STRIPE_SECRET_KEY (and honours STRIPE_API_BASE and RECONCILE_READS_PER_SEC). Lists
/// every customer, subscription (status=all) and invoice Stripe has, and reports what the
/// database records differently: a subscription's status, price, current period, cancel or
/// trial fields; a paid invoice without the grant the entitlement rules give it, a grant whose
/// invoice Stripe does not show paid; a customer missing from the directory of Stripe
/// customers, another email, a customer Stripe deleted. --fix ingests what Stripe shows as a
/// synthetic event per object (evt_reconcile_…) through the normal pipeline, so handlers and
/// triggers do the writing and the event log records each repair; a second run finds
/// nothing. Exit status 0 when there is no drift (or all of it was repaired), 1 otherwise.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "Examples:
  stripe-worker reconcile
  stripe-worker reconcile --json | jq '.drift[] | select(.object == \"invoice\")'
  stripe-worker reconcile --fix")]
pub struct ReconcileArgs {
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Repair the drift by ingesting what Stripe shows through the normal handlers.
    #[arg(long)]
    pub fix: bool,
}

#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    report: &'a Report,
    drift_left: usize,
}

pub async fn run(
    args: &ReconcileArgs,
    src: &dyn Source,
    out: &mut dyn Write,
    interactive: bool,
) -> anyhow::Result<Report> {
    run_with(args, src, out, interactive, RateLimitBackoff::default()).await
}

/// `run` with the rate-limit back-off given (tests shorten it).
pub async fn run_with(
    args: &ReconcileArgs,
    src: &dyn Source,
    out: &mut dyn Write,
    interactive: bool,
    backoff: RateLimitBackoff,
) -> anyhow::Result<Report> {
    let api = StripeApiSettings::from_source(src)?
        .ok_or(ConfigError::Missing("STRIPE_SECRET_KEY"))
        .map_err(|e| anyhow::anyhow!("{e}: reconcile reads Stripe's current state"))?;
    let budget = CatchUpSettings::from_source(src)?.reads_per_sec;
    let lists = StripeLists::new(&api, budget, backoff)?;
    let livemode = PipelineSettings::from_source(src)?.livemode;
    let pipeline = context::pipeline(src, "reconcile")?;
    let reconcile = Reconcile {
        pipeline: &pipeline,
        lists: &lists,
        livemode,
    };
    let progress = Progress::counting(interactive && !args.json, "objects compared");
    let mut on_step = |step: Step<'_>| match step {
        Step::Compared(object) => {
            progress.set_message(&format!("objects compared ({}s now)", object.as_str()));
            progress.inc();
        }
        Step::Repaired(_) => progress.set_message("repairing"),
    };
    let report = reconcile.run(args.fix, &mut on_step).await;
    progress.finish();
    let report = report?;
    if args.json {
        serde_json::to_writer_pretty(
            &mut *out,
            &Output {
                report: &report,
                drift_left: report.drift_left(),
            },
        )?;
        writeln!(out)?;
    } else {
        render(&report, out)?;
    }
    Ok(report)
}

fn render(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let c = &r.compared;
    if !r.drift.is_empty() {
        writeln!(out, "{:<13} {:<32} {:<29} detail", "object", "id", "drift")?;
    }
    for d in &r.drift {
        writeln!(
            out,
            "{:<13} {:<32} {:<29} {}",
            d.object.as_str(),
            d.id,
            d.kind.as_str(),
            d.description()
        )?;
        if let Some(line) = repair_line(d, r.repaired) {
            writeln!(out, "{:<13} {line}", "")?;
        }
    }
    for u in &r.unreadable {
        writeln!(
            out,
            "note: {} {} could not be read: {}",
            u.object.as_str(),
            u.id.as_deref().unwrap_or("(no id)"),
            u.reason
        )?;
    }
    let count = |kind: ObjectKind| r.drift.iter().filter(|d| d.object == kind).count();
    writeln!(
        out,
        "compared {} customers, {} subscriptions, {} invoices: {} drift ({} customers, {} subscriptions, {} invoices)",
        c.customers,
        c.subscriptions,
        c.invoices,
        r.drift.len(),
        count(ObjectKind::Customer),
        count(ObjectKind::Subscription),
        count(ObjectKind::Invoice),
    )?;
    if r.repaired {
        let fixed = r.drift.iter().filter(|d| d.is_fixed()).count();
        writeln!(
            out,
            "repaired {fixed} of {}; {} drift left",
            r.drift.len(),
            r.drift_left()
        )?;
    } else if !r.drift.is_empty() {
        writeln!(out, "run with --fix to repair it through the handlers")?;
    }
    Ok(())
}

fn repair_line(d: &Drift, repaired: bool) -> Option<String> {
    if !repaired {
        return None;
    }
    Some(match &d.repair {
        None => "not repairable: Stripe shows nothing to ingest".to_owned(),
        Some(r) if r.fixed => format!("repaired by {} {} ({})", r.event_type, r.event_id, r.status),
        Some(r) => format!(
            "not repaired by {} {} ({}): {}",
            r.event_type,
            r.event_id,
            r.status,
            r.remaining.as_deref().unwrap_or("still differs")
        ),
    })
}
