//! Subscriptions: the row the frontend reads under every delivery order, both API shapes,
//! renewals through paid invoices (snapshots never grant), events before their checkout,
//! cancellation, tiers.

use serde_json::{json, Value};

use crate::helpers::{event, spawn_app, unique, TestApp};
use crate::purchase::Shape;

const DAY: i64 = 86_400;
const T0: i64 = 1_790_000_000; // the lifecycle's first second

/// accounts.expiry as the SQL writes it (ISO-8601 UTC).
fn iso(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

struct Sub {
    id: String,
    customer: String,
    email: String,
}

impl Sub {
    fn new() -> Self {
        Self {
            id: unique("sub"),
            customer: unique("cus"),
            email: format!("{}@example.com", unique("subscriber")),
        }
    }

    fn checkout(&self) -> Value {
        event(
            &unique("evt"),
            "checkout.session.completed",
            json!({
                "id": unique("cs_test"), "object": "checkout.session", "mode": "subscription",
                "status": "complete", "payment_status": "paid", "amount_total": 900, "currency": "usd",
                "customer": self.customer, "customer_details": {"email": self.email, "name": "Sam Subscriber"},
                "payment_intent": null, "subscription": self.id, "metadata": {}
            }),
        )
    }

    /// A snapshot of the subscription in the given API shape.
    fn snapshot(
        &self,
        shape: Shape,
        kind: &str,
        at: i64,
        status: &str,
        period: (i64, i64),
        price: &str,
        extra: Value,
    ) -> Value {
        let price_obj = json!({"id": price, "object": "price", "product": "prod_demo_monthly", "active": true,
                               "currency": "usd", "unit_amount": 900, "type": "recurring",
                               "recurring": {"interval": "month", "interval_count": 1}});
        let plan_obj = json!({"id": price, "object": "plan", "product": "prod_demo_monthly", "amount": 900,
                              "currency": "usd", "interval": "month", "interval_count": 1});
        let mut sub = json!({
            "id": self.id, "object": "subscription", "customer": self.customer, "status": status,
            "cancel_at_period_end": false, "created": T0, "cancel_at": null, "canceled_at": null,
            "ended_at": null, "trial_start": null, "trial_end": null, "metadata": {}, "livemode": false
        });
        match shape {
            Shape::Basil => {
                sub["items"] = json!({"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                    "price": price_obj, "quantity": 1, "current_period_start": period.0, "current_period_end": period.1}]});
            }
            Shape::V2020 => {
                sub["current_period_start"] = json!(period.0);
                sub["current_period_end"] = json!(period.1);
                sub["plan"] = plan_obj.clone();
                sub["quantity"] = json!(1);
                sub["items"] = json!({"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                    "plan": plan_obj, "quantity": 1}]});
            }
        }
        for (k, v) in extra.as_object().unwrap() {
            sub[k] = v.clone();
        }
        let mut e = event(&unique("evt"), kind, sub);
        e["created"] = json!(at);
        if let Shape::V2020 = shape {
            e["api_version"] = json!("2020-03-02");
        }
        e
    }

    /// created (P1), P1's invoice paid, renewed (P2), P2's invoice paid, deleted.
    fn lifecycle_with_invoices(&self, shape: Shape) -> Vec<Value> {
        let p1 = (T0, T0 + 30 * DAY);
        let p2 = (T0 + 30 * DAY, T0 + 60 * DAY);
        let mut first = invoice(self, shape, "invoice.paid", p1, "subscription_create");
        first["created"] = json!(T0 + 1);
        let mut renewal = invoice(self, shape, "invoice.paid", p2, "subscription_cycle");
        renewal["created"] = json!(T0 + 30 * DAY + 3600);
        let all = self.lifecycle(shape);
        vec![
            all[0].clone(),
            first,
            all[1].clone(),
            renewal,
            all[4].clone(),
        ]
    }

    /// created (P1), renewed (P2), past_due, active again, deleted: five seconds apart.
    fn lifecycle(&self, shape: Shape) -> Vec<Value> {
        let p1 = (T0, T0 + 30 * DAY);
        let p2 = (T0 + 30 * DAY, T0 + 60 * DAY);
        vec![
            self.snapshot(
                shape,
                "customer.subscription.created",
                T0,
                "active",
                p1,
                "price_demo_monthly",
                json!({}),
            ),
            self.snapshot(
                shape,
                "customer.subscription.updated",
                T0 + 30 * DAY,
                "active",
                p2,
                "price_demo_monthly",
                json!({}),
            ),
            self.snapshot(
                shape,
                "customer.subscription.updated",
                T0 + 30 * DAY + 3600,
                "past_due",
                p2,
                "price_demo_monthly",
                json!({}),
            ),
            self.snapshot(
                shape,
                "customer.subscription.updated",
                T0 + 30 * DAY + 7200,
                "active",
                p2,
                "price_demo_monthly",
                json!({}),
            ),
            self.snapshot(
                shape,
                "customer.subscription.deleted",
                T0 + 40 * DAY,
                "canceled",
                p2,
                "price_demo_monthly",
                json!({"canceled_at": T0 + 40 * DAY, "ended_at": T0 + 40 * DAY}),
            ),
        ]
    }
}

async fn ok(app: &TestApp, e: &Value) -> String {
    let answer = app.post_event(e).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body["status"].as_str().unwrap().to_owned()
}

/// How many vouchers the subscription has (one per paid period).
async fn vouchers(app: &TestApp, sub: &str) -> i64 {
    app.sql
        .query_one(
            "select count(*) from vouchers where subscription_id = $1",
            &[&sub],
        )
        .await
        .unwrap()
        .get(0)
}

/// The rows a subscriber's frontend reads, without random values.
async fn rows(app: &TestApp, sub: &str) -> Vec<String> {
    let queries = [
        "select concat_ws('|', status, price_id, quantity, cancel_at_period_end,
                extract(epoch from current_period_start)::bigint, extract(epoch from current_period_end)::bigint,
                coalesce(extract(epoch from ended_at)::bigint::text, '-'), coalesce(extract(epoch from cancel_at)::bigint::text, '-'),
                coalesce(extract(epoch from canceled_at)::bigint::text, '-'), coalesce(extract(epoch from trial_start)::bigint::text, '-'),
                coalesce(extract(epoch from trial_end)::bigint::text, '-'), stripe_subscription_id = id)
         from subscriptions where id = $1",
        "select coalesce(string_agg(concat_ws('|', extract(epoch from period_start)::bigint, extract(epoch from period_end)::bigint,
                duration_months, is_used, status), ',' order by period_start), '') from vouchers where subscription_id = $1",
        "select coalesce(max(a.expiry), '') from accounts a join subscriptions s on s.user_id = a.user_id where s.id = $1",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push(
            app.sql
                .query_one(q, &[&sub])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
                .unwrap_or_default(),
        );
    }
    out
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for i in 0..=p.len() {
            let mut q = p.clone();
            q.insert(i, n - 1);
            out.push(q);
        }
    }
    out
}

