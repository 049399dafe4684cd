//! invoice.*: the invoice in its latest state, and which payment paid it.
//!
//! Every API shape: the subscription is `parent.subscription_details.subscription` from
//! 2025-03-31.basil on, `subscription` before; a line's price is `pricing.price_details.price`
//! from basil on, `price` (or `plan`, before 2018) before; a line is a proration when
//! `parent.*_details.proration` (basil) or `proration` says so. What a paid invoice grants (its
//! billing period, or a one-off invoice's terms) and its billing history row are derived in SQL.
//! A paid invoice of a buyer nobody knows yet provisions them (from `customer_email`, the
//! directory of Stripe customers, or the Stripe API).

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::json;

use super::object::expandable_id;
use super::provision::{self, PreparedBuyer};
use super::{billing, ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

pub struct Invoices;

#[derive(Deserialize)]
pub struct Invoice {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    customer_email: Option<String>,
    #[serde(default)]
    customer_name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    /// Before invoices had a status (2018).
    #[serde(default)]
    paid: Option<bool>,
    #[serde(default)]
    forgiven: Option<bool>,
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
    #[serde(default)]
    parent: Option<Parent>,
    #[serde(default, deserialize_with = "expandable_id")]
    payment_intent: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    charge: Option<String>,
    #[serde(default)]
    billing_reason: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    amount_due: Option<i64>,
    #[serde(default)]
    amount_paid: Option<i64>,
    #[serde(default)]
    subtotal: Option<i64>,
    #[serde(default)]
    total: Option<i64>,
    #[serde(default)]
    attempt_count: Option<i32>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    status_transitions: Option<StatusTransitions>,
    #[serde(default)]
    lines: Option<Lines>,
}

#[derive(Deserialize)]
struct Parent {
    #[serde(default)]
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Deserialize)]
struct SubscriptionDetails {
    #[serde(default, deserialize_with = "expandable_id")]
    subscription: Option<String>,
}

#[derive(Deserialize)]
struct StatusTransitions {
    #[serde(default)]
    paid_at: Option<i64>,
}

#[derive(Deserialize, Default)]
struct Lines {
    #[serde(default)]
    data: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    quantity: Option<i64>,
    #[serde(default)]
    proration: Option<bool>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    period: Option<Period>,
    #[serde(default, deserialize_with = "expandable_id")]
    price: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    plan: Option<String>,
    #[serde(default)]
    pricing: Option<Pricing>,
    #[serde(default)]
    parent: Option<LineParent>,
}

#[derive(Deserialize, Clone, Copy)]
struct Period {
    start: i64,
    end: i64,
}

#[derive(Deserialize)]
struct Pricing {
    #[serde(default)]
    price_details: Option<PriceDetails>,
}

#[derive(Deserialize)]
struct PriceDetails {
    #[serde(default, deserialize_with = "expandable_id")]
    price: Option<String>,
}

#[derive(Deserialize)]
struct LineParent {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    subscription_item_details: Option<ItemDetails>,
    #[serde(default)]
    invoice_item_details: Option<ItemDetails>,
}

#[derive(Deserialize)]
struct ItemDetails {
    #[serde(default)]
    proration: Option<bool>,
}

impl Line {
    fn price_id(&self) -> Option<&str> {
        self.price.as_deref().or(self.plan.as_deref()).or_else(|| {
            self.pricing
                .as_ref()?
                .price_details
                .as_ref()?
                .price
                .as_deref()
        })
    }

    fn is_proration(&self) -> bool {
        let parent = self.parent.as_ref();
        self.proration
            .or_else(|| parent?.subscription_item_details.as_ref()?.proration)
            .or_else(|| parent?.invoice_item_details.as_ref()?.proration)
            .unwrap_or(false)
    }

    fn is_subscription(&self) -> bool {
        self.kind.as_deref() == Some("subscription")
            || self.parent.as_ref().and_then(|p| p.kind.as_deref())
                == Some("subscription_item_details")
    }
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| Utc.timestamp_opt(s, 0).single())
}

impl Invoice {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn subtotal(&self) -> Option<i64> {
        self.subtotal
    }

    /// What `invoices.amount_paid` records for this snapshot in `status`: before 2018 an
    /// invoice said `paid` and its `total`, not `amount_paid`.
    pub fn recorded_amount_paid(&self, status: &str) -> Option<i64> {
        self.amount_paid.or_else(|| {
            (status == "paid")
                .then_some(self.total.or(self.amount_due))
                .flatten()
        })
    }

