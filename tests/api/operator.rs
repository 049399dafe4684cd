//! The operator commands (replay, backfill, trigger, status), called as library functions with
//! a map of variables, and through the binary for exit codes.

use std::collections::HashMap;

use serde_json::{json, Value};
use stripe_worker::cli::replay::{self, ReplayArgs, StatusFilter};
use stripe_worker::cli::{backfill, trigger};

use crate::helpers::{base_env, event, fresh_db, spawn_app_with, unique, TestApp};

const FAIL_PRODUCTS: &str = "
create function fail_products() returns trigger language plpgsql as
  $$ begin raise exception 'products are read-only today'; end $$;
create trigger fail_products before insert or update on products for each row execute function fail_products();";

/// Counts every write of a product (the effect of product.created).
const EFFECT_LOG: &str = "
create table effect_log (product_id text);
create function log_effect() returns trigger language plpgsql as
  $$ begin insert into effect_log values (new.id); return new; end $$;
create trigger log_effect after insert or update on products for each row execute function log_effect();";

fn product_event(event_id: &str, product_id: &str) -> Value {
    event(
        event_id,
        "product.created",
        json!({"id": product_id, "object": "product", "name": "Pro", "active": true,
               "description": null, "images": [], "metadata": {"tier": "pro"}}),
    )
}

pub fn cli_env(app: &TestApp) -> HashMap<String, String> {
    let mut env = base_env(&app.db.url);
    env.insert("WORKER_ID".into(), unique("operator"));
    env
}

/// The app with a retrier that waits an hour before retrying (nothing races the test).
async fn app_without_retries() -> TestApp {
    spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await
}

async fn replay_with(app: &TestApp, args: ReplayArgs) -> (replay::ReplaySummary, String) {
    let mut out = Vec::new();
    let summary = replay::run(&args, &cli_env(app), &mut out, false)
        .await
        .expect("replay runs");
    (summary, String::from_utf8(out).unwrap())
}

async fn failed_product_events(app: &TestApp, n: usize) -> Vec<(String, String)> {
    app.sql.batch_execute(FAIL_PRODUCTS).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let (id, product) = (unique("evt"), unique("prod"));
        let answer = app.post_event(&product_event(&id, &product)).await;
        assert_eq!(answer.body["status"], "failed");
        ids.push((id, product));
    }
    ids
}

