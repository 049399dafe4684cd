//! Purchase provisioning: buyer -> auth user, profile, customer, account, payment,
//! voucher and expiry, in the basil (2025-03-31) shape and the 2020 one.

use serde_json::{json, Value};

use crate::fakes;
use crate::helpers::{event, fresh_db, spawn_app, spawn_app_with, unique, TestApp};

#[derive(Clone, Copy, Debug)]
pub enum Shape {
    Basil,
    V2020,
}

fn in_shape(shape: Shape, mut e: Value) -> Value {
    if let Shape::V2020 = shape {
        e["api_version"] = json!("2020-03-02");
        e.as_object_mut().unwrap().remove("context");
    }
    e
}

pub struct Purchase {
    pub session: String,
    pub intent: String,
    pub charge: String,
    pub customer: String,
    pub email: String,
    pub price: Option<String>,
    pub amount: i64,
}

impl Purchase {
    pub fn new(email: &str, price: Option<&str>) -> Self {
        Self {
            session: unique("cs_test"),
            intent: unique("pi"),
            charge: unique("ch"),
            customer: unique("cus"),
            email: email.into(),
            price: price.map(Into::into),
            amount: 4900,
        }
    }

    pub fn checkout(&self, shape: Shape) -> Value {
        let details = match shape {
            Shape::Basil => {
                json!({"address": {"country": "DE"}, "email": self.email, "name": "Ada Buyer",
                                   "phone": null, "tax_exempt": "none", "tax_ids": []})
            }
            Shape::V2020 => json!({"email": self.email, "tax_exempt": "none", "tax_ids": []}),
        };
        let mut metadata = json!({});
        if let Some(p) = &self.price {
            metadata["price_id"] = json!(p);
        }
        in_shape(
            shape,
            event(
                &unique("evt"),
                "checkout.session.completed",
                json!({
                    "id": self.session, "object": "checkout.session", "mode": "payment", "status": "complete",
                    "payment_status": "paid", "amount_total": self.amount, "currency": "usd",
                    "customer": self.customer, "customer_details": details, "customer_email": null,
                    "payment_intent": self.intent, "subscription": null, "metadata": metadata,
                    "livemode": false, "success_url": "https://example.com/ok"
                }),
            ),
        )
    }

    pub fn intent_succeeded(&self, shape: Shape) -> Value {
        let mut pi = json!({
            "id": self.intent, "object": "payment_intent", "amount": self.amount,
            "amount_received": self.amount, "currency": "usd", "customer": self.customer,
            "receipt_email": null, "status": "succeeded", "metadata": {}, "livemode": false
        });
        match shape {
            Shape::Basil => pi["latest_charge"] = json!(self.charge),
            Shape::V2020 => {
                pi["charges"] = json!({"object": "list", "data": [{"id": self.charge, "object": "charge"}],
                                                   "has_more": false, "url": "/v1/charges"})
            }
        }
        in_shape(shape, event(&unique("evt"), "payment_intent.succeeded", pi))
    }

    pub fn charge(&self, shape: Shape, kind: &str, refunded: i64) -> Value {
        in_shape(
            shape,
            event(
                &unique("evt"),
                kind,
                json!({
                    "id": self.charge, "object": "charge", "amount": self.amount, "amount_captured": self.amount,
                    "amount_refunded": refunded, "refunded": refunded >= self.amount, "captured": true,
                    "currency": "usd", "customer": self.customer, "payment_intent": self.intent,
                    "billing_details": {"email": self.email, "name": "Ada Buyer", "address": {"country": "DE"}},
                    "receipt_email": self.email, "status": "succeeded", "paid": true
                }),
            ),
        )
    }

    pub fn card_attached(&self, shape: Shape, pm: &str) -> Value {
        in_shape(
            shape,
            event(
                &unique("evt"),
                "payment_method.attached",
                json!({
                    "id": pm, "object": "payment_method", "type": "card", "customer": self.customer,
                    "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034, "country": "US"},
                    "billing_details": {"email": self.email}
                }),
            ),
        )
    }
}