    pub fn subscription_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| d.subscription.as_deref())
            .or(self.subscription.as_deref())
    }

    /// The status the handler records for this snapshot, delivered as `event_type` (before
    /// 2018 an invoice had no status: its `paid` flag or the event type tells).
    pub fn status(&self, event_type: &str) -> String {
        if let Some(status) = &self.status {
            return status.clone();
        }
        match (self.paid, self.forgiven, event_type) {
            (Some(true), _, _) | (_, _, "invoice.paid" | "invoice.payment_succeeded") => "paid",
            (_, Some(true), _) => "uncollectible",
            _ => "open",
        }
        .to_owned()
    }

    fn lines(&self) -> &[Line] {
        self.lines.as_ref().map_or(&[], |l| &l.data)
    }

    /// The billing period a subscription invoice pays: its subscription lines that are not
    /// prorations (a plan change's credit and its prorated rest pay no new period). Lines of
    /// old versions that do not say their type count when the invoice is a subscription's.
    fn period(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.subscription_id()?;
        let typed = self
            .lines()
            .iter()
            .any(|l| l.kind.is_some() || l.parent.is_some());
        let periods = self
            .lines()
            .iter()
            .filter(|l| !l.is_proration() && l.amount.unwrap_or(0) >= 0)
            .filter(|l| !typed || l.is_subscription())
            .filter_map(|l| l.period);
        let start = periods.clone().map(|p| p.start).min()?;
        let end = periods.map(|p| p.end).max()?;
        Some((ts(Some(start))?, ts(Some(end))?))
    }

    /// What the entitlement rules read of each line.
    fn lines_json(&self) -> serde_json::Value {
        self.lines()
            .iter()
            .map(|l| {
                json!({
                    "price": l.price_id(), "quantity": l.quantity, "amount": l.amount,
                    "proration": l.is_proration(), "subscription": l.is_subscription(),
                    "period_start": l.period.map(|p| p.start), "period_end": l.period.map(|p| p.end),
                })
            })
            .collect()
    }
}

/// Same-second snapshots of one invoice: its status progression.
fn status_rank(status: &str) -> i64 {
    match status {
        "draft" => 1,
        "open" => 2,
        "uncollectible" => 3,
        "void" | "paid" => 4,
        _ => 0,
    }
}

/// Parameters: `InvoiceRow`.
const UPSERT: &str = "
insert into public.invoices
  (stripe_invoice_id, stripe_customer_id, user_id, stripe_subscription_id, status, billing_reason,
   currency, amount_due, amount_paid, subtotal, total, attempt_count, paid_at, period_start,
   period_end, lines, livemode, invoice_created_at)
values ($1, $2, $3, $4, $5, $6, lower($7), $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
on conflict (stripe_invoice_id) do update
set stripe_customer_id = excluded.stripe_customer_id,
    user_id = coalesce(excluded.user_id, invoices.user_id),
    stripe_subscription_id = excluded.stripe_subscription_id, status = excluded.status,
    billing_reason = excluded.billing_reason, currency = excluded.currency,
    amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,
    subtotal = excluded.subtotal, total = excluded.total, attempt_count = excluded.attempt_count,
    paid_at = coalesce(invoices.paid_at, excluded.paid_at), period_start = excluded.period_start,
    period_end = excluded.period_end, lines = excluded.lines, livemode = excluded.livemode,
    invoice_created_at = excluded.invoice_created_at, updated_at = now()";

const LINK_PAYMENT: &str = "
insert into public.invoice_payments (stripe_invoice_id, stripe_payment_intent_id, amount_paid, status)
values ($1, $2, $3, 'paid')
on conflict (stripe_invoice_id, stripe_payment_intent_id) do nothing";

/// Records that `payment_intent` paid `invoice` (from whichever event says so first).
pub async fn link_payment(
    tx: &EventTx,
    invoice: &str,
    payment_intent: &str,
    amount_paid: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(LINK_PAYMENT).await?;
    tx.execute(&stmt, &[&invoice, &payment_intent, &amount_paid])
        .await?;
    Ok(())
}

/// The intent of a charge an invoice names (charges recorded before their invoice).
const CHARGE_INTENT: &str = "
select pi.stripe_payment_intent_id from public.charges c
join public.payment_intents pi on pi.id = c.payment_intent_id where c.stripe_charge_id = $1";

/// The owner of a stored subscription (an invoice of a customer whose mapping is gone).
const SUBSCRIPTION_OWNER: &str = "select user_id from public.subscriptions where id = $1";

impl Handler for Invoices {
    type Object = Invoice;
    type Prepared = Option<PreparedBuyer>;
    const OBJECT: &'static str = "invoice";
    const EVENT_TYPES: &'static [&'static str] = &[
        "invoice.created",
        "invoice.finalized",
        "invoice.updated",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        "invoice.marked_uncollectible",
        "invoice.voided",
    ];

    /// A paid invoice of a customer nobody knows yet: who bought.
    async fn prepare(
        &self,
        inv: &Invoice,
        event: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        if inv.status(&event.event_type) != "paid" {
            return Ok(None);
        }
        let Some(customer) = &inv.customer else {
            return Ok(None);
        };
        provision::prepare_unmapped(
            cx,
            customer,
            inv.customer_email.as_deref(),
            inv.customer_name.as_deref(),
        )
        .await
    }

    async fn apply(
        &self,
        inv: Invoice,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let status = inv.status(&event.event_type);
        link_paying_intent(tx, &inv).await?;
        let applied = owner(tx, &inv, &status, prepared.as_ref()).await?;
        if event.event_type == "invoice.payment_failed" {
            let meta = json!({
                "invoice": inv.id, "subscription": inv.subscription_id(), "customer": inv.customer,
                "amount_due": inv.amount_due, "attempt_count": inv.attempt_count,
            });
            billing::record_failed_payment(
                tx,
                event,
                applied.user_id,
                inv.currency.as_deref(),
                meta,
            )
            .await?;
        }
        if !ordering::claim(tx, "invoice", &inv.id, event, status_rank(&status), false).await? {
            return Ok(Applied {
                note: Some(ordering::stale_note(&inv.id)),
                ..applied
            });
        }
        let row = InvoiceRow::new(&inv, &status, applied.user_id, event);
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(&stmt, &row.params()).await?;
        Ok(applied)
    }
}