#[tokio::test]
async fn every_delivery_order_of_a_lifecycle_gives_the_in_order_rows() {
    let app = spawn_app().await;
    let mut reference: Option<Vec<String>> = None;
    let orders = permutations(5);
    assert_eq!(orders.len(), 120);
    // In order first: it is the reference.
    for order in std::iter::once((0..5).collect::<Vec<_>>()).chain(orders) {
        let sub = Sub::new();
        assert_eq!(ok(&app, &sub.checkout()).await, "processed");
        let events = sub.lifecycle_with_invoices(Shape::Basil);
        for &i in &order {
            assert_eq!(
                ok(&app, &events[i]).await,
                "processed",
                "order {order:?}, event {i}"
            );
        }
        let got = rows(&app, &sub.id).await;
        // Account numbers and codes differ per user; the expiry is the last paid period's end.
        match &reference {
            None => {
                let (p2s, p2e, end) = (T0 + 30 * DAY, T0 + 60 * DAY, T0 + 40 * DAY);
                assert_eq!(
                    got[0],
                    format!("canceled|price_demo_monthly|1|f|{p2s}|{p2e}|{end}|-|{end}|-|-|t")
                );
                assert_eq!(
                    got[1],
                    format!("{T0}|{p2s}|1|t|active,{p2s}|{p2e}|1|t|active"),
                    "one voucher per paid invoice's period"
                );
                assert_eq!(got[2], iso(p2e), "expiry at the second period's end");
                reference = Some(got);
            }
            Some(r) => assert_eq!(&got, r, "order {order:?}"),
        }
    }
}

