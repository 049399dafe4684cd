//! invoice_payment.paid: which payment paid an invoice. Since API 2025-03-31.basil an invoice's
//! PaymentIntent and Charge no longer name the invoice; this event is the link. It lets the
//! ledger tell an invoice's payment from a one-time purchase, revoke a subscription period when
//! its payment is refunded, and keep one billing history row per payment.

use serde::Deserialize;

use super::invoice::link_payment;
use super::object::expandable_id;
use super::{Applied, Handler, HandlerError};
use crate::db::EventTx;
use crate::envelope::EventEnvelope;

pub struct InvoicePayments;

#[derive(Deserialize)]
pub struct InvoicePayment {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    invoice: Option<String>,
    #[serde(default)]
    payment: Option<Payment>,
    #[serde(default)]
    amount_paid: Option<i64>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct Payment {
    #[serde(default, deserialize_with = "expandable_id")]
    payment_intent: Option<String>,
}

impl Handler for InvoicePayments {
    type Object = InvoicePayment;
    type Prepared = ();
    const OBJECT: &'static str = "invoice payment";
    const EVENT_TYPES: &'static [&'static str] = &["invoice_payment.paid"];

    async fn apply(
        &self,
        p: InvoicePayment,
        _: (),
        _event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let intent = p.payment.and_then(|pay| pay.payment_intent);
        let (Some(invoice), Some(intent)) = (p.invoice, intent) else {
            return Ok(Applied::note(format!(
                "invoice payment {} names no invoice and payment intent: nothing to link",
                p.id
            )));
        };
        if p.status.as_deref().is_some_and(|s| s != "paid") {
            return Ok(Applied::note(format!(
                "invoice payment {} is not paid",
                p.id
            )));
        }
        link_payment(tx, &invoice, &intent, p.amount_paid).await?;
        Ok(Applied::default())
    }
}
