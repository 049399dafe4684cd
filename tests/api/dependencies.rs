//! A hung external API (Stripe, Supabase Auth) fails only the events that need it: they are
//! stored `failed` with a retry scheduled; nothing else waits for it, no delivery is answered
//! 503 and the service stays ready.

use serde_json::{json, Value};

use crate::fakes;
use crate::helpers::{event, fresh_db, post_raw_to, spawn_app_with, unique, wait_until};
use crate::purchase::{Purchase, Shape};

/// A paid checkout without a buyer email: preparing it asks Stripe for the customer's.
fn checkout_without_email() -> Value {
    let email = format!("{}@example.com", unique("hung"));
    let mut checkout = Purchase::new(&email, None).checkout(Shape::Basil);
    checkout["data"]["object"]["customer_details"]["email"] = json!(null);
    checkout
}

/// Posts `checkouts` concurrently to an app whose `dependency` never answers, and checks that
/// while they wait an unrelated event is processed and the service is ready, and that each of
/// them ends `failed` with a retry scheduled and `error` in its message.
async fn only_the_events_that_need_it_fail(
    dependency: &fakes::Unresponsive,
    path: &str,
    overrides: &[(&str, &str)],
    checkouts: Vec<Value>,
    error: &str,
) {
    let mut env = vec![
        // Fewer connections than waiting checkouts.
        ("DATABASE_POOL_SIZE", "4"),
        ("RETRY_BASE_DELAY_SECS", "3600"),
        ("RETRY_MAX_DELAY_SECS", "3600"),
    ];
    env.extend_from_slice(overrides);
    let app = spawn_app_with(fresh_db().await, &env).await;
    let posts: Vec<_> = checkouts
        .iter()
        .map(|c| {
            let body = serde_json::to_vec(c).unwrap();
            let header = app.secret.sign(chrono::Utc::now().timestamp(), &body);
            let (http, url) = (app.http.clone(), app.webhook_url());
            tokio::spawn(async move { post_raw_to(&http, &url, body, Some(&header)).await })
        })
        .collect();
    // Every checkout is waiting on the dependency at once: none holds one of the connections.
    // (With STRIPE_SECRET_KEY the catch-up waits on Stripe too, on its own path.)
    wait_until("every checkout to call the hung dependency", || async {
        dependency.waiting_on(path) == checkouts.len()
    })
    .await;

    let product = event(
        &unique("evt"),
        "product.created",
        json!({"id": unique("prod"), "object": "product", "name": "Unrelated"}),
    );
    let answer = app.post_event(&product).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["status"], "processed");
    assert_eq!(app.get("/readyz").await.status(), 200);

    for post in posts {
        let answer = post.await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["status"], "failed");
    }
    for checkout in &checkouts {
        let row = app
            .sql
            .query_one(
                "select processing_status, retry_count, next_attempt_at > now() + interval '20 minutes', error_message
                 from stripe_webhook_events where stripe_event_id = $1",
                &[&checkout["id"].as_str().unwrap()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), "failed");
        assert_eq!(row.get::<_, i32>(1), 1);
        assert!(row.get::<_, bool>(2), "a retry is scheduled");
        let message: &str = row.get(3);
        assert!(message.contains(error), "{message}");
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    assert_eq!(
        app.count("select count(*) from public.users where email like 'hung_%'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_hung_stripe_api_fails_only_the_checkouts_that_need_it() {
    let stripe = fakes::unresponsive().await;
    let checkouts = (0..6).map(|_| checkout_without_email()).collect();
    only_the_events_that_need_it_fail(
        &stripe,
        "/v1/customers/",
        &[
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", &stripe.url),
            ("STRIPE_API_TIMEOUT_SECS", "5"),
        ],
        checkouts,
        "Stripe API: timeout",
    )
    .await;
}

#[tokio::test]
async fn a_hung_supabase_auth_fails_only_the_checkouts_that_need_it() {
    let auth = fakes::unresponsive().await;
    let checkouts = (0..6)
        .map(|_| {
            let email = format!("{}@example.com", unique("hung"));
            Purchase::new(&email, None).checkout(Shape::Basil)
        })
        .collect();
    only_the_events_that_need_it_fail(
        &auth,
        "/auth/v1/admin/users",
        &[
            ("SUPABASE_URL", &auth.url),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key"),
            ("SUPABASE_AUTH_TIMEOUT_SECS", "5"),
            // Decided here, so the first call each checkout makes is the user creation (with
            // `auto` it would first ask the hung server for the project's sign-up settings).
            ("AUTH_CONFIRM_CHECKOUT_EMAIL", "false"),
        ],
        checkouts,
        "Supabase Auth admin API: request timed out",
    )
    .await;
}