#[tokio::test]
async fn both_api_shapes_give_the_same_rows() {
    let app = spawn_app().await;
    let mut results = Vec::new();
    for shape in [Shape::Basil, Shape::V2020] {
        let sub = Sub::new();
        ok(&app, &sub.checkout()).await;
        for e in sub.lifecycle(shape).iter().take(4) {
            assert_eq!(ok(&app, e).await, "processed");
        }
        results.push(rows(&app, &sub.id).await);
    }
    assert_eq!(results[0], results[1]);
    // Nullable timestamps stay NULL: the baseline's now() defaults are never used.
    assert_eq!(
        results[0][0],
        format!(
            "active|price_demo_monthly|1|f|{}|{}|-|-|-|-|-|t",
            T0 + 30 * DAY,
            T0 + 60 * DAY
        )
    );
    let defaults_leaked = app
        .count("select count(*) from subscriptions where ended_at is not null or cancel_at is not null or canceled_at is not null or trial_start is not null or trial_end is not null")
        .await;
    assert_eq!(defaults_leaked, 0);
}

fn invoice(sub: &Sub, shape: Shape, kind: &str, period: (i64, i64), reason: &str) -> Value {
    invoice_for(sub, shape, kind, period, reason, "price_demo_monthly")
}

fn invoice_for(
    sub: &Sub,
    shape: Shape,
    kind: &str,
    period: (i64, i64),
    reason: &str,
    price: &str,
) -> Value {
    let mut inv = json!({
        "id": unique("in"), "object": "invoice", "customer": sub.customer, "status": "paid",
        "amount_paid": 900, "amount_due": 900, "currency": "usd", "billing_reason": reason,
        "attempt_count": 1,
        "lines": {"object": "list", "data": [{"id": unique("il"), "object": "line_item", "amount": 900,
                  "period": {"start": period.0, "end": period.1}}]}
    });
    if kind == "invoice.payment_failed" {
        inv["status"] = json!("open");
        inv["amount_paid"] = json!(0);
    }
    match shape {
        Shape::Basil => {
            inv["parent"] = json!({"type": "subscription_details",
                                               "subscription_details": {"subscription": sub.id, "metadata": {}}});
            inv["lines"]["data"][0]["pricing"] = json!({"type": "price_details", "price_details": {"price": price, "product": "prod_demo_monthly"}});
            inv["lines"]["data"][0]["parent"] = json!({"type": "subscription_item_details",
                "subscription_item_details": {"subscription": sub.id, "proration": reason == "subscription_update"}});
        }
        Shape::V2020 => {
            inv["subscription"] = json!(sub.id);
            inv["lines"]["data"][0]["price"] = json!({"id": price, "object": "price"});
            inv["lines"]["data"][0]["type"] = json!("subscription");
            inv["lines"]["data"][0]["proration"] = json!(reason == "subscription_update");
        }
    }
    let mut e = event(&unique("evt"), kind, inv);
    if let Shape::V2020 = shape {
        e["api_version"] = json!("2020-03-02");
    }
    e
}

