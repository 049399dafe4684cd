//! The webhook endpoint and the state machine behind it.

use serde_json::json;

use crate::helpers::{event, fresh_db, spawn_app, spawn_app_with, unique, SECRET};

fn product_event(event_id: &str, product_id: &str) -> serde_json::Value {
    event(
        event_id,
        "product.created",
        json!({"id": product_id, "object": "product", "name": "Pro", "active": true}),
    )
}

#[tokio::test]
async fn a_signed_event_is_stored_processed_and_answered_200() {
    let app = spawn_app().await;
    let (id, product) = (unique("evt"), unique("prod"));
    let answer = app.post_event(&product_event(&id, &product)).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({"event_id": id, "status": "processed"}));
    let row = app
        .sql
        .query_one(
            "select processing_status, event_type, event_data->>'id', livemode, api_version,
                    event_created_at is not null, processed_at is not null, request_id is not null,
                    locked_by is null, retry_count
             from stripe_webhook_events where stripe_event_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "processed");
    assert_eq!(row.get::<_, &str>(1), "product.created");
    assert_eq!(row.get::<_, &str>(2), id);
    assert!(!row.get::<_, bool>(3));
    assert_eq!(row.get::<_, &str>(4), "2025-03-31.basil");
    assert!(
        row.get::<_, bool>(5)
            && row.get::<_, bool>(6)
            && row.get::<_, bool>(7)
            && row.get::<_, bool>(8)
    );
    assert_eq!(row.get::<_, i32>(9), 0);
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}' and active"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn the_raw_body_is_what_gets_verified_and_stored() {
    let app = spawn_app().await;
    let id = unique("evt");
    // Pretty-printed, odd key order, unicode: re-serializing would break the signature.
    let body = format!(
        "{{\n  \"type\": \"product.created\",\n  \"id\": \"{id}\",\n  \"created\": {},\n  \"data\": {{ \"object\": {{ \"id\": \"{}\", \"name\": \"Caf\\u00e9 \u{1F600}\" }} }}\n}}",
        chrono::Utc::now().timestamp(),
        unique("prod")
    );
    let answer = app.post_signed(body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let name: String = app
        .sql
        .query_one("select event_data->'data'->'object'->>'name' from stripe_webhook_events where stripe_event_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Café \u{1F600}");
}

#[tokio::test]
async fn bad_signatures_are_400_and_store_nothing() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&product_event("evt_bad", "prod_bad")).unwrap();
    let now = chrono::Utc::now().timestamp();
    let other = stripe_worker::signature::WebhookSecret::parse("whsec_someone_else").unwrap();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "missing Stripe-Signature header"),
        (Some("garbage".into()), "malformed"),
        (Some(format!("t={now},v0=abc")), "no v1 signature"),
        (Some(other.sign(now, &body)), "does not match"),
        (Some(app.secret.sign(now - 301, &body)), "too old"),
    ];
    for (header, expected) in cases {
        let answer = app.post_raw(body.clone(), header.as_deref()).await;
        assert_eq!(answer.status, 400, "{header:?}");
        let msg = answer.body["error"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(expected), "{header:?}: {msg}");
        assert!(!msg.contains(SECRET), "the secret leaked into an answer");
    }
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        0
    );
    assert_eq!(
        app.count("select count(*) from products where id = 'prod_bad'")
            .await,
        0
    );
}

#[tokio::test]
async fn future_timestamps_and_rotated_secrets_are_accepted() {
    let app = spawn_app_with(
        fresh_db().await,
        &[("STRIPE_WEBHOOK_SECRET", "whsec_old_one,whsec_new_one")],
    )
    .await;
    for (secret, skew) in [("whsec_old_one", 0), ("whsec_new_one", 600)] {
        let id = unique("evt");
        let body = serde_json::to_vec(&product_event(&id, &unique("prod"))).unwrap();
        let s = stripe_worker::signature::WebhookSecret::parse(secret).unwrap();
        let header = s.sign(chrono::Utc::now().timestamp() + skew, &body);
        let answer = app.post_raw(body, Some(&header)).await;
        assert_eq!(answer.status, 200, "{secret}: {:?}", answer.body);
        assert_eq!(answer.body["status"], "processed");
    }
}

