//! Tests with real `stripe-worker` processes and a private PostgreSQL cluster the test may stop
//! and start. Everything listens on 127.0.0.1 and is stopped by the test, also when it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::json;

use crate::helpers::{self, event, post_raw_to, unique, wait_until, SECRET};

fn pg_script(call: &str, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/lib/pg.sh");
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && {call} \"$@\"", script.display()))
        .arg("pg")
        .args(args)
        .status()
        .expect("bash runs");
    assert!(status.success(), "{call} {args:?} failed");
}

/// A PostgreSQL of the test's own, on a free port.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let c = Self { dir, port };
        c.up();
        c
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn up(&self) {
        pg_script(
            "pg_start",
            &[&self.data(), &self.port.to_string(), "fsync=off"],
        );
    }

    pub fn down(&self) {
        pg_script("pg_stop", &[&self.data(), "fast"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn migrated(self) -> Self {
        let mut client = helpers::connect(&self.url()).await;
        stripe_worker::db::migrate::run(&mut client, true)
            .await
            .unwrap();
        self
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        pg_script("pg_stop", &[&self.data(), "immediate"]);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `stripe-worker serve` child process, killed (by PID) when dropped.
pub struct WorkerProcess {
    child: Child,
    pub url: String,
}

impl WorkerProcess {
    pub async fn spawn(db_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::spawn_with_open_files(db_url, extra, None).await
    }

    /// `spawn`, with the soft and hard open-files limit (`ulimit -n`) set to `open_files`.
    pub async fn spawn_with_open_files(
        db_url: &str,
        extra: &[(&str, &str)],
        open_files: Option<u32>,
    ) -> Self {
        let port = free_port();
        let bin = env!("CARGO_BIN_EXE_stripe-worker");
        let mut cmd = match open_files {
            None => Command::new(bin),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                sh
            }
        };
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(helpers::base_env(db_url))
            .env("PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(helpers::child_stderr());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn stripe-worker");
        let w = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let health = format!("{}/healthz", w.url);
        wait_until("the worker to listen", || {
            let http = http.clone();
            let health = health.clone();
            async move { http.get(&health).send().await.is_ok() }
        })
        .await;
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` memory line in KiB (`VmRSS`, `VmHWM`, …).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/{}/status", self.pid()))
    }

    /// Sends `signal` (e.g. "KILL", "TERM") to this process, by PID.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Waits (at most `within`) for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: std::time::Duration) -> Option<ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signed(body: &serde_json::Value) -> (Vec<u8>, String) {
    let bytes = serde_json::to_vec(body).unwrap();
    let header = stripe_worker::signature::WebhookSecret::parse(SECRET)
        .unwrap()
        .sign(chrono::Utc::now().timestamp(), &bytes);
    (bytes, header)
}

pub fn product_event(id: &str) -> serde_json::Value {
    event(
        id,
        "product.created",
        json!({"id": format!("prod_{id}"), "object": "product", "name": "P"}),
    )
}

#[tokio::test]
async fn two_worker_processes_apply_each_of_many_concurrent_duplicates_once() {
    let db = helpers::fresh_db().await;
    // 240 requests on two pools of 16: a busy machine (the whole suite runs beside this test)
    // may keep a request waiting for a connection longer than the default 5 s, which answers
    // 503 (Stripe retries); this test is about exactly-once, so it waits.
    let patient = [("DATABASE_ACQUIRE_TIMEOUT_SECS", "60")];
    let a = WorkerProcess::spawn(&db.url, &patient).await;
    let b = WorkerProcess::spawn(&db.url, &patient).await;
    assert_ne!(a.pid(), b.pid());
    let http = reqwest::Client::new();
    let events: Vec<_> = (0..40).map(|_| product_event(&unique("evt"))).collect();
    let mut posts = Vec::new();
    for e in &events {
        for round in 0..3 {
            for w in [&a, &b] {
                let (body, header) = signed(e);
                let url = format!("{}/webhooks/stripe", w.url);
                let http = http.clone();
                posts.push(tokio::spawn(async move {
                    let _ = round;
                    post_raw_to(&http, &url, body, Some(&header)).await
                }));
            }
        }
    }
    let answers: Vec<_> = futures_util::future::join_all(posts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| (a.status, a.body.to_string()))
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    let processed = answers
        .iter()
        .filter(|a| a.body["status"] == "processed")
        .count();
    let duplicates = answers
        .iter()
        .filter(|a| a.body["status"] == "duplicate")
        .count();
    assert_eq!((processed, duplicates), (40, 200));
    let sql = helpers::connect(&db.url).await;
    let n: i64 = sql
        .query_one(
            "select count(*) from stripe_webhook_events where processing_status = 'processed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 40);
    let versions: i64 = sql
        .query_one(
            "select count(*) from stripe_object_versions where object_type = 'product'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(versions, 40);
}

#[tokio::test]
async fn the_database_going_away_is_503_and_the_worker_recovers_without_restart() {
    let cluster = PrivateCluster::start().migrated().await;
    let app = helpers::spawn_app_with(
        helpers::TestDb {
            name: "postgres".into(),
            url: cluster.url(),
        },
        &[("DATABASE_ACQUIRE_TIMEOUT_SECS", "1")],
    )
    .await;
    let before = unique("evt");
    assert_eq!(
        app.post_event(&product_event(&before)).await.body["status"],
        "processed"
    );

    cluster.down();
    let during = unique("evt");
    let answer = app.post_event(&product_event(&during)).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert!(answer.body["error"]
        .as_str()
        .unwrap()
        .contains("database unavailable"));
    assert_eq!(app.get("/readyz").await.status().as_u16(), 503);
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);

    cluster.up();
    // Stripe delivers the 503'd event again; the same process now stores it.
    wait_until("the worker to accept events again", || async {
        app.post_event(&product_event(&during)).await.status == 200
    })
    .await;
    let sql = helpers::connect(&cluster.url()).await;
    for id in [&before, &during] {
        let status: String = sql
            .query_one(
                "select processing_status from stripe_webhook_events where stripe_event_id = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(status, "processed");
    }
    assert_eq!(app.get("/readyz").await.status().as_u16(), 200);
}
