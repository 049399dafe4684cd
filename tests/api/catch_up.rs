//! The catch-up inside `serve` and `backfill`, against the fake Stripe API (tests/api/fakes.rs):
//! listed events of any API version are stored byte for byte and processed like deliveries;
//! events created while the worker was stopped are found after its restart without a command;
//! replicas share the work; a 429 storm slows only the catch-up; the high-water mark survives
//! SIGKILL.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::{json, Value};
use stripe_worker::cli::backfill;
use stripe_worker::fixtures::{self, ApiVersion, ShopOptions};

use crate::fakes::{fake_stripe, FakeStripe, StripeState};
use crate::helpers::{event, fresh_db, spawn_app_with, unique, wait_until, TestApp, TestDb};
use crate::operator::{backfill_with, cli_env};
use crate::processes::WorkerProcess;

/// Counts every write of a product (the effect of product.created).
const EFFECT_LOG: &str = "
create table effect_log (product_id text);
create function log_effect() returns trigger language plpgsql as
  $$ begin insert into effect_log values (new.id); return new; end $$;
create trigger log_effect after insert or update on products for each row execute function log_effect();";

/// A named flow in `version` whose events are all created at or after `start`, its last one
/// at most at `end` (`None`: anywhere after `start`).
pub fn flow_from(name: &str, version: ApiVersion, seed: u64, start: i64) -> Vec<Value> {
    fixtures::flow(name).unwrap().events(ShopOptions {
        seed,
        api_version: version,
        start,
        ..ShopOptions::default()
    })
}

/// A named flow placed so that its last event is created at or shortly before `end`.
pub fn flow_ending(name: &str, version: ApiVersion, seed: u64, end: i64) -> Vec<Value> {
    let last = |events: &[Value]| {
        events
            .iter()
            .map(|e| e["created"].as_i64().unwrap())
            .max()
            .unwrap()
    };
    let mut start = end;
    loop {
        let events = flow_from(name, version, seed, start);
        let over = last(&events) - end;
        if over <= 0 {
            return events;
        }
        start -= over;
    }
}

fn product_event(id: &str, created: i64) -> Value {
    let mut e = event(
        id,
        "product.created",
        json!({"id": format!("prod_{id}"), "object": "product", "name": "P", "active": true}),
    );
    e["created"] = json!(created);
    e
}

fn text(events: &[Value]) -> Vec<String> {
    events.iter().map(Value::to_string).collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The catch-up's settings for a test: a short interval, the fake API.
fn catch_up_env(fake: &FakeStripe, key: &str) -> Vec<(String, String)> {
    vec![
        ("STRIPE_SECRET_KEY".into(), key.into()),
        ("STRIPE_API_BASE".into(), fake.url.clone()),
        ("RECONCILE_INTERVAL_SECS".into(), "0.3".into()),
    ]
}

async fn app_with(db: &TestDb, env: &[(String, String)]) -> TestApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_app_with(
        TestDb {
            name: db.name.clone(),
            url: db.url.clone(),
        },
        &env,
    )
    .await
}