#[tokio::test]
async fn signed_garbage_and_events_without_id_are_400_and_store_nothing() {
    let app = spawn_app().await;
    for body in [
        &b"not json at all"[..],
        b"[1,2,3]",
        br#"{"type":"product.created"}"#,
        br#"{"id":"evt_x"}"#,
        b"\xff\xfe",
    ] {
        let answer = app.post_signed(body.to_vec()).await;
        assert_eq!(answer.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert!(answer.body["error"].is_string());
    }
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        0
    );
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_413_and_store_nothing() {
    let app = spawn_app().await;
    let padding = "x".repeat(stripe_worker::http::MAX_BODY_BYTES);
    let mut ev = product_event(&unique("evt"), &unique("prod"));
    ev["padding"] = json!(padding);
    let body = serde_json::to_vec(&ev).unwrap();
    let answer = app.post_signed(body).await;
    assert_eq!(answer.status, 413);
    // Just under the limit is fine.
    let mut ev = product_event(&unique("evt"), &unique("prod"));
    ev["padding"] = json!("x".repeat(stripe_worker::http::MAX_BODY_BYTES - 4096));
    assert_eq!(app.post_event(&ev).await.status, 200);
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        1
    );
}

#[tokio::test]
async fn unknown_types_and_thin_events_are_stored_and_ignored() {
    let app = spawn_app().await;
    let unknown = unique("evt");
    let answer = app
        .post_event(&event(
            &unknown,
            "issuing_card.created",
            json!({"id": "ic_1"}),
        ))
        .await;
    assert_eq!(
        answer.body,
        json!({"event_id": unknown, "status": "ignored"})
    );
    let thin = unique("evt");
    let body = json!({"id": thin, "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered",
                      "livemode": false, "created": "2024-09-17T06:20:52.246Z",
                      "related_object": {"id": "mtr_1", "type": "billing.meter", "url": "/v1/billing/meters/mtr_1"}});
    let answer = app.post_event(&body).await;
    assert_eq!(answer.body, json!({"event_id": thin, "status": "ignored"}));
    assert_eq!(app.event_status(&unknown).await.as_deref(), Some("ignored"));
    let note = app.event_note(&thin).await;
    assert!(note.unwrap().contains("thin event"));
}

#[tokio::test]
async fn a_redelivery_is_a_duplicate_that_applies_nothing() {
    let app = spawn_app().await;
    let (id, product) = (unique("evt"), unique("prod"));
    let ev = product_event(&id, &product);
    assert_eq!(app.post_event(&ev).await.body["status"], "processed");
    // Someone edits the product in between; a redelivery must not write it back.
    app.sql
        .execute(
            "update products set name = 'edited' where id = $1",
            &[&product],
        )
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            app.post_event(&ev).await.body,
            json!({"event_id": id, "status": "duplicate"})
        );
    }
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        1
    );
    let name: String = app
        .sql
        .query_one("select name from products where id = $1", &[&product])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "edited");
}