pub async fn processed(app: &TestApp, e: &Value) {
    let answer = app.post_event(e).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert!(
        matches!(
            answer.body["status"].as_str(),
            Some("processed" | "duplicate")
        ),
        "{} -> {:?}",
        e["type"],
        answer.body
    );
}

async fn count(app: &TestApp, sql: &str, email: &str) -> i64 {
    app.sql.query_one(sql, &[&email]).await.unwrap().get(0)
}

async fn expiry_days_ahead(app: &TestApp, email: &str) -> f64 {
    app.sql
        .query_one(
            "select extract(epoch from coalesce(public.account_expiry(a.expiry), now()) - now())::float8 / 86400
             from accounts a join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_new_buyers_checkout_provisions_everything_once_in_both_api_shapes() {
    for shape in [Shape::Basil, Shape::V2020] {
        let app = spawn_app().await;
        let email = format!("{}@example.com", unique("ada"));
        let p = Purchase::new(&email, None);
        let checkout = p.checkout(shape);
        processed(&app, &checkout).await;

        let q = |sql: &'static str| sql;
        assert_eq!(
            count(
                &app,
                q("select count(*) from auth.users where lower(email) = lower($1)"),
                &email
            )
            .await,
            1,
            "{shape:?}"
        );
        assert_eq!(count(&app, q("select count(*) from auth.identities i join auth.users u on u.id = i.user_id where lower(u.email) = lower($1) and i.provider = 'email'"), &email).await, 1);
        assert_eq!(
            count(
                &app,
                q("select count(*) from public.users where email = lower($1)"),
                &email
            )
            .await,
            1
        );
        assert_eq!(count(&app, q("select count(*) from public.customers c join auth.users u on u.id = c.id where lower(u.email) = lower($1) and c.stripe_customer_id is not null"), &email).await, 1);
        assert_eq!(count(&app, q("select count(*) from accounts a join auth.users u on u.id = a.user_id where lower(u.email) = lower($1) and a.account_number ~ '^[0-9]{12,}$'"), &email).await, 1);
        assert_eq!(count(&app, q("select count(*) from payment_intents pi join auth.users u on u.id = pi.customer_id where lower(u.email) = lower($1) and pi.status = 'succeeded' and pi.amount = 4900"), &email).await, 1);
        let vouchers = "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account
                        join auth.users u on u.id = a.user_id where lower(u.email) = lower($1) and v.is_used and v.status = 'active'";
        assert_eq!(count(&app, vouchers, &email).await, 1);
        let ahead = expiry_days_ahead(&app, &email).await;
        assert!(ahead >= 27.9, "expiry only {ahead} days ahead");
        let with_user: i64 = app
            .sql
            .query_one("select count(*) from stripe_webhook_events e join auth.users u on u.id = e.user_id where e.stripe_event_id = $1", &[&checkout["id"].as_str().unwrap()])
            .await
            .unwrap()
            .get(0);
        assert_eq!(with_user, 1, "the event row names its user");

        // The payment_intent.succeeded and charge that follow add no second voucher.
        processed(&app, &p.intent_succeeded(shape)).await;
        processed(&app, &p.charge(shape, "charge.succeeded", 0)).await;
        assert_eq!(count(&app, vouchers, &email).await, 1);
        assert_eq!(count(&app, "select count(*) from payment_intents pi join auth.users u on u.id = pi.customer_id where lower(u.email) = lower($1)", &email).await, 1);
        assert_eq!(count(&app, "select count(*) from charges c join auth.users u on u.id = c.customer_id where lower(u.email) = lower($1) and c.billing_details->>'name' = 'Ada Buyer'", &email).await, 1);
        assert!(
            (expiry_days_ahead(&app, &email).await - ahead).abs() < 0.01,
            "expiry moved twice"
        );
        // Billing history: the payment once.
        assert_eq!(count(&app, "select count(*) from events e join auth.users u on u.id = e.user_id where lower(u.email) = lower($1) and e.event_type = 'stripe.payment_intent.succeeded' and e.amount = 49.00 and e.category = 'billing'", &email).await, 1);
    }
}

#[tokio::test]
async fn the_price_metadata_sets_the_duration_and_a_second_purchase_in_other_case_moves_expiry_on()
{
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("ada"));
    // The demo catalog's one-time product says duration_months = 12.
    let first = Purchase::new(&email, Some("price_demo_onetime"));
    processed(&app, &first.checkout(Shape::Basil)).await;
    let after_first = expiry_days_ahead(&app, &email).await;
    assert!(after_first > 360.0, "{after_first}");

    let second = Purchase {
        customer: unique("cus"),
        ..Purchase::new(&email.to_uppercase(), None)
    };
    processed(&app, &second.checkout(Shape::V2020)).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from auth.users where lower(email) = lower($1)",
            &email
        )
        .await,
        1
    );
    assert_eq!(count(&app, "select count(*) from accounts a join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)", &email).await, 1);
    assert_eq!(count(&app, "select count(*) from stripe_customers s join auth.users u on u.id = s.user_id where lower(u.email) = lower($1)", &email).await, 2);
    let after_second = expiry_days_ahead(&app, &email).await;
    assert!(
        after_second - after_first > 27.0 && after_second - after_first < 32.0,
        "{after_first} -> {after_second}"
    );
}

