//! customer.created / updated / deleted: keep the mapped user's profile in step; never create
//! or delete users from customer events.

use deadpool_postgres::Transaction;
use serde::Deserialize;

use super::provision;
use super::{ordering, Applied, Handler, HandlerError};
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

/// public.users mirrors what the customer says; auth.users (the sign-in address) is the
/// user's own business and is not changed from Stripe.
const UPDATE_PROFILE: &str = "
update public.users set email = coalesce($2, email), full_name = coalesce($3, full_name)
where id = $1";

const UPDATE_LINK_EMAIL: &str =
    "update public.stripe_customers set email = coalesce($2, email) where stripe_customer_id = $1";

const UNLINK: [&str; 2] = [
    "delete from public.stripe_customers where stripe_customer_id = $1",
    "update public.customers set stripe_customer_id = null where stripe_customer_id = $1",
];

pub struct Customers;

impl Handler for Customers {
    type Object = Customer;
    type Prepared = ();
    const OBJECT: &'static str = "customer";
    const EVENT_TYPES: &'static [&'static str] =
        &["customer.created", "customer.updated", "customer.deleted"];

    async fn apply(
        &self,
        c: Customer,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "customer.deleted";
        if !ordering::claim(tx, "customer", &c.id, event, 0, deleted).await? {
            return Ok(Applied::note(ordering::stale_note(&c.id)));
        }
        let user_id = provision::resolve_customer(tx, Some(&c.id)).await?;
        let Some(user) = user_id else {
            return Ok(Applied::note(format!(
                "customer {} is not mapped to a user",
                c.id
            )));
        };
        if deleted {
            // The mapping goes; the user, their account, payments and vouchers stay.
            for sql in UNLINK {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, &[&c.id]).await?;
            }
            return Ok(Applied {
                user_id,
                ..Applied::default()
            });
        }
        let email = c
            .email
            .as_deref()
            .and_then(Email::parse)
            .map(|e| e.as_str().to_owned());
        let name = c.name.filter(|n| !n.trim().is_empty());
        let stmt = tx.prepare_cached(UPDATE_PROFILE).await?;
        tx.execute(&stmt, &[&user, &email, &name]).await?;
        let stmt = tx.prepare_cached(UPDATE_LINK_EMAIL).await?;
        tx.execute(&stmt, &[&c.id, &email]).await?;
        Ok(Applied {
            user_id,
            ..Applied::default()
        })
    }
}
