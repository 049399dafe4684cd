//! Delivering whole Stripe flows the way Stripe does (in order, or shuffled with redeliveries)
//! and reading back what a buyer has: grants, vouchers, expiry and billing history, without
//! ids or random values, so that deliveries of the same flow compare equal.

use chrono::{DateTime, TimeZone, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::helpers::{wait_until, TestApp};

/// Posts each event and expects it stored (200 and not a rejection).
pub async fn post_all(app: &TestApp, events: &[Value]) {
    for e in events {
        let answer = app.post_event(e).await;
        assert_eq!(answer.status, 200, "{}: {}", e["type"], answer.body);
    }
}

/// Stripe's order, then settled.
pub async fn deliver_in_order(app: &TestApp, events: &[Value]) {
    post_all(app, events).await;
    settle(app, events).await;
}

/// A shuffled delivery with about a third of the events delivered twice (Stripe's retries and
/// its at-least-once delivery), then settled.
pub async fn deliver_shuffled(app: &TestApp, events: &[Value], seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut order: Vec<&Value> = events.iter().collect();
    for e in events {
        if rng.gen_bool(0.35) {
            order.push(e);
        }
    }
    order.shuffle(&mut rng);
    for e in order {
        let answer = app.post_event(e).await;
        assert_eq!(answer.status, 200, "{}: {}", e["type"], answer.body);
    }
    settle(app, events).await;
}

/// Waits until every one of these events is processed or ignored. An event that arrived before
/// what it needs fails and is retried (the test app retries within a second); one that can
/// never apply makes this time out, naming it.
pub async fn settle(app: &TestApp, events: &[Value]) {
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    let open = || async {
        app.sql
            .query(
                "select stripe_event_id || ' ' || event_type || ' ' || processing_status || ' ' || coalesce(error_message, '')
                   from stripe_webhook_events
                  where stripe_event_id = any($1) and processing_status not in ('processed', 'ignored')",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = open().await;
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events that never applied: {left:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let stored: i64 = app
        .sql
        .query_one(
            "select count(*) from stripe_webhook_events where stripe_event_id = any($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as usize, ids.len(), "every event is stored once");
    wait_until("nothing left to do", || async { open().await.is_empty() }).await;
}

/// ISO-8601 UTC as accounts.expiry is written.
pub fn iso(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `secs` plus `months` calendar months, in UTC (how a purchase's months are counted).
pub fn add_months(secs: i64, months: u32) -> i64 {
    let t: DateTime<Utc> = Utc.timestamp_opt(secs, 0).unwrap();
    t.checked_add_months(chrono::Months::new(months))
        .unwrap()
        .timestamp()
}

/// What one buyer (by sign-in email) has, comparable across deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holdings {
    pub users: i64,
    pub accounts: i64,
    pub expiry: Option<String>,
    /// `kind months|start..end status[ reason] coverage_start..coverage_end`, in coverage order.
    pub grants: Vec<String>,
    /// `months used|unused status[ revoked_at][ start..end]`, sorted.
    pub vouchers: Vec<String>,
    /// `event_type amount status`, in time order.
    pub history: Vec<String>,
}

impl Holdings {
    /// Money received minus money returned, in the currency's major unit.
    pub fn total(&self) -> f64 {
        self.history
            .iter()
            .filter_map(|h| h.split(' ').nth(1)?.parse::<f64>().ok())
            .sum()
    }
}

pub async fn holdings(app: &TestApp, email: &str) -> Holdings {
    let user = "(select id from auth.users where lower(email) = lower($1))";
    let one = |sql: String| async move {
        app.sql
            .query(&sql, &[&email])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let users = app
        .sql
        .query_one(
            "select count(*) from auth.users where lower(email) = lower($1)",
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    let accounts = app
        .sql
        .query_one(
            &format!("select count(*) from accounts where user_id = {user}"),
            &[&email],
        )
        .await
        .unwrap()
        .get(0);
    let expiry = app
        .sql
        .query_opt(
            &format!(
                "select expiry from accounts where user_id = {user} order by created_at limit 1"
            ),
            &[&email],
        )
        .await
        .unwrap()
        .and_then(|r| r.get::<_, Option<String>>(0));
    let grants = one(format!(
        "select concat_ws(' ', g.kind,
                coalesce(g.months::text, extract(epoch from g.period_start)::bigint || '..' || extract(epoch from g.period_end)::bigint),
                g.status, g.revoked_reason,
                coalesce(extract(epoch from g.coverage_start)::bigint || '..' || extract(epoch from g.coverage_end)::bigint, '-'))
           from access_grants g join accounts a on a.id = g.account_id
          where a.user_id = {user}
          order by g.coverage_start nulls last, g.effective_at, g.kind"
    ))
    .await;
    let vouchers = one(format!(
        "select concat_ws(' ', v.duration_months, case when v.is_used then 'used' else 'unused' end, v.status,
                case when v.revoked_at is not null then 'revoked_at' end,
                extract(epoch from v.period_start)::bigint || '..' || extract(epoch from v.period_end)::bigint)
           from vouchers v join accounts a on a.account_number = v.associated_account
          where a.user_id = {user}
          order by 1"
    ))
    .await;
    let history = one(format!(
        "select concat_ws(' ', e.event_type, e.amount, e.status)
           from events e
          where e.user_id = {user}
          order by e.occurred_at, e.event_type, e.amount"
    ))
    .await;
    Holdings {
        users,
        accounts,
        expiry,
        grants,
        vouchers,
        history,
    }
}

/// A grant line as `Holdings::grants` writes it, for a period grant.
pub fn period_grant(kind: &str, period: (i64, i64), status: &str, coverage: (i64, i64)) -> String {
    format!(
        "{kind} {}..{} {status} {}..{}",
        period.0, period.1, coverage.0, coverage.1
    )
}

/// A grant line for a grant of months.
pub fn months_grant(kind: &str, months: u32, status: &str, coverage: Option<(i64, i64)>) -> String {
    match coverage {
        Some((a, b)) => format!("{kind} {months} {status} {a}..{b}"),
        None => format!("{kind} {months} {status}"),
    }
}
