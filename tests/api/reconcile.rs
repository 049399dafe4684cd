//! `reconcile` against the fake Stripe API serving the objects of realistic flows
//! (src/fixtures) as Stripe holds them at the end: a database that received every event
//! normally shows no drift; drift planted by hand is reported exactly, `--fix` repairs it
//! through the handlers so that the ledger and expiry equal those of a database that received
//! the same events normally, and a second run finds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;
use serde_json::Value;
use stripe_worker::cli::reconcile::{self, ReconcileArgs};
use stripe_worker::fixtures::{ApiVersion, FLOWS};
use stripe_worker::reconcile::{DriftKind, ObjectKind, Report};

use crate::catch_up::flow_from;
use crate::fakes::{fake_stripe, FakeStripe, StripeState};
use crate::flows::{deliver, retries_come_due};
use crate::helpers::{fresh_db, spawn_app_with, TestApp};
use crate::operator::{cli_env, run_binary_with};

/// Deliveries only: no API key, retries wait an hour unless the test lets time pass.
async fn app() -> TestApp {
    spawn_app_with(
        fresh_db().await,
        &[
            ("RETRY_BASE_DELAY_SECS", "3600"),
            ("RETRY_MAX_DELAY_SECS", "3600"),
        ],
    )
    .await
}

/// The events delivered in Stripe's order, each flow's retries come due.
async fn deliver_all(app: &TestApp, events: &[Value]) {
    let delivered = deliver(app, events).await;
    retries_come_due(app, &delivered).await;
}

fn reconcile_env(app: &TestApp, fake: &FakeStripe) -> HashMap<String, String> {
    let mut env = cli_env(app);
    env.insert("STRIPE_SECRET_KEY".into(), "sk_test_reconcile".into());
    env.insert("STRIPE_API_BASE".into(), fake.url.clone());
    env
}

async fn reconcile(app: &TestApp, fake: &FakeStripe, fix: bool) -> (Report, String) {
    let mut out = Vec::new();
    let backoff = stripe_worker::stripe_list::RateLimitBackoff {
        base: std::time::Duration::from_millis(50),
        ..Default::default()
    };
    let report = reconcile::run_with(
        &ReconcileArgs { json: false, fix },
        &reconcile_env(app, fake),
        &mut out,
        false,
        backoff,
    )
    .await
    .expect("reconcile runs");
    (report, String::from_utf8(out).unwrap())
}

/// (object, id, kind) of every drift.
fn found(report: &Report) -> BTreeSet<(ObjectKind, String, &'static str)> {
    report
        .drift
        .iter()
        .map(|d| (d.object, d.id.clone(), d.kind.as_str()))
        .collect()
}

/// Every grant, voucher and expiry, keyed by what does not depend on generated ids.
async fn ledger(app: &TestApp) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for row in app
        .sql
        .query(
            "select g.source, concat_ws(' ', g.kind, g.status, g.months, g.period_start, g.period_end,
                                        g.coverage_start, g.coverage_end, g.effective_at, u.email)
               from access_grants g join accounts a on a.id = g.account_id join users u on u.id = a.user_id",
            &[],
        )
        .await
        .unwrap()
    {
        out.insert(format!("grant {}", row.get::<_, String>(0)), row.get(1));
    }
    for row in app
        .sql
        .query(
            "select v.source, concat_ws(' ', v.status, v.is_used, v.duration_months, v.period_start, v.period_end)
               from vouchers v where v.source is not null",
            &[],
        )
        .await
        .unwrap()
    {
        out.insert(format!("voucher {}", row.get::<_, String>(0)), row.get(1));
    }
    for row in app
        .sql
        .query(
            "select u.email, a.expiry from accounts a join users u on u.id = a.user_id",
            &[],
        )
        .await
        .unwrap()
    {
        out.insert(
            format!("expiry {}", row.get::<_, String>(0)),
            row.get::<_, Option<String>>(1).unwrap_or_default(),
        );
    }
    out
}