#[tokio::test]
async fn concurrent_deliveries_of_one_event_apply_it_once() {
    let app = spawn_app().await;
    let second = spawn_app_with(
        crate::helpers::TestDb {
            name: app.db.name.clone(),
            url: app.db.url.clone(),
        },
        &[],
    )
    .await;
    // A trigger counts how often the effect is written.
    app.sql
        .batch_execute(
            "create table effect_log (product_id text);
             create function log_effect() returns trigger language plpgsql as
               $$ begin insert into effect_log values (new.id); return new; end $$;
             create trigger log_effect after insert or update on products for each row execute function log_effect();",
        )
        .await
        .unwrap();
    let (id, product) = (unique("evt"), unique("prod"));
    let ev = product_event(&id, &product);
    let posts = (0..24).map(|i| {
        let target = if i % 2 == 0 { &app } else { &second };
        target.post_event(&ev)
    });
    let answers = futures_util::future::join_all(posts).await;
    let statuses: Vec<String> = answers
        .iter()
        .map(|a| a.body["status"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert!(answers.iter().all(|a| a.status == 200), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| *s == "processed").count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "duplicate").count(),
        23,
        "{statuses:?}"
    );
    assert_eq!(
        app.count("select count(*) from stripe_webhook_events")
            .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from effect_log where product_id = '{product}'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_delivery_whose_row_another_writer_stores_meanwhile_is_rolled_back_whole() {
    let app = spawn_app().await;
    let (id, product) = (unique("evt"), unique("prod"));
    // Another writer, which does not take the worker's turn on the id, holds the id's row
    // uncommitted while the delivery runs: the delivery's own row must then wait for it and,
    // once it commits, give way, taking the handler's effects with it.
    let mut other = crate::helpers::connect(&app.db.url).await;
    let held = other.transaction().await.unwrap();
    held.execute(
        "insert into stripe_webhook_events
           (stripe_event_id, event_type, event_data, livemode, request_id, processing_status, processed_at)
         values ($1, 'product.created', '{}'::jsonb, false, 'elsewhere', 'processed', now())",
        &[&id],
    )
    .await
    .unwrap();
    let ev = product_event(&id, &product);
    let blocked = async {
        crate::helpers::wait_until("the delivery's row to wait for the held one", || async {
            app.count(
                "select count(*) from pg_stat_activity
                 where wait_event_type = 'Lock' and query like '%insert into public.stripe_webhook_events%'",
            )
            .await
                == 1
        })
        .await;
        held.commit().await.unwrap();
    };
    let (answer, ()) = futures_util::join!(app.post_event(&ev), blocked);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, json!({"event_id": id, "status": "duplicate"}));
    let row = app
        .sql
        .query_one(
            "select request_id, event_data::text from stripe_webhook_events where stripe_event_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "elsewhere");
    assert_eq!(row.get::<_, &str>(1), "{}");
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}'"
        ))
        .await,
        0
    );
    // The connection went back to the pool outside any transaction, and the next event is
    // applied as usual.
    assert_eq!(
        app.count(
            "select count(*) from pg_stat_activity
             where datname = current_database() and state like 'idle in transaction%'"
        )
        .await,
        0
    );
    let (next, next_product) = (unique("evt"), unique("prod"));
    let answer = app.post_event(&product_event(&next, &next_product)).await;
    assert_eq!(answer.body["status"], "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{next_product}'"
        ))
        .await,
        1
    );
}

const FAIL_PRODUCTS: &str = "
create function fail_products() returns trigger language plpgsql as
  $$ begin raise exception 'products are read-only today'; end $$;
create trigger fail_products before insert or update on products for each row execute function fail_products();";

#[tokio::test]
async fn a_failing_handler_leaves_no_partial_effects_and_the_retrier_applies_it_later() {
    // Long backoff first, so the failed state can be inspected before the retry.
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await;
    app.sql.batch_execute(FAIL_PRODUCTS).await.unwrap();
    let (id, product) = (unique("evt"), unique("prod"));
    let answer = app
        .post_event(&event(
            &id,
            "price.created",
            json!({
                "id": unique("price"), "object": "price", "product": product, "currency": "usd",
                "unit_amount": 500, "type": "one_time", "active": true
            }),
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["status"], "failed");
    let row = app
        .sql
        .query_one(
            "select processing_status, retry_count, error_message, next_attempt_at > now() + interval '20 minutes'
             from stripe_webhook_events where stripe_event_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "failed");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row
        .get::<_, &str>(2)
        .contains("products are read-only today"));
    assert!(row.get::<_, bool>(3), "backoff schedules the retry later");
    // Nothing of the handler's work survived: no price, no placeholder product, no ordering key.
    assert_eq!(
        app.count("select count(*) from prices").await,
        app.count("select count(*) from prices where id like 'price_demo%'")
            .await
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count("select count(*) from stripe_object_versions")
            .await,
        0
    );

    // The cause is fixed; once due, the retrier applies it.
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    app.sql
        .execute(
            "update stripe_webhook_events set next_attempt_at = now() where stripe_event_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    app.wait_for_status(&id, "processed").await;
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}'"
        ))
        .await,
        1
    );
    let row = app.sql.query_one("select error_message, retry_count from stripe_webhook_events where stripe_event_id = $1", &[&id]).await.unwrap();
    assert_eq!(row.get::<_, Option<&str>>(0), None);
    assert_eq!(row.get::<_, i32>(1), 1);
}

