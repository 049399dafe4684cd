//! Every way Stripe takes money provisions the right person, in every API version: API-created
//! subscriptions without Checkout or a Stripe key, legacy plans, deleted customers, abandoned
//! subscriptions, guest checkouts (seen through RLS), out-of-order refunds, email changes, the
//! other livemode.

use serde_json::{json, Value};
use stripe_worker::fixtures::{flow, ApiVersion, Buyer, Outcome, Shop, ShopOptions, DAY};

use crate::helpers::{fresh_db, spawn_app, spawn_app_with, TestApp};
use crate::money::{deliver_in_order, deliver_shuffled, holdings, iso};

/// The versions whose shapes differ for these paths, oldest first.
const VERSIONS: [ApiVersion; 6] = [
    ApiVersion::V2017_08_15,
    ApiVersion::V2020_08_27,
    ApiVersion::V2024_06_20,
    ApiVersion::Basil,
    ApiVersion::Clover,
    ApiVersion::DEFAULT,
];

fn shop(seed: u64, version: ApiVersion) -> Shop {
    Shop::new(ShopOptions {
        seed,
        api_version: version,
        ..ShopOptions::default()
    })
}

async fn statuses(app: &TestApp, events: &[Value]) -> Vec<String> {
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    app.sql
        .query(
            "select distinct processing_status from stripe_webhook_events where stripe_event_id = any($1) order by 1",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn count(app: &TestApp, sql: &str, param: &str) -> i64 {
    app.sql.query_one(sql, &[&param]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_api_created_subscription_without_checkout_or_a_key_provisions_its_buyer() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        for round in 0..2u64 {
            let mut s = shop(100 * n as u64 + round, v);
            let monthly = s.catalog.monthly.clone();
            let ids = s.api_subscription(None, monthly);
            let email = s.email().to_owned();
            let events = s.into_events();
            if round == 0 {
                deliver_in_order(&app, &events).await;
            } else {
                deliver_shuffled(&app, &events, 7 + n as u64).await;
            }
            let what = format!("{v}, delivery {round}");
            assert!(
                statuses(&app, &events)
                    .await
                    .iter()
                    .all(|s| s == "processed" || s == "ignored"),
                "{what}: nothing failed or dead"
            );
            let h = holdings(&app, &email).await;
            assert_eq!((h.users, h.accounts), (1, 1), "{what}");
            assert_eq!(
                h.grants,
                vec![format!(
                    "subscription_period {}..{} active {}..{}",
                    ids.period.start, ids.period.end, ids.period.start, ids.period.end
                )],
                "{what}"
            );
            assert_eq!(h.expiry, Some(iso(ids.period.end)), "{what}");
            let sub_status: String = app
                .sql
                .query_one(
                    "select s.status::text from subscriptions s join auth.users u on u.id = s.user_id
                      where s.id = $1 and lower(u.email) = lower($2)",
                    &[&ids.subscription, &email],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(sub_status, "active", "{what}");
        }
    }
}

#[tokio::test]
async fn legacy_plans_become_prices_a_subscription_references() {
    let app = spawn_app().await;
    for (n, v) in [ApiVersion::V2017_02_14, ApiVersion::V2017_08_15]
        .into_iter()
        .enumerate()
    {
        let mut s = shop(200 + n as u64, v);
        flow("legacy-plan").unwrap().run(&mut s);
        let plan = s.catalog.legacy_monthly.id.clone();
        let email = s.email().to_owned();
        let events = s.into_events();
        deliver_in_order(&app, &events).await;
        assert_eq!(
            statuses(&app, &events).await,
            vec!["ignored".to_owned(), "processed".to_owned()],
            "{v}"
        );
        let price: (String, Option<String>, Option<i64>, bool) = app
            .sql
            .query_one(
                "select type, interval, unit_amount, active from prices where id = $1",
                &[&plan],
            )
            .await
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .unwrap();
        assert_eq!(
            price,
            ("recurring".into(), Some("month".into()), Some(1500), false),
            "{v}: the plan is a recurring price (deleted at the end of the flow)"
        );
        let on_plan: i64 = app
            .sql
            .query_one(
                "select count(*) from subscriptions s join auth.users u on u.id = s.user_id
                  where s.price_id = $1 and lower(u.email) = lower($2)",
                &[&plan, &email],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(on_plan, 1, "{v}: the buyer's subscription is on the plan");
        let h = holdings(&app, &email).await;
        assert_eq!(
            h.grants.len(),
            2,
            "{v}: the first period and the renewal: {h:#?}"
        );
    }
}

#[tokio::test]
async fn a_deleted_customers_subscription_still_ends_canceled() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        let mut s = shop(300 + n as u64, v);
        let monthly = s.catalog.monthly.clone();
        let ids = s.checkout_subscription(Buyer::New, monthly, None);
        s.advance(3 * DAY);
        s.customer_deleted(&ids.customer);
        let events = s.into_events();
        deliver_in_order(&app, &events).await;
        assert_eq!(
            count(
                &app,
                "select count(*) from subscriptions where id = $1 and status = 'canceled'",
                &ids.subscription
            )
            .await,
            1,
            "{v}"
        );
        assert_eq!(
            count(
                &app,
                "select count(*) from customers where stripe_customer_id = $1",
                &ids.customer
            )
            .await,
            0,
            "{v}: the mapping is gone from public.customers"
        );
    }
}

#[tokio::test]
async fn an_abandoned_subscription_of_a_stranger_leaves_nothing_dead() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        let mut s = shop(400 + n as u64, v);
        flow("abandoned-subscription").unwrap().run(&mut s);
        let email = s.email().to_owned();
        let events = s.into_events();
        deliver_shuffled(&app, &events, n as u64).await;
        let st = statuses(&app, &events).await;
        assert!(
            st.iter().all(|s| s == "processed" || s == "ignored"),
            "{v}: {st:?}"
        );
        assert_eq!(
            holdings(&app, &email).await.users,
            0,
            "{v}: nobody paid, nobody provisioned"
        );
        let notes = count(
            &app,
            "select count(*) from stripe_webhook_events where processing_status = 'ignored'
              and processing_note like '%known to nobody%' and event_data->'data'->'object'->>'customer' is not null and $1 <> ''",
            "x",
        )
        .await;
        assert!(
            notes > 0,
            "{v}: the never-paid subscription is ignored with a note"
        );
    }
}

