//! customer.created / updated / deleted: the directory of Stripe customers, mapped or not.
//!
//! It remembers the email and name Stripe holds, so a buyer whose payment arrived without an
//! address (subscriptions created through the API, payments of a customer nobody knows yet) is
//! provisioned from it — here, when money from this customer is already stored unlinked, or by
//! the payment's own event when it comes later. A user is created for money, never for a
//! customer alone.
//!
//! An address changed in Stripe is recorded (a later guest checkout with it finds the same
//! user) but never becomes the user's sign-in address: that is theirs to change through Supabase
//! Auth, which confirms it; public.users.email mirrors the sign-in address. A deletion keeps the
//! mapping (the cancellation Stripe sends with it still belongs to the same person) but drops it
//! from public.customers.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::provision::{self, PreparedBuyer};
use super::{ordering, Applied, Handler, HandlerError, PrepareContext};
use crate::db::EventTx;
use crate::email::Email;
use crate::envelope::EventEnvelope;

#[derive(Deserialize)]
pub struct Customer {
    id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Parameters: id, email, name, livemode, deleted at.
const RECORD: &str = "
insert into public.stripe_customers as sc (stripe_customer_id, email, name, livemode, deleted_at)
values ($1, $2, $3, $4, $5)
on conflict (stripe_customer_id) do update
set email = coalesce(excluded.email, sc.email), name = coalesce(excluded.name, sc.name),
    livemode = excluded.livemode, deleted_at = coalesce(sc.deleted_at, excluded.deleted_at),
    updated_at = now()
returning user_id";

/// A name fills an empty full_name only: the user may have edited theirs.
const FILL_NAME: &str =
    "update public.users set full_name = $2::text where id = $1 and full_name is null and $2::text is not null";

const UNLIST: &str =
    "update public.customers set stripe_customer_id = null where stripe_customer_id = $1";

pub struct Customers;

impl Customer {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The address the directory records for this snapshot (`None` when there is none or it
    /// is not an address).
    pub fn email(&self) -> Option<Email> {
        self.email.as_deref().and_then(Email::parse)
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref().filter(|n| !n.trim().is_empty())
    }
}

impl Handler for Customers {
    type Object = Customer;
    type Prepared = Option<PreparedBuyer>;
    const OBJECT: &'static str = "customer";
    const EVENT_TYPES: &'static [&'static str] =
        &["customer.created", "customer.updated", "customer.deleted"];

    /// Money from this customer already stored, waiting for its buyer: they are provisioned now.
    async fn prepare(
        &self,
        c: &Customer,
        event: &EventEnvelope,
        cx: &PrepareContext<'_>,
    ) -> Result<Option<PreparedBuyer>, HandlerError> {
        if event.event_type == "customer.deleted" || c.email().is_none() {
            return Ok(None);
        }
        if provision::customer_is_mapped(cx, Some(&c.id)).await? {
            return Ok(None);
        }
        let waiting = cx
            .query_opt(provision::UNLINKED_PAYMENT, &[&c.id])
            .await?
            .is_some_and(|r| r.get(0));
        if !waiting {
            return Ok(None);
        }
        let buyer = provision::find_buyer(cx, Some(&c.id), c.email.as_deref(), c.name()).await?;
        match buyer {
            Some(buyer) => provision::prepare_buyer(cx, buyer).await,
            None => Ok(None),
        }
    }

    async fn apply(
        &self,
        c: Customer,
        prepared: Option<PreparedBuyer>,
        event: &EventEnvelope,
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "customer.deleted";
        if !ordering::claim(tx, "customer", &c.id, event, 0, deleted).await? {
            return Ok(Applied::note(ordering::stale_note(&c.id)));
        }
        provision::lock_customer(tx, &c.id).await?;
        let email = c.email().map(|e| e.as_str().to_owned());
        let deleted_at: Option<DateTime<Utc>> = deleted.then_some(event.created).flatten();
        let stmt = tx.prepare_cached(RECORD).await?;
        let mapped: Option<uuid::Uuid> = tx
            .query_one(
                &stmt,
                &[&c.id, &email, &c.name(), &event.livemode, &deleted_at],
            )
            .await?
            .get(0);
        let mapped = match mapped {
            Some(user) => Some(user),
            None => provision::resolve_customer(tx.client(), Some(&c.id)).await?,
        };
        if let Some(user) = mapped {
            if deleted {
                let stmt = tx.prepare_cached(UNLIST).await?;
                tx.execute(&stmt, &[&c.id]).await?;
            } else {
                let stmt = tx.prepare_cached(FILL_NAME).await?;
                tx.execute(&stmt, &[&user, &c.name()]).await?;
            }
            return Ok(Applied::for_user(Some(user)));
        }
        match prepared {
            Some(buyer) => {
                let user = provision::provision(tx, &buyer).await?;
                provision::link_customer(tx, user, &c.id, Some(&buyer.buyer.email)).await?;
                Ok(Applied {
                    linked_customer: Some(c.id.clone()),
                    ..Applied::for_user(Some(user))
                })
            }
            // A payment committed while this event prepared: retry, so the retry provisions.
            None if !deleted
                && email.is_some()
                && provision::has_unlinked_payment(tx.client(), &c.id).await? =>
            {
                Err(HandlerError::NotYet(format!(
                    "a payment of customer {} arrived meanwhile: retried to provision its buyer",
                    c.id
                )))
            }
            None => Ok(Applied::note(format!(
                "customer {} recorded; no user until money arrives from them",
                c.id
            ))),
        }
    }
}