/// Which payment paid the invoice (before API 2025-03-31.basil the invoice names it): a fact
/// whatever the snapshot's age.
async fn link_paying_intent(tx: &EventTx, inv: &Invoice) -> Result<(), HandlerError> {
    if let Some(intent) = &inv.payment_intent {
        link_payment(tx, &inv.id, intent, inv.amount_paid).await?;
    } else if let Some(charge) = &inv.charge {
        let stmt = tx.prepare_cached(CHARGE_INTENT).await?;
        if let Some(row) = tx.query_opt(&stmt, &[charge]).await? {
            link_payment(tx, &inv.id, row.get(0), inv.amount_paid).await?;
        }
    }
    Ok(())
}

/// The invoice's buyer: its customer's user, else the stored subscription's owner (the
/// customer's mapping may be gone), else — a paid invoice — the buyer `prepare` found, now
/// provisioned and linked. None: stored unlinked until the customer is mapped.
async fn owner(
    tx: &EventTx,
    inv: &Invoice,
    status: &str,
    prepared: Option<&PreparedBuyer>,
) -> Result<Applied, HandlerError> {
    if let Some(user) = provision::resolve_customer(tx.client(), inv.customer.as_deref()).await? {
        return Ok(Applied::for_user(Some(user)));
    }
    if let Some(sub) = inv.subscription_id() {
        let stmt = tx.prepare_cached(SUBSCRIPTION_OWNER).await?;
        if let Some(row) = tx.query_opt(&stmt, &[&sub]).await? {
            return Ok(Applied::for_user(Some(row.get(0))));
        }
    }
    let Some(customer) = &inv.customer else {
        return Ok(Applied::default());
    };
    match prepared {
        Some(p) => {
            let user = provision::provision(tx, p).await?;
            provision::link_customer(tx, user, customer, Some(&p.buyer.email)).await?;
            Ok(Applied {
                linked_customer: Some(customer.clone()),
                ..Applied::for_user(Some(user))
            })
        }
        None => {
            if status == "paid" {
                provision::wait_if_buyer_arrived(tx, customer).await?;
            }
            Ok(Applied::default())
        }
    }
}

/// `UPSERT`'s parameters, in their order ($1 … $18).
struct InvoiceRow<'a> {
    id: &'a str,
    customer: Option<&'a str>,
    user_id: Option<uuid::Uuid>,
    subscription: Option<&'a str>,
    status: &'a str,
    billing_reason: Option<&'a str>,
    currency: &'a str,
    amount_due: Option<i64>,
    amount_paid: Option<i64>,
    subtotal: Option<i64>,
    total: Option<i64>,
    attempt_count: Option<i32>,
    paid_at: Option<DateTime<Utc>>,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
    lines: serde_json::Value,
    livemode: bool,
    created: Option<DateTime<Utc>>,
}

impl<'a> InvoiceRow<'a> {
    fn new(
        inv: &'a Invoice,
        status: &'a str,
        user_id: Option<uuid::Uuid>,
        event: &EventEnvelope,
    ) -> Self {
        let period = inv.period();
        Self {
            id: &inv.id,
            customer: inv.customer.as_deref(),
            user_id,
            subscription: inv.subscription_id(),
            status,
            billing_reason: inv.billing_reason.as_deref(),
            currency: inv.currency.as_deref().unwrap_or("usd"),
            amount_due: inv.amount_due,
            amount_paid: inv.recorded_amount_paid(status),
            subtotal: inv.subtotal,
            total: inv.total,
            attempt_count: inv.attempt_count,
            paid_at: match status {
                "paid" => {
                    ts(inv.status_transitions.as_ref().and_then(|t| t.paid_at)).or(event.created)
                }
                _ => None,
            },
            period_start: period.map(|p| p.0),
            period_end: period.map(|p| p.1),
            lines: inv.lines_json(),
            livemode: event.livemode,
            created: ts(inv.created).or(event.created),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 18] {
        [
            &self.id,
            &self.customer,
            &self.user_id,
            &self.subscription,
            &self.status,
            &self.billing_reason,
            &self.currency,
            &self.amount_due,
            &self.amount_paid,
            &self.subtotal,
            &self.total,
            &self.attempt_count,
            &self.paid_at,
            &self.period_start,
            &self.period_end,
            &self.lines,
            &self.livemode,
            &self.created,
        ]
    }
}
