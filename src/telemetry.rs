//! Logging, set up in one place. JSON lines with `LOG_FORMAT=json`, readable text otherwise.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    init_with_default(format, "info,actix_server=warn,tokio_postgres=warn");
}

/// As `init`, with another filter when RUST_LOG is not set (the operator commands log only
/// warnings and errors by default: their output is their report).
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // try_init: tests may call this more than once.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
