//! `/metrics` and `/readyz`: on their own listener with METRICS_ADDR, a fixed reason word
//! instead of internal error text, and never in the way of webhook deliveries.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{empty_db, event, fresh_db, spawn_app_with, unique, TestApp};
use crate::processes::{free_port, WorkerProcess};

async fn get(url: String) -> (u16, String) {
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn with_metrics_addr_metrics_and_readyz_leave_the_public_listener() {
    let app = spawn_app_with(fresh_db().await, &[("METRICS_ADDR", "127.0.0.1:0")]).await;
    let ops = app
        .metrics_address
        .clone()
        .expect("the METRICS_ADDR listener");
    assert_ne!(ops, app.address);
    for path in ["/metrics", "/readyz"] {
        assert_eq!(
            get(format!("{}{path}", app.address)).await.0,
            404,
            "public {path}"
        );
    }
    assert_eq!(get(format!("{}/healthz", app.address)).await.0, 200);
    let id = unique("evt");
    let delivery = app
        .post_event(&event(
            &id,
            "product.created",
            json!({"id": unique("prod"), "object": "product", "name": "M"}),
        ))
        .await;
    assert_eq!(delivery.status, 200);
    let (status, text) = get(format!("{ops}/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "stripe_worker_deliveries_total{outcome=\"accepted\",reason=\"processed\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains("stripe_worker_retry_queue_due 0"), "{text}");
    assert_eq!(get(format!("{ops}/readyz")).await.0, 200);
    assert_eq!(get(format!("{ops}/healthz")).await.0, 200);
    assert_eq!(get(format!("{ops}/webhooks/stripe")).await.0, 404);
}

async fn readyz_body(app: &TestApp) -> (u16, serde_json::Value) {
    let resp = app.get("/readyz").await;
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn readyz_names_its_reason_in_one_word_and_nothing_more() {
    // No database listening at all.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let down = WorkerProcess::spawn(&nowhere, &[("RUST_LOG", "off")]).await;
    let (status, body) = get(format!("{}/readyz", down.url)).await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"status": "not ready", "reason": "database"})
    );

    let unmigrated = spawn_app_with(empty_db().await, &[]).await;
    let (status, body) = readyz_body(&unmigrated).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"status": "not ready", "reason": "migrations_pending"})
    );
}

#[tokio::test]
async fn a_storm_of_probes_and_scrapes_never_starves_deliveries_of_connections() {
    // One pooled connection, and a delivery waits at most 1 s for it before answering 503.
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("DATABASE_POOL_SIZE", "1"),
            ("DATABASE_ACQUIRE_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let probes: Vec<_> = (0..600)
        .map(|i| {
            let path = if i % 2 == 0 { "/metrics" } else { "/readyz" };
            tokio::spawn(get(format!("{}{path}", app.address)))
        })
        .collect();
    let mut statuses = Vec::new();
    for chunk in 0..8 {
        let events: Vec<_> = (0..5)
            .map(|_| {
                event(
                    &unique("evt"),
                    "product.created",
                    json!({"id": unique("prod"), "object": "product", "name": format!("P{chunk}")}),
                )
            })
            .collect();
        let batch = events.iter().map(|e| app.post_event(e));
        statuses.extend(
            futures_util::future::join_all(batch)
                .await
                .into_iter()
                .map(|a| a.status),
        );
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    for probe in probes {
        let (status, _) = probe.await.unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
}
