//! Reading Stripe's list and retrieve endpoints as raw JSON (reqwest): each element of a list's
//! `data` is kept exactly as Stripe sent it, for the caller to parse leniently, whatever API
//! version it is rendered in. Requests keep to a read budget (requests per second, shared by
//! every caller of one `StripeLists`); HTTP 429, 5xx and network errors are retried with
//! exponential back-off.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::StripeApiSettings;
use crate::secret::Secret;

/// Stripe's maximum page size (https://docs.stripe.com/api/pagination).
pub const MAX_PAGE: i64 = 100;

/// How to wait when Stripe answers 429 (or fails): `base`, doubled per retry up to `max`, at
/// most `max_retries` times.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitBackoff {
    pub base: Duration,
    pub max: Duration,
    pub max_retries: u32,
}

impl Default for RateLimitBackoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retries: 8,
        }
    }
}

impl RateLimitBackoff {
    pub fn delay(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeListError {
    #[error("Stripe API rate limit (429) did not lift after {0} retries")]
    RateLimited(u32),
    #[error("Stripe API answered HTTP {status}: {message}")]
    Status { status: u16, message: String },
    #[error("Stripe API unreachable: {0}")]
    Transport(String),
    #[error("Stripe API answer is not {expected}: {reason}")]
    Malformed {
        expected: &'static str,
        reason: String,
    },
}

/// One page of a list.
#[derive(Debug)]
pub struct RawPage {
    /// The elements of `data`, byte for byte.
    pub data: Vec<Box<RawValue>>,
    pub has_more: bool,
    /// 429 answers waited out before this page came.
    pub rate_limited: u32,
    /// When the request that returned this page was sent: the page shows Stripe's state at
    /// that moment or later.
    pub requested_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct ListWire {
    data: Vec<Box<RawValue>>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Deserialize)]
struct StripeErrorWire {
    error: StripeErrorBody,
}

#[derive(Deserialize)]
struct StripeErrorBody {
    #[serde(default)]
    message: Option<String>,
}

/// The `id` of a Stripe object, read leniently (`None` when there is none).
pub fn object_id(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    struct Id {
        #[serde(default)]
        id: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Id>(raw.get()).ok()?.id? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}

/// Spaces requests evenly: at most `per_sec` start in any second.
#[derive(Debug)]
struct ReadBudget {
    spacing: Duration,
    next: Mutex<Instant>,
}

impl ReadBudget {
    fn new(per_sec: f64) -> Self {
        Self {
            spacing: Duration::from_secs_f64(1.0 / per_sec.max(0.001)),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn take(&self) {
        let mut next = self.next.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = (*next).max(now) + self.spacing;
    }
}

/// A reader of Stripe's list endpoints; clones share the read budget.
#[derive(Clone)]
pub struct StripeLists {
    http: reqwest::Client,
    base_url: String,
    key: Secret,
    budget: Arc<ReadBudget>,
    backoff: RateLimitBackoff,
}

impl std::fmt::Debug for StripeLists {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeLists")
    }
}

enum Attempt {
    Done(String),
    NotFound,
    Retry {
        rate_limited: bool,
        reason: String,
    },
    /// A client error (400, 401, 403, …): retrying cannot help.
    Refused {
        status: u16,
        message: String,
    },
}

impl StripeLists {
    pub fn new(
        settings: &StripeApiSettings,
        reads_per_sec: f64,
        backoff: RateLimitBackoff,
    ) -> Result<Self, StripeListError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("stripe-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeListError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base_url: settings.base_url.clone(),
            key: settings.secret_key.clone(),
            budget: Arc::new(ReadBudget::new(reads_per_sec)),
            backoff,
        })
    }

    /// One page of the list at `path` (e.g. `/v1/events`) with `query`, after `starting_after`.
    /// `api_version` is sent as `Stripe-Version` when given (objects are then rendered in it;
    /// without it, in the account's default version). Events are always listed in the version
    /// they were created with.
    pub async fn page(
        &self,
        path: &str,
        query: &[(&str, String)],
        starting_after: Option<&str>,
        api_version: Option<&str>,
    ) -> Result<RawPage, StripeListError> {
        let mut query: Vec<(&str, String)> = query.to_vec();
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_owned()));
        }
        let (body, rate_limited, requested_at) = match self.get(path, &query, api_version).await? {
            (Some(body), n, at) => (body, n, at),
            (None, _, _) => {
                return Err(StripeListError::Status {
                    status: 404,
                    message: format!("no such list: {path}"),
                })
            }
        };
        let list: ListWire =
            serde_json::from_str(&body).map_err(|e| StripeListError::Malformed {
                expected: "a list object",
                reason: e.to_string(),
            })?;
        Ok(RawPage {
            data: list.data,
            has_more: list.has_more,
            rate_limited,
            requested_at,
        })
    }

    /// The object at `path` (e.g. `/v1/customers/cus_1`), `None` when Stripe answers 404; with
    /// when the request was sent.
    pub async fn retrieve(
        &self,
        path: &str,
        api_version: Option<&str>,
    ) -> Result<(Option<Box<RawValue>>, DateTime<Utc>), StripeListError> {
        let (body, _, requested_at) = self.get(path, &[], api_version).await?;
        let Some(body) = body else {
            return Ok((None, requested_at));
        };
        let raw = RawValue::from_string(body).map_err(|e| StripeListError::Malformed {
            expected: "an object",
            reason: e.to_string(),
        })?;
        Ok((Some(raw), requested_at))
    }

    /// GET with retries; the body (`None` on 404), the 429s waited out, when the answered
    /// request was sent.
    async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        api_version: Option<&str>,
    ) -> Result<(Option<String>, u32, DateTime<Utc>), StripeListError> {
        let url = format!("{}{path}", self.base_url);
        let (mut rate_limited, mut retries) = (0u32, 0u32);
        loop {
            self.budget.take().await;
            let requested_at = Utc::now();
            match self.attempt(&url, query, api_version).await {
                Attempt::Done(body) => return Ok((Some(body), rate_limited, requested_at)),
                Attempt::NotFound => return Ok((None, rate_limited, requested_at)),
                Attempt::Refused { status, message } => {
                    return Err(StripeListError::Status { status, message })
                }
                Attempt::Retry {
                    rate_limited: limited,
                    reason,
                } => {
                    if retries >= self.backoff.max_retries {
                        return Err(if limited {
                            StripeListError::RateLimited(retries)
                        } else {
                            StripeListError::Transport(reason)
                        });
                    }
                    let wait = self.backoff.delay(retries);
                    retries += 1;
                    if limited {
                        rate_limited += 1;
                    }
                    tracing::warn!(?wait, retry = retries, %reason, "Stripe API: backing off");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        query: &[(&str, String)],
        api_version: Option<&str>,
    ) -> Attempt {
        let mut request = self
            .http
            .get(url)
            .query(query)
            .bearer_auth(self.key.expose());
        if let Some(version) = api_version {
            request = request.header("Stripe-Version", version);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    rate_limited: false,
                    reason: transport_reason(e),
                }
            }
        };
        let status = response.status().as_u16();
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Retry {
                    rate_limited: false,
                    reason: transport_reason(e),
                }
            }
        };
        match status {
            200..=299 => Attempt::Done(body),
            404 => Attempt::NotFound,
            429 => Attempt::Retry {
                rate_limited: true,
                reason: "HTTP 429".into(),
            },
            500..=599 => Attempt::Retry {
                rate_limited: false,
                reason: format!("HTTP {status}"),
            },
            _ => Attempt::Refused {
                status,
                message: serde_json::from_str::<StripeErrorWire>(&body)
                    .ok()
                    .and_then(|e| e.error.message)
                    .unwrap_or_else(|| "no error message".into()),
            },
        }
    }
}

