//! payment_method.attached / updated / automatically_updated / detached: what the frontend
//! may show of a card (type, last four, expiry), never more.

use serde::Deserialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::object::expandable_id;
use super::provision;
use super::{ordering, Applied, Handler, HandlerError};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct PaymentMethod {
    id: String,
    #[serde(rename = "type", default)]
    method_type: Option<String>,
    #[serde(default, deserialize_with = "expandable_id")]
    customer: Option<String>,
    #[serde(default)]
    card: Option<Details>,
    #[serde(default)]
    sepa_debit: Option<Details>,
    #[serde(default)]
    us_bank_account: Option<Details>,
    #[serde(default)]
    bacs_debit: Option<Details>,
    #[serde(default)]
    au_becs_debit: Option<Details>,
    #[serde(default)]
    acss_debit: Option<Details>,
}

#[derive(Deserialize, Default, Clone)]
struct Details {
    #[serde(default)]
    last4: Option<String>,
    #[serde(default)]
    exp_month: Option<i32>,
    #[serde(default)]
    exp_year: Option<i32>,
}

impl PaymentMethod {
    fn details(&self) -> Details {
        let by_type = match self.method_type.as_deref() {
            Some("card") => &self.card,
            Some("sepa_debit") => &self.sepa_debit,
            Some("us_bank_account") => &self.us_bank_account,
            Some("bacs_debit") => &self.bacs_debit,
            Some("au_becs_debit") => &self.au_becs_debit,
            Some("acss_debit") => &self.acss_debit,
            _ => &None,
        };
        by_type.clone().unwrap_or_default()
    }
}

/// Parameters: `PaymentMethodRow`.
const UPSERT: &str = "
insert into public.payment_methods
  (stripe_payment_method_id, type, last_four, exp_month, exp_year, customer_id, stripe_customer_id)
values ($1, $2, $3, $4, $5, $6, $7)
on conflict (stripe_payment_method_id) do update
set type = excluded.type, last_four = excluded.last_four, exp_month = excluded.exp_month,
    exp_year = excluded.exp_year,
    customer_id = coalesce(excluded.customer_id, payment_methods.customer_id),
    stripe_customer_id = coalesce(excluded.stripe_customer_id, payment_methods.stripe_customer_id),
    updated_at = now()";

/// `UPSERT`'s parameters, in their order ($1 … $7).
struct PaymentMethodRow<'a> {
    stripe_payment_method_id: &'a str,
    method_type: &'a str,
    /// Last four ($3), expiry month and year ($4, $5).
    details: &'a Details,
    user_id: Option<Uuid>,
    stripe_customer_id: Option<&'a str>,
}

impl PaymentMethodRow<'_> {
    fn params(&self) -> [&(dyn ToSql + Sync); 7] {
        [
            &self.stripe_payment_method_id,
            &self.method_type,
            &self.details.last4,
            &self.details.exp_month,
            &self.details.exp_year,
            &self.user_id,
            &self.stripe_customer_id,
        ]
    }
}

const REMOVE: &str = "delete from public.payment_methods where stripe_payment_method_id = $1";

pub struct PaymentMethods;

impl Handler for PaymentMethods {
    type Object = PaymentMethod;
    type Prepared = ();
    const OBJECT: &'static str = "payment method";
    const EVENT_TYPES: &'static [&'static str] = &[
        "payment_method.attached",
        "payment_method.updated",
        "payment_method.automatically_updated",
        "payment_method.detached",
    ];

    async fn apply(
        &self,
        pm: PaymentMethod,
        _: (),
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        // Stripe never re-attaches a detached payment method: deletion wins.
        let detached = event.event_type == "payment_method.detached";
        if !ordering::claim(tx, "payment_method", &pm.id, event, 0, detached).await? {
            return Ok(Applied::note(ordering::stale_note(&pm.id)));
        }
        if detached {
            let stmt = tx.prepare_cached(REMOVE).await?;
            tx.execute(&stmt, &[&pm.id]).await?;
            return Ok(Applied::default());
        }
        let user_id = provision::resolve_customer(tx.client(), pm.customer.as_deref()).await?;
        if let Some(user) = user_id {
            provision::ensure_customer_row(tx, user).await?;
        }
        let details = pm.details();
        let row = PaymentMethodRow {
            stripe_payment_method_id: &pm.id,
            method_type: pm.method_type.as_deref().unwrap_or("unknown"),
            details: &details,
            user_id,
            stripe_customer_id: pm.customer.as_deref(),
        };
        let stmt = tx.prepare_cached(UPSERT).await?;
        tx.execute(&stmt, &row.params()).await?;
        let note = (user_id.is_none() && pm.customer.is_some())
            .then(|| "customer not mapped yet: stored unlinked".to_owned());
        Ok(Applied {
            user_id,
            note,
            ..Applied::default()
        })
    }
}