/// The profile row's version (`xmin`) and name: a new version means the row was written again.
async fn profile(app: &TestApp, email: &str) -> (String, Option<String>) {
    let row = app
        .sql
        .query_one(
            "select xmin::text, full_name from public.users where email = lower($1)",
            &[&email],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_returning_buyers_checkout_fills_an_empty_name_and_leaves_a_profile_that_says_so_unwritten(
) {
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("ada"));
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    let (version, name) = profile(&app, &email).await;
    assert_eq!(name.as_deref(), Some("Ada Buyer"));

    // Same address and a name already there: the row is not written again.
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(profile(&app, &email).await, (version, name));

    // A name the user edited stays, and is not rewritten either.
    app.sql
        .execute(
            "update public.users set full_name = 'Ada Edited' where email = lower($1)",
            &[&email],
        )
        .await
        .unwrap();
    let edited = profile(&app, &email).await;
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(profile(&app, &email).await, edited);

    // An emptied name is filled from the checkout again.
    app.sql
        .execute(
            "update public.users set full_name = null where email = lower($1)",
            &[&email],
        )
        .await
        .unwrap();
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(profile(&app, &email).await.1.as_deref(), Some("Ada Buyer"));
}

/// Everything the frontend would read about one buyer, without random values (account numbers,
/// voucher codes) and with the expiry to the day.
async fn snapshot(app: &TestApp, email: &str) -> Vec<String> {
    let queries = [
        "select count(*)::text from auth.users where lower(email) = lower($1)",
        "select coalesce(string_agg(u.email || '|' || coalesce(u.full_name, '-'), ','), '') from public.users u where lower(u.email) = lower($1)",
        "select coalesce(string_agg(c.stripe_customer_id, ','), '') from customers c join auth.users u on u.id = c.id where lower(u.email) = lower($1)",
        "select count(*)::text || '|' || coalesce(max(left(public.account_expiry(a.expiry)::text, 10)), '-') from accounts a join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)",
        "select coalesce(string_agg(pi.stripe_payment_intent_id || '|' || pi.status || '|' || pi.amount || '|' || coalesce(pi.price_id, '-'), ',' order by pi.stripe_payment_intent_id), '') from payment_intents pi join auth.users u on u.id = pi.customer_id where lower(u.email) = lower($1)",
        "select coalesce(string_agg(c.stripe_charge_id || '|' || c.amount_refunded || '|' || c.status, ','), '') from charges c join auth.users u on u.id = c.customer_id where lower(u.email) = lower($1)",
        "select coalesce(string_agg(pm.stripe_payment_method_id || '|' || pm.last_four, ','), '') from payment_methods pm join auth.users u on u.id = pm.customer_id where lower(u.email) = lower($1)",
        "select coalesce(string_agg(v.duration_months || '|' || v.is_used || '|' || v.status, ',' order by v.created_at), '') from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)",
        "select coalesce(string_agg(e.event_type || '|' || e.amount, ',' order by e.event_type), '') from events e join auth.users u on u.id = e.user_id where lower(u.email) = lower($1)",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push(app.sql.query_one(q, &[&email]).await.unwrap().get(0));
    }
    out
}

#[tokio::test]
async fn events_in_any_order_and_any_number_of_times_leave_the_same_rows() {
    let email = format!("{}@example.com", unique("ord"));
    let p = Purchase::new(&email, Some("price_demo_onetime"));
    let pm = unique("pm");
    let events = [
        p.checkout(Shape::Basil),
        p.intent_succeeded(Shape::Basil),
        p.charge(Shape::Basil, "charge.succeeded", 0),
        p.card_attached(Shape::Basil, &pm),
    ];
    let orders: [[usize; 4]; 6] = [
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [1, 0, 3, 2],
        [2, 3, 0, 1],
        [1, 2, 3, 0],
        [2, 1, 0, 3],
    ];
    let mut reference: Option<Vec<String>> = None;
    for (n, order) in orders.iter().enumerate() {
        let app = spawn_app().await;
        for (k, &i) in order.iter().enumerate() {
            processed(&app, &events[i]).await;
            // Some redeliveries on the way.
            if (k + n) % 2 == 0 {
                processed(&app, &events[i]).await;
            }
        }
        for e in &events {
            processed(&app, e).await;
        }
        let snap = snapshot(&app, &email).await;
        match &reference {
            None => {
                assert_eq!(snap[0], "1");
                assert!(snap[7].starts_with("12|true|active"), "{snap:?}");
                assert!(snap[6].contains("4242"), "{snap:?}");
                reference = Some(snap)
            }
            Some(r) => assert_eq!(&snap, r, "order {order:?} differs"),
        }
    }
}

#[tokio::test]
async fn a_full_refund_revokes_the_voucher_and_takes_the_time_back_a_partial_one_does_not() {
    for refund_first in [false, true] {
        let app = spawn_app().await;
        let email = format!("{}@example.com", unique("ref"));
        let p = Purchase::new(&email, Some("price_demo_onetime"));
        if !refund_first {
            processed(&app, &p.checkout(Shape::Basil)).await;
            processed(&app, &p.charge(Shape::Basil, "charge.refunded", 1000)).await;
            let ahead = expiry_days_ahead(&app, &email).await;
            assert!(ahead > 360.0, "a partial refund changes nothing ({ahead})");
        }
        let mut full = p.charge(Shape::Basil, "charge.refunded", 4900);
        full["data"]["previous_attributes"] =
            json!({"amount_refunded": if refund_first { 0 } else { 1000 }, "refunded": false});
        processed(&app, &full).await;
        if refund_first {
            processed(&app, &p.checkout(Shape::Basil)).await;
        }
        let status: String = app
            .sql
            .query_one("select string_agg(v.status || '|' || v.is_used, ',') from vouchers v join payment_intents pi on pi.id = v.payment_intent_id where pi.stripe_payment_intent_id = $1", &[&p.intent])
            .await
            .unwrap()
            .get(0);
        assert!(
            status.starts_with("revoked"),
            "refund_first={refund_first}: {status}"
        );
        let ahead = expiry_days_ahead(&app, &email).await;
        assert!(
            ahead < 1.0,
            "refund_first={refund_first}: time not taken back ({ahead} days)"
        );
        // Billing history: the refunds are negative amounts, once each.
        let refunds: f64 = app
            .sql
            .query_one("select coalesce(sum(amount), 0)::float8 from events where event_type = 'stripe.charge.refunded' and metadata->>'charge' = $1", &[&p.charge])
            .await
            .unwrap()
            .get(0);
        // Either way the refunds add up to the whole payment (10.00 + 39.00, or 49.00 at once).
        assert_eq!(refunds, -49.0);
    }
}

#[tokio::test]
async fn unpaid_sessions_wait_for_the_async_payment() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("sepa"));
    let p = Purchase::new(&email, None);
    let mut unpaid = p.checkout(Shape::Basil);
    unpaid["data"]["object"]["payment_status"] = json!("unpaid");
    processed(&app, &unpaid).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from auth.users where lower(email) = lower($1)",
            &email
        )
        .await,
        0
    );
    let mut paid = p.checkout(Shape::Basil);
    paid["type"] = json!("checkout.session.async_payment_succeeded");
    processed(&app, &paid).await;
    assert_eq!(count(&app, "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)", &email).await, 1);
}

