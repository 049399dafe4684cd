//! product.* and price.*: the catalog the frontend lists.

use deadpool_postgres::Transaction;
use serde::Deserialize;

use super::object::{expandable_id, metadata};
use super::{ordering, Applied, Handler, HandlerError};
use crate::envelope::EventEnvelope;

pub struct Products;
pub struct Prices;

#[derive(Deserialize)]
pub struct Product {
    id: String,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

fn yes() -> bool {
    true
}

const UPSERT_PRODUCT: &str = "
insert into public.products (id, active, name, description, image, metadata)
values ($1, $2, $3, $4, $5, $6)
on conflict (id) do update
set active = excluded.active, name = excluded.name, description = excluded.description,
    image = excluded.image, metadata = excluded.metadata, updated_at = now()";

const DEACTIVATE_PRODUCT: &str = "
insert into public.products (id, active, name) values ($1, false, $2)
on conflict (id) do update set active = false, updated_at = now()";

impl Handler for Products {
    type Object = Product;
    type Prepared = ();
    const OBJECT: &'static str = "product";
    const EVENT_TYPES: &'static [&'static str] =
        &["product.created", "product.updated", "product.deleted"];

    async fn apply(
        &self,
        p: Product,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "product.deleted";
        if !ordering::claim(tx, "product", &p.id, event, 0, deleted).await? {
            return Ok(Applied::note(ordering::stale_note(&p.id)));
        }
        if deleted {
            // Rows referencing it (prices, subscriptions) stay valid: deactivate, never delete.
            let stmt = tx.prepare_cached(DEACTIVATE_PRODUCT).await?;
            tx.execute(&stmt, &[&p.id, &p.name]).await?;
        } else {
            let stmt = tx.prepare_cached(UPSERT_PRODUCT).await?;
            tx.execute(
                &stmt,
                &[
                    &p.id,
                    &p.active,
                    &p.name,
                    &p.description,
                    &p.images.first(),
                    &p.metadata,
                ],
            )
            .await?;
        }
        Ok(Applied::default())
    }
}

#[derive(Deserialize)]
pub struct Price {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    product: Option<String>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    unit_amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(rename = "type", default)]
    price_type: Option<String>,
    #[serde(default)]
    recurring: Option<Recurring>,
    #[serde(default)]
    lookup_key: Option<String>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

#[derive(Deserialize)]
struct Recurring {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    interval_count: Option<i32>,
    #[serde(default)]
    trial_period_days: Option<i32>,
}

/// A price may arrive before its product: a placeholder (inactive) product row keeps the
/// foreign key; the product's own event fills it in.
const ENSURE_PRODUCT: &str =
    "insert into public.products (id, active) values ($1, false) on conflict (id) do nothing";

const UPSERT_PRICE: &str = "
insert into public.prices
  (id, product_id, active, description, unit_amount, currency, type, interval, interval_count,
   trial_period_days, lookup_key, metadata)
values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
on conflict (id) do update
set product_id = excluded.product_id, active = excluded.active,
    description = excluded.description, unit_amount = excluded.unit_amount,
    currency = excluded.currency, type = excluded.type, interval = excluded.interval,
    interval_count = excluded.interval_count, trial_period_days = excluded.trial_period_days,
    lookup_key = excluded.lookup_key, metadata = excluded.metadata, updated_at = now()";

impl Handler for Prices {
    type Object = Price;
    type Prepared = ();
    const OBJECT: &'static str = "price";
    const EVENT_TYPES: &'static [&'static str] =
        &["price.created", "price.updated", "price.deleted"];

    async fn apply(
        &self,
        p: Price,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "price.deleted";
        if !ordering::claim(tx, "price", &p.id, event, 0, deleted).await? {
            return Ok(Applied::note(ordering::stale_note(&p.id)));
        }
        if let Some(product) = &p.product {
            let stmt = tx.prepare_cached(ENSURE_PRODUCT).await?;
            tx.execute(&stmt, &[product]).await?;
        }
        let price_type = match p.price_type.as_deref() {
            Some(t @ ("one_time" | "recurring")) => Some(t),
            _ if p.recurring.is_some() => Some("recurring"),
            _ => Some("one_time"),
        };
        let recurring = p.recurring.as_ref();
        let interval = recurring
            .and_then(|r| r.interval.as_deref())
            .filter(|i| matches!(*i, "day" | "week" | "month" | "year"));
        let currency = p.currency.as_deref().map(str::to_ascii_lowercase);
        let stmt = tx.prepare_cached(UPSERT_PRICE).await?;
        tx.execute(
            &stmt,
            &[
                &p.id,
                &p.product,
                &(p.active && !deleted),
                &p.nickname,
                &p.unit_amount,
                &currency,
                &price_type,
                &interval,
                &recurring.and_then(|r| r.interval_count),
                &recurring.and_then(|r| r.trial_period_days),
                &p.lookup_key,
                &p.metadata,
            ],
        )
        .await?;
        Ok(Applied::default())
    }
}

pub struct Plans;

/// A plan: what prices were before 2018 (subscriptions and invoices of that time reference
/// plans, `subscription.plan`, `items[].plan`). Stored as a recurring price with the same id.
#[derive(Deserialize)]
pub struct Plan {
    id: String,
    #[serde(default, deserialize_with = "expandable_id")]
    product: Option<String>,
    #[serde(default = "yes")]
    active: bool,
    /// Plans had a name of their own before products (2018).
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    interval_count: Option<i32>,
    #[serde(default)]
    trial_period_days: Option<i32>,
    #[serde(default, deserialize_with = "metadata")]
    metadata: serde_json::Value,
}

/// A plan without a product (before 2018) is its own product, named after it.
const ENSURE_PLAN_PRODUCT: &str = "
insert into public.products (id, active, name) values ($1, $2, $3)
on conflict (id) do update set name = coalesce(products.name, excluded.name)";

impl Handler for Plans {
    type Object = Plan;
    type Prepared = ();
    const OBJECT: &'static str = "plan";
    const EVENT_TYPES: &'static [&'static str] = &["plan.created", "plan.updated", "plan.deleted"];

    async fn apply(
        &self,
        p: Plan,
        _: (),
        event: &EventEnvelope,
        tx: &Transaction<'_>,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "plan.deleted";
        // A plan and the price of the same id are one object.
        if !ordering::claim(tx, "price", &p.id, event, 0, deleted).await? {
            return Ok(Applied::note(ordering::stale_note(&p.id)));
        }
        let product = p.product.clone().unwrap_or_else(|| p.id.clone());
        match &p.product {
            Some(product) => {
                let stmt = tx.prepare_cached(ENSURE_PRODUCT).await?;
                tx.execute(&stmt, &[product]).await?;
            }
            None => {
                let stmt = tx.prepare_cached(ENSURE_PLAN_PRODUCT).await?;
                tx.execute(&stmt, &[&product, &p.active, &p.name]).await?;
            }
        }
        let interval = p
            .interval
            .as_deref()
            .filter(|i| matches!(*i, "day" | "week" | "month" | "year"));
        let currency = p.currency.as_deref().map(str::to_ascii_lowercase);
        let stmt = tx.prepare_cached(UPSERT_PRICE).await?;
        tx.execute(
            &stmt,
            &[
                &p.id,
                &Some(product),
                &(p.active && !deleted),
                &p.nickname.as_ref().or(p.name.as_ref()),
                &p.amount,
                &currency,
                &Some("recurring"),
                &interval,
                &p.interval_count,
                &p.trial_period_days,
                &None::<String>,
                &p.metadata,
            ],
        )
        .await?;
        Ok(Applied::default())
    }
}