/// Reads `sql` as the signed-in user `email`, the way PostgREST sets up a request.
async fn as_user(app: &TestApp, email: &str, sql: &str) -> Vec<String> {
    let mut client = crate::helpers::connect(&app.db.url).await;
    let tx = client.transaction().await.unwrap();
    let uid: uuid::Uuid = tx
        .query_one(
            "select id from auth.users where lower(email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    tx.batch_execute(&format!(
        "set local role authenticated; set local request.jwt.claims = '{{\"sub\": \"{uid}\", \"role\": \"authenticated\"}}'"
    ))
    .await
    .unwrap();
    let rows = tx.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test]
async fn a_guest_buyer_sees_their_charges_and_refunds_through_rls() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        let mut s = shop(500 + n as u64, v);
        let onetime = s.catalog.onetime.clone();
        let pay = s.checkout_payment(Buyer::Guest, onetime);
        s.advance(DAY);
        s.refund(&pay.charge, Some(1_000));
        let email = s.email().to_owned();
        let events = s.into_events();
        deliver_shuffled(&app, &events, 30 + n as u64).await;
        assert_eq!(
            as_user(
                &app,
                &email,
                "select stripe_payment_intent_id from payment_intents"
            )
            .await,
            vec![pay.payment_intent.clone()],
            "{v}"
        );
        assert_eq!(
            as_user(&app, &email, "select stripe_charge_id from charges").await,
            vec![pay.charge.clone()],
            "{v}"
        );
        let refunds = as_user(
            &app,
            &email,
            "select amount::text from events where amount < 0 order by occurred_at",
        )
        .await;
        assert_eq!(
            refunds,
            vec!["-10.00".to_owned()],
            "{v}: the refund in their history"
        );
        if v.sends_refund_events() || v.embeds_refunds_and_charges() {
            assert_eq!(
                as_user(&app, &email, "select amount::text from refunds").await,
                vec!["1000".to_owned()],
                "{v}: the refund row"
            );
        }
    }
}

#[tokio::test]
async fn partial_refunds_delivered_out_of_order_are_each_recorded_once() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        for round in 0..3u64 {
            let mut s = shop(600 + 10 * n as u64 + round, v);
            let onetime = s.catalog.onetime.clone();
            let pay = s.checkout_payment(Buyer::New, onetime);
            s.advance(DAY);
            s.refund(&pay.charge, Some(1_000));
            s.advance(DAY);
            s.refund(&pay.charge, Some(500));
            let email = s.email().to_owned();
            let events = s.into_events();
            deliver_shuffled(&app, &events, round).await;
            let h = holdings(&app, &email).await;
            let refunds: Vec<&String> = h.history.iter().filter(|r| r.contains("-")).collect();
            let per_refund = v.sends_refund_events() || v.embeds_refunds_and_charges();
            if per_refund {
                assert_eq!(
                    refunds.len(),
                    2,
                    "{v} {round}: one row per refund: {:#?}",
                    h.history
                );
            }
            assert!(
                (h.total() - 34.0).abs() < 1e-9,
                "{v} {round}: 49 - 10 - 5: {:#?}",
                h.history
            );
            assert_eq!(h.grants.len(), 1, "{v}");
            assert!(
                h.grants[0].contains(" active "),
                "{v}: partial refunds revoke nothing"
            );
        }
    }
}