#[tokio::test]
async fn a_succeeded_intent_of_an_unknown_buyer_provisions_them_and_grants_only_what_it_names() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("link"));
    let p = Purchase::new(&email, None);
    let mut pi = p.intent_succeeded(Shape::Basil);
    pi["data"]["object"]["receipt_email"] = json!(email);
    processed(&app, &pi).await;
    // Money arrived: the buyer has a user and an account, but nothing says what was bought.
    assert_eq!(count(&app, "select count(*) from accounts a join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)", &email).await, 1);
    assert_eq!(count(&app, "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where lower(u.email) = lower($1)", &email).await, 0);
    assert_eq!(count(&app, "select count(*) from events e join auth.users u on u.id = e.user_id where lower(u.email) = lower($1) and e.amount > 0", &email).await, 1, "the payment is in the billing history");
    // An intent whose metadata names the price is a purchase of it.
    let named = Purchase::new(&email, Some("price_demo_onetime"));
    let mut pi = named.intent_succeeded(Shape::Basil);
    pi["data"]["object"]["receipt_email"] = json!(email);
    pi["data"]["object"]["metadata"] = json!({"price_id": "price_demo_onetime"});
    processed(&app, &pi).await;
    assert_eq!(count(&app, "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where lower(u.email) = lower($1) and v.is_used and v.duration_months = 12", &email).await, 1);
}