async fn stored_statuses(app: &TestApp, ids: &[String]) -> HashMap<String, String> {
    app.sql
        .query(
            "select stripe_event_id, processing_status from stripe_webhook_events where stripe_event_id = any($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until every one of `ids` is stored and processed or ignored.
async fn wait_all_done(app: &TestApp, ids: &[String]) {
    wait_until("every listed event to be stored and processed", || async {
        let s = stored_statuses(app, ids).await;
        s.len() == ids.len() && s.values().all(|v| v == "processed" || v == "ignored")
    })
    .await;
}

async fn catch_up_row(app: &TestApp) -> tokio_postgres::Row {
    app.sql
        .query_one(
            "select run_status, locked_by, high_water_mark, watching_since, created_at,
                    recovered_total, ingested_total, run_rate_limited
               from stripe_catch_up where stream = 'test'",
            &[],
        )
        .await
        .unwrap()
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn backfill_stores_events_of_every_api_version_as_listed_and_reports_an_odd_one() {
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await;
    let now = Utc::now().timestamp();
    // 2017-02-14: `request` is a plain id; 2020-08-27 without `pending_webhooks` (as events
    // created before it existed); basil and the newest, dahlia; each a whole purchase.
    let old = flow_ending(
        "checkout-payment",
        ApiVersion::V2017_02_14,
        11,
        now - 3 * 3600,
    );
    assert!(old.iter().any(|e| e["request"].is_string()));
    let mut mid = flow_ending(
        "checkout-subscription",
        ApiVersion::V2020_08_27,
        12,
        now - 2 * 3600,
    );
    for e in &mut mid {
        e.as_object_mut().unwrap().remove("pending_webhooks");
    }
    let new = flow_ending("api-subscription", ApiVersion::Basil, 13, now - 3600);
    let newest = flow_ending("guest-checkout", ApiVersion::Dahlia, 14, now - 1800);
    // Served with their own formatting: what is stored must be what was listed, whatever the
    // spacing and key order (jsonb compares values).
    let mut served: Vec<String> = Vec::new();
    for e in old.iter().chain(&mid).chain(&new).chain(&newest) {
        served.push(serde_json::to_string_pretty(e).unwrap());
    }
    // An element that is no event at all, and an unknown type with fields nobody models.
    let odd = json!({"id": unique("evt"), "object": "event", "created": now - 1200});
    let exotic = json!({"id": unique("evt"), "object": "event", "api_version": "2026-07-29.dahlia",
        "created": now - 1100, "type": "issuing_card.created", "livemode": false,
        "data": {"object": {"id": "ic_1", "object": "issuing_card", "weird": [1.50, {"deep": null}]}},
        "context": "acct_1", "request": null});
    served.push(odd.to_string());
    served.push(exotic.to_string());
    let fake = fake_stripe(StripeState {
        events: served.clone(),
        ..Default::default()
    });
    let args = backfill::BackfillArgs {
        since: chrono::DateTime::from_timestamp(now - 86_400, 0).unwrap(),
        until: None,
        page_size: 7,
    };
    let (summary, out) = backfill_with(&app, &fake, &args).await;
    let valid = old.len() + mid.len() + new.len() + newest.len() + 1;
    assert_eq!(summary.listed, valid + 1, "{out}");
    assert_eq!(summary.ingested(), valid, "{out}");
    assert_eq!(summary.unreadable, 1, "{out}");
    assert!(!summary.success(), "an unreadable event is reported: {out}");
    assert!(
        out.contains(&format!(
            "{} (no type) -> unreadable, skipped: event has no type",
            odd["id"].as_str().unwrap()
        )),
        "{out}"
    );
    assert!(out.contains("; unreadable 1"), "{out}");

    for raw in &served {
        let listed: Value = serde_json::from_str(raw).unwrap();
        let id = listed["id"].as_str().unwrap();
        let stored: Option<Value> = app
            .sql
            .query_opt(
                "select event_data from stripe_webhook_events where stripe_event_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if listed == odd {
            assert_eq!(stored, None);
        } else {
            assert_eq!(
                stored.as_ref(),
                Some(&listed),
                "{id} is stored as Stripe listed it"
            );
        }
    }
    let mut all: Vec<Value> = old
        .iter()
        .chain(&mid)
        .chain(&new)
        .chain(&newest)
        .cloned()
        .collect();
    all.push(exotic.clone());
    wait_all_done(&app, &ids(&all)).await;
    // Each purchase provisioned its buyer, as deliveries would have.
    assert_eq!(
        app.count("select count(*) from subscriptions where status = 'active'")
            .await,
        2
    );
    assert!(app.count("select count(*) from access_grants").await >= 3);
}

#[tokio::test]
async fn events_created_while_the_worker_was_stopped_are_stored_after_its_restart_without_a_command(
) {
    let db = fresh_db().await;
    let now = Utc::now().timestamp();
    // Before install: a purchase two days ago (inside the 3-day start lookback).
    let history = flow_ending("checkout-payment", ApiVersion::Dahlia, 21, now - 2 * 86_400);
    let fake = fake_stripe(StripeState {
        events: text(&history),
        ..Default::default()
    });
    let env = catch_up_env(&fake, "sk_test_restart");
    let first = app_with(&db, &env).await;
    wait_all_done(&first, &ids(&history)).await;
    wait_until("the first run to finish", || async {
        catch_up_row(&first)
            .await
            .get::<_, Option<String>>(0)
            .as_deref()
            == Some("ok")
    })
    .await;
    let row = catch_up_row(&first).await;
    let (since, created): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) = (row.get(3), row.get(4));
    assert_eq!(
        created - since,
        chrono::Duration::days(3),
        "the first run starts 3 days back"
    );
    assert_eq!(
        row.get::<_, i64>(5),
        0,
        "history is not a recovered delivery"
    );
    let sql = crate::helpers::connect(&db.url).await;
    let address = first.address.clone();
    drop(first);
    let http = reqwest::Client::new();
    wait_until("the worker to stop listening", || async {
        http.get(format!("{address}/healthz")).send().await.is_err()
    })
    .await;
    // Its catch-up stops right after the server (a run in progress ends after its event).
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    wait_until("the catch-up to let its lease go", || async {
        let released = sql
            .query_one("select locked_by is null from stripe_catch_up", &[])
            .await
            .unwrap()
            .get::<_, bool>(0);
        released
    })
    .await;

    // While it is stopped: a subscription checkout and a one-time purchase; no delivery
    // reaches the worker.
    let stopped_at = Utc::now().timestamp() + 1;
    let mut missed = flow_from("checkout-subscription", ApiVersion::Basil, 22, stopped_at);
    missed.extend(flow_from(
        "checkout-payment",
        ApiVersion::V2020_08_27,
        23,
        stopped_at,
    ));
    let last = missed
        .iter()
        .map(|e| e["created"].as_i64().unwrap())
        .max()
        .unwrap();
    fake.state().events.extend(text(&missed));
    fake.state().objects_from_events(&missed);
    wait_until("the missed events to be in the past", || async {
        Utc::now().timestamp() > last + 1
    })
    .await;

    let second = app_with(&db, &env).await;
    wait_all_done(&second, &ids(&missed)).await;
    let by: Vec<String> = second
        .sql
        .query(
            "select request_id from stripe_webhook_events where stripe_event_id = any($1)",
            &[&ids(&missed)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(by.iter().all(|r| r.starts_with("catch-up:")), "{by:?}");
    assert_eq!(
        second
            .count("select count(*) from subscriptions where status = 'active'")
            .await,
        1
    );
    wait_until("the recovered events to show in the metrics", || async {
        metric(&second, "stripe_worker_reconcile_recovered_total").await
            == Some(missed.len() as f64)
    })
    .await;
    assert!(metric(&second, "stripe_worker_reconcile_lag_seconds")
        .await
        .is_some());
    wait_until("the run to be recorded", || async {
        catch_up_row(&second).await.get::<_, i64>(5) == missed.len() as i64
    })
    .await;

    // `status` shows it.
    let mut out = Vec::new();
    let report = stripe_worker::cli::status::run(
        &stripe_worker::cli::status::StatusArgs { json: false },
        &cli_env(&second),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("catch-up (test): high-water mark "), "{out}");
    assert!(
        out.contains(&format!("recovered {}", missed.len())),
        "{out}"
    );
    assert_eq!(report.catch_up[0].recovered_total, missed.len() as i64);
}

#[tokio::test]
async fn two_replicas_catching_up_at_once_ingest_each_event_once() {
    let db = fresh_db().await;
    let setup = crate::helpers::connect(&db.url).await;
    setup.batch_execute(EFFECT_LOG).await.unwrap();
    let now = Utc::now().timestamp();
    let events: Vec<Value> = (0..250)
        .map(|i| product_event(&unique("evt"), now - 3000 + i * 10))
        .collect();
    let fake = fake_stripe(StripeState {
        events: text(&events),
        // Slow pages: the replicas' runs would overlap without the lease.
        delay: std::time::Duration::from_millis(100),
        ..Default::default()
    });
    let a = app_with(&db, &catch_up_env(&fake, "sk_test_replica_a")).await;
    let b = app_with(&db, &catch_up_env(&fake, "sk_test_replica_b")).await;
    wait_all_done(&a, &ids(&events)).await;
    // A few more runs of both.
    let before = fake.requests("/v1/events").len();
    wait_until("more runs", || async {
        fake.requests("/v1/events").len() > before + 12
    })
    .await;

    let effects: i64 = a.count("select count(*) from effect_log").await;
    assert_eq!(effects, 250, "every product written once");
    assert_eq!(
        a.count("select count(distinct product_id) from effect_log")
            .await,
        250
    );
    assert_eq!(
        catch_up_row(&a).await.get::<_, i64>(6),
        250,
        "ingested once in all"
    );
    // One run at a time: the other replica's requests never come between the pages of a
    // listing (a continued listing is a request with starting_after).
    let log = fake.requests("/v1/events");
    let keys: std::collections::HashSet<&str> = log.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), 2, "both replicas ran");
    for pair in log.windows(2) {
        if pair[0].key != pair[1].key {
            assert_eq!(pair[1].param("starting_after"), None, "{pair:?}");
        }
    }
    let recovered = metric(&a, "stripe_worker_reconcile_recovered_total")
        .await
        .unwrap()
        + metric(&b, "stripe_worker_reconcile_recovered_total")
            .await
            .unwrap();
    assert_eq!(
        recovered, 0.0,
        "events created before the catch-up began are history"
    );
}

#[tokio::test]
async fn a_429_storm_slows_the_catch_up_and_nothing_else() {
    let db = fresh_db().await;
    let now = Utc::now().timestamp();
    let listed: Vec<Value> = (0..30)
        .map(|i| product_event(&unique("evt"), now - 600 + i))
        .collect();
    let fake = fake_stripe(StripeState {
        events: text(&listed),
        storm: true,
        ..Default::default()
    });
    let app = app_with(&db, &catch_up_env(&fake, "sk_test_storm")).await;
    wait_until("the catch-up to be rate limited and retry", || async {
        fake.requests("/v1/events").len() >= 3
    })
    .await;
    // Deliveries are answered and applied while the catch-up waits out the storm.
    for _ in 0..10 {
        let id = unique("evt");
        let answer = app
            .post_event(&product_event(&id, Utc::now().timestamp()))
            .await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["status"], "processed", "{}", answer.body);
    }
    assert_eq!(
        stored_statuses(&app, &ids(&listed)).await.len(),
        0,
        "nothing listed got through the storm"
    );
    assert!(fake
        .requests("/v1/events")
        .iter()
        .all(|r| r.answered == 429 || r.answered == 0));
    fake.state().storm = false;
    wait_all_done(&app, &ids(&listed)).await;
    wait_until("the waits to show in the metrics", || async {
        metric(&app, "stripe_worker_reconcile_rate_limited_total")
            .await
            .is_some_and(|n| n >= 2.0)
    })
    .await;
}

#[tokio::test]
async fn the_high_water_mark_survives_sigkill_and_the_next_worker_resumes_from_it() {
    let db = fresh_db().await;
    let setup = crate::helpers::connect(&db.url).await;
    setup.batch_execute(EFFECT_LOG).await.unwrap();
    let now = Utc::now().timestamp();
    // Spread over the 3-day start lookback: one 6-hour window after another.
    let events: Vec<Value> = (0..24)
        .map(|i| product_event(&unique("evt"), now - 70 * 3600 + i * 3 * 3600))
        .collect();
    let fake = fake_stripe(StripeState {
        events: text(&events),
        // The first worker lists three windows, then hangs on the fourth.
        events_gate: Some(3),
        ..Default::default()
    });
    let env = |key: &'static str| {
        [
            ("STRIPE_SECRET_KEY", key),
            ("STRIPE_API_BASE", fake.url.as_str()),
            ("RECONCILE_INTERVAL_SECS", "0.3"),
        ]
    };
    let first = WorkerProcess::spawn(&db.url, &env("sk_test_first")).await;
    wait_until(
        "three windows to complete and the fourth to hang",
        || async {
            let held = fake.requests("/v1/events").len() >= 4;
            let mark: Option<chrono::DateTime<Utc>> = setup
                .query_opt("select high_water_mark from stripe_catch_up", &[])
                .await
                .unwrap()
                .and_then(|r| r.get(0));
            held && mark.is_some()
        },
    )
    .await;
    let row = setup
        .query_one(
            "select high_water_mark, watching_since, run_status from stripe_catch_up",
            &[],
        )
        .await
        .unwrap();
    let (mark, since): (chrono::DateTime<Utc>, chrono::DateTime<Utc>) = (row.get(0), row.get(1));
    assert_eq!(row.get::<_, String>(2), "running");
    assert_eq!(
        mark.timestamp(),
        since.timestamp() + 3 * 6 * 3600 - 1,
        "three 6-hour windows done"
    );
    let first_pages = fake.requests("/v1/events");
    assert_eq!(
        first_pages[0].param("created[gte]"),
        Some(since.timestamp().to_string()),
        "the first run starts at now minus the start lookback"
    );
    let stored_before = setup
        .query_one("select count(*) from stripe_webhook_events", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);

    first.signal("KILL");
    let mut first = first;
    assert!(first
        .wait_exit(std::time::Duration::from_secs(10))
        .await
        .is_some());
    let after_kill: chrono::DateTime<Utc> = setup
        .query_one("select high_water_mark from stripe_catch_up", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after_kill, mark, "the mark is durable");

    fake.state().events_gate = None;
    let _second = WorkerProcess::spawn(&db.url, &env("sk_test_second")).await;
    wait_until("every event to be stored", || async {
        setup
            .query_one(
                "select count(*) from stripe_webhook_events where processing_status = 'processed'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == events.len() as i64
    })
    .await;
    // It waited out the dead worker's lease and resumed at the mark minus the overlap.
    let resumed = fake
        .requests("/v1/events")
        .into_iter()
        .find(|r| r.key == "sk_test_second")
        .unwrap();
    assert_eq!(
        resumed.param("created[gte]"),
        Some((mark.timestamp() - 3600).to_string())
    );
    assert!(stored_before > 0);
    let effects: i64 = setup
        .query_one("select count(*) from effect_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(effects, events.len() as i64, "each event applied once");
}

#[tokio::test]
async fn without_a_secret_key_there_is_no_catch_up() {
    let app = spawn_app_with(fresh_db().await, &[]).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(!text.contains("stripe_worker_reconcile"), "{text}");
    let mut out = Vec::new();
    stripe_worker::cli::status::run(
        &stripe_worker::cli::status::StatusArgs { json: false },
        &cli_env(&app),
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("catch-up: never ran"), "{out}");
}

#[tokio::test]
async fn on_a_single_pooled_connection_the_catch_up_and_live_deliveries_both_get_through() {
    let db = fresh_db().await;
    let now = Utc::now().timestamp();
    let listed: Vec<Value> = (0..300)
        .map(|i| product_event(&unique("evt"), now - 1200 + i))
        .collect();
    let fake = fake_stripe(StripeState {
        events: text(&listed),
        ..Default::default()
    });
    let mut env = catch_up_env(&fake, "sk_test_one_connection");
    // The catch-up never needs a second connection (it would wait for itself forever), and
    // deliveries never wait long for the one it uses.
    env.push(("DATABASE_POOL_SIZE".into(), "1".into()));
    let app = app_with(&db, &env).await;
    wait_until("the catch-up to be under way", || async {
        !stored_statuses(&app, &ids(&listed)).await.is_empty()
    })
    .await;
    let mut during = 0;
    for _ in 0..20 {
        let answer = app
            .post_event(&product_event(&unique("evt"), Utc::now().timestamp()))
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["status"], "processed", "{}", answer.body);
        if stored_statuses(&app, &ids(&listed)).await.len() < listed.len() {
            during += 1;
        }
    }
    assert!(
        during > 0,
        "deliveries were answered while the catch-up ran"
    );
    wait_all_done(&app, &ids(&listed)).await;
}
