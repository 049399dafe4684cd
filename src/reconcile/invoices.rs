//! Invoices, through the entitlement rules: a grant (`invoice:<id>`, a subscription period or a
//! one-off invoice's terms) must stand exactly for the invoices Stripe shows paid that the
//! rules grant. The invoice row the handler writes is compared too (status, amounts), since the
//! rules read it.
//!
//! Whether the rules grant an invoice is asked of the rules themselves: `sync_invoice_grant`
//! runs on the recorded row in a transaction that is rolled back, so this check can never
//! disagree with what the trigger does when the invoice is ingested.

use std::collections::HashMap;

use deadpool_postgres::Client;

use super::drift::{Drift, DriftKind, Fields, ObjectKind, Seen};
use crate::handlers::objects::Invoice;

/// The status the handler records for an invoice it reads from a list (any snapshot).
const EVENT_TYPE: &str = "invoice.updated";

/// Per id: recorded?, status, amount_paid, subtotal, grant?
const ROWS: &str = "
select ids.id, i.stripe_invoice_id is not null, i.status, i.amount_paid, i.subtotal,
       exists (select 1 from public.access_grants g where g.source = 'invoice:' || ids.id)
from unnest($1::text[]) ids(id)
left join public.invoices i on i.stripe_invoice_id = ids.id";

/// The invoices that have a grant (those Stripe did not list are looked up one by one).
pub const GRANTED_IDS: &str = "
select distinct stripe_invoice_id from public.access_grants
where kind in ('subscription_period', 'invoice') and stripe_invoice_id is not null";

const RULE: [&str; 2] = [
    "select public.sync_invoice_grant($1)",
    "select exists (select 1 from public.access_grants where source = 'invoice:' || $1::text)",
];

struct Row {
    recorded: bool,
    status: Option<String>,
    amount_paid: Option<i64>,
    subtotal: Option<i64>,
    granted: bool,
}

/// The drift of each shown invoice.
pub async fn compare(
    client: &mut Client,
    shown: &[(Invoice, Seen)],
) -> Result<Vec<Drift>, tokio_postgres::Error> {
    let ids: Vec<&str> = shown.iter().map(|(i, _)| i.id()).collect();
    let stmt = client.prepare_cached(ROWS).await?;
    let rows: HashMap<String, Row> = client
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                Row {
                    recorded: r.get(1),
                    status: r.get(2),
                    amount_paid: r.get(3),
                    subtotal: r.get(4),
                    granted: r.get(5),
                },
            )
        })
        .collect();
    let mut drift = Vec::new();
    for (inv, seen) in shown {
        let Some(row) = rows.get(inv.id()) else {
            continue;
        };
        let status = inv.status(EVENT_TYPE);
        let amount_paid = inv.recorded_amount_paid(&status);
        let paid = status == "paid";
        let money = amount_paid.unwrap_or(0) > 0 || inv.subtotal().unwrap_or(0) > 0;
        let new = |kind| Drift::new(ObjectKind::Invoice, inv.id(), kind, Some(seen.clone()));
        let mut f = Fields::default();
        if row.recorded {
            f.compare("status", row.status.clone(), Some(status.clone()));
            f.compare("amount_paid", row.amount_paid, amount_paid);
            f.compare("subtotal", row.subtotal, inv.subtotal());
        }
        let fields = f.into_vec();
        if row.granted && !paid {
            drift.push(
                new(DriftKind::GrantWithoutPaidInvoice)
                    .detail(format!(
                        "grant invoice:{} stands; Stripe: {status}",
                        inv.id()
                    ))
                    .with_fields(fields),
            );
        } else if !row.recorded {
            if paid && money {
                drift.push(new(DriftKind::Missing).detail(format!(
                    "not recorded; Stripe: paid, amount_paid {}",
                    amount_paid.unwrap_or(0)
                )));
            }
        } else if !fields.is_empty() {
            drift.push(new(DriftKind::Differs).with_fields(fields));
        } else if paid && money && !row.granted && rules_grant(client, inv.id()).await? {
            drift.push(new(DriftKind::PaidInvoiceWithoutGrant).detail(format!(
                "Stripe: paid, amount_paid {}; no grant invoice:{}",
                amount_paid.unwrap_or(0),
                inv.id()
            )));
        }
    }
    Ok(drift)
}

/// Whether the entitlement rules give the recorded invoice a grant (asked in a transaction
/// that is rolled back: nothing is written).
async fn rules_grant(client: &mut Client, invoice: &str) -> Result<bool, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let sync = tx.prepare_cached(RULE[0]).await?;
    let exists = tx.prepare_cached(RULE[1]).await?;
    tx.execute(&sync, &[&invoice]).await?;
    let granted = tx.query_one(&exists, &[&invoice]).await?.get(0);
    tx.rollback().await?;
    Ok(granted)
}