#[tokio::test]
async fn an_event_that_keeps_failing_ends_dead() {
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_MAX_ATTEMPTS", "3"),
            ("RETRY_BASE_DELAY_SECS", "0.05"),
        ],
    )
    .await;
    app.sql.batch_execute(FAIL_PRODUCTS).await.unwrap();
    let id = unique("evt");
    assert_eq!(
        app.post_event(&product_event(&id, &unique("prod")))
            .await
            .body["status"],
        "failed"
    );
    app.wait_for_status(&id, "dead").await;
    let row = app.sql.query_one("select retry_count, next_attempt_at from stripe_webhook_events where stripe_event_id = $1", &[&id]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert_eq!(row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(1), None);
    // A redelivery of a dead event does not resurrect it (replay is the operator's tool).
    assert_eq!(
        app.post_event(&product_event(&id, "prod_other")).await.body["status"],
        "duplicate"
    );
}

#[tokio::test]
async fn a_redelivery_of_a_failed_event_retries_it_at_once() {
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await;
    app.sql.batch_execute(FAIL_PRODUCTS).await.unwrap();
    let (id, product) = (unique("evt"), unique("prod"));
    let ev = product_event(&id, &product);
    assert_eq!(app.post_event(&ev).await.body["status"], "failed");
    app.sql
        .batch_execute("drop trigger fail_products on products")
        .await
        .unwrap();
    assert_eq!(app.post_event(&ev).await.body["status"], "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from products where id = '{product}'"
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn a_burst_of_redeliveries_answers_finished_ones_and_retries_failed_ones_once() {
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await;
    app.sql
        .batch_execute(
            "create function fail_some_products() returns trigger language plpgsql as
               $$ begin if new.id like 'prod_fail%' then raise exception 'not today'; end if;
                  return new; end $$;
             create trigger fail_some_products before insert or update on products
               for each row execute function fail_some_products();
             create table effect_log (product_id text);
             create function log_effect() returns trigger language plpgsql as
               $$ begin insert into effect_log values (new.id); return new; end $$;
             create trigger log_effect after insert or update on products
               for each row execute function log_effect();",
        )
        .await
        .unwrap();
    let done: Vec<_> = (0..20)
        .map(|_| product_event(&unique("evt"), &unique("prod_ok")))
        .collect();
    let failed: Vec<_> = (0..10)
        .map(|_| product_event(&unique("evt"), &unique("prod_fail")))
        .collect();
    for ev in &done {
        assert_eq!(app.post_event(ev).await.body["status"], "processed");
    }
    for ev in &failed {
        assert_eq!(app.post_event(ev).await.body["status"], "failed");
    }
    app.sql
        .batch_execute("drop trigger fail_some_products on products; truncate effect_log")
        .await
        .unwrap();
    // Every event redelivered three times at once, so their status probes can share a query.
    let burst: Vec<_> = (0..3).flat_map(|_| done.iter().chain(&failed)).collect();
    let answers = futures_util::future::join_all(burst.iter().map(|ev| app.post_event(ev))).await;
    let mut by_event: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        by_event
            .entry(a.body["event_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(a.body["status"].as_str().unwrap().to_owned());
    }
    for ev in &done {
        let id = ev["id"].as_str().unwrap();
        assert_eq!(by_event[id], ["duplicate"; 3], "{id}");
    }
    for ev in &failed {
        let id = ev["id"].as_str().unwrap();
        let mut statuses = by_event[id].clone();
        statuses.sort();
        assert_eq!(statuses, ["duplicate", "duplicate", "processed"], "{id}");
    }
    // Each failed product was written once, by its retry; the finished ones not again.
    assert_eq!(app.count("select count(*) from effect_log").await, 10);
    assert_eq!(
        app.count(
            "select count(*) from stripe_webhook_events where processing_status = 'processed'"
        )
        .await,
        30
    );
}

#[tokio::test]
async fn rows_stuck_in_processing_and_pending_rows_are_picked_up() {
    let app = spawn_app().await;
    let (stuck, pending) = (unique("evt"), unique("evt"));
    for (id, status) in [(&stuck, "processing"), (&pending, "pending")] {
        let ev = product_event(id, &unique("prod"));
        app.sql
            .execute(
                "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, locked_by, locked_until)
                 values ($1, 'product.created', $2, $3, 'crashed-worker', now() - interval '1 minute')",
                &[id, &ev, &status],
            )
            .await
            .unwrap();
    }
    app.wait_for_status(&stuck, "processed").await;
    app.wait_for_status(&pending, "processed").await;
    assert_eq!(
        app.count("select count(*) from products where name = 'Pro'")
            .await,
        2
    );
}

#[tokio::test]
async fn a_live_lease_is_respected() {
    let app = spawn_app().await;
    let (live, expired) = (unique("evt"), unique("evt"));
    let live_event = product_event(&live, &unique("prod"));
    for (id, lease) in [(&live, "1 hour"), (&expired, "-1 minute")] {
        app.sql
            .execute(
                "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, locked_by, locked_until)
                 values ($1, 'product.created', $2, 'processing', 'other-worker', now() + $3::text::interval)",
                &[id, &product_event(id, &unique("prod")), &lease],
            )
            .await
            .unwrap();
    }
    // Another worker holds `live`: a redelivery is a duplicate.
    assert_eq!(
        app.post_event(&live_event).await.body["status"],
        "duplicate"
    );
    // The retrier has run (it reclaimed the expired lease) and left the live one alone.
    app.wait_for_status(&expired, "processed").await;
    assert_eq!(app.event_status(&live).await.as_deref(), Some("processing"));
    let holder: String = app
        .sql
        .query_one(
            "select locked_by from stripe_webhook_events where stripe_event_id = $1",
            &[&live],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, "other-worker");
}

#[tokio::test]
async fn two_retriers_never_claim_the_same_row() {
    let app = spawn_app_with(fresh_db().await, &[("RETRY_POLL_INTERVAL_SECS", "3600")]).await;
    insert_due_failed(&app, 60).await;
    let pipelines: Vec<_> = (0..4)
        .map(|i| pipeline_for(&app.db.url, &format!("claimer-{i}")))
        .collect();
    let claims = futures_util::future::join_all(pipelines.iter().map(|p| async move {
        let mut mine = Vec::new();
        loop {
            let batch = p.claim_due(7).await.unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch);
        }
    }))
    .await;
    let mut all: Vec<_> = claims.iter().flatten().copied().collect();
    assert_eq!(all.len(), 60);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 60, "a row was claimed twice");
}

#[tokio::test]
async fn a_claimer_skips_rows_another_holds_without_waiting() {
    let app = spawn_app_with(fresh_db().await, &[("RETRY_POLL_INTERVAL_SECS", "3600")]).await;
    insert_due_failed(&app, 30).await;
    // Another worker is in the middle of 10 rows.
    let mut holder = crate::helpers::connect(&app.db.url).await;
    let tx = holder.transaction().await.unwrap();
    let mut held: Vec<uuid::Uuid> = tx
        .query(
            "select id from stripe_webhook_events order by id limit 10 for update",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let first = pipeline_for(&app.db.url, "claimer-1")
        .claim_due(100)
        .await
        .unwrap();
    assert_eq!(first.len(), 20);
    assert!(
        first.iter().all(|id| !held.contains(id)),
        "a held row was claimed"
    );
    tx.commit().await.unwrap();
    // Released: the next claimer gets exactly those 10 (the 20 are leased to claimer-1).
    let mut second = pipeline_for(&app.db.url, "claimer-2")
        .claim_due(100)
        .await
        .unwrap();
    second.sort();
    held.sort();
    assert_eq!(second, held);
}

/// `n` failed events due for a retry, as the retrier finds them.
async fn insert_due_failed(app: &crate::helpers::TestApp, n: usize) {
    for _ in 0..n {
        let id = unique("evt");
        app.sql
            .execute(
                "insert into stripe_webhook_events (stripe_event_id, event_type, event_data, processing_status, next_attempt_at, retry_count)
                 values ($1, 'product.created', $2, 'failed', now() - interval '1 second', 1)",
                &[&id, &product_event(&id, &unique("prod"))],
            )
            .await
            .unwrap();
    }
}

fn pipeline_for(db_url: &str, worker_id: &str) -> stripe_worker::ingest::Pipeline {
    let mut env = crate::helpers::base_env(db_url);
    env.insert("WORKER_ID".into(), worker_id.into());
    let settings = stripe_worker::config::PipelineSettings::from_source(&env).unwrap();
    stripe_worker::ingest::Pipeline::new(&settings).unwrap()
}

#[tokio::test]
async fn the_livemode_guard_ignores_the_other_mode() {
    let app = spawn_app_with(fresh_db().await, &[("STRIPE_LIVEMODE", "true")]).await;
    let (test_evt, live_evt) = (unique("evt"), unique("evt"));
    assert_eq!(
        app.post_event(&product_event(&test_evt, &unique("prod")))
            .await
            .body["status"],
        "ignored"
    );
    let mut live = product_event(&live_evt, &unique("prod"));
    live["livemode"] = json!(true);
    assert_eq!(app.post_event(&live).await.body["status"], "processed");
}

#[tokio::test]
async fn a_signed_event_with_a_nul_escape_is_stored_not_bounced() {
    let app = spawn_app().await;
    let (id, product) = (unique("evt"), unique("prod"));
    let body = format!(
        r#"{{"id":"{id}","type":"product.created","created":{},"data":{{"object":{{"id":"{product}","name":"a\u0000b"}}}}}}"#,
        chrono::Utc::now().timestamp()
    );
    let answer = app.post_signed(body).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "processed");
    let name: String = app
        .sql
        .query_one("select name from products where id = $1", &[&product])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "a\u{fffd}b");
}

