//! Configuration: read once from the environment (and `.env`) into typed settings.
//! A missing or malformed variable stops the program with one line naming it; secret values are
//! never part of an error message.

mod catch_up;
mod database;

use std::collections::HashMap;
use std::time::Duration;

pub use catch_up::{CatchUpSettings, STRIPE_EVENT_RETENTION};
pub use database::{DatabaseUrl, TlsMode};

use crate::secret::Secret;
use crate::signature::WebhookSecret;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

/// Where variables come from: the process environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

fn required(src: &dyn Source, name: &'static str) -> Result<String, ConfigError> {
    src.get(name).ok_or(ConfigError::Missing(name))
}

fn parsed<T: std::str::FromStr>(
    src: &dyn Source,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match src.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| ConfigError::Malformed {
                name,
                reason: e.to_string(),
            }),
    }
}

fn seconds(src: &dyn Source, name: &'static str, default: f64) -> Result<Duration, ConfigError> {
    let secs: f64 = parsed(src, name, default)?;
    Duration::try_from_secs_f64(secs).map_err(|_| ConfigError::Malformed {
        name,
        reason: "expected a non-negative number of seconds".into(),
    })
}

/// A timeout: more than zero seconds.
fn positive_seconds(
    src: &dyn Source,
    name: &'static str,
    default: f64,
) -> Result<Duration, ConfigError> {
    let duration = seconds(src, name, default)?;
    if duration.is_zero() {
        return Err(ConfigError::Malformed {
            name,
            reason: "must be more than 0 seconds".into(),
        });
    }
    Ok(duration)
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub pool_size: usize,
    /// How long a request waits for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
}

impl DatabaseSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let url = required(src, "DATABASE_URL")?;
        let url = DatabaseUrl::parse(&url).map_err(|reason| ConfigError::Malformed {
            name: "DATABASE_URL",
            reason,
        })?;
        Ok(Self {
            url,
            pool_size: parsed(src, "DATABASE_POOL_SIZE", 16usize)?,
            acquire_timeout: seconds(src, "DATABASE_ACQUIRE_TIMEOUT_SECS", 5.0)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Several during a secret rotation; a signature made with any of them is accepted.
    pub secrets: Vec<WebhookSecret>,
    pub tolerance: Duration,
}

impl WebhookSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let raw = required(src, "STRIPE_WEBHOOK_SECRET")?;
        let secrets = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(WebhookSecret::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::Malformed {
                name: "STRIPE_WEBHOOK_SECRET",
                reason: reason.to_string(),
            })?;
        if secrets.is_empty() {
            return Err(ConfigError::Missing("STRIPE_WEBHOOK_SECRET"));
        }
        Ok(Self {
            secrets,
            tolerance: tolerance(src)?,
        })
    }
}

/// STRIPE_WEBHOOK_TOLERANCE_SECS: a whole number of seconds, at least 1. Zero is refused: the
/// official SDKs read it as "no age check" (replays accepted forever), taken literally it would
/// reject every delivery; a negative value means nothing.
fn tolerance(src: &dyn Source) -> Result<Duration, ConfigError> {
    const NAME: &str = "STRIPE_WEBHOOK_TOLERANCE_SECS";
    let refused = || {
        ConfigError::Malformed {
        name: NAME,
        reason: "expected a whole number of seconds, at least 1 (0 is refused: the SDKs read it as no age check)".into(),
    }
    };
    let secs: u64 = match src.get(NAME) {
        None => 300,
        Some(raw) => raw.trim().parse().map_err(|_| refused())?,
    };
    if secs == 0 {
        return Err(refused());
    }
    Ok(Duration::from_secs(secs))
}

/// The one mode this endpoint processes (events of the other are recorded and `ignored`):
/// STRIPE_LIVEMODE when set, else the mode of STRIPE_SECRET_KEY (`sk_live_`/`rk_live_` or
/// `sk_test_`/`rk_test_`), else none: both modes are processed (`serve` warns). A
/// STRIPE_LIVEMODE that contradicts the key is a mistake worth stopping for.
fn livemode(src: &dyn Source) -> Result<Option<bool>, ConfigError> {
    let from_key = src.get("STRIPE_SECRET_KEY").and_then(|k| {
        let k = k.trim();
        if k.starts_with("sk_live_") || k.starts_with("rk_live_") {
            Some(true)
        } else if k.starts_with("sk_test_") || k.starts_with("rk_test_") {
            Some(false)
        } else {
            None
        }
    });
    let explicit = match src.get("STRIPE_LIVEMODE") {
        None => None,
        Some(v) => Some(
            v.trim()
                .parse::<bool>()
                .map_err(|_| ConfigError::Malformed {
                    name: "STRIPE_LIVEMODE",
                    reason: "expected true or false".into(),
                })?,
        ),
    };
    match (explicit, from_key) {
        (Some(set), Some(key)) if set != key => Err(ConfigError::Malformed {
            name: "STRIPE_LIVEMODE",
            reason: format!(
                "{set} contradicts STRIPE_SECRET_KEY, which is a {} key",
                if key { "live" } else { "test" }
            ),
        }),
        (set, key) => Ok(set.or(key)),
    }
}

