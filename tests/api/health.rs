//! `/healthz`, `/readyz`, `/metrics`.

use crate::helpers::{empty_db, event, spawn_app, spawn_app_with, unique};

#[tokio::test]
async fn healthz_and_readyz_answer_200_on_a_migrated_database() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);
}

#[tokio::test]
async fn readyz_is_503_while_migrations_are_pending() {
    let app = spawn_app_with(empty_db().await, &[]).await;
    assert_eq!(app.get("/healthz").await.status().as_u16(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status().as_u16(), 503);
}

#[tokio::test]
async fn metrics_expose_deliveries_events_and_queue() {
    let app = spawn_app().await;
    let id = unique("evt");
    app.post_event(&event(
        &id,
        "product.created",
        serde_json::json!({"id": unique("prod"), "object": "product", "name": "M"}),
    ))
    .await;
    app.post_raw(b"{}".to_vec(), None).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(
            "stripe_worker_deliveries_total{outcome=\"accepted\",reason=\"processed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "stripe_worker_deliveries_total{outcome=\"rejected\",reason=\"missing_signature\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "stripe_worker_events_total{type=\"product.created\",status=\"processed\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("stripe_worker_processing_seconds_count 1"),
        "{text}"
    );
    assert!(text.contains("stripe_worker_retry_queue_due 0"), "{text}");
    assert!(text.contains("stripe_worker_db_pool_max 4"), "{text}");
}
