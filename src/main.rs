use std::process::ExitCode;

use clap::Parser;
use stripe_worker::cli::{self, Cli};

fn main() -> ExitCode {
    // A .env file is optional; real environment variables win over it.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One clear line; configuration errors name the variable, never its value.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