#[tokio::test]
async fn an_invalid_object_is_dead_at_once_not_retried() {
    let app = spawn_app().await;
    // An object that does not parse, and one whose status no API version has: no retry can
    // change either until the code does.
    let unparseable = unique("evt");
    let unknown_status = unique("evt");
    let events = [
        event(
            &unparseable,
            "charge.succeeded",
            json!({"object": "charge"}),
        ),
        event(
            &unknown_status,
            "customer.subscription.updated",
            json!({"id": unique("sub"), "object": "subscription", "customer": unique("cus"), "status": "sleeping"}),
        ),
    ];
    for e in &events {
        let answer = app.post_event(e).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["status"], "failed");
    }
    for (id, error) in [
        (&unparseable, "invalid charge: missing field `id`"),
        (
            &unknown_status,
            "invalid subscription: unknown status \"sleeping\"",
        ),
    ] {
        let row = app
            .sql
            .query_one(
                "select processing_status, retry_count, next_attempt_at, error_message
                 from stripe_webhook_events where stripe_event_id = $1",
                &[id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "dead", "{id}");
        assert_eq!(row.get::<_, i32>(1), 1);
        assert_eq!(row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(2), None);
        assert!(
            row.get::<_, &str>(3).starts_with(error),
            "{}",
            row.get::<_, &str>(3)
        );
    }
}

