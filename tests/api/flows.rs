//! Every named flow (src/fixtures) in every API version, delivered to the real app in Stripe's
//! order: every event ends `processed` or `ignored` (none `failed` or `dead`).

use serde_json::Value;
use stripe_worker::cli::trigger::{self, TriggerArgs, TriggerReport};
use stripe_worker::fixtures::{ApiVersion, ShopOptions, DAY, FLOWS};

use crate::helpers::{fresh_db, spawn_app_with, wait_until, TestApp};
use crate::operator::{cli_env, run_binary};

/// One app per version; retries wait an hour unless the test lets time pass.
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

/// Posts the events one by one in order; after each, lets the work it made due finish (as
/// the time between Stripe's deliveries would). Returns (event id, type) pairs.
pub async fn deliver(app: &TestApp, events: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in events {
        let answer = app.post_event(e).await;
        assert_eq!(answer.status, 200, "{}: {}", e["type"], answer.body);
        out.push((
            e["id"].as_str().unwrap().to_owned(),
            e["type"].as_str().unwrap().to_owned(),
        ));
        settle(app, &out).await;
    }
    out
}

/// Waits until none of these events is due: a customer mapping wakes the events that waited
/// for it (they are retried at once), everything else waits an hour in this test.
async fn settle(app: &TestApp, answers: &[(String, String)]) {
    let ids: Vec<&str> = answers.iter().map(|a| a.0.as_str()).collect();
    wait_until("the flow's woken events to be processed", || async {
        let due: i64 = app
            .sql
            .query_one(
                "select count(*) from stripe_webhook_events
                  where stripe_event_id = any($1)
                    and (processing_status in ('pending', 'processing')
                         or (processing_status = 'failed' and next_attempt_at <= now()))",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        due == 0
    })
    .await;
}

/// Time passes: the flow's failed events come due and are retried, three rounds (a woken event
/// may be retried before the one it depends on). What still fails after that never applies.
pub async fn retries_come_due(app: &TestApp, delivered: &[(String, String)]) {
    let ids: Vec<&str> = delivered.iter().map(|d| d.0.as_str()).collect();
    for _ in 0..3 {
        app.sql
            .execute(
                "update stripe_webhook_events set next_attempt_at = now()
                  where stripe_event_id = any($1) and processing_status = 'failed'",
                &[&ids],
            )
            .await
            .unwrap();
        settle(app, delivered).await;
    }
}

#[tokio::test]
async fn every_flow_in_every_version_ends_processed_or_ignored() {
    let mut report = Vec::new();
    for (n, v) in ApiVersion::ALL.into_iter().enumerate() {
        let app = app().await;
        for (m, flow) in FLOWS.iter().enumerate() {
            let events = flow.events(ShopOptions {
                seed: (n * 1000 + m) as u64,
                api_version: v,
                ..ShopOptions::default()
            });
            let delivered = deliver(&app, &events).await;
            retries_come_due(&app, &delivered).await;
            for (id, event_type) in delivered {
                let stored = app.event_status(&id).await.unwrap_or_default();
                if !matches!(stored.as_str(), "processed" | "ignored") {
                    let error: Option<String> = app
                        .sql
                        .query_one(
                            "select error_message from stripe_webhook_events where stripe_event_id = $1",
                            &[&id],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    report.push(format!(
                        "{} {v} {event_type}: {stored} ({})",
                        flow.name,
                        error.unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "{} events did not apply:\n{}",
        report.len(),
        report.join("\n")
    );
}

async fn trigger(app: &TestApp, args: TriggerArgs) -> (TriggerReport, String) {
    let args = TriggerArgs {
        url: Some(app.webhook_url()),
        ..args
    };
    let mut out = Vec::new();
    let report = trigger::run(&args, &cli_env(app), &mut out)
        .await
        .expect("trigger runs");
    (report, String::from_utf8(out).unwrap())
}

#[tokio::test]
async fn trigger_sends_a_whole_flow_in_order_with_one_line_per_answer() {
    let app = app().await;
    let (report, out) = trigger(
        &app,
        TriggerArgs {
            target: Some("renewal".into()),
            api_version: ApiVersion::V2020_08_27,
            ..Default::default()
        },
    )
    .await;
    assert!(report.is_success(), "{out}");
    let types: Vec<&str> = report
        .answers
        .iter()
        .map(|a| a.event_type.as_str())
        .collect();
    let expected = stripe_worker::fixtures::flow("renewal")
        .unwrap()
        .events(ShopOptions {
            api_version: ApiVersion::V2020_08_27,
            ..ShopOptions::default()
        });
    let expected: Vec<&str> = expected
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, expected);
    assert_eq!(
        out.lines().filter(|l| l.contains(" HTTP 200 ")).count(),
        types.len(),
        "{out}"
    );
    for a in &report.answers {
        let stored: Value = app
            .sql
            .query_one(
                "select event_data from stripe_webhook_events where stripe_event_id = $1",
                &[&a.event_id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored["api_version"], "2020-08-27");
    }
    // The flow ends now (months differ in length: up to a few days before), never later.
    let last: Value = app
        .sql
        .query_one(
            "select event_data from stripe_webhook_events where stripe_event_id = $1",
            &[&report.last().unwrap().event_id],
        )
        .await
        .unwrap()
        .get(0);
    let now = chrono::Utc::now().timestamp();
    let created = last["created"].as_i64().unwrap();
    assert!(
        (now - 3 * DAY..=now).contains(&created),
        "{created} vs {now}"
    );
}

#[tokio::test]
async fn trigger_invoice_paid_first_sends_the_subscription_it_pays() {
    let app = app().await;
    let (report, out) = trigger(
        &app,
        TriggerArgs {
            target: Some("invoice.paid".into()),
            email: stripe_worker::email::Email::parse("a@example.com"),
            ..Default::default()
        },
    )
    .await;
    assert!(report.is_success(), "{out}");
    let last = report.last().unwrap();
    assert_eq!(last.event_type, "invoice.paid");
    assert!(report
        .answers
        .iter()
        .any(|a| a.event_type == "checkout.session.completed"));
    settle(&app, &[(last.event_id.clone(), String::new())]).await;
    assert_eq!(
        app.event_status(&last.event_id).await.as_deref(),
        Some("processed"),
        "{out}"
    );
    assert_eq!(
        app.count(
            "select count(*) from subscriptions s join users u on u.id = s.user_id
              where lower(u.email) = 'a@example.com' and s.status = 'active'"
        )
        .await,
        1,
        "{out}"
    );
}

#[tokio::test]
async fn trigger_lists_the_flows_and_rejects_unknown_targets() {
    let app = app().await;
    let listed = run_binary(&app, &["trigger", "--list"]).await;
    assert_eq!(listed.0, Some(0), "{listed:?}");
    for f in FLOWS {
        assert!(
            listed.1.lines().any(|l| l.starts_with(f.name)),
            "{} in {listed:?}",
            f.name
        );
    }
    let sent = run_binary(
        &app,
        &[
            "trigger",
            "refund-failed",
            "--api-version",
            "2024-06-20",
            "--url",
            &app.webhook_url(),
        ],
    )
    .await;
    assert_eq!(sent.0, Some(0), "{sent:?}");
    assert!(sent.1.contains("charge.refund.updated"), "{sent:?}");
    let old_type = run_binary(
        &app,
        &[
            "trigger",
            "refund.failed",
            "--api-version",
            "2024-06-20",
            "--url",
            &app.webhook_url(),
        ],
    )
    .await;
    assert_ne!(
        old_type.0,
        Some(0),
        "refund.failed does not exist before 2024-10-28"
    );
    assert!(old_type.2.contains("charge.refund.updated"), "{old_type:?}");
    let bad_version =
        run_binary(&app, &["trigger", "renewal", "--api-version", "2019-01-01"]).await;
    assert_ne!(bad_version.0, Some(0));
    assert!(
        bad_version.2.contains("2025-03-31.basil"),
        "{bad_version:?}"
    );
}
