//! `reconcile`: Stripe's current state against the database's. It lists customers,
//! subscriptions (`status=all`) and invoices, page by page within the read budget, reads each
//! object the way its handler does, and compares it with the rows the handler wrote and, for
//! invoices, with the grants the entitlement rules derive. Rows Stripe did not list are looked
//! up one by one (deleted customers, grants of invoices Stripe does not have).
//!
//! A repair ingests the object Stripe showed as a synthetic event through the normal pipeline
//! (`repair`), so handlers and triggers write and the event log records it; the object is then
//! compared again. Repairs go customers first, then subscriptions, then invoices (an invoice's
//! grant needs its buyer).

mod customers;
mod drift;
mod invoices;
mod repair;
mod subscriptions;

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use drift::{Drift, DriftKind, FieldDiff, ObjectKind, Repair, Seen};
pub use repair::EVENT_PREFIX;

use crate::envelope::EventEnvelope;
use crate::handlers::objects::{Customer, Invoice, Subscription};
use crate::ingest::{IngestError, Pipeline};
use crate::stripe_list::{object_id, StripeListError, StripeLists, MAX_PAGE};

/// The API version objects are listed in (and their repair events say): one the handlers
/// read, whatever the account's default.
pub const API_VERSION: &str = "2025-03-31.basil";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Stripe API: {0}")]
    Stripe(#[from] StripeListError),
    #[error("database error: {}", crate::db::describe(.0))]
    Database(#[from] tokio_postgres::Error),
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// How many objects of each kind Stripe showed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Compared {
    pub customers: usize,
    pub subscriptions: usize,
    pub invoices: usize,
}

/// An object Stripe listed that its handler cannot read (reported, not compared).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub object: ObjectKind,
    pub id: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub compared: Compared,
    pub drift: Vec<Drift>,
    pub unreadable: Vec<Unreadable>,
    /// Whether repairs were attempted (`--fix`).
    pub repaired: bool,
}

impl Report {
    /// Drift not repaired (all of it without `--fix`).
    pub fn drift_left(&self) -> usize {
        self.drift.iter().filter(|d| !d.is_fixed()).count()
    }
}

/// What `run` reports as it goes (a progress bar).
pub enum Step<'a> {
    Compared(ObjectKind),
    Repaired(&'a Drift),
}

pub struct Reconcile<'a> {
    pub pipeline: &'a Pipeline,
    pub lists: &'a StripeLists,
    /// The endpoint's mode (STRIPE_LIVEMODE or the key's): directory entries of the other mode
    /// are not Stripe's to confirm.
    pub livemode: Option<bool>,
}