#[derive(Debug, Clone)]
pub struct StripeApiSettings {
    pub secret_key: Secret,
    pub base_url: String,
    /// Per request, connecting included (async-stripe's client has no separate connect
    /// timeout).
    pub timeout: Duration,
}

impl StripeApiSettings {
    /// `None` when STRIPE_SECRET_KEY is not set: API look-ups and backfill are then unavailable.
    pub fn from_source(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        let Some(key) = src.get("STRIPE_SECRET_KEY") else {
            return Ok(None);
        };
        let key = key.trim().to_owned();
        if !(key.starts_with("sk_") || key.starts_with("rk_")) {
            return Err(ConfigError::Malformed {
                name: "STRIPE_SECRET_KEY",
                reason: "expected a secret (sk_…) or restricted (rk_…) key".into(),
            });
        }
        let base_url = src
            .get("STRIPE_API_BASE")
            .unwrap_or_else(|| "https://api.stripe.com".into());
        let base_url = http_base_url(&base_url, "STRIPE_API_BASE")?;
        Ok(Some(Self {
            secret_key: Secret::new(key),
            base_url,
            timeout: positive_seconds(src, "STRIPE_API_TIMEOUT_SECS", 10.0)?,
        }))
    }
}

#[derive(Debug, Clone)]
pub struct SupabaseAuthSettings {
    pub url: String,
    pub service_role_key: Secret,
    /// Per request, connecting included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl SupabaseAuthSettings {
    /// Both variables or neither: half a configuration is a mistake worth stopping for.
    pub fn from_source(src: &dyn Source) -> Result<Option<Self>, ConfigError> {
        match (
            src.get("SUPABASE_URL"),
            src.get("SUPABASE_SERVICE_ROLE_KEY"),
        ) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError::Missing("SUPABASE_SERVICE_ROLE_KEY")),
            (None, Some(_)) => Err(ConfigError::Missing("SUPABASE_URL")),
            (Some(url), Some(key)) => {
                let timeout = positive_seconds(src, "SUPABASE_AUTH_TIMEOUT_SECS", 10.0)?;
                let connect = positive_seconds(src, "SUPABASE_AUTH_CONNECT_TIMEOUT_SECS", 3.0)?;
                Ok(Some(Self {
                    url: http_base_url(&url, "SUPABASE_URL")?,
                    service_role_key: Secret::new(key.trim()),
                    timeout,
                    connect_timeout: connect.min(timeout),
                }))
            }
        }
    }
}

fn http_base_url(raw: &str, name: &'static str) -> Result<String, ConfigError> {
    let trimmed = raw.trim().trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(ConfigError::Malformed {
            name,
            reason: "expected an http:// or https:// URL".into(),
        });
    }
    Ok(trimmed.to_owned())
}

#[derive(Debug, Clone)]
pub struct RetrySettings {
    /// Attempts (the first included) before an event is `dead`.
    pub max_attempts: i32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub poll_interval: Duration,
    /// A row in `processing` longer than this belongs to a crashed worker and is reclaimed.
    pub lease: Duration,
}

impl RetrySettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let max_attempts: i32 = parsed(src, "RETRY_MAX_ATTEMPTS", 12)?;
        if max_attempts < 1 {
            return Err(ConfigError::Malformed {
                name: "RETRY_MAX_ATTEMPTS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            max_attempts,
            base_delay: seconds(src, "RETRY_BASE_DELAY_SECS", 30.0)?,
            max_delay: seconds(src, "RETRY_MAX_DELAY_SECS", 6.0 * 3600.0)?,
            poll_interval: seconds(src, "RETRY_POLL_INTERVAL_SECS", 5.0)?,
            lease: seconds(src, "PROCESSING_LEASE_SECS", 300.0)?,
        })
    }
}