#[tokio::test]
async fn without_an_email_the_stripe_customer_is_looked_up_and_without_a_key_the_event_waits() {
    let email = format!("{}@example.com", unique("api"));
    let p = Purchase::new(&email, None);
    let mut checkout = p.checkout(Shape::Basil);
    checkout["data"]["object"]["customer_details"]["email"] = json!(null);

    // No key: a clear error, stored as failed for a retry.
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await;
    assert_eq!(app.post_event(&checkout).await.body["status"], "failed");
    let error: String = app
        .sql
        .query_one(
            "select error_message from stripe_webhook_events where stripe_event_id = $1",
            &[&checkout["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("STRIPE_SECRET_KEY"), "{error}");

    // With a key: the fake Stripe API tells the customer's address.
    let stripe = fakes::stripe_customers(vec![(&p.customer, Some(&email), Some("Ada From Api"))]);
    let app = spawn_app_with(
        fresh_db().await,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", &stripe.url),
        ],
    )
    .await;
    processed(&app, &checkout).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from public.users where email = lower($1) and full_name = 'Ada Buyer'",
            &email
        )
        .await,
        1
    );
    let requests = stripe.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1, format!("/v1/customers/{}", p.customer));
    assert_eq!(
        requests[0].2["authorization"],
        "Bearer sk_test_fake_key_123"
    );
}

