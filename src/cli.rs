//! The `stripe-worker` command line (clap). Each subcommand parses only the configuration it
//! needs, so `migrate` runs without a webhook secret.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, DatabaseSettings, LogFormat, Settings};
use crate::db;
use crate::startup::Application;
use crate::telemetry;

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
    /// HTTP server (webhook endpoint, health, metrics) plus the background retrier.
    Serve,
    /// Applies supabase/migrations (compiled in), recording them like the Supabase CLI.
    Migrate {
        /// First apply sql/platform (roles, auth schema): local and test databases only.
        #[arg(long)]
        platform: bool,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let source = config::ProcessEnv;
    telemetry::init(LogFormat::from_source(&source)?);
    match cli.command {
        Command::Serve => {
            let settings = Settings::from_source(&source)?;
            let app = Application::build(&settings, true)?;
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { platform } => {
            let settings = DatabaseSettings::from_source(&source)?;
            let mut client = db::connect(settings.url.expose()).await?;
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
    }
}