/// What one client may hold on the public listener (see `http::limits` for the body budget).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once; lowered at start-up to fit the open-files limit.
    pub max_connections: usize,
    /// Time for a request's head (request line and headers).
    pub head_timeout: Duration,
    /// Time for the whole body once the head is in.
    pub body_timeout: Duration,
    /// Idle time after which a kept-alive connection is closed.
    pub keep_alive: Duration,
}

impl HttpLimits {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            max_connections: at_least_one(src, "HTTP_MAX_CONNECTIONS", 1000)?,
            head_timeout: positive_seconds(src, "HTTP_HEAD_TIMEOUT_SECS", 5.0)?,
            body_timeout: positive_seconds(src, "HTTP_BODY_TIMEOUT_SECS", 10.0)?,
            keep_alive: positive_seconds(src, "HTTP_KEEP_ALIVE_SECS", 5.0)?,
        })
    }
}

fn at_least_one(
    src: &dyn Source,
    name: &'static str,
    default: usize,
) -> Result<usize, ConfigError> {
    match parsed(src, name, default)? {
        0 => Err(ConfigError::Malformed {
            name,
            reason: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

/// METRICS_ADDR: when set, `/metrics` and `/readyz` are served there and not on the public
/// listener.
fn metrics_addr(src: &dyn Source) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    src.get("METRICS_ADDR")
        .map(|raw| {
            raw.trim().parse().map_err(|_| ConfigError::Malformed {
                name: "METRICS_ADDR",
                reason: "expected host:port with an IP address, e.g. 127.0.0.1:9090".into(),
            })
        })
        .transpose()
}

/// Whether an auth user created for a buyer counts as confirmed (AUTH_CONFIRM_CHECKOUT_EMAIL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConfirmCheckoutEmail {
    Yes,
    No,
    /// As the project says: with the Supabase Auth admin API configured, confirmed exactly
    /// when the project confirms sign-ups by itself ("Confirm email" off, where an unconfirmed
    /// user would be handed to whoever signs up with the address); otherwise not confirmed.
    #[default]
    Auto,
}

/// How buyers become auth users.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProvisioningSettings {
    pub confirm_checkout_email: ConfirmCheckoutEmail,
}

impl ProvisioningSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let confirm_checkout_email = match src
            .get("AUTH_CONFIRM_CHECKOUT_EMAIL")
            .as_deref()
            .map(str::trim)
        {
            None | Some("auto") => ConfirmCheckoutEmail::Auto,
            Some("true") => ConfirmCheckoutEmail::Yes,
            Some("false") => ConfirmCheckoutEmail::No,
            Some(_) => {
                return Err(ConfigError::Malformed {
                    name: "AUTH_CONFIRM_CHECKOUT_EMAIL",
                    reason: "expected true, false or auto".into(),
                })
            }
        };
        Ok(Self {
            confirm_checkout_email,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl LogFormat {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        match src.get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("pretty") => Ok(Self::Pretty),
            Some("json") => Ok(Self::Json),
            Some(_) => Err(ConfigError::Malformed {
                name: "LOG_FORMAT",
                reason: "expected json or pretty".into(),
            }),
        }
    }
}

/// Everything that processes events needs: `serve`, and the operator commands that replay or
/// ingest (which need no webhook secret).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub database: DatabaseSettings,
    pub retry: RetrySettings,
    pub stripe_api: Option<StripeApiSettings>,
    pub supabase_auth: Option<SupabaseAuthSettings>,
    pub provisioning: ProvisioningSettings,
    /// When set, events of the other mode are recorded and `ignored` (see `livemode`).
    pub livemode: Option<bool>,
    /// Names this process in `locked_by` and in logs.
    pub worker_id: String,
}

impl PipelineSettings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            database: DatabaseSettings::from_source(src)?,
            retry: RetrySettings::from_source(src)?,
            stripe_api: StripeApiSettings::from_source(src)?,
            supabase_auth: SupabaseAuthSettings::from_source(src)?,
            provisioning: ProvisioningSettings::from_source(src)?,
            livemode: livemode(src)?,
            worker_id: src.get("WORKER_ID").unwrap_or_else(default_worker_id),
        })
    }

    /// An operator command's settings: its rows are locked by `<role>:<worker id>`, so a replay
    /// is told apart from the workers beside it.
    pub fn for_role(mut self, role: &str) -> Self {
        self.worker_id = format!("{role}:{}", self.worker_id);
        self
    }
}