impl Reconcile<'_> {
    pub async fn run(
        &self,
        fix: bool,
        progress: &mut dyn FnMut(Step<'_>),
    ) -> Result<Report, ReconcileError> {
        let mut report = Report::default();
        self.customers(&mut report, progress).await?;
        self.subscriptions(&mut report, progress).await?;
        self.invoices(&mut report, progress).await?;
        if fix {
            report.repaired = true;
            let request_id = format!("reconcile:{}", uuid::Uuid::new_v4());
            for i in 0..report.drift.len() {
                if !report.drift[i].repairable() {
                    continue;
                }
                let repair = self.repair(&report.drift[i], &request_id).await?;
                report.drift[i].repair = Some(repair);
                progress(Step::Repaired(&report.drift[i]));
            }
        }
        Ok(report)
    }

    async fn customers(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(Step<'_>),
    ) -> Result<(), ReconcileError> {
        let mut seen_ids = HashSet::new();
        let mut pages = Pages::new(self.lists, "/v1/customers", vec![]);
        while let Some(page) = pages.next().await? {
            let shown: Vec<(Customer, Seen)> =
                parse_page(page, ObjectKind::Customer, &mut report.unreadable);
            report.compared.customers += shown.len();
            seen_ids.extend(shown.iter().map(|(c, _)| c.id().to_owned()));
            let client = self.pipeline.pool().get().await?;
            report
                .drift
                .extend(customers::compare(&client, &shown).await?);
            drop(client);
            for _ in &shown {
                progress(Step::Compared(ObjectKind::Customer));
            }
        }
        // Directory entries Stripe did not list: deleted, or unknown to Stripe.
        let entries: Vec<(String, bool)> = {
            let client = self.pipeline.pool().get().await?;
            let stmt = client.prepare_cached(customers::LIVE_ENTRIES).await?;
            client
                .query(&stmt, &[&self.livemode])
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .filter(|(id, _): &(String, bool)| !seen_ids.contains(id))
                .collect()
        };
        for (id, mapped) in entries {
            let (raw, at) = self
                .lists
                .retrieve(&format!("/v1/customers/{id}"), Some(API_VERSION))
                .await?;
            let client = self.pipeline.pool().get().await?;
            match raw {
                None => report.drift.push(
                    Drift::new(ObjectKind::Customer, &id, DriftKind::UnknownToStripe, None).detail(
                        if mapped {
                            "in the directory and mapped to a user; Stripe has no such customer"
                        } else {
                            "in the directory; Stripe has no such customer"
                        },
                    ),
                ),
                Some(raw) => {
                    let deleted = is_deleted(&raw);
                    let seen = Seen { raw, at, deleted };
                    if deleted {
                        report
                            .drift
                            .extend(customers::deleted_drift(&client, &id, &seen).await?);
                    } else if let Ok(c) = serde_json::from_str::<Customer>(seen.raw.get()) {
                        // Created after the listing passed it.
                        report
                            .drift
                            .extend(customers::compare(&client, &[(c, seen)]).await?);
                    }
                }
            }
        }
        Ok(())
    }

    async fn subscriptions(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(Step<'_>),
    ) -> Result<(), ReconcileError> {
        let mut seen_ids = HashSet::new();
        let mut pages = Pages::new(
            self.lists,
            "/v1/subscriptions",
            vec![("status", "all".to_owned())],
        );
        while let Some(page) = pages.next().await? {
            let shown: Vec<(Subscription, Seen)> =
                parse_page(page, ObjectKind::Subscription, &mut report.unreadable);
            report.compared.subscriptions += shown.len();
            seen_ids.extend(shown.iter().map(|(s, _)| s.id.clone()));
            let client = self.pipeline.pool().get().await?;
            report
                .drift
                .extend(subscriptions::compare(&client, &shown).await?);
            drop(client);
            for _ in &shown {
                progress(Step::Compared(ObjectKind::Subscription));
            }
        }
        let unlisted = self.unlisted(subscriptions::ALL_IDS, &seen_ids).await?;
        for id in unlisted {
            match self
                .retrieve::<Subscription>(&format!("/v1/subscriptions/{id}"))
                .await?
            {
                None => report.drift.push(
                    Drift::new(
                        ObjectKind::Subscription,
                        &id,
                        DriftKind::UnknownToStripe,
                        None,
                    )
                    .detail("recorded; Stripe has no such subscription"),
                ),
                Some(shown) => {
                    let client = self.pipeline.pool().get().await?;
                    report
                        .drift
                        .extend(subscriptions::compare(&client, &[shown]).await?);
                }
            }
        }
        Ok(())
    }

    async fn invoices(
        &self,
        report: &mut Report,
        progress: &mut dyn FnMut(Step<'_>),
    ) -> Result<(), ReconcileError> {
        let mut seen_ids = HashSet::new();
        let mut pages = Pages::new(self.lists, "/v1/invoices", vec![]);
        while let Some(page) = pages.next().await? {
            let shown: Vec<(Invoice, Seen)> =
                parse_page(page, ObjectKind::Invoice, &mut report.unreadable);
            report.compared.invoices += shown.len();
            seen_ids.extend(shown.iter().map(|(i, _)| i.id().to_owned()));
            let mut client = self.pipeline.pool().get().await?;
            report
                .drift
                .extend(invoices::compare(&mut client, &shown).await?);
            drop(client);
            for _ in &shown {
                progress(Step::Compared(ObjectKind::Invoice));
            }
        }
        // Grants of invoices Stripe did not list.
        let unlisted = self.unlisted(invoices::GRANTED_IDS, &seen_ids).await?;
        for id in unlisted {
            match self
                .retrieve::<Invoice>(&format!("/v1/invoices/{id}"))
                .await?
            {
                None => report.drift.push(
                    Drift::new(ObjectKind::Invoice, &id, DriftKind::UnknownToStripe, None).detail(
                        format!("grant invoice:{id} stands; Stripe has no such invoice"),
                    ),
                ),
                Some(shown) => {
                    let mut client = self.pipeline.pool().get().await?;
                    report
                        .drift
                        .extend(invoices::compare(&mut client, &[shown]).await?);
                }
            }
        }
        Ok(())
    }

    /// The ids `sql` returns that Stripe did not list.
    async fn unlisted(
        &self,
        sql: &str,
        listed: &HashSet<String>,
    ) -> Result<Vec<String>, ReconcileError> {
        let client = self.pipeline.pool().get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|id| !listed.contains(id))
            .collect())
    }

    async fn retrieve<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<Option<(T, Seen)>, ReconcileError> {
        let (raw, at) = self.lists.retrieve(path, Some(API_VERSION)).await?;
        Ok(raw.and_then(|raw| {
            let object = serde_json::from_str::<T>(raw.get()).ok()?;
            Some((
                object,
                Seen {
                    raw,
                    at,
                    deleted: false,
                },
            ))
        }))
    }

    /// Ingests what Stripe showed, then compares the object again.
    async fn repair(&self, d: &Drift, request_id: &str) -> Result<Repair, ReconcileError> {
        let not_ingested = |event_id: String, reason: String| Repair {
            event_id,
            event_type: String::new(),
            status: "not ingested".into(),
            fixed: false,
            remaining: Some(reason),
        };
        let Some(seen) = &d.seen else {
            return Ok(not_ingested(
                String::new(),
                "no snapshot from Stripe".into(),
            ));
        };
        let event = repair::synthetic(
            d.object,
            &d.id,
            seen,
            Some(API_VERSION),
            self.livemode.unwrap_or(false),
        );
        let envelope = match EventEnvelope::parse(event.body.as_bytes()) {
            Ok(envelope) => envelope,
            Err(e) => return Ok(not_ingested(event.id, e.to_string())),
        };
        let status = self
            .pipeline
            .deliver(&envelope, &event.body, request_id)
            .await?;
        let remaining = self.recheck(d, seen).await?;
        Ok(Repair {
            event_id: event.id,
            event_type: event.event_type.to_owned(),
            status: status.as_str().to_owned(),
            fixed: remaining.is_none(),
            remaining: remaining.map(|r| r.description()),
        })
    }

    /// The drift the object still shows against the database.
    async fn recheck(&self, d: &Drift, seen: &Seen) -> Result<Option<Drift>, ReconcileError> {
        let mut client = self.pipeline.pool().get().await?;
        let seen = seen.clone();
        let again = match (d.object, seen.deleted) {
            (ObjectKind::Customer, true) => customers::deleted_drift(&client, &d.id, &seen)
                .await?
                .into_iter()
                .collect(),
            (ObjectKind::Customer, false) => match serde_json::from_str(seen.raw.get()) {
                Ok(c) => customers::compare(&client, &[(c, seen)]).await?,
                Err(_) => vec![],
            },
            (ObjectKind::Subscription, _) => match serde_json::from_str(seen.raw.get()) {
                Ok(s) => subscriptions::compare(&client, &[(s, seen)]).await?,
                Err(_) => vec![],
            },
            (ObjectKind::Invoice, _) => match serde_json::from_str(seen.raw.get()) {
                Ok(i) => invoices::compare(&mut client, &[(i, seen)]).await?,
                Err(_) => vec![],
            },
        };
        Ok(again.into_iter().next())
    }
}

/// A deleted object as Stripe shows it: `{"id": …, "deleted": true}`.
fn is_deleted(raw: &RawValue) -> bool {
    #[derive(Deserialize)]
    struct Deleted {
        #[serde(default)]
        deleted: bool,
    }
    serde_json::from_str::<Deleted>(raw.get()).is_ok_and(|d| d.deleted)
}

/// Each element of a page read as its handler reads it; the ones it cannot read are reported.
fn parse_page<T: DeserializeOwned>(
    page: crate::stripe_list::RawPage,
    object: ObjectKind,
    unreadable: &mut Vec<Unreadable>,
) -> Vec<(T, Seen)> {
    let at = page.requested_at;
    page.data
        .into_iter()
        .filter_map(|raw| match serde_json::from_str::<T>(raw.get()) {
            Ok(parsed) => Some((
                parsed,
                Seen {
                    raw,
                    at,
                    deleted: false,
                },
            )),
            Err(e) => {
                unreadable.push(Unreadable {
                    object,
                    id: object_id(&raw),
                    reason: e.to_string(),
                });
                None
            }
        })
        .collect()
}

/// The pages of one list, in Stripe's order.
struct Pages<'a> {
    lists: &'a StripeLists,
    path: &'static str,
    query: Vec<(&'static str, String)>,
    after: Option<String>,
    done: bool,
}

impl<'a> Pages<'a> {
    fn new(
        lists: &'a StripeLists,
        path: &'static str,
        mut query: Vec<(&'static str, String)>,
    ) -> Self {
        query.push(("limit", MAX_PAGE.to_string()));
        Self {
            lists,
            path,
            query,
            after: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<crate::stripe_list::RawPage>, StripeListError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .lists
            .page(
                self.path,
                &self.query,
                self.after.as_deref(),
                Some(API_VERSION),
            )
            .await?;
        self.after = page.data.iter().rev().find_map(|raw| object_id(raw));
        self.done = !page.has_more || self.after.is_none();
        Ok(Some(page))
    }
}