#[tokio::test]
async fn a_renewal_adds_exactly_one_voucher_per_period_and_moves_expiry() {
    for shape in [Shape::Basil, Shape::V2020] {
        let app = spawn_app().await;
        let sub = Sub::new();
        ok(&app, &sub.checkout()).await;
        let events = sub.lifecycle(shape);
        ok(&app, &events[0]).await;
        assert_eq!(
            vouchers(&app, &sub.id).await,
            0,
            "a snapshot grants nothing"
        );
        let p1 = (T0, T0 + 30 * DAY);
        ok(
            &app,
            &invoice(&sub, shape, "invoice.paid", p1, "subscription_create"),
        )
        .await;
        let p2 = (T0 + 30 * DAY, T0 + 60 * DAY);
        // Stripe sends both for one payment, and may send them before the subscription update.
        let paid = invoice(&sub, shape, "invoice.paid", p2, "subscription_cycle");
        let mut succeeded = paid.clone();
        succeeded["id"] = json!(unique("evt"));
        succeeded["type"] = json!("invoice.payment_succeeded");
        assert_eq!(ok(&app, &paid).await, "processed");
        assert_eq!(ok(&app, &succeeded).await, "processed");
        ok(&app, &events[1]).await; // the subscription's own renewal snapshot
        assert_eq!(vouchers(&app, &sub.id).await, 2, "{shape:?}");
        let expiry: String = app.sql.query_one("select a.expiry from accounts a join subscriptions s on s.user_id = a.user_id where s.id = $1", &[&sub.id]).await.unwrap().get(0);
        assert_eq!(expiry, iso(T0 + 60 * DAY), "{shape:?}");
        assert_eq!(app.count(&format!("select count(*) from events where metadata->>'subscription' = '{}' and event_type like 'stripe.invoice.%'", sub.id)).await, 2, "one history row per paid invoice");
        // A proration invoice of a plan change pays no new period.
        ok(
            &app,
            &invoice(
                &sub,
                shape,
                "invoice.paid",
                (T0 + 45 * DAY, T0 + 60 * DAY),
                "subscription_update",
            ),
        )
        .await;
        assert_eq!(vouchers(&app, &sub.id).await, 2);
        // A failed payment is history, not access.
        let failed = invoice(
            &sub,
            shape,
            "invoice.payment_failed",
            (T0 + 60 * DAY, T0 + 90 * DAY),
            "subscription_cycle",
        );
        assert_eq!(ok(&app, &failed).await, "processed");
        assert_eq!(vouchers(&app, &sub.id).await, 2);
        assert_eq!(app.count(&format!("select count(*) from events where metadata->>'subscription' = '{}' and event_type = 'stripe.invoice.payment_failed'", sub.id)).await, 1);
    }
}