async fn effects(app: &TestApp, product: &str) -> i64 {
    app.sql
        .query_one(
            "select count(*) from effect_log where product_id = $1",
            &[&product],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn replay_turns_a_failed_event_into_processed_with_effects_applied_once() {
    let app = app_without_retries().await;
    app.sql.batch_execute(EFFECT_LOG).await.unwrap();
    let events = failed_product_events(&app, 1).await;
    let (id, product) = &events[0];

    // Still broken: the replay fails again, reports the error and does not succeed.
    let (summary, out) = replay_with(&app, ReplayArgs::default()).await;
    assert_eq!((summary.failed, summary.processed), (1, 0), "{out}");
    assert!(!summary.success());
    assert!(
        out.contains(&format!("{id} product.created failed -> failed  error: "))
            && out.contains("products are read-only today"),
        "{out}"
    );
    assert_eq!(
        app.sql
            .query_one(
                "select retry_count from stripe_webhook_events where stripe_event_id = $1",
                &[id]
            )
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );

    // Fixed: the replay applies it, once.
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    let (summary, out) = replay_with(&app, ReplayArgs::default()).await;
    assert_eq!(summary.processed, 1, "{out}");
    assert!(summary.success());
    assert!(
        out.contains(&format!("{id} product.created failed -> processed\n")),
        "{out}"
    );
    assert!(
        out.contains("replayed 1: processed 1, ignored 0, failed 0, dead 0, skipped 0"),
        "{out}"
    );
    assert_eq!(app.event_status(id).await.as_deref(), Some("processed"));
    let row = app
        .sql
        .query_one(
            "select error_message, locked_by, next_attempt_at is null from stripe_webhook_events where stripe_event_id = $1",
            &[id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), None);
    assert_eq!(row.get::<_, Option<&str>>(1), None);
    assert!(row.get::<_, bool>(2));
    assert_eq!(effects(&app, product).await, 1);

    // Nothing failed any more: a second replay does nothing.
    let (summary, out) = replay_with(&app, ReplayArgs::default()).await;
    assert_eq!(summary.replayed(), 0, "{out}");
    assert_eq!(effects(&app, product).await, 1);
}

#[tokio::test]
async fn replay_dry_run_changes_nothing() {
    let app = app_without_retries().await;
    let events = failed_product_events(&app, 2).await;
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    let snapshot = "select string_agg(row_to_json(e)::text, ',' order by stripe_event_id) from stripe_webhook_events e";
    let before: String = app.sql.query_one(snapshot, &[]).await.unwrap().get(0);
    let (summary, out) = replay_with(
        &app,
        ReplayArgs {
            dry_run: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(summary.would_replay, 2, "{out}");
    assert_eq!(summary.replayed(), 0);
    for (id, _) in &events {
        assert!(
            out.contains(&format!("{id} product.created failed -> (would replay)")),
            "{out}"
        );
    }
    let after: String = app.sql.query_one(snapshot, &[]).await.unwrap().get(0);
    assert_eq!(before, after);
    assert_eq!(
        app.count("select count(*) from products where name = 'Pro'")
            .await,
        0
    );
}

#[tokio::test]
async fn replay_and_a_running_worker_racing_on_failed_events_apply_each_once() {
    let app = app_without_retries().await;
    app.sql.batch_execute(EFFECT_LOG).await.unwrap();
    let events = failed_product_events(&app, 24).await;
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    // Due now for the worker's retrier (polling every 0.1 s) while the replay runs.
    let (_, (summary, out)) = tokio::join!(
        app.sql.execute(
            "update stripe_webhook_events set next_attempt_at = now() where processing_status = 'failed'",
            &[],
        ),
        replay_with(&app, ReplayArgs::default()),
    );
    assert_eq!(summary.failed + summary.dead, 0, "{out}");
    for (id, _) in &events {
        app.wait_for_status(id, "processed").await;
    }
    for (_, product) in &events {
        assert_eq!(effects(&app, product).await, 1, "{product} applied twice");
    }
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events where retry_count <> 1")
            .await,
        0
    );
}

#[tokio::test]
async fn replay_of_a_processed_event_needs_force_and_reapplies_idempotently() {
    let app = app_without_retries().await;
    let (id, product) = (unique("evt"), unique("prod"));
    assert_eq!(
        app.post_event(&product_event(&id, &product)).await.body["status"],
        "processed"
    );
    let row =
        "select row_to_json(p)::jsonb - 'updated_at' - 'created_at' from products p where id = $1";
    let before: Value = app.sql.query_one(row, &[&product]).await.unwrap().get(0);
    let one = ReplayArgs {
        event_ids: vec![id.clone()],
        ..Default::default()
    };
    let (summary, out) = replay_with(&app, one.clone()).await;
    assert_eq!((summary.replayed(), summary.skipped), (0, 1), "{out}");
    assert!(summary.success(), "a no-op is not a failure");
    assert!(
        out.contains("already processed; --force replays it"),
        "{out}"
    );
    let (summary, out) = replay_with(&app, ReplayArgs { force: true, ..one }).await;
    assert_eq!(summary.processed, 1, "{out}");
    assert!(
        out.contains(&format!("{id} product.created processed -> processed")),
        "{out}"
    );
    let after: Value = app.sql.query_one(row, &[&product]).await.unwrap().get(0);
    assert_eq!(before, after);
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}'"
        ))
        .await,
        1
    );
    // --status dead with --force still selects only dead events.
    let (summary, _) = replay_with(
        &app,
        ReplayArgs {
            status: Some(StatusFilter::Dead),
            force: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(summary.replayed(), 0);
}

#[tokio::test]
async fn the_replay_binary_exits_1_for_unknown_events_and_0_when_all_processed() {
    let app = app_without_retries().await;
    let events = failed_product_events(&app, 1).await;
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    let missing = run_binary(&app, &["replay", "--event-id", "evt_does_not_exist"]).await;
    assert_eq!(missing.0, Some(1), "{missing:?}");
    assert!(
        missing.1.contains("evt_does_not_exist not found"),
        "{missing:?}"
    );
    let ok = run_binary(&app, &["replay", "--status", "failed"]).await;
    assert_eq!(ok.0, Some(0), "{ok:?}");
    assert!(ok.1.contains(&format!(
        "{} product.created failed -> processed",
        events[0].0
    )));
    assert!(!ok.1.contains(crate::helpers::SECRET) && !ok.2.contains(crate::helpers::SECRET));
}

/// Runs the real binary with the test environment; (exit code, stdout, stderr).
pub async fn run_binary(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    run_binary_with(cli_env(app), args).await
}

pub async fn run_binary_with(
    env: HashMap<String, String>,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_stripe-worker"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_json_reports_the_counts_the_queue_and_the_oldest_failures() {
    let app = app_without_retries().await;
    for _ in 0..2 {
        let answer = app
            .post_event(&product_event(&unique("evt"), &unique("prod")))
            .await;
        assert_eq!(answer.body["status"], "processed");
    }
    let answer = app
        .post_event(&event(
            &unique("evt"),
            "issuing_card.created",
            json!({"id": "ic_1"}),
        ))
        .await;
    assert_eq!(answer.body["status"], "ignored");
    let failed = failed_product_events(&app, 1).await;
    let dead = unique("evt");
    app.sql
        .execute(
            "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, retry_count, error_message, created_at)
             values ($1, 'charge.refunded', '{}', 'dead', 12, 'invalid charge: missing field `id`', now() - interval '3 days')",
            &[&dead],
        )
        .await
        .unwrap();
    let (code, stdout, stderr) = run_binary(&app, &["status", "--json"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("status --json prints JSON");
    assert_eq!(
        report["by_status_24h"],
        json!({"pending": 0, "processing": 0, "processed": 2, "ignored": 1, "failed": 1, "dead": 0})
    );
    assert_eq!(report["by_status_7d"]["dead"], 1);
    assert_eq!(report["retry_queue"]["due_now"], 0);
    assert_eq!(report["retry_queue"]["later"], 1);
    assert_eq!(report["retry_queue"]["dead_total"], 1);
    assert_eq!(report["oldest_failed"][0]["event_id"], json!(failed[0].0));
    assert!(report["oldest_failed"][0]["error"]
        .as_str()
        .unwrap()
        .contains("products are read-only today"));
    assert_eq!(report["oldest_dead"][0]["event_id"], json!(dead));
    let product_row = report["by_type"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event_type"] == "product.created")
        .cloned()
        .unwrap();
    assert_eq!(
        product_row,
        json!({"event_type": "product.created", "last_24h": 3, "last_7d": 3, "failed_or_dead_7d": 1})
    );
    // The human table says the same.
    let (code, table, _) = run_binary(&app, &["status"]).await;
    assert_eq!(code, Some(0));
    assert!(table.contains("retry queue: 0 due now, 1 later"), "{table}");
    assert!(
        table.contains(&dead) && table.contains("invalid charge"),
        "{table}"
    );
}

async fn trigger(
    app: &TestApp,
    event_type: &str,
    email: Option<&str>,
) -> (trigger::TriggerAnswer, String) {
    let args = trigger::TriggerArgs {
        target: Some(event_type.into()),
        email: email.map(|e| stripe_worker::email::Email::parse(e).unwrap()),
        url: Some(app.webhook_url()),
        ..Default::default()
    };
    let mut out = Vec::new();
    let report = trigger::run(&args, &cli_env(app), &mut out)
        .await
        .expect("trigger runs");
    let out = String::from_utf8(out).unwrap();
    let answer = report
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no answer: {out}"));
    assert_eq!(answer.event_type, event_type, "{out}");
    (answer, out)
}

#[tokio::test]
async fn trigger_product_created_and_checkout_produce_processed_events() {
    let app = app_without_retries().await;
    let (answer, out) = trigger(&app, "product.created", None).await;
    assert!(answer.is_success(), "{out}");
    assert!(out.contains("HTTP 200"), "{out}");
    assert_eq!(
        app.event_status(&answer.event_id).await.as_deref(),
        Some("processed")
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from products p join stripe_webhook_events e
               on e.event_data->'data'->'object'->>'id' = p.id
             where e.stripe_event_id = '{}' and p.name like 'Trigger product %'",
            answer.event_id
        ))
        .await,
        1
    );

    let email = format!("{}@example.com", unique("buyer"));
    let (answer, out) = trigger(&app, "checkout.session.completed", Some(&email)).await;
    assert_eq!(
        serde_json::from_str::<Value>(&answer.body).unwrap()["status"],
        "processed",
        "{out}"
    );
    assert_eq!(
        app.event_status(&answer.event_id).await.as_deref(),
        Some("processed")
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from payment_intents pi join users u on u.id = pi.customer_id
             where lower(u.email) = lower('{email}') and pi.status = 'succeeded'
               and pi.price_id = 'price_demo_onetime' and pi.amount = 4900"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn trigger_accepts_every_supported_type_and_the_binary_reports_failures() {
    let app = app_without_retries().await;
    for t in stripe_worker::fixtures::SUPPORTED {
        let (answer, out) = trigger(&app, t, None).await;
        assert_eq!(answer.status, 200, "{t}: {out}");
        assert!(
            app.event_status(&answer.event_id).await.is_some(),
            "{t} stored"
        );
    }
    let ok = run_binary(
        &app,
        &["trigger", "price.created", "--url", &app.webhook_url()],
    )
    .await;
    assert_eq!(ok.0, Some(0), "{ok:?}");
    assert!(ok.1.contains("HTTP 200"), "{ok:?}");
    // A secret the worker does not know: 400, exit 1, and no secret in any output.
    let mut env = cli_env(&app);
    env.insert(
        "STRIPE_WEBHOOK_SECRET".into(),
        "whsec_not_the_right_one".into(),
    );
    let bad = run_binary_with(
        env,
        &["trigger", "product.created", "--url", &app.webhook_url()],
    )
    .await;
    assert_eq!(bad.0, Some(1), "{bad:?}");
    assert!(bad.1.contains("HTTP 400"), "{bad:?}");
    assert!(!format!("{bad:?}").contains("whsec_not_the_right_one"));
    // Nobody listening: a clear error, exit 1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = run_binary(
        &app,
        &[
            "trigger",
            "product.created",
            "--url",
            &format!("http://127.0.0.1:{closed}/webhooks/stripe"),
        ],
    )
    .await;
    assert_eq!(down.0, Some(1), "{down:?}");
    assert!(down.2.contains("cannot POST"), "{down:?}");
    // An unknown type lists the supported ones.
    let unknown = run_binary(&app, &["trigger", "charge.exploded"]).await;
    assert_ne!(unknown.0, Some(0));
    assert!(unknown.2.contains("invoice.paid"), "{unknown:?}");
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe-events-2020/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub async fn backfill_with(
    app: &TestApp,
    fake: &crate::fakes::FakeStripe,
    args: &backfill::BackfillArgs,
) -> (backfill::BackfillSummary, String) {
    let mut env = cli_env(app);
    env.insert("STRIPE_SECRET_KEY".into(), "sk_test_backfill_key".into());
    env.insert("STRIPE_API_BASE".into(), fake.url.clone());
    let mut out = Vec::new();
    let backoff = stripe_worker::stripe_list::RateLimitBackoff {
        base: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let summary = backfill::run_with(args, &env, &mut out, false, backoff)
        .await
        .expect("backfill runs");
    (summary, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn backfill_ingests_only_missing_events_oldest_first_survives_a_429_and_twice_is_a_no_op() {
    let app = app_without_retries().await;
    let now = chrono::Utc::now().timestamp();
    let names = [
        "product_created",
        "product_updated",
        "price_created",
        "price_updated",
        "plan_created",
        "setup_intent_created",
        "review_opened",
        "credit_note_created",
        "customer_tax_id_created",
        "early_fraud_warning_created",
    ];
    let in_range: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut e = fixture(name);
            e["id"] = json!(unique("evt"));
            e["created"] = json!(now - 3600 + i as i64 * 60);
            e
        })
        .collect();
    let mut too_old = fixture("product_created");
    too_old["id"] = json!(unique("evt"));
    too_old["created"] = json!(now - 10 * 86_400);
    let mut too_new = fixture("product_created");
    too_new["id"] = json!(unique("evt"));
    too_new["created"] = json!(now - 60);
    // Three of them arrived as webhooks.
    let pre_stored = [1, 4, 7];
    for i in pre_stored {
        assert_eq!(app.post_event(&in_range[i]).await.status, 200);
    }
    let mut all = in_range.clone();
    all.extend([too_old.clone(), too_new.clone()]);
    // The second request (the second page) is rate limited once.
    let fake = crate::fakes::fake_stripe(crate::fakes::StripeState {
        events: all.iter().map(Value::to_string).collect(),
        rate_limit_at: Some(1),
        ..Default::default()
    });
    let args = backfill::BackfillArgs {
        since: chrono::DateTime::from_timestamp(now - 7200, 0).unwrap(),
        until: Some(chrono::DateTime::from_timestamp(now - 120, 0).unwrap()),
        page_size: 3,
    };
    let (summary, out) = backfill_with(&app, &fake, &args).await;
    assert_eq!(
        (
            summary.listed,
            summary.already_stored,
            summary.ingested(),
            summary.failed
        ),
        (10, 3, 7, 0),
        "{out}"
    );
    assert_eq!(summary.rate_limited, 1, "{out}");
    assert!(summary.success());
    assert!(
        out.contains("listed 10, already stored 3, ingested 7: processed "),
        "{out}"
    );
    // The 429'd page was asked for again, the same way.
    let log = fake.requests("/v1/events");
    assert_eq!(log[1].answered, 429, "{log:?}");
    assert_eq!(log[1].query, log[2].query, "{log:?}");
    assert_eq!(
        log[0].param("created[gte]"),
        Some((now - 7200).to_string()),
        "{log:?}"
    );

    // Every in-range event is stored once, as Stripe sent it; out-of-range ones are not.
    for e in &in_range {
        let stored: Value = app
            .sql
            .query_one(
                "select event_data from stripe_webhook_events where stripe_event_id = $1",
                &[&e["id"].as_str().unwrap()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(&stored, e);
    }
    for e in [&too_old, &too_new] {
        assert_eq!(app.event_status(e["id"].as_str().unwrap()).await, None);
    }
    // Ingested oldest first.
    let order: Vec<String> = app
        .sql
        .query(
            "select stripe_event_id from stripe_webhook_events where request_id like 'backfill:%' order by created_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<String> = in_range
        .iter()
        .enumerate()
        .filter(|(i, _)| !pre_stored.contains(i))
        .map(|(_, e)| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order, expected);
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events where processing_status not in ('processed', 'ignored')")
            .await,
        0
    );

    // Again: nothing new.
    let (summary, out) = backfill_with(&app, &fake, &args).await;
    assert_eq!(
        (summary.listed, summary.already_stored, summary.ingested()),
        (10, 10, 0),
        "{out}"
    );
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        10
    );
}

#[tokio::test]
async fn backfill_without_a_secret_key_is_a_clear_error() {
    let app = app_without_retries().await;
    let (code, stdout, stderr) = run_binary(&app, &["backfill", "--since", "2026-01-01"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("STRIPE_SECRET_KEY is required"), "{stderr}");
}

#[tokio::test]
async fn the_replay_script_passes_arguments_through_and_later_flags_override() {
    let app = app_without_retries().await;
    let failed = failed_product_events(&app, 1).await;
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    let dead = unique("evt");
    app.sql
        .execute(
            "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, retry_count, error_message)
             values ($1, 'product.created', $2, 'dead', 12, 'products are read-only today')",
            &[&dead, &product_event(&dead, &unique("prod"))],
        )
        .await
        .unwrap();
    let script = format!(
        "{}/scripts/replay-failed-events.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let run = |args: Vec<String>| {
        let env = cli_env(&app);
        let script = script.clone();
        async move {
            let output = tokio::process::Command::new("bash")
                .arg(&script)
                .args(&args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .envs(env)
                .output()
                .await
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
            )
        }
    };
    let (code, out) = run(vec!["--dry-run".into()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&failed[0].0) && !out.contains(&dead), "{out}");
    let (code, out) = run(vec!["--status".into(), "dead".into()]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{dead} product.created dead -> processed")),
        "{out}"
    );
    assert_eq!(
        app.event_status(&failed[0].0).await.as_deref(),
        Some("failed")
    );
    let (code, out) = run(vec![]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        app.event_status(&failed[0].0).await.as_deref(),
        Some("processed")
    );
    let (code, help) = run(vec!["--help".into()]).await;
    assert_eq!(code, Some(0));
    assert!(
        help.contains("--status dead") && help.contains("--dry-run"),
        "{help}"
    );
}

/// Runs `psql -f sql/ops/<file>` with `-v` variables; (exit code, stdout + stderr).
async fn psql_ops(db_url: &str, file: &str, vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let psql = match std::env::var("TEST_PG_BINDIR") {
        Ok(dir) => format!("{dir}/psql"),
        Err(_) => "psql".to_owned(),
    };
    let mut cmd = tokio::process::Command::new(psql);
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", db_url, "-f"])
        .arg(format!("{}/sql/ops/{file}", env!("CARGO_MANIFEST_DIR")));
    for (k, v) in vars {
        cmd.arg("-v").arg(format!("{k}={v}"));
    }
    let output = cmd.output().await.expect("psql runs");
    (
        output.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn the_ops_queries_run_and_change_nothing() {
    let app = app_without_retries().await;
    let email = format!("{}@example.com", unique("trail"));
    let (checkout, _) = trigger(&app, "checkout.session.completed", Some(&email)).await;
    assert!(checkout.is_success());
    let customer: String = app
        .sql
        .query_one(
            "select event_data->'data'->'object'->>'customer' from stripe_webhook_events where stripe_event_id = $1",
            &[&checkout.event_id],
        )
        .await
        .unwrap()
        .get(0);
    let failed = failed_product_events(&app, 2).await;
    let ancient = unique("evt");
    app.sql
        .execute(
            "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, created_at)
             values ($1, 'product.created', '{}', 'processed', now() - interval '8 years')",
            &[&ancient],
        )
        .await
        .unwrap();
    let snapshot = "select count(*)::text || md5(string_agg(row_to_json(e)::text, ',' order by stripe_event_id)) from stripe_webhook_events e";
    let before: String = app.sql.query_one(snapshot, &[]).await.unwrap().get(0);

    let (code, out) = psql_ops(&app.db.url, "failed_by_error.sql", &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("products are read-only today"), "{out}");
    assert!(out.contains(" 2 "), "two events share the error: {out}");
    let (code, out) = psql_ops(&app.db.url, "retry_queue.sql", &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&failed[0].0) && out.contains(&failed[1].0),
        "{out}"
    );
    let (code, out) = psql_ops(
        &app.db.url,
        "events_for_customer.sql",
        &[("customer", &customer)],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&checkout.event_id), "{out}");
    let (code, out) = psql_ops(
        &app.db.url,
        "user_provisioning_trail.sql",
        &[("email", &email.to_uppercase())],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    for expected in [&customer, &checkout.event_id, &email] {
        assert!(out.contains(expected.as_str()), "{expected} missing: {out}");
    }
    assert!(out.contains("price_demo_onetime"), "{out}");
    let (code, out) = psql_ops(
        &app.db.url,
        "explain_access.sql",
        &[("email", &email.to_uppercase())],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    // The checkout's purchase: 12 months of the demo pack, standing, with its coverage.
    assert!(
        out.contains("purchase") && out.contains("12 months") && out.contains("active"),
        "{out}"
    );
    let (code, usage) = psql_ops(&app.db.url, "explain_access.sql", &[]).await;
    assert_eq!(code, Some(0), "{usage}");
    assert!(usage.contains("usage:"), "{usage}");
    let (code, out) = psql_ops(&app.db.url, "retention_purge.sql", &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ROLLBACK: nothing was deleted"), "{out}");
    assert!(out.contains("deleted_in_this_transaction"), "{out}");

    let after: String = app.sql.query_one(snapshot, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "an ops query changed stripe_webhook_events");
    assert_eq!(
        app.event_status(&ancient).await.as_deref(),
        Some("processed")
    );
}

#[tokio::test]
async fn the_retention_purge_committed_removes_only_old_processed_and_ignored_rows() {
    // No worker runs here: a retrier would pick up the pending rows.
    let db = crate::helpers::fresh_db().await;
    let sql = crate::helpers::connect(&db.url).await;
    let status_of = |id: String| {
        let sql = &sql;
        async move {
            sql.query_opt(
                "select processing_status from stripe_webhook_events where stripe_event_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get::<_, String>(0))
        }
    };
    let statuses = [
        "processed",
        "ignored",
        "dead",
        "failed",
        "pending",
        "processing",
    ];
    let mut old = Vec::new();
    for status in statuses {
        let id = unique("evt");
        sql.execute(
            "insert into stripe_webhook_events (stripe_event_id, event_type, event_data,
                   processing_status, created_at)
                 values ($1, 'product.created', '{}', $2, now() - interval '8 years')",
            &[&id, &status],
        )
        .await
        .unwrap();
        old.push((id, status));
    }
    let recent = unique("evt");
    sql.execute(
        "insert into stripe_webhook_events (stripe_event_id, event_type, event_data,
               processing_status, created_at)
             values ($1, 'product.created', '{}', 'processed', now() - interval '6 years')",
        &[&recent],
    )
    .await
    .unwrap();
    // What an operator runs on purpose: the shipped file with its last line changed to COMMIT.
    let shipped = std::fs::read_to_string(format!(
        "{}/sql/ops/retention_purge.sql",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(shipped.trim_end().ends_with("rollback;"));
    let committing = format!(
        "{}commit;\n",
        shipped.trim_end().strip_suffix("rollback;").unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("retention_purge_commit.sql");
    std::fs::write(&copy, committing).unwrap();
    let psql = match std::env::var("TEST_PG_BINDIR") {
        Ok(dir) => format!("{dir}/psql"),
        Err(_) => "psql".to_owned(),
    };
    let out = tokio::process::Command::new(psql)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", &db.url, "-f"])
        .arg(&copy)
        .output()
        .await
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (id, status) in &old {
        let kept = status_of(id.clone()).await;
        if matches!(*status, "processed" | "ignored") {
            assert_eq!(kept, None, "an 8-year-old {status} row is purged");
        } else {
            assert_eq!(
                kept.as_deref(),
                Some(*status),
                "an 8-year-old {status} row is kept"
            );
        }
    }
    assert_eq!(status_of(recent).await.as_deref(), Some("processed"));
}
