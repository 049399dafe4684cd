//! Test harness: one migrated template database per cluster, a fresh copy per test, the real
//! application spawned on a random loopback port, and helpers to sign and post events.
//!
//! `scripts/test.sh` starts a throwaway PostgreSQL and exports TEST_DATABASE_URL (its admin
//! database); the template is built once under an advisory lock, so test processes share it.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use serde_json::{json, Value};
use stripe_worker::config::{DatabaseUrl, ProcessEnv, Settings, Source};
use stripe_worker::db;
use stripe_worker::signature::WebhookSecret;
use stripe_worker::startup::Application;
use tokio_postgres::Client;

pub const SECRET: &str = "whsec_test_secret_for_the_suite";
const TEMPLATE: &str = "stripe_worker_template";
const TEMPLATE_LOCK: i64 = 0x7465_6d70;

pub fn admin_url() -> String {
    ProcessEnv.get("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the suite with scripts/test.sh (it starts PostgreSQL)",
    )
}

/// `postgres://…/<db>` for a database on the test cluster.
pub fn url_for(db: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    format!("{base}/{db}")
}

pub async fn connect(url: &str) -> Client {
    let url = DatabaseUrl::parse(url).expect("a test database URL");
    db::connect(&url)
        .await
        .expect("connect to the test database")
}

async fn ensure_template(admin: &Client) {
    admin
        .execute("select pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .unwrap();
    let ready = admin
        .query_opt(
            "select 1 from pg_database where datname = $1 and datistemplate",
            &[&TEMPLATE],
        )
        .await
        .unwrap()
        .is_some();
    if !ready {
        // A build that died half-way leaves a non-template database behind: start over.
        admin
            .batch_execute(&format!("drop database if exists {TEMPLATE}"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("create database {TEMPLATE}"))
            .await
            .unwrap();
        {
            let mut client = connect(&url_for(TEMPLATE)).await;
            db::migrate::run(&mut client, true)
                .await
                .expect("migrate the template");
            client
                .batch_execute(include_str!("../../supabase/seed.sql"))
                .await
                .expect("seed the template");
        }
        // Give the closed connection a moment to leave: CREATE DATABASE … TEMPLATE needs that.
        admin
            .batch_execute(&format!(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{TEMPLATE}';
                 alter database {TEMPLATE} is_template true"
            ))
            .await
            .unwrap();
    }
    admin
        .execute("select pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .unwrap();
}

/// Whether the suite shows the logs of what it runs (`TEST_LOG=1`); by default a green run
/// prints only test results.
pub fn test_log() -> bool {
    std::env::var_os("TEST_LOG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Logging for the in-process application, set up once: silent (no subscriber) unless
/// `TEST_LOG` is set, then as `serve` logs.
pub fn init_test_telemetry() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if test_log() {
            stripe_worker::telemetry::init(stripe_worker::config::LogFormat::Pretty);
        }
    });
}

/// Where a child process's stderr goes: the terminal with `TEST_LOG`, nowhere otherwise.
pub fn child_stderr() -> std::process::Stdio {
    if test_log() {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    }
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

/// A fresh, migrated and seeded database for one test.
pub async fn fresh_db() -> TestDb {
    let admin = connect(&admin_url()).await;
    ensure_template(&admin).await;
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("create database {name} template {TEMPLATE}"))
        .await
        .unwrap();
    TestDb {
        url: url_for(&name),
        name,
    }
}

/// An empty database (nothing migrated).
pub async fn empty_db() -> TestDb {
    let admin = connect(&admin_url()).await;
    let name = format!("e_{}", uuid::Uuid::new_v4().simple());
    admin
        .batch_execute(&format!("create database {name}"))
        .await
        .unwrap();
    TestDb {
        url: url_for(&name),
        name,
    }
}

pub fn base_env(db_url: &str) -> HashMap<String, String> {
    [
        ("DATABASE_URL", db_url),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("DATABASE_POOL_SIZE", "4"),
        ("DATABASE_ACQUIRE_TIMEOUT_SECS", "2"),
        ("RETRY_POLL_INTERVAL_SECS", "0.1"),
        ("RETRY_BASE_DELAY_SECS", "0.2"),
        ("RETRY_MAX_DELAY_SECS", "1"),
        ("PROCESSING_LEASE_SECS", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

pub struct TestApp {
    pub address: String,
    /// The METRICS_ADDR listener, when the test set one.
    pub metrics_address: Option<String>,
    pub db: TestDb,
    /// A direct connection for assertions and set-up.
    pub sql: Client,
    pub http: reqwest::Client,
    pub secret: WebhookSecret,
    handle: ServerHandle,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(fresh_db().await, &[]).await
}

/// The real application on a random port, with `overrides` on top of the test environment.
pub async fn spawn_app_with(db: TestDb, overrides: &[(&str, &str)]) -> TestApp {
    init_test_telemetry();
    let mut env = base_env(&db.url);
    env.insert(
        "WORKER_ID".into(),
        format!("test-{}", uuid::Uuid::new_v4().simple()),
    );
    for (k, v) in overrides {
        env.insert((*k).into(), (*v).into());
    }
    let settings = Settings::from_source(&env).expect("test settings");
    let app = Application::build(&settings, false).expect("build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    let handle = app.server_handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        metrics_address,
        sql: connect(&db.url).await,
        db,
        http: reqwest::Client::new(),
        secret: WebhookSecret::parse(SECRET).unwrap(),
        handle,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        // Stops the server (and with it the retrier) when the test ends, also on failure.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/webhooks/stripe", self.address)
    }

    /// Posts `event` signed now with the suite's secret.
    pub async fn post_event(&self, event: &Value) -> Answer {
        let body = serde_json::to_vec(event).unwrap();
        self.post_signed(body).await
    }

    /// Posts exactly these bytes, signed now with the suite's secret.
    pub async fn post_signed(&self, body: impl Into<Vec<u8>>) -> Answer {
        let body = body.into();
        let header = self.secret.sign(chrono::Utc::now().timestamp(), &body);
        self.post_raw(body, Some(&header)).await
    }

    pub async fn post_raw(&self, body: Vec<u8>, signature: Option<&str>) -> Answer {
        post_raw_to(&self.http, &self.webhook_url(), body, signature).await
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.sql.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    }

    pub async fn event_status(&self, event_id: &str) -> Option<String> {
        self.sql
            .query_opt(
                "select processing_status from stripe_webhook_events where stripe_event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    /// The stored event's processing note (panics when the event is not stored).
    pub async fn event_note(&self, event_id: &str) -> Option<String> {
        self.sql
            .query_one(
                "select processing_note from stripe_webhook_events where stripe_event_id = $1",
                &[&event_id],
            )
            .await
            .unwrap()
            .get(0)
    }

    pub async fn wait_for_status(&self, event_id: &str, status: &str) {
        let id = event_id.to_owned();
        let want = status.to_owned();
        wait_until(&format!("{event_id} to become {status}"), || async {
            self.event_status(&id).await.as_deref() == Some(want.as_str())
        })
        .await;
    }
}

pub async fn post_raw_to(
    http: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    signature: Option<&str>,
) -> Answer {
    let mut req = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(sig) = signature {
        req = req.header("stripe-signature", sig);
    }
    let resp = req.send().await.expect("request reaches the server");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
}

/// Polls `condition` until it holds; fails the test after 15 s. (A bound on waiting, not a
/// speed assertion.)
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A Stripe event envelope around `object` (current API version unless overridden).
pub fn event(id: &str, event_type: &str, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": chrono::Utc::now().timestamp(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type
    })
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    )
}