#[tokio::test]
async fn due_means_the_same_to_the_retrier_the_metrics_and_status() {
    let db = fresh_db().await;
    let sql = crate::helpers::connect(&db.url).await;
    let mut due = Vec::new();
    for (status, next_attempt, lease, is_due) in [
        ("failed", Some("-1 minute"), None, true),
        ("failed", Some("1 hour"), None, false),
        ("pending", None, None, true),
        ("processing", None, Some("-1 minute"), true),
        ("processing", None, Some("1 hour"), false),
        ("processed", None, None, false),
        ("dead", None, None, false),
    ] {
        let row = sql
            .query_one(
                "insert into stripe_webhook_events
                   (stripe_event_id, event_type, event_data, processing_status, next_attempt_at, locked_until)
                 values ($1, 'product.created', '{}', $2, now() + $3::text::interval, now() + $4::text::interval)
                 returning id",
                &[&unique("evt"), &status, &next_attempt, &lease],
            )
            .await
            .unwrap();
        if is_due {
            due.push(row.get::<_, uuid::Uuid>(0));
        }
    }
    let pipeline = pipeline_for(&db.url, "due-check");
    let gauges = pipeline.queue_gauges().await.unwrap();
    assert_eq!((gauges.retry_due, gauges.retry_scheduled), (3, 1));
    let report = stripe_worker::ingest::report::collect(&sql).await.unwrap();
    assert_eq!(
        (report.retry_queue.due_now, report.retry_queue.later),
        (3, 1)
    );
    let mut claimed = pipeline.claim_due(100).await.unwrap();
    claimed.sort();
    due.sort();
    assert_eq!(claimed, due);
}
