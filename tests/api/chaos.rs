//! Chaos: several workers on one database, PostgreSQL restarted under load, a worker
//! killed with SIGKILL under load, graceful SIGTERM. Assertions are on rows, counts and
//! statuses only; every wait is bounded; everything listens on 127.0.0.1.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{self, post_raw_to, unique, wait_until};
use crate::processes::{product_event, signed, PrivateCluster, WorkerProcess};
use crate::purchase::{Purchase, Shape};

/// Quiet children: the chaos provokes errors on purpose.
const QUIET: (&str, &str) = ("RUST_LOG", "off");

/// New buyers' checkouts (one-time price: each one issues a voucher), emails under `domain`.
fn checkouts(n: usize, domain: &str) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let email = format!("{}@{domain}", unique("buyer"));
            Purchase::new(&email, Some("price_demo_onetime")).checkout(Shape::Basil)
        })
        .collect()
}

/// Users and vouchers of the buyers under `domain`.
async fn effects(db_url: &str, domain: &str) -> (i64, i64) {
    let sql = helpers::connect(db_url).await;
    let pattern = format!("%@{domain}");
    let users: i64 = sql
        .query_one(
            "select count(*) from auth.users where email like $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .get(0);
    let vouchers: i64 = sql
        .query_one(
            "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account
             join auth.users u on u.id = a.user_id where u.email like $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .get(0);
    (users, vouchers)
}

/// Event ids stored with `status` among `ids`.
async fn stored(db_url: &str, ids: &[String], status: &str) -> HashSet<String> {
    let sql = helpers::connect(db_url).await;
    sql.query(
        "select stripe_event_id from stripe_webhook_events
         where stripe_event_id = any($1) and processing_status = $2",
        &[&ids, &status],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Posts each event (signed now) to `base`, at most `concurrency` at once. Answers in event
/// order: the HTTP status, or `None` for a transport error (connection refused or reset).
async fn deliver(base: &str, events: &[Value], concurrency: usize) -> Vec<Option<u16>> {
    deliver_counting(
        base.to_owned(),
        events.to_vec(),
        concurrency,
        Arc::new(AtomicUsize::new(0)),
    )
    .await
}

/// `deliver`, counting answers in `answered` as they come (owned arguments: it is spawned).
async fn deliver_counting(
    base: String,
    events: Vec<Value>,
    concurrency: usize,
    answered: Arc<AtomicUsize>,
) -> Vec<Option<u16>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("{base}/webhooks/stripe");
    futures_util::stream::iter(events)
        .map(|e| {
            let (body, header) = signed(&e);
            let (http, url, answered) = (http.clone(), url.clone(), answered.clone());
            async move {
                let status = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(body)
                    .send()
                    .await
                    .ok()
                    .map(|r| r.status().as_u16());
                answered.fetch_add(1, Ordering::Relaxed);
                status
            }
        })
        .buffered(concurrency)
        .collect()
        .await
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Redelivers every event until each is answered 200 (Stripe's retries, compressed).
async fn redeliver_until_all_200(base: &str, events: &[Value]) {
    let mut pending: Vec<Value> = events.to_vec();
    for _ in 0..20 {
        let answers = deliver(base, &pending, 8).await;
        pending = pending
            .into_iter()
            .zip(answers)
            .filter(|(_, a)| *a != Some(200))
            .map(|(e, _)| e)
            .collect();
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{} events never answered 200", pending.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_every_purchase_delivered_three_times_to_both_apply_each_once() {
    let db = helpers::fresh_db().await;
    let pool = ("DATABASE_POOL_SIZE", "8");
    let a = WorkerProcess::spawn(&db.url, &[QUIET, pool]).await;
    let b = WorkerProcess::spawn(&db.url, &[QUIET, pool]).await;
    let domain = format!("{}.two-workers.example", unique("d"));
    let events = checkouts(500, &domain);
    // Each event six times (three rounds, both workers), the copies of one event side by side.
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for e in &events {
        for _ in 0..3 {
            to_a.push(e.clone());
            to_b.push(e.clone());
        }
    }
    let (answers_a, answers_b) =
        tokio::join!(deliver(&a.url, &to_a, 12), deliver(&b.url, &to_b, 12));
    let not_ok = answers_a
        .iter()
        .chain(&answers_b)
        .filter(|s| **s != Some(200))
        .count();
    assert_eq!(not_ok, 0, "every delivery is answered 200");
    let ids = ids(&events);
    assert_eq!(stored(&db.url, &ids, "processed").await.len(), 500);
    let sql = helpers::connect(&db.url).await;
    let rows: i64 = sql
        .query_one(
            "select count(*) from stripe_webhook_events where stripe_event_id = any($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 500, "one row per event id");
    assert_eq!(
        effects(&db.url, &domain).await,
        (500, 500),
        "users, vouchers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_is_503_meanwhile_and_the_worker_recovers_alone() {
    let cluster = PrivateCluster::start().migrated().await;
    let url = cluster.url();
    let worker = WorkerProcess::spawn(&url, &[QUIET, ("DATABASE_ACQUIRE_TIMEOUT_SECS", "1")]).await;
    let events: Vec<Value> = (0..300).map(|_| product_event(&unique("evt"))).collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (base, events, answered) = (worker.url.clone(), events.clone(), answered.clone());
        tokio::spawn(deliver_counting(base, events, 4, answered))
    };
    wait_until("a third of the load to be answered", || async {
        answered.load(Ordering::Relaxed) >= 100
    })
    .await;
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.down()).await.unwrap();
    // While the database is down the worker stays up and answers 503.
    let probe = product_event(&unique("evt"));
    let (body, header) = signed(&probe);
    let http = reqwest::Client::new();
    let during = post_raw_to(
        &http,
        &format!("{}/webhooks/stripe", worker.url),
        body,
        Some(&header),
    )
    .await;
    assert_eq!(during.status, 503, "{:?}", during.body);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.up()).await.unwrap();
    let answers = load.await.unwrap();
    assert!(
        answers.iter().all(|a| matches!(a, Some(200 | 503))),
        "{answers:?}"
    );

    // Every event answered 200 is stored; the others are not lost, only not yet delivered.
    let ids = ids(&events);
    let processed = stored(&url, &ids, "processed").await;
    for (id, answer) in ids.iter().zip(&answers) {
        if *answer == Some(200) {
            assert!(
                processed.contains(id),
                "{id} was answered 200 but is not stored"
            );
        }
    }
    // The same process recovers alone; Stripe's redelivery completes the set.
    redeliver_until_all_200(&worker.url, &events).await;
    assert_eq!(stored(&url, &ids, "processed").await.len(), 300);
    redeliver_until_all_200(&worker.url, &[probe]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_with_sigkill_under_load_loses_nothing_and_applies_nothing_twice() {
    let db = helpers::fresh_db().await;
    let domain = format!("{}.sigkill.example", unique("d"));
    let events = checkouts(300, &domain);
    let worker = WorkerProcess::spawn(&db.url, &[QUIET]).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let load = {
        let (base, events, answered) = (worker.url.clone(), events.clone(), answered.clone());
        tokio::spawn(deliver_counting(base, events, 8, answered))
    };
    wait_until("a third of the load to be answered", || async {
        answered.load(Ordering::Relaxed) >= 100
    })
    .await;
    worker.signal("KILL");
    let answers = load.await.unwrap();
    drop(worker);

    // A row a crashed worker left in processing (its lease expired): the restarted worker's
    // retrier must reclaim and apply it.
    let orphan = checkouts(1, &domain).remove(0);
    let sql = helpers::connect(&db.url).await;
    sql.execute(
        "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, locked_by, locked_until)
         values ($1, $2, $3, 'processing', 'killed-worker', now() - interval '1 minute')",
        &[&orphan["id"].as_str().unwrap(), &orphan["type"].as_str().unwrap(), &orphan],
    )
    .await
    .unwrap();

    let ids = ids(&events);
    let processed = stored(&db.url, &ids, "processed").await;
    for (id, answer) in ids.iter().zip(&answers) {
        if *answer == Some(200) {
            assert!(processed.contains(id), "{id} was answered 200 but is lost");
        }
    }
    assert!(
        answers.iter().any(|a| *a != Some(200)),
        "the kill hit the load"
    );

    let restarted = WorkerProcess::spawn(&db.url, &[QUIET]).await;
    // Stripe redelivers everything it did not get a 200 for; here: everything, answered or not.
    redeliver_until_all_200(&restarted.url, &events).await;
    let orphan_id = orphan["id"].as_str().unwrap().to_owned();
    wait_until("the orphaned processing row to be reclaimed", || async {
        stored(&db.url, std::slice::from_ref(&orphan_id), "processed")
            .await
            .len()
            == 1
    })
    .await;
    assert_eq!(stored(&db.url, &ids, "processed").await.len(), 300);
    let left: i64 = sql
        .query_one(
            "select count(*) from stripe_webhook_events where processing_status = 'processing'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "no row stays in processing");
    assert_eq!(
        effects(&db.url, &domain).await,
        (301, 301),
        "users, vouchers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0() {
    let db = helpers::fresh_db().await;
    let sql = helpers::connect(&db.url).await;
    // Slow writes to products: the requests are still in flight when SIGTERM arrives.
    sql.batch_execute(
        "create function public.chaos_slow() returns trigger language plpgsql as
           $$ begin perform pg_sleep(1); return new; end $$;
         create trigger chaos_slow before insert or update on public.products
           for each row execute function public.chaos_slow();",
    )
    .await
    .unwrap();
    let mut worker = WorkerProcess::spawn(&db.url, &[QUIET]).await;
    let events: Vec<Value> = (0..4).map(|_| product_event(&unique("evt"))).collect();
    let in_flight = {
        let (base, events) = (worker.url.clone(), events.clone());
        tokio::spawn(deliver_counting(
            base,
            events,
            4,
            Arc::new(AtomicUsize::new(0)),
        ))
    };
    wait_until("the requests to reach the database", || async {
        let n: i64 = sql
            .query_one(
                "select count(*) from pg_stat_activity where wait_event = 'PgSleep'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 4
    })
    .await;
    worker.signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = deliver(&worker.url, &[product_event(&unique("evt"))], 1).await;
    assert_ne!(late[0], Some(200), "a new request after SIGTERM is refused");

    assert_eq!(in_flight.await.unwrap(), vec![Some(200); 4]);
    let status = worker
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("the worker exits after draining");
    assert_eq!(status.code(), Some(0));
    assert_eq!(stored(&db.url, &ids(&events), "processed").await.len(), 4);
}