#[tokio::test]
async fn after_an_email_change_a_guest_checkout_with_the_new_address_finds_the_same_user() {
    let app = spawn_app().await;
    for (n, v) in VERSIONS.into_iter().enumerate() {
        let mut s = shop(700 + n as u64, v);
        let old_email = s.email().to_owned();
        let onetime = s.catalog.onetime.clone();
        let first = s.checkout_payment(Buyer::New, onetime.clone());
        s.advance(DAY);
        let new_email = format!("new.{old_email}");
        s.email_change(first.customer.as_deref().unwrap(), &new_email);
        s.advance(DAY);
        s.checkout_payment(Buyer::Guest, onetime);
        let events = s.into_events();
        deliver_in_order(&app, &events).await;
        assert_eq!(
            count(
                &app,
                "select count(*) from auth.users where lower(email) = lower($1)",
                &new_email
            )
            .await,
            0,
            "{v}: no second user"
        );
        let h = holdings(&app, &old_email).await;
        assert_eq!((h.users, h.accounts), (1, 1), "{v}");
        assert_eq!(
            h.grants.len(),
            2,
            "{v}: both purchases on one account: {h:#?}"
        );
    }
}

#[tokio::test]
async fn an_event_of_the_other_mode_is_stored_and_ignored() {
    let app = spawn_app_with(
        fresh_db().await,
        &[("STRIPE_SECRET_KEY", "sk_test_fake_key_123")],
    )
    .await;
    let mut s = Shop::new(ShopOptions {
        seed: 800,
        livemode: true,
        ..ShopOptions::default()
    });
    let onetime = s.catalog.onetime.clone();
    s.checkout_payment(Buyer::New, onetime);
    let email = s.email().to_owned();
    let events = s.into_events();
    for e in &events {
        let answer = app.post_event(e).await;
        assert_eq!(answer.body["status"], json!("ignored"), "{}", e["type"]);
    }
    assert_eq!(
        holdings(&app, &email).await.users,
        0,
        "a live payment on a test endpoint provisions nobody"
    );
    let note = app
        .event_note(events[0]["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(note.contains("livemode"), "{note}");
}

#[tokio::test]
async fn a_renewal_of_a_buyer_whose_customer_event_comes_last_is_provisioned_once() {
    // The invoice arrives before anything names its buyer; the customer's own event, delivered
    // last, provisions them from the money already stored.
    let app = spawn_app().await;
    let mut s = shop(900, ApiVersion::DEFAULT);
    let monthly = s.catalog.monthly.clone();
    let ids = s.api_subscription(None, monthly);
    let renewal = s.renewal(&ids.subscription, Outcome::Paid);
    let email = s.email().to_owned();
    let mut events = s.into_events();
    let customer_created = events
        .iter()
        .position(|e| e["type"] == "customer.created")
        .unwrap();
    let first = events.remove(customer_created);
    // invoice events also carry customer_email: strip it so only the directory can tell.
    for e in events.iter_mut() {
        if e["data"]["object"]["object"] == "invoice" {
            e["data"]["object"]["customer_email"] = Value::Null;
        }
    }
    events.push(first);
    deliver_in_order(&app, &events).await;
    let h = holdings(&app, &email).await;
    assert_eq!((h.users, h.accounts), (1, 1), "{h:#?}");
    let p2 = renewal.period.unwrap();
    assert_eq!(h.expiry, Some(iso(p2.end)));
}

#[tokio::test]
async fn a_checkout_without_price_metadata_gets_its_price_from_the_line_items() {
    let mut shop = shop(1000, ApiVersion::DEFAULT);
    let onetime = shop.catalog.onetime.clone();
    let pay = shop.checkout_payment(Buyer::New, onetime.clone());
    let email = shop.email().to_owned();
    // A shop that never set metadata[price_id]: neither the session nor the intent names it.
    let events: Vec<Value> = shop
        .into_events()
        .into_iter()
        .map(|mut e| {
            if let Some(m) = e["data"]["object"]["metadata"].as_object_mut() {
                m.remove("price_id");
            }
            e
        })
        .collect();
    let mut state = crate::fakes::StripeState::default();
    state.objects_from_events(&events);
    state.line_items.insert(
        pay.checkout_session.clone().unwrap(),
        vec![(onetime.id.clone(), 1)],
    );
    let stripe = crate::fakes::fake_stripe(state);
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", &stripe.url),
        ],
    )
    .await;
    deliver_in_order(&app, &events).await;
    let h = holdings(&app, &email).await;
    assert_eq!(h.grants.len(), 1, "{h:#?}");
    assert!(
        h.grants[0].starts_with("purchase 12 active"),
        "the demo pack's 12 months, from its line item: {h:#?}"
    );
    let asked = stripe.requests(&format!(
        "/v1/checkout/sessions/{}/line_items",
        pay.checkout_session.unwrap()
    ));
    assert_eq!(asked.len(), 1, "asked once");

    // Without a key nothing tells: the purchase gets the default month (the price is unknown).
    let app = spawn_app().await;
    let mut shop = self::shop(1001, ApiVersion::DEFAULT);
    let onetime = shop.catalog.onetime.clone();
    shop.checkout_payment(Buyer::New, onetime);
    let email = shop.email().to_owned();
    let events: Vec<Value> = shop
        .into_events()
        .into_iter()
        .map(|mut e| {
            if let Some(m) = e["data"]["object"]["metadata"].as_object_mut() {
                m.remove("price_id");
            }
            e
        })
        .collect();
    deliver_in_order(&app, &events).await;
    let h = holdings(&app, &email).await;
    assert!(h.grants[0].starts_with("purchase 1 active"), "{h:#?}");
}