#[tokio::test]
async fn a_subscription_event_before_its_checkout_applies_after_the_retry() {
    // Default backoff (30 s): linking the customer makes the waiting event due at once.
    let app = crate::helpers::spawn_app_with(
        crate::helpers::fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "30"),
            ("RETRY_MAX_DELAY_SECS", "60"),
        ],
    )
    .await;
    let sub = Sub::new();
    let created = &sub.lifecycle(Shape::Basil)[0];
    assert_eq!(ok(&app, created).await, "failed");
    let error: String = app
        .sql
        .query_one(
            "select error_message from stripe_webhook_events where stripe_event_id = $1",
            &[&created["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("not mapped to a user yet"), "{error}");
    assert_eq!(ok(&app, &sub.checkout()).await, "processed");
    app.wait_for_status(created["id"].as_str().unwrap(), "processed")
        .await;
    assert_eq!(app.count(&format!("select count(*) from subscriptions s join auth.users u on u.id = s.user_id where s.id = '{}' and u.email = '{}'", sub.id, sub.email)).await, 1);
    assert_eq!(
        vouchers(&app, &sub.id).await,
        0,
        "a snapshot grants nothing"
    );
    let paid = invoice(
        &sub,
        Shape::Basil,
        "invoice.paid",
        (T0, T0 + 30 * DAY),
        "subscription_create",
    );
    assert_eq!(ok(&app, &paid).await, "processed");
    assert_eq!(vouchers(&app, &sub.id).await, 1, "the paid invoice does");
}

#[tokio::test]
async fn cancellation_keeps_the_paid_time() {
    let app = spawn_app().await;
    let sub = Sub::new();
    ok(&app, &sub.checkout()).await;
    let p1 = (T0, T0 + 30 * DAY);
    ok(
        &app,
        &sub.snapshot(
            Shape::Basil,
            "customer.subscription.created",
            T0,
            "active",
            p1,
            "price_demo_monthly",
            json!({}),
        ),
    )
    .await;
    ok(
        &app,
        &invoice(
            &sub,
            Shape::Basil,
            "invoice.paid",
            p1,
            "subscription_create",
        ),
    )
    .await;
    let before = rows(&app, &sub.id).await;
    assert_eq!(before[2], iso(T0 + 30 * DAY), "the paid period");
    ok(&app, &sub.snapshot(Shape::Basil, "customer.subscription.updated", T0 + DAY, "active", p1, "price_demo_monthly",
                           json!({"cancel_at_period_end": true, "cancel_at": T0 + 30 * DAY, "canceled_at": T0 + DAY}))).await;
    ok(&app, &sub.snapshot(Shape::Basil, "customer.subscription.deleted", T0 + 30 * DAY, "canceled", p1, "price_demo_monthly",
                           json!({"cancel_at_period_end": true, "cancel_at": T0 + 30 * DAY, "canceled_at": T0 + DAY, "ended_at": T0 + 30 * DAY}))).await;
    let after = rows(&app, &sub.id).await;
    assert_eq!(after[1], before[1], "no voucher added or taken");
    assert_eq!(after[2], before[2], "expiry unchanged");
    assert!(after[0].starts_with("canceled|"), "{after:?}");
    // A late update after the deletion changes nothing.
    assert_eq!(
        ok(
            &app,
            &sub.snapshot(
                Shape::Basil,
                "customer.subscription.updated",
                T0 + 31 * DAY,
                "active",
                (T0 + 30 * DAY, T0 + 60 * DAY),
                "price_demo_monthly",
                json!({})
            )
        )
        .await,
        "processed"
    );
    assert_eq!(rows(&app, &sub.id).await, after);
    // A cancellation moves no money: the subscription row shows it, the billing history not.
    assert_eq!(app.count(&format!("select count(*) from events where event_type = 'stripe.customer.subscription.deleted' and metadata->>'subscription' = '{}'", sub.id)).await, 0);
}

#[tokio::test]
async fn same_second_snapshots_are_ordered_by_period_then_status() {
    let app = spawn_app().await;
    for order in [[0, 1], [1, 0]] {
        let sub = Sub::new();
        ok(&app, &sub.checkout()).await;
        let a = sub.snapshot(
            Shape::Basil,
            "customer.subscription.updated",
            T0,
            "active",
            (T0, T0 + 30 * DAY),
            "price_demo_monthly",
            json!({}),
        );
        let b = sub.snapshot(
            Shape::Basil,
            "customer.subscription.updated",
            T0,
            "active",
            (T0 + 30 * DAY, T0 + 60 * DAY),
            "price_demo_monthly",
            json!({}),
        );
        let pair = [a, b];
        for i in order {
            ok(&app, &pair[i]).await;
        }
        let r = rows(&app, &sub.id).await;
        assert!(
            r[0].starts_with(&format!(
                "active|price_demo_monthly|1|f|{}|{}|",
                T0 + 30 * DAY,
                T0 + 60 * DAY
            )),
            "{order:?}: {r:?}"
        );
        assert_eq!(r[1], "", "{order:?}: snapshots grant nothing");
    }
}

#[tokio::test]
async fn a_change_of_price_records_old_and_new_tiers() {
    let app = spawn_app().await;
    app.sql
        .batch_execute(
            "insert into products (id, active, name) values ('prod_pro', true, 'Pro');
             insert into prices (id, product_id, active, unit_amount, currency, type, interval, interval_count, lookup_key)
             values ('price_pro_yearly', 'prod_pro', true, 9900, 'usd', 'recurring', 'year', 1, 'pro_yearly');
             update products set name = 'Monthly' where id = 'prod_demo_monthly';",
        )
        .await
        .unwrap();
    let sub = Sub::new();
    ok(&app, &sub.checkout()).await;
    let created = sub.snapshot(
        Shape::Basil,
        "customer.subscription.created",
        T0,
        "active",
        (T0, T0 + 30 * DAY),
        "price_demo_monthly",
        json!({}),
    );
    ok(&app, &created).await;
    let mut upgraded = sub.snapshot(
        Shape::Basil,
        "customer.subscription.updated",
        T0 + DAY,
        "active",
        (T0 + DAY, T0 + 366 * DAY),
        "price_pro_yearly",
        json!({}),
    );
    upgraded["data"]["object"]["items"]["data"][0]["price"]["product"] = json!("prod_pro");
    upgraded["data"]["previous_attributes"] = json!({"items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_demo_monthly"}}]}});
    ok(&app, &upgraded).await;
    let tiers: (Option<String>, Option<String>) = app
        .sql
        .query_one(
            "select old_tier, new_tier from stripe_webhook_events where stripe_event_id = $1",
            &[&upgraded["id"].as_str().unwrap()],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    // The lookup key names the tier where the price has one, else the product name.
    assert_eq!(
        tiers,
        (Some("demo_monthly".into()), Some("pro_yearly".into()))
    );
    app.sql
        .execute(
            "update prices set lookup_key = null where id = 'price_demo_monthly'",
            &[],
        )
        .await
        .unwrap();
    let mut downgraded = sub.snapshot(
        Shape::Basil,
        "customer.subscription.updated",
        T0 + 2 * DAY,
        "active",
        (T0 + DAY, T0 + 366 * DAY),
        "price_demo_monthly",
        json!({}),
    );
    downgraded["data"]["previous_attributes"] = json!({"items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_pro_yearly"}}]}});
    ok(&app, &downgraded).await;
    let tiers: (Option<String>, Option<String>) = app
        .sql
        .query_one(
            "select old_tier, new_tier from stripe_webhook_events where stripe_event_id = $1",
            &[&downgraded["id"].as_str().unwrap()],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(tiers, (Some("pro_yearly".into()), Some("Monthly".into())));
    // The yearly period's paid invoice gives a 12-month voucher.
    let yearly = invoice_for(
        &sub,
        Shape::Basil,
        "invoice.paid",
        (T0 + DAY, T0 + 366 * DAY),
        "subscription_cycle",
        "price_pro_yearly",
    );
    ok(&app, &yearly).await;
    assert_eq!(
        app.count(&format!(
            "select count(*) from vouchers where subscription_id = '{}' and duration_months = 12",
            sub.id
        ))
        .await,
        1
    );
}

