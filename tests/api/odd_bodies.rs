//! Signed bodies PostgreSQL cannot hold as they are: stored losslessly (the exact bytes beside
//! a storable jsonb) or refused with a 400 that says why; never a 503, never counted as an
//! outage.

use crate::helpers::{spawn_app, unique, TestApp};

fn product_body(id: &str, product: &str, name_json: &str, extra: &str) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","type":"product.created","created":{},"livemode":false,"data":{{"object":{{"id":"{product}","object":"product","name":{name_json}{extra}}}}}}}"#,
        chrono::Utc::now().timestamp()
    )
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.text().await.unwrap()
}

#[tokio::test]
async fn unpaired_surrogates_are_stored_with_the_exact_body_beside_them() {
    let app = spawn_app().await;
    for name in [
        r#""a\ud800b""#,
        r#""\udc00""#,
        r#""x\u0000\ud83d\ude00\ud83d""#,
    ] {
        let (id, product) = (unique("evt"), unique("prod"));
        let body = product_body(&id, &product, name, "");
        let answer = app.post_signed(body.clone()).await;
        assert_eq!(answer.status, 200, "{name}: {:?}", answer.body);
        assert_eq!(answer.body["status"], "processed", "{name}");
        let row = app
            .sql
            .query_one(
                "select event_raw_body, event_data->'data'->'object'->>'name'
                 from stripe_webhook_events where stripe_event_id = $1",
                &[&id],
            )
            .await
            .unwrap();
        let raw: Option<Vec<u8>> = row.get(0);
        assert_eq!(
            raw.as_deref(),
            Some(body.as_bytes()),
            "{name}: exact bytes kept"
        );
        let stored_name: String = row.get(1);
        let product_name: String = app
            .sql
            .query_one("select name from products where id = $1", &[&product])
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored_name, product_name);
        assert!(product_name.contains('\u{fffd}'), "{product_name:?}");
    }
    // A body jsonb holds as it is keeps no second copy; a paired surrogate is fine.
    let (id, product) = (unique("evt"), unique("prod"));
    let answer = app
        .post_signed(product_body(&id, &product, r#""\ud83d\ude00""#, ""))
        .await;
    assert_eq!(answer.status, 200);
    let raw: Option<Vec<u8>> = app
        .sql
        .query_one(
            "select event_raw_body from stripe_webhook_events where stripe_event_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, None);
    assert!(!metrics(&app).await.contains("outcome=\"unavailable\""));
}

#[tokio::test]
async fn a_number_beyond_postgresql_numeric_is_a_400_with_the_reason_not_a_503() {
    let app = spawn_app().await;
    let (id, product) = (unique("evt"), unique("prod"));
    let body = product_body(&id, &product, r#""P""#, r#","weight":1e1000000"#);
    let answer = app.post_signed(body).await;
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let reason = answer.body["error"].as_str().unwrap();
    assert!(
        reason.contains("cannot store") && reason.contains("numeric"),
        "{reason}"
    );
    assert_eq!(app.event_status(&id).await, None, "nothing stored");
    // Redelivered, the same answer; the database stays available for everything else.
    assert_eq!(
        app.post_signed(product_body(
            &id,
            &product,
            r#""P""#,
            r#","weight":1e1000000"#
        ))
        .await
        .status,
        400
    );
    let fine = unique("evt");
    assert_eq!(
        app.post_signed(product_body(&fine, &unique("prod"), r#""P""#, ""))
            .await
            .status,
        200
    );
    let text = metrics(&app).await;
    assert!(
        text.contains(
            "stripe_worker_deliveries_total{outcome=\"rejected\",reason=\"unstorable_body\"} 2"
        ),
        "{text}"
    );
    assert!(!text.contains("outcome=\"unavailable\""), "{text}");
}
