//! The `stripe-worker` command line (clap). Each subcommand parses only the configuration it
//! needs, so `migrate` runs without a webhook secret. The operator commands (replay, backfill,
//! reconcile, trigger, status) live in their own modules; each has a `run` that tests call directly with
//! a map of variables and a buffer for the output.

pub mod backfill;
mod context;
mod progress;
pub mod reconcile;
pub mod replay;
pub mod status;
pub mod trigger;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, DatabaseSettings, LogFormat, Settings};
use crate::db;
use crate::startup::Application;
use crate::telemetry;

pub use context::parse_instant;

#[derive(Parser, Debug)]
#[command(
    name = "stripe-worker",
    version,
    about = "Stripe webhooks -> provisioned Supabase customers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// HTTP server (webhook endpoint, health, metrics) plus the background retrier and, with
    /// STRIPE_SECRET_KEY, the catch-up on events Stripe never delivered.
    Serve,
    /// Applies supabase/migrations (compiled in), recording them like the Supabase CLI.
    Migrate {
        /// First apply sql/platform (roles, auth schema): local and test databases only.
        #[arg(long)]
        platform: bool,
    },
    Replay(replay::ReplayArgs),
    Backfill(backfill::BackfillArgs),
    Reconcile(reconcile::ReconcileArgs),
    Status(status::StatusArgs),
    Trigger(trigger::TriggerArgs),
}

/// Operator commands report on stdout; their logs (stderr) default to warnings and errors.
const OPERATOR_LOG_FILTER: &str = "warn,stripe_worker=warn";

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let source = config::ProcessEnv;
    let format = LogFormat::from_source(&source)?;
    if matches!(cli.command, Command::Serve | Command::Migrate { .. }) {
        telemetry::init(format);
    } else {
        telemetry::init_with_default(format, OPERATOR_LOG_FILTER);
    }
    let interactive = std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout();
    match cli.command {
        Command::Serve => {
            let settings = Settings::from_source(&source)?;
            let app = Application::build(&settings, true)?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { platform } => {
            let settings = DatabaseSettings::from_source(&source)?;
            let mut client = db::connect(&settings.url).await?;
            let report = db::migrate::run(&mut client, platform).await?;
            if platform {
                println!("platform: {} files applied", report.platform_files);
            }
            for file in &report.applied {
                println!("applied {file}");
            }
            println!(
                "migrations: {} applied, {} already applied",
                report.applied.len(),
                report.already_applied
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let summary = replay::run(&args, &source, &mut stdout, interactive).await?;
            Ok(exit_code(summary.success()))
        }
        Command::Backfill(args) => {
            let summary = backfill::run(&args, &source, &mut stdout, interactive).await?;
            Ok(exit_code(summary.success()))
        }
        Command::Reconcile(args) => {
            let report = reconcile::run(&args, &source, &mut stdout, interactive).await?;
            Ok(exit_code(report.drift_left() == 0))
        }
        Command::Trigger(args) => {
            let report = trigger::run(&args, &source, &mut stdout).await?;
            Ok(exit_code(report.is_success()))
        }
        Command::Status(args) => {
            status::run(&args, &source, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit_code(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
