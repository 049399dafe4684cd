//! product.* and price.*: upserts, deactivation, out-of-order arrival, stale snapshots.

use serde_json::json;

use crate::helpers::{event, spawn_app, unique};

#[tokio::test]
async fn products_and_prices_are_upserted_and_deactivated() {
    let app = spawn_app().await;
    let (product, price) = (unique("prod"), unique("price"));
    let mut e = event(
        &unique("evt"),
        "product.created",
        json!({
            "id": product, "object": "product", "active": true, "name": "Monthly", "description": "d",
            "images": ["https://img/1.png"], "metadata": {"duration_months": "1"}
        }),
    );
    assert_eq!(app.post_event(&e).await.body["status"], "processed");
    let created = e["created"].as_i64().unwrap();
    e = event(
        &unique("evt"),
        "price.created",
        json!({
            "id": price, "object": "price", "product": product, "active": true, "currency": "EUR",
            "unit_amount": 900, "type": "recurring", "lookup_key": "monthly",
            "recurring": {"interval": "month", "interval_count": 1, "trial_period_days": null},
            "metadata": {}
        }),
    );
    assert_eq!(app.post_event(&e).await.body["status"], "processed");
    let row = app
        .sql
        .query_one(
            "select p.name, p.image, p.metadata->>'duration_months', pr.unit_amount, pr.currency,
                    pr.type::text, pr.interval::text, pr.interval_count, pr.active, pr.lookup_key
             from products p join prices pr on pr.product_id = p.id where pr.id = $1",
            &[&price],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "Monthly");
    assert_eq!(row.get::<_, &str>(1), "https://img/1.png");
    assert_eq!(row.get::<_, &str>(2), "1");
    assert_eq!(row.get::<_, i64>(3), 900);
    assert_eq!(row.get::<_, &str>(4), "eur");
    assert_eq!(
        (
            row.get::<_, &str>(5),
            row.get::<_, &str>(6),
            row.get::<_, i32>(7)
        ),
        ("recurring", "month", 1)
    );
    assert!(row.get::<_, bool>(8));
    assert_eq!(row.get::<_, &str>(9), "monthly");

    let mut deleted = event(
        &unique("evt"),
        "price.deleted",
        json!({"id": price, "object": "price", "product": product, "active": false}),
    );
    deleted["created"] = json!(created + 5);
    assert_eq!(app.post_event(&deleted).await.body["status"], "processed");
    let mut deleted = event(
        &unique("evt"),
        "product.deleted",
        json!({"id": product, "object": "product", "active": false}),
    );
    deleted["created"] = json!(created + 5);
    assert_eq!(app.post_event(&deleted).await.body["status"], "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from prices where id = '{price}' and not active"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}' and not active"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_price_may_arrive_before_its_product() {
    let app = spawn_app().await;
    let (product, price) = (unique("prod"), unique("price"));
    let e = event(
        &unique("evt"),
        "price.created",
        json!({
            "id": price, "object": "price", "product": {"id": product, "object": "product"},
            "currency": "usd", "unit_amount": 4900, "type": "one_time", "active": true
        }),
    );
    assert_eq!(app.post_event(&e).await.body["status"], "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}' and not active"
        ))
        .await,
        1
    );
    let e = event(
        &unique("evt"),
        "product.created",
        json!({"id": product, "object": "product", "name": "Pack", "active": true}),
    );
    assert_eq!(app.post_event(&e).await.body["status"], "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}' and active and name = 'Pack'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn an_older_snapshot_never_overwrites_a_newer_one_and_deletion_wins() {
    let app = spawn_app().await;
    let product = unique("prod");
    let at = |secs: i64, name: &str, kind: &str| {
        let mut e = event(
            &unique("evt"),
            kind,
            json!({"id": product, "object": "product", "name": name, "active": true}),
        );
        e["created"] = json!(1_700_000_000 + secs);
        e
    };
    let newer = at(20, "newer", "product.updated");
    let older = at(10, "older", "product.updated");
    assert_eq!(app.post_event(&newer).await.body["status"], "processed");
    let answer = app.post_event(&older).await;
    assert_eq!(answer.body["status"], "processed");
    let note = app.event_note(older["id"].as_str().unwrap()).await;
    assert!(note.unwrap().starts_with("stale"));
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}' and name = 'newer'"
        ))
        .await,
        1
    );
    // A late deletion still applies; later updates after it do not.
    assert_eq!(
        app.post_event(&at(5, "gone", "product.deleted")).await.body["status"],
        "processed"
    );
    assert_eq!(
        app.post_event(&at(30, "revived?", "product.updated"))
            .await
            .body["status"],
        "processed"
    );
    assert_eq!(app.count(&format!("select count(*) from products where id = '{product}' and not active and name = 'newer'")).await, 1);
}

#[tokio::test]
async fn an_older_price_snapshot_writes_neither_the_price_nor_a_placeholder_product() {
    let app = spawn_app().await;
    let (price, product, other) = (unique("price"), unique("prod"), unique("prod"));
    let at = |secs: i64, amount: i64, product: &str| {
        let mut e = event(
            &unique("evt"),
            "price.updated",
            json!({
                "id": price, "object": "price", "product": product, "currency": "usd",
                "unit_amount": amount, "type": "one_time", "active": true
            }),
        );
        e["created"] = json!(1_700_000_000 + secs);
        e
    };
    assert_eq!(
        app.post_event(&at(20, 900, &product)).await.body["status"],
        "processed"
    );
    // Older, and naming a product nobody stored: both of its writes are skipped.
    let older = at(10, 500, &other);
    assert_eq!(app.post_event(&older).await.body["status"], "processed");
    let note = app.event_note(older["id"].as_str().unwrap()).await;
    assert!(note.unwrap().starts_with("stale"));
    assert_eq!(
        app.count(&format!(
            "select count(*) from prices where id = '{price}' and unit_amount = 900 and product_id = '{product}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{other}'"
        ))
        .await,
        0
    );
    // A newer one applies both.
    assert_eq!(
        app.post_event(&at(30, 1200, &other)).await.body["status"],
        "processed"
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from prices where id = '{price}' and unit_amount = 1200 and product_id = '{other}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{other}' and not active"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn the_2020_catalog_fixtures_apply() {
    let app = spawn_app().await;
    for file in [
        include_str!("../fixtures/stripe-events-2020/product_created.json"),
        include_str!("../fixtures/stripe-events-2020/price_created.json"),
        include_str!("../fixtures/stripe-events-2020/product_updated.json"),
        include_str!("../fixtures/stripe-events-2020/price_updated.json"),
    ] {
        let mut e: serde_json::Value = serde_json::from_str(file).unwrap();
        e["id"] = json!(unique("evt"));
        let answer = app.post_event(&e).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["status"], "processed", "{}", e["type"]);
    }
    assert!(
        app.count("select count(*) from prices where id not like 'price_demo%'")
            .await
            >= 1
    );
}