#[tokio::test]
async fn auth_users_come_from_the_admin_api_when_configured_and_a_registered_email_is_looked_up() {
    let db = fresh_db().await;
    let race = format!("{}@example.com", unique("race"));
    let auth = fakes::supabase_auth(
        db.url.clone(),
        "service-role-key-for-tests",
        vec![race.clone()],
    );
    let app = spawn_app_with(
        db,
        &[
            ("SUPABASE_URL", &auth.url),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key-for-tests"),
        ],
    )
    .await;

    let email = format!("{}@example.com", unique("gotrue"));
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from auth.users where email = lower($1)",
            &email
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from public.users where email = lower($1) and full_name = 'Ada Buyer'",
            &email
        )
        .await,
        1
    );
    {
        let requests = auth.requests.lock().unwrap();
        assert_eq!(requests.len(), 1);
        // Stripe never verified the address: not confirmed unless AUTH_CONFIRM_CHECKOUT_EMAIL.
        assert_eq!(requests[0].2["email_confirm"], false);
        assert_eq!(requests[0].2["user_metadata"]["full_name"], "Ada Buyer");
    }
    // A second purchase finds the user first: no second call, no second user.
    processed(
        &app,
        &Purchase::new(&email.to_uppercase(), None).checkout(Shape::Basil),
    )
    .await;
    assert_eq!(auth.requests.lock().unwrap().len(), 1);
    assert_eq!(
        count(
            &app,
            "select count(*) from auth.users where lower(email) = lower($1)",
            &email
        )
        .await,
        1
    );
    // Registered by a concurrent request between look-up and create: 422, then looked up.
    processed(&app, &Purchase::new(&race, None).checkout(Shape::Basil)).await;
    assert_eq!(count(&app, "select count(*) from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where u.email = lower($1)", &race).await, 1);
}

#[tokio::test]
async fn payment_methods_follow_attach_and_detach_and_customer_events_never_create_or_delete_users()
{
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("pm"));
    let p = Purchase::new(&email, None);
    let pm = unique("pm");
    processed(&app, &p.card_attached(Shape::V2020, &pm)).await; // before the buyer is known
    processed(&app, &p.checkout(Shape::Basil)).await;
    assert_eq!(count(&app, "select count(*) from payment_methods m join auth.users u on u.id = m.customer_id where lower(u.email) = lower($1) and m.last_four = '4242' and m.exp_year = 2034", &email).await, 1);

    let mut updated = event(
        &unique("evt"),
        "customer.updated",
        json!({"id": p.customer, "object": "customer", "email": "new.address@example.com", "name": "Ada Renamed"}),
    );
    updated["created"] = json!(chrono::Utc::now().timestamp() + 1);
    processed(&app, &updated).await;
    // The new address is recorded for the customer; the sign-in address (and the profile, which
    // mirrors it) stays the user's own.
    assert_eq!(count(&app, "select count(*) from stripe_customers where email = 'new.address@example.com' and $1 <> ''", &email).await, 1);
    assert_eq!(
        count(
            &app,
            "select count(*) from public.users where lower(email) = lower($1)",
            &email
        )
        .await,
        1
    );
    assert_eq!(count(&app, "select count(*) from auth.users where lower(email) in (lower($1), 'new.address@example.com')", &email).await, 1);

    let mut detached = event(
        &unique("evt"),
        "payment_method.detached",
        json!({"id": pm, "object": "payment_method", "type": "card", "customer": null, "card": {"last4": "4242"}}),
    );
    detached["created"] = json!(chrono::Utc::now().timestamp() + 2);
    processed(&app, &detached).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from payment_methods where stripe_payment_method_id = $1",
            &pm
        )
        .await,
        0
    );

    let mut deleted = event(
        &unique("evt"),
        "customer.deleted",
        json!({"id": p.customer, "object": "customer", "deleted": true}),
    );
    deleted["created"] = json!(chrono::Utc::now().timestamp() + 3);
    processed(&app, &deleted).await;
    assert_eq!(
        count(
            &app,
            "select count(*) from customers where stripe_customer_id = $1",
            &p.customer
        )
        .await,
        0
    );
    // The directory keeps the deleted customer's mapping: what Stripe sends with the deletion
    // (the subscription's cancellation) still belongs to the same person.
    assert_eq!(
        count(
            &app,
            "select count(*) from stripe_customers where stripe_customer_id = $1 and deleted_at is not null and user_id is not null",
            &p.customer
        )
        .await,
        1
    );
    // The user keeps everything they own.
    assert_eq!(count(&app, "select count(*) from auth.users u join accounts a on a.user_id = u.id join vouchers v on v.associated_account = a.account_number where u.email = lower($1)", &email).await, 1);
}

