//! The handlers, one file per Stripe object, and the registry: the one place that lists them.
//! Event-type routing is derived from each handler's `EVENT_TYPES`.
//!
//! Adding a handler: a file with a unit struct implementing `Handler` (see `handler.rs`), its
//! `mod` line, and its entry in `HANDLERS`.

mod billing;
mod catalog;
mod charge;
mod checkout;
mod customer;
mod dispute;
mod handler;
mod invoice;
mod invoice_payment;
mod object;
mod ordering;
mod payment_intent;
mod payment_method;
mod provision;
mod refund;
mod subscription;

pub use handler::{Applied, Handler, HandlerError, PrepareContext, Prepared, Route, Services};
/// Who a Stripe customer is mapped to, as SQL: the one definition `reconcile` shares.
pub(crate) use provision::customer_user_sql;

/// Stripe objects as the handlers read them, in any API version: what `reconcile` compares
/// with the rows the handlers wrote.
pub mod objects {
    pub use super::customer::Customer;
    pub use super::invoice::Invoice;
    pub use super::subscription::{Snapshot, Subscription};
}

/// Every handler. An event type no handler lists is recorded and `ignored` (answered 200),
/// never rejected: Stripe disables endpoints that keep failing.
static HANDLERS: &[&dyn Route] = &[
    &catalog::Products,
    &catalog::Prices,
    &catalog::Plans,
    &checkout::CheckoutCompleted,
    &payment_intent::PaymentIntents,
    &charge::Charges,
    &refund::Refunds,
    &dispute::Disputes,
    &payment_method::PaymentMethods,
    &customer::Customers,
    &subscription::Subscriptions,
    &invoice::Invoices,
    &invoice_payment::InvoicePayments,
];

/// The handler for `event_type`, if any.
pub fn route(event_type: &str) -> Option<&'static dyn Route> {
    HANDLERS
        .iter()
        .copied()
        .find(|h| h.event_types().contains(&event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_exactly_one_handler() {
        let mut seen = std::collections::BTreeSet::new();
        for handler in HANDLERS {
            for t in handler.event_types() {
                assert!(seen.insert(*t), "{t} is routed twice");
            }
        }
        assert!(seen.contains("checkout.session.completed"));
        assert!(route("checkout.session.completed").is_some());
        assert!(route("issuing_card.created").is_none());
    }
}