/// Everything `serve` needs, parsed once at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub pipeline: PipelineSettings,
    pub webhook: WebhookSettings,
    /// The catch-up inside `serve` (it runs only when STRIPE_SECRET_KEY is set).
    pub catch_up: CatchUpSettings,
    pub host: String,
    pub port: u16,
    /// Threads serving the public listener. One by default: the work is waiting for the
    /// database, and a request served on another thread than the one driving its pooled
    /// connection pays two cross-thread wake-ups per round trip.
    pub http_workers: usize,
    pub http_limits: HttpLimits,
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Settings {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            pipeline: PipelineSettings::from_source(src)?,
            webhook: WebhookSettings::from_source(src)?,
            catch_up: CatchUpSettings::from_source(src)?,
            host: src.get("HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: parsed(src, "PORT", 8080u16)?,
            http_workers: at_least_one(src, "HTTP_WORKERS", 1)?,
            http_limits: HttpLimits::from_source(src)?,
            metrics_addr: metrics_addr(src)?,
        })
    }
}

/// `hostname:pid`, unique enough among the replicas sharing a database.
fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const BASE: &[(&str, &str)] = &[
        (
            "DATABASE_URL",
            "postgres://postgres:pw@127.0.0.1:5432/postgres",
        ),
        ("STRIPE_WEBHOOK_SECRET", "whsec_abc"),
    ];

    #[test]
    fn defaults_apply() {
        let s = Settings::from_source(&env(BASE)).unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.host, "0.0.0.0");
        assert_eq!(s.webhook.tolerance, Duration::from_secs(300));
        assert_eq!(s.webhook.secrets.len(), 1);
        assert!(s.pipeline.stripe_api.is_none());
        assert!(s.pipeline.supabase_auth.is_none());
        assert_eq!(s.pipeline.livemode, None);
        assert_eq!(s.http_limits.max_connections, 1000);
        assert_eq!(s.http_limits.head_timeout, Duration::from_secs(5));
        assert_eq!(s.http_limits.body_timeout, Duration::from_secs(10));
        assert_eq!(s.http_limits.keep_alive, Duration::from_secs(5));
        assert_eq!(s.http_workers, 1);
        assert_eq!(s.metrics_addr, None);
        assert_eq!(
            s.pipeline.provisioning.confirm_checkout_email,
            ConfirmCheckoutEmail::Auto
        );
    }

    #[test]
    fn metrics_addr_and_the_confirmation_setting_parse_or_are_named() {
        let mut e = env(BASE);
        e.insert("METRICS_ADDR".into(), "127.0.0.1:9090".into());
        e.insert("AUTH_CONFIRM_CHECKOUT_EMAIL".into(), "true".into());
        let s = Settings::from_source(&e).unwrap();
        assert_eq!(s.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(
            s.pipeline.provisioning.confirm_checkout_email,
            ConfirmCheckoutEmail::Yes
        );
        for (name, bad) in [
            ("METRICS_ADDR", "localhost"),
            ("AUTH_CONFIRM_CHECKOUT_EMAIL", "yes"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_WORKERS", "0"),
            ("HTTP_WORKERS", "two"),
            ("HTTP_BODY_TIMEOUT_SECS", "0"),
        ] {
            let mut e = env(BASE);
            e.insert(name.into(), bad.into());
            let msg = Settings::from_source(&e).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("{name} is malformed")), "{msg}");
        }
    }

    #[test]
    fn the_mode_comes_from_stripe_livemode_else_from_the_secret_key() {
        let with = |pairs: &[(&str, &str)]| {
            let mut e = env(BASE);
            for (k, v) in pairs {
                e.insert((*k).into(), (*v).into());
            }
            Settings::from_source(&e).map(|s| s.pipeline.livemode)
        };
        assert_eq!(with(&[]), Ok(None), "neither: both modes");
        assert_eq!(with(&[("STRIPE_SECRET_KEY", "sk_live_x")]), Ok(Some(true)));
        assert_eq!(with(&[("STRIPE_SECRET_KEY", "rk_live_x")]), Ok(Some(true)));
        assert_eq!(with(&[("STRIPE_SECRET_KEY", "sk_test_x")]), Ok(Some(false)));
        assert_eq!(with(&[("STRIPE_SECRET_KEY", "rk_test_x")]), Ok(Some(false)));
        assert_eq!(with(&[("STRIPE_LIVEMODE", "true")]), Ok(Some(true)));
        assert_eq!(
            with(&[
                ("STRIPE_LIVEMODE", "false"),
                ("STRIPE_SECRET_KEY", "sk_test_x")
            ]),
            Ok(Some(false))
        );
        let contradiction = with(&[
            ("STRIPE_LIVEMODE", "false"),
            ("STRIPE_SECRET_KEY", "sk_live_x"),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(
            contradiction,
            "STRIPE_LIVEMODE is malformed: false contradicts STRIPE_SECRET_KEY, which is a live key"
        );
        assert!(!contradiction.contains("sk_live_x"), "never the key itself");
    }

    #[test]
    fn missing_required_variables_are_named() {
        let e = Settings::from_source(&env(&[("STRIPE_WEBHOOK_SECRET", "whsec_a")])).unwrap_err();
        assert_eq!(e.to_string(), "DATABASE_URL is required but not set");
        let e = Settings::from_source(&env(&BASE[..1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "STRIPE_WEBHOOK_SECRET is required but not set"
        );
    }

    #[test]
    fn rotation_secrets_are_split_and_malformed_ones_rejected_without_echo() {
        let mut e = env(BASE);
        e.insert(
            "STRIPE_WEBHOOK_SECRET".into(),
            "whsec_old, whsec_new".into(),
        );
        assert_eq!(Settings::from_source(&e).unwrap().webhook.secrets.len(), 2);
        e.insert("STRIPE_WEBHOOK_SECRET".into(), "sk_live_leaked".into());
        let msg = Settings::from_source(&e).unwrap_err().to_string();
        assert!(
            msg.starts_with("STRIPE_WEBHOOK_SECRET is malformed"),
            "{msg}"
        );
        assert!(!msg.contains("leaked"), "{msg}");
    }

    #[test]
    fn malformed_numbers_and_half_configured_supabase_are_errors() {
        let mut e = env(BASE);
        e.insert("PORT".into(), "eighty".into());
        assert!(Settings::from_source(&e)
            .unwrap_err()
            .to_string()
            .starts_with("PORT is malformed"));
        let mut e = env(BASE);
        e.insert("SUPABASE_URL".into(), "https://x.supabase.co".into());
        assert_eq!(
            Settings::from_source(&e).unwrap_err(),
            ConfigError::Missing("SUPABASE_SERVICE_ROLE_KEY")
        );
        let mut e = env(BASE);
        e.insert(
            "DATABASE_URL".into(),
            "postgres://h/db?sslmode=sometimes".into(),
        );
        let msg = Settings::from_source(&e).unwrap_err().to_string();
        assert!(msg.starts_with("DATABASE_URL is malformed"), "{msg}");
    }

    #[test]
    fn external_api_timeouts_have_defaults_and_must_be_positive() {
        let mut e = env(BASE);
        e.insert("STRIPE_SECRET_KEY".into(), "sk_test_1".into());
        e.insert("SUPABASE_URL".into(), "https://x.supabase.co".into());
        e.insert("SUPABASE_SERVICE_ROLE_KEY".into(), "key".into());
        let s = PipelineSettings::from_source(&e).unwrap();
        assert_eq!(s.stripe_api.unwrap().timeout, Duration::from_secs(10));
        let auth = s.supabase_auth.unwrap();
        assert_eq!(auth.timeout, Duration::from_secs(10));
        assert_eq!(auth.connect_timeout, Duration::from_secs(3));
        e.insert("STRIPE_API_TIMEOUT_SECS".into(), "0".into());
        let msg = PipelineSettings::from_source(&e).unwrap_err().to_string();
        assert!(
            msg.starts_with("STRIPE_API_TIMEOUT_SECS is malformed"),
            "{msg}"
        );
    }

    #[test]
    fn operator_commands_name_their_role_in_the_worker_id() {
        let mut e = env(BASE);
        e.insert("WORKER_ID".into(), "w1".into());
        let s = PipelineSettings::from_source(&e)
            .unwrap()
            .for_role("replay");
        assert_eq!(s.worker_id, "replay:w1");
    }

    #[test]
    fn the_signature_tolerance_is_at_least_one_second() {
        for refused in ["0", "-300", "1.5", "soon"] {
            let mut e = env(BASE);
            e.insert("STRIPE_WEBHOOK_TOLERANCE_SECS".into(), refused.into());
            let msg = Settings::from_source(&e).unwrap_err().to_string();
            assert!(
                msg.starts_with("STRIPE_WEBHOOK_TOLERANCE_SECS is malformed"),
                "{refused}: {msg}"
            );
        }
        let mut e = env(BASE);
        e.insert("STRIPE_WEBHOOK_TOLERANCE_SECS".into(), "1".into());
        assert_eq!(
            Settings::from_source(&e).unwrap().webhook.tolerance,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn database_url_password_never_appears_in_debug_output() {
        let s = Settings::from_source(&env(BASE)).unwrap();
        assert!(!format!("{s:?}").contains("pw@"));
    }
}
