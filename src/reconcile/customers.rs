//! Customers: the directory of Stripe customers (`stripe_customers`: who a customer id is and
//! the address Stripe holds) against the customers Stripe lists, and directory entries of
//! customers Stripe has deleted.

use std::collections::HashMap;

use deadpool_postgres::Client;

use super::drift::{Drift, DriftKind, Fields, ObjectKind, Seen};
use crate::handlers::objects::Customer;

/// Per id: in the directory?, its email, deleted?
const ROWS: &str = "
select ids.id, sc.stripe_customer_id is not null, sc.email, sc.deleted_at is not null
from unnest($1::text[]) ids(id)
left join public.stripe_customers sc on sc.stripe_customer_id = ids.id";

/// Directory entries not deleted, of this mode (`$1`; NULL: any mode), with whether they are
/// mapped (those Stripe did not list are looked up one by one).
pub const LIVE_ENTRIES: &str = "
select stripe_customer_id, user_id is not null from public.stripe_customers
where deleted_at is null and ($1::boolean is null or livemode is null or livemode = $1)";

/// Whether the directory records the customer as deleted.
pub const DELETED: &str =
    "select deleted_at is not null from public.stripe_customers where stripe_customer_id = $1";

/// The drift of each customer Stripe lists (none of them deleted).
pub async fn compare(
    client: &Client,
    shown: &[(Customer, Seen)],
) -> Result<Vec<Drift>, tokio_postgres::Error> {
    let ids: Vec<&str> = shown.iter().map(|(c, _)| c.id()).collect();
    let stmt = client.prepare_cached(ROWS).await?;
    let rows: HashMap<String, (bool, Option<String>, bool)> = client
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3))))
        .collect();
    let mut drift = Vec::new();
    for (c, seen) in shown {
        let Some((recorded, email, deleted)) = rows.get(c.id()) else {
            continue;
        };
        let new = |kind| Drift::new(ObjectKind::Customer, c.id(), kind, Some(seen.clone()));
        if !recorded {
            drift.push(new(DriftKind::Missing).detail("not in the directory of Stripe customers"));
            continue;
        }
        let mut f = Fields::default();
        f.compare("deleted", Some(*deleted), Some(false));
        // The directory keeps the last address Stripe reported; a customer without one keeps it.
        if let Some(stripe_email) = c.email() {
            f.compare(
                "email",
                email.clone(),
                Some(stripe_email.as_str().to_owned()),
            );
        }
        let fields = f.into_vec();
        if !fields.is_empty() {
            drift.push(new(DriftKind::Differs).with_fields(fields));
        }
    }
    Ok(drift)
}

/// A directory entry whose customer Stripe shows deleted is drift while the directory does
/// not record the deletion.
pub async fn deleted_drift(
    client: &Client,
    id: &str,
    seen: &Seen,
) -> Result<Option<Drift>, tokio_postgres::Error> {
    let stmt = client.prepare_cached(DELETED).await?;
    let recorded_deleted = client
        .query_opt(&stmt, &[&id])
        .await?
        .map(|r| r.get::<_, bool>(0));
    Ok(match recorded_deleted {
        Some(false) => Some(
            Drift::new(
                ObjectKind::Customer,
                id,
                DriftKind::DeletedInStripe,
                Some(seen.clone()),
            )
            .detail("Stripe deleted the customer; the directory still lists it"),
        ),
        _ => None,
    })
}
