//! Subscriptions: the row the handler writes (status, price, current period, cancel and trial
//! fields) against the subscription Stripe shows, read and normalized as the handler reads it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use deadpool_postgres::Client;

use super::drift::{Drift, DriftKind, Fields, ObjectKind, Seen};
use crate::handlers::objects::Subscription;

const ROWS: &str = "
select id, status::text, price_id, current_period_start, current_period_end, cancel_at_period_end,
       cancel_at, canceled_at, ended_at, trial_start, trial_end
from public.subscriptions where id = any($1)";

/// Which of `$1` (Stripe customer ids) are mapped to a user.
const MAPPED: &str = concat!(
    "select cid from unnest($1::text[]) cid where ",
    crate::handlers::customer_user_sql!("cid"),
    " is not null"
);

/// Every stored subscription (those Stripe did not list are looked up one by one).
pub const ALL_IDS: &str = "select id from public.subscriptions";

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// Never paid, of a customer nobody knows: the handler records nothing (not drift).
fn never_paid(status: Option<&str>) -> bool {
    matches!(
        status,
        Some("incomplete" | "incomplete_expired" | "canceled")
    )
}

/// The drift of each shown subscription.
pub async fn compare(
    client: &Client,
    shown: &[(Subscription, Seen)],
) -> Result<Vec<Drift>, tokio_postgres::Error> {
    let ids: Vec<&str> = shown.iter().map(|(s, _)| s.id.as_str()).collect();
    let stmt = client.prepare_cached(ROWS).await?;
    let rows: HashMap<String, tokio_postgres::Row> = client
        .query(&stmt, &[&ids])
        .await?
        .into_iter()
        .map(|r| (r.get::<_, String>(0), r))
        .collect();
    let unrecorded_customers: Vec<&str> = shown
        .iter()
        .filter(|(s, _)| !rows.contains_key(&s.id))
        .filter_map(|(s, _)| s.customer.as_deref())
        .collect();
    let mapped: HashSet<String> = if unrecorded_customers.is_empty() {
        HashSet::new()
    } else {
        let stmt = client.prepare_cached(MAPPED).await?;
        client
            .query(&stmt, &[&unrecorded_customers])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut drift = Vec::new();
    for (s, seen) in shown {
        let Some(row) = rows.get(&s.id) else {
            let known = s.customer.as_ref().is_some_and(|c| mapped.contains(c));
            if known || !never_paid(s.status.as_deref()) {
                drift.push(
                    Drift::new(
                        ObjectKind::Subscription,
                        &s.id,
                        DriftKind::Missing,
                        Some(seen.clone()),
                    )
                    .detail(format!(
                        "not recorded; Stripe: {}",
                        s.status.as_deref().unwrap_or("(no status)")
                    )),
                );
            }
            continue;
        };
        let snap = s.snapshot();
        let mut f = Fields::default();
        if let Some(status) = &s.status {
            f.compare(
                "status",
                row.get::<_, Option<String>>(1),
                Some(status.clone()),
            );
        }
        f.compare(
            "price",
            row.get::<_, Option<String>>(2),
            snap.price.as_ref().map(|p| p.id.clone()),
        );
        if snap.period_start.is_some() {
            f.compare_time("current_period_start", row.get(3), snap.period_start);
        }
        if snap.period_end.is_some() {
            f.compare_time("current_period_end", row.get(4), snap.period_end);
        }
        if s.cancel_at_period_end.is_some() {
            f.compare(
                "cancel_at_period_end",
                row.get::<_, Option<bool>>(5),
                s.cancel_at_period_end,
            );
        }
        f.compare_time("cancel_at", row.get(6), ts(s.cancel_at));
        f.compare_time("canceled_at", row.get(7), ts(s.canceled_at));
        f.compare_time("ended_at", row.get(8), ts(s.ended_at));
        f.compare_time("trial_start", row.get(9), ts(s.trial_start));
        f.compare_time("trial_end", row.get(10), ts(s.trial_end));
        let fields = f.into_vec();
        if !fields.is_empty() {
            drift.push(
                Drift::new(
                    ObjectKind::Subscription,
                    &s.id,
                    DriftKind::Differs,
                    Some(seen.clone()),
                )
                .with_fields(fields),
            );
        }
    }
    Ok(drift)
}