#[tokio::test]
async fn a_gift_voucher_waits_and_only_its_owner_can_redeem_it() {
    let app = spawn_app().await;
    app.sql
        .batch_execute(
            "insert into products (id, active, name, metadata) values ('prod_gift', true, 'Gift', '{\"voucher_redeem\": \"manual\", \"duration_months\": \"3\"}');
             insert into prices (id, product_id, active, unit_amount, currency, type) values ('price_gift', 'prod_gift', true, 1500, 'usd', 'one_time');",
        )
        .await
        .unwrap();
    let owner = format!("{}@example.com", unique("gift"));
    let other = format!("{}@example.com", unique("other"));
    processed(
        &app,
        &Purchase::new(&owner, Some("price_gift")).checkout(Shape::Basil),
    )
    .await;
    processed(&app, &Purchase::new(&other, None).checkout(Shape::Basil)).await;
    let code: String = app
        .sql
        .query_one("select v.code from vouchers v join accounts a on a.account_number = v.associated_account join auth.users u on u.id = a.user_id where u.email = lower($1) and not v.is_used", &[&owner])
        .await
        .unwrap()
        .get(0);
    let redeem_as = |email: String, code: String| {
        let url = app.db.url.clone();
        async move {
            let mut client = crate::helpers::connect(&url).await;
            let tx = client.transaction().await.unwrap();
            let uid: uuid::Uuid = tx
                .query_one(
                    "select id from auth.users where email = lower($1)",
                    &[&email],
                )
                .await
                .unwrap()
                .get(0);
            // Exactly what PostgREST does for an RPC call with the user's JWT.
            tx.batch_execute(&format!(
                "set local role authenticated; set local request.jwt.claims = '{{\"sub\": \"{uid}\", \"role\": \"authenticated\"}}'"
            ))
            .await
            .unwrap();
            let result = tx
                .query_one("select public.redeem_voucher($1)", &[&code])
                .await;
            let out = result
                .map(|r| r.get::<_, Value>(0))
                .map_err(|e| stripe_worker::db::describe(&e));
            tx.commit().await.ok();
            out
        }
    };
    let refused = json!({"error": "this code cannot be redeemed"});
    assert_eq!(
        redeem_as(other.clone(), code.clone()).await.unwrap(),
        refused,
        "someone else's code"
    );
    let before = expiry_days_ahead(&app, &owner).await;
    let ok = redeem_as(owner.clone(), code.clone()).await.unwrap();
    assert_eq!(ok["duration_months"], 3);
    let after = expiry_days_ahead(&app, &owner).await;
    assert!(after - before > 88.0, "{before} -> {after}");
    assert_eq!(
        redeem_as(owner, code).await.unwrap(),
        refused,
        "a used code: the same answer"
    );
}

#[tokio::test]
async fn a_returning_buyers_intent_before_its_checkout_gets_the_prices_duration() {
    let app = spawn_app().await;
    let email = format!("{}@example.com", unique("back"));
    let first = Purchase::new(&email, None);
    processed(&app, &first.checkout(Shape::Basil)).await; // 1 month, customer now mapped
    let after_first = expiry_days_ahead(&app, &email).await;
    // Same Stripe customer buys the 12-month pack; the intent (no price metadata) comes first.
    let second = Purchase {
        customer: first.customer.clone(),
        ..Purchase::new(&email, Some("price_demo_onetime"))
    };
    processed(&app, &second.intent_succeeded(Shape::Basil)).await;
    processed(&app, &second.checkout(Shape::Basil)).await;
    let months: i32 = app
        .sql
        .query_one("select v.duration_months from vouchers v join payment_intents pi on pi.id = v.payment_intent_id where pi.stripe_payment_intent_id = $1", &[&second.intent])
        .await
        .unwrap()
        .get(0);
    assert_eq!(months, 12);
    let gained = expiry_days_ahead(&app, &email).await - after_first;
    assert!(gained > 360.0 && gained < 370.0, "{gained}");
}