#[tokio::test]
async fn with_a_stripe_key_an_unmapped_subscription_customer_is_provisioned_directly() {
    let sub = Sub::new();
    let stripe = crate::fakes::stripe_customers(vec![(
        &sub.customer,
        Some(&sub.email),
        Some("Sam From Api"),
    )]);
    let app = crate::helpers::spawn_app_with(
        crate::helpers::fresh_db().await,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_fake_key_123"),
            ("STRIPE_API_BASE", &stripe.url),
        ],
    )
    .await;
    assert_eq!(ok(&app, &sub.lifecycle(Shape::Basil)[0]).await, "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from subscriptions s join public.users u on u.id = s.user_id
             where s.id = '{}' and u.email = '{}' and u.full_name = 'Sam From Api'",
            sub.id, sub.email
        ))
        .await,
        1
    );
    assert_eq!(
        vouchers(&app, &sub.id).await,
        0,
        "a snapshot grants nothing"
    );
    // The checkout that follows finds the same user through the customer mapping.
    assert_eq!(ok(&app, &sub.checkout()).await, "processed");
    assert_eq!(
        app.count(&format!(
            "select count(*) from auth.users where email = '{}'",
            sub.email
        ))
        .await,
        1
    );
    assert_eq!(
        stripe.requests.lock().unwrap().len(),
        1,
        "the customer was looked up once"
    );
}