/// The reason of a network error, with its causes, never the key (it is a header).
fn transport_reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut m = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        m.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = RateLimitBackoff::default();
        assert_eq!(b.delay(0), Duration::from_millis(500));
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(20), Duration::from_secs(30));
    }

    #[test]
    fn list_elements_stay_byte_for_byte_and_ids_are_read_leniently() {
        let body = r#"{"object":"list","data":[{"id":"evt_1", "request":"req_1","x":1.50},{"no_id":true},{"id":7}],"has_more":true,"url":"/v1/events"}"#;
        let list: ListWire = serde_json::from_str(body).unwrap();
        assert!(list.has_more);
        assert_eq!(
            list.data[0].get(),
            r#"{"id":"evt_1", "request":"req_1","x":1.50}"#
        );
        assert_eq!(object_id(&list.data[0]).as_deref(), Some("evt_1"));
        assert_eq!(object_id(&list.data[1]), None);
        assert_eq!(object_id(&list.data[2]), None);
    }

    #[tokio::test]
    async fn the_read_budget_spaces_requests() {
        let budget = ReadBudget::new(20.0);
        let start = Instant::now();
        for _ in 0..3 {
            budget.take().await;
        }
        // Three requests at 20/s: the third starts two spacings (100 ms) after the first.
        assert!(start.elapsed() >= Duration::from_millis(95));
    }
}