async fn subscription_statuses(app: &TestApp) -> BTreeMap<String, String> {
    app.sql
        .query("select id, status::text from subscriptions", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_database_that_received_every_flow_normally_shows_no_drift() {
    let start = Utc::now().timestamp() - 200 * 86_400;
    let mut report = Vec::new();
    for (n, v) in ApiVersion::ALL.into_iter().enumerate() {
        let app = app().await;
        let mut state = StripeState::default();
        for (m, flow) in FLOWS.iter().enumerate() {
            let events = flow_from(flow.name, v, (7_000 + n * 100 + m) as u64, start);
            deliver_all(&app, &events).await;
            state.objects_from_events(&events);
        }
        let fake = fake_stripe(state);
        let (r, out) = reconcile(&app, &fake, false).await;
        assert!(
            r.compared.subscriptions > 10 && r.compared.invoices > 20,
            "{out}"
        );
        if !r.drift.is_empty() || !r.unreadable.is_empty() {
            report.push(format!("{v}:\n{out}"));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[tokio::test]
async fn planted_drift_is_reported_exactly_and_fix_repairs_it_as_normal_delivery_would() {
    let start = Utc::now().timestamp() - 120 * 86_400;
    let mut events = flow_from("renewal", ApiVersion::Basil, 501, start);
    events.extend(flow_from("renewal-failed", ApiVersion::Basil, 502, start));
    events.extend(flow_from(
        "checkout-payment",
        ApiVersion::V2020_08_27,
        503,
        start,
    ));
    let normal = app().await;
    let drifted = app().await;
    deliver_all(&normal, &events).await;
    deliver_all(&drifted, &events).await;
    let mut state = StripeState::default();
    state.objects_from_events(&events);
    let objects = state.objects.clone();
    let fake = fake_stripe(state);

    // What Stripe shows: the renewed subscription is active, its last invoice paid; the failed
    // renewal's invoice is not paid.
    let of = |kind: &'static str| objects.iter().filter(move |o| o["object"] == kind);
    let active = of("subscription")
        .find(|s| s["status"] == "active")
        .expect("an active subscription");
    let sub = active["id"].as_str().unwrap().to_owned();
    let paid = of("invoice")
        .filter(|i| i["status"] == "paid" && i["amount_paid"].as_i64() > Some(0))
        .filter(|i| i["parent"]["subscription_details"]["subscription"] == active["id"])
        .max_by_key(|i| i["created"].as_i64())
        .expect("a paid renewal");
    let paid = paid["id"].as_str().unwrap().to_owned();
    let unpaid = of("invoice")
        .find(|i| i["status"] != "paid" && i["amount_due"].as_i64() > Some(0))
        .expect("an invoice Stripe does not show paid");
    let unpaid = unpaid["id"].as_str().unwrap().to_owned();

    // Nothing to report on either database yet.
    let (clean, out) = reconcile(&normal, &fake, false).await;
    assert!(clean.drift.is_empty(), "{out}");
    let (clean, out) = reconcile(&drifted, &fake, false).await;
    assert!(clean.drift.is_empty(), "{out}");
    let expected_ledger = ledger(&normal).await;
    assert_eq!(ledger(&drifted).await, expected_ledger);

    // Drift, by hand: a status edited, a paid period's grant deleted, an unpaid invoice marked
    // paid (the rules then grant it).
    drifted
        .sql
        .batch_execute(&format!(
            "update subscriptions set status = 'canceled' where id = '{sub}';
             delete from access_grants where source = 'invoice:{paid}';
             update invoices set status = 'paid', amount_paid = amount_due where stripe_invoice_id = '{unpaid}';"
        ))
        .await
        .unwrap();
    assert_eq!(
        drifted
            .count(&format!(
                "select count(*) from access_grants where source = 'invoice:{unpaid}'"
            ))
            .await,
        1,
        "the edited invoice was granted"
    );
    assert_ne!(ledger(&drifted).await, expected_ledger);

    let (report, out) = reconcile(&drifted, &fake, false).await;
    let expected: BTreeSet<(ObjectKind, String, &str)> = [
        (
            ObjectKind::Subscription,
            sub.clone(),
            DriftKind::Differs.as_str(),
        ),
        (
            ObjectKind::Invoice,
            paid.clone(),
            DriftKind::PaidInvoiceWithoutGrant.as_str(),
        ),
        (
            ObjectKind::Invoice,
            unpaid.clone(),
            DriftKind::GrantWithoutPaidInvoice.as_str(),
        ),
    ]
    .into();
    assert_eq!(found(&report), expected, "{out}");
    let status = report.drift.iter().find(|d| d.id == sub).unwrap();
    assert_eq!(status.fields.len(), 1, "{out}");
    assert_eq!(
        (
            status.fields[0].field,
            status.fields[0].database.as_deref(),
            status.fields[0].stripe.as_deref()
        ),
        ("status", Some("canceled"), Some("active"))
    );
    assert_eq!(report.drift_left(), 3);
    assert!(
        out.contains("status: database canceled, Stripe active"),
        "{out}"
    );
    assert!(out.contains("run with --fix"), "{out}");

    // The binary: exit 1 with drift, the same drift as JSON.
    let env = reconcile_env(&drifted, &fake);
    let (code, stdout, stderr) = run_binary_with(env.clone(), &["reconcile", "--json"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["drift_left"], 3, "{stdout}");
    assert_eq!(json["drift"].as_array().unwrap().len(), 3, "{stdout}");

    // --fix: each repair is an event in the log, applied by the handlers.
    let (fixed, out) = reconcile(&drifted, &fake, true).await;
    assert_eq!(found(&fixed), expected, "{out}");
    assert_eq!(fixed.drift_left(), 0, "{out}");
    for d in &fixed.drift {
        let repair = d.repair.as_ref().unwrap();
        assert!(repair.fixed, "{out}");
        assert!(repair.event_id.starts_with("evt_reconcile_"), "{out}");
        let row = drifted
            .sql
            .query_one(
                "select processing_status, request_id, event_type from stripe_webhook_events where stripe_event_id = $1",
                &[&repair.event_id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "processed");
        assert!(row.get::<_, String>(1).starts_with("reconcile:"));
        assert_eq!(row.get::<_, String>(2), repair.event_type);
    }
    assert!(out.contains("repaired 3 of 3; 0 drift left"), "{out}");
    // The restored grant names the repair that established it.
    let paid_repair = &fixed.drift.iter().find(|d| d.id == paid).unwrap().repair;
    let established: Option<String> = drifted
        .sql
        .query_one(
            "select stripe_event_id from access_grants where source = $1",
            &[&format!("invoice:{paid}")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        established.as_deref(),
        paid_repair.as_ref().map(|r| r.event_id.as_str())
    );

    // As if the events had been delivered normally.
    assert_eq!(ledger(&drifted).await, expected_ledger);
    assert_eq!(
        subscription_statuses(&drifted).await,
        subscription_statuses(&normal).await
    );

    // Nothing left: a second --fix finds nothing; the binary exits 0.
    let (again, out) = reconcile(&drifted, &fake, true).await;
    assert!(again.drift.is_empty(), "{out}");
    let (code, stdout, stderr) = run_binary_with(env, &["reconcile"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(": 0 drift"), "{stdout}");
}

#[tokio::test]
async fn customers_missing_from_the_directory_changed_or_deleted_in_stripe_are_repaired() {
    let start = Utc::now().timestamp() - 30 * 86_400;
    let events = flow_from("checkout-subscription", ApiVersion::Dahlia, 601, start);
    let other = flow_from("checkout-payment", ApiVersion::Dahlia, 602, start);
    let app = app().await;
    deliver_all(&app, &events).await;
    deliver_all(&app, &other).await;
    let mut state = StripeState::default();
    state.objects_from_events(&events);
    state.objects_from_events(&other);
    let customer = |events: &[Value]| {
        events
            .iter()
            .find(|e| e["type"] == "customer.created")
            .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (changed, deleted) = (customer(&events), customer(&other));
    // In Stripe: one customer changed their email without an event reaching us, another was
    // deleted, a third exists that the directory never heard of.
    state.object_mut(&changed)["email"] = "new.address@example.com".into();
    state.objects.retain(|o| o["id"] != deleted.as_str());
    state.deleted_customers.push(deleted.clone());
    let mut stranger = state.object_mut(&changed).clone();
    stranger["id"] = "cus_never_heard_of".into();
    stranger["email"] = "stranger@example.com".into();
    state.objects.push(stranger);
    let fake = fake_stripe(state);

    let (report, out) = reconcile(&app, &fake, false).await;
    let expected: BTreeSet<(ObjectKind, String, &str)> = [
        (
            ObjectKind::Customer,
            changed.clone(),
            DriftKind::Differs.as_str(),
        ),
        (
            ObjectKind::Customer,
            deleted.clone(),
            DriftKind::DeletedInStripe.as_str(),
        ),
        (
            ObjectKind::Customer,
            "cus_never_heard_of".into(),
            DriftKind::Missing.as_str(),
        ),
    ]
    .into();
    assert_eq!(found(&report), expected, "{out}");
    let (fixed, out) = reconcile(&app, &fake, true).await;
    assert_eq!(fixed.drift_left(), 0, "{out}");
    let row = app
        .sql
        .query_one(
            "select email from stripe_customers where stripe_customer_id = $1",
            &[&changed],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("new.address@example.com")
    );
    assert_eq!(
        app.count(&format!(
            "select count(*) from customers where stripe_customer_id = '{deleted}'"
        ))
        .await,
        0,
        "a deleted customer is unlisted"
    );
    assert_eq!(
        app.count("select count(*) from stripe_customers where stripe_customer_id = 'cus_never_heard_of' and user_id is null")
            .await,
        1,
        "recorded, and no user without money"
    );
    let (again, out) = reconcile(&app, &fake, false).await;
    assert!(again.drift.is_empty(), "{out}");
}
