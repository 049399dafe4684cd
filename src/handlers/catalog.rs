//! product.* and price.*: the catalog the frontend lists.

use serde::Deserialize;
use tokio_postgres::types::ToSql;

use super::object::{expandable_id, metadata};
use super::{ordering, Applied, Handler, HandlerError};
use crate::db::EventTx;
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

/// Parameters: `ProductRow`, then the event's id ($7). Only when the event's claim won.
const UPSERT_PRODUCT: &str = concat!(
    "
insert into public.products (id, active, name, description, image, metadata)
select $1::text, $2::boolean, $3::text, $4::text, $5::text, $6::jsonb
 where ",
    ordering::claimed_by!("$1::text", "$7::text"),
    "
on conflict (id) do update
set active = excluded.active, name = excluded.name, description = excluded.description,
    image = excluded.image, metadata = excluded.metadata, updated_at = now()"
);

/// `UPSERT_PRODUCT`'s parameters, in their order ($1 … $6).
struct ProductRow<'a> {
    id: &'a str,
    active: bool,
    name: Option<&'a str>,
    description: Option<&'a str>,
    /// The first image: the one the frontend shows.
    image: Option<&'a str>,
    metadata: &'a serde_json::Value,
}

impl<'a> ProductRow<'a> {
    fn new(p: &'a Product) -> Self {
        Self {
            id: &p.id,
            active: p.active,
            name: p.name.as_deref(),
            description: p.description.as_deref(),
            image: p.images.first().map(String::as_str),
            metadata: &p.metadata,
        }
    }

    /// With the id of the event whose claim guards the write.
    fn params<'b>(&'b self, event_id: &'b String) -> [&'b (dyn ToSql + Sync); 7] {
        [
            &self.id,
            &self.active,
            &self.name,
            &self.description,
            &self.image,
            self.metadata,
            event_id,
        ]
    }
}

/// Parameters: the product's id and name, the event's id. Only when the event's claim won.
const DEACTIVATE_PRODUCT: &str = concat!(
    "
insert into public.products (id, active, name)
select $1::text, false, $2::text where ",
    ordering::claimed_by!("$1::text", "$3::text"),
    "
on conflict (id) do update set active = false, updated_at = now()"
);

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
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "product.deleted";
        // Rows referencing a deleted product (prices, subscriptions) stay valid: it is
        // deactivated, never deleted.
        let (_, stmt) = futures_util::try_join!(
            ordering::prepare(tx),
            tx.prepare_cached(if deleted {
                DEACTIVATE_PRODUCT
            } else {
                UPSERT_PRODUCT
            })
        )?;
        let claim = ordering::claim(tx, "product", &p.id, event, 0, deleted);
        let write = async {
            if deleted {
                tx.execute(&stmt, &[&p.id, &p.name, &event.id]).await
            } else {
                let row = ProductRow::new(&p);
                tx.execute(&stmt, &row.params(&event.id)).await
            }
        };
        // One round trip: the guarded write goes right behind the claim.
        let (fresh, _) = futures_util::try_join!(claim, write)?;
        if !fresh {
            return Ok(Applied::note(ordering::stale_note(&p.id)));
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
/// foreign key; the product's own event fills it in. The existing row is looked for first: an
/// INSERT that meets it waits for whoever is updating it (the product's own event, often in
/// flight beside its price's), a plain read does not. `$1` is the product's id; the arguments
/// are further conditions, each starting with `and`.
macro_rules! ensure_product_sql {
    ($($condition:expr),*) => {
        concat!(
            "insert into public.products (id, active)
select $1::text, false where not exists (select 1 from public.products where id = $1::text)",
            $($condition,)*
            " on conflict (id) do nothing"
        )
    };
}

pub(super) const ENSURE_PRODUCT: &str = ensure_product_sql!();

/// `ENSURE_PRODUCT` for a price's event, only when its claim won. Parameters: the product's
/// id, the price's id, the event's id.
const ENSURE_CLAIMED_PRICE_PRODUCT: &str = ensure_product_sql!(concat!(
    " and ",
    ordering::claimed_by!("$2::text", "$3::text")
));

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
        tx: &EventTx,
    ) -> Result<Applied, HandlerError> {
        let deleted = event.event_type == "price.deleted";
        let (_, ensure, upsert) = futures_util::try_join!(
            ordering::prepare(tx),
            tx.prepare_cached(ENSURE_CLAIMED_PRICE_PRODUCT),
            tx.prepare_cached(UPSERT_PRICE)
        )?;
        let claim = ordering::claim(tx, "price", &p.id, event, 0, deleted);
        let writes = async {
            let row = PriceRow::new(&p, deleted);
            let params = row.params(&event.id);
            let ensure_product = async {
                match &p.product {
                    Some(product) => tx.execute(&ensure, &[product, &p.id, &event.id]).await,
                    None => Ok(0),
                }
            };
            futures_util::try_join!(ensure_product, tx.execute(&upsert, &params))
        };
        // One round trip: the guarded writes go right behind the claim.
        let (fresh, _) = futures_util::try_join!(claim, writes)?;
        if !fresh {
            return Ok(Applied::note(ordering::stale_note(&p.id)));
        }
        Ok(Applied::default())
    }
}

/// Parameters: `PriceRow`, then the event's id ($13). Only when the event's claim won.
const UPSERT_PRICE: &str = concat!(
    "
insert into public.prices
  (id, product_id, active, description, unit_amount, currency, type, interval, interval_count,
   trial_period_days, lookup_key, metadata)
select $1::text, $2::text, $3::boolean, $4::text, $5::bigint, $6::text, $7::text, $8::text,
       $9::integer, $10::integer, $11::text, $12::jsonb
 where ",
    ordering::claimed_by!("$1::text", "$13::text"),
    "
on conflict (id) do update
set product_id = excluded.product_id, active = excluded.active,
    description = excluded.description, unit_amount = excluded.unit_amount,
    currency = excluded.currency, type = excluded.type, interval = excluded.interval,
    interval_count = excluded.interval_count, trial_period_days = excluded.trial_period_days,
    lookup_key = excluded.lookup_key, metadata = excluded.metadata, updated_at = now()"
);

/// `UPSERT_PRICE`'s parameters, in their order ($1 … $12).
struct PriceRow<'a> {
    id: &'a str,
    product_id: Option<&'a str>,
    active: bool,
    description: Option<&'a str>,
    unit_amount: Option<i64>,
    currency: Option<String>,
    price_type: &'static str,
    interval: Option<&'a str>,
    interval_count: Option<i32>,
    trial_period_days: Option<i32>,
    lookup_key: Option<&'a str>,
    metadata: &'a serde_json::Value,
}

impl<'a> PriceRow<'a> {
    fn new(p: &'a Price, deleted: bool) -> Self {
        let recurring = p.recurring.as_ref();
        Self {
            id: &p.id,
            product_id: p.product.as_deref(),
            active: p.active && !deleted,
            description: p.nickname.as_deref(),
            unit_amount: p.unit_amount,
            currency: p.currency.as_deref().map(str::to_ascii_lowercase),
            price_type: match p.price_type.as_deref() {
                Some("recurring") => "recurring",
                Some("one_time") => "one_time",
                _ if recurring.is_some() => "recurring",
                _ => "one_time",
            },
            interval: recurring
                .and_then(|r| r.interval.as_deref())
                .filter(|i| matches!(*i, "day" | "week" | "month" | "year")),
            interval_count: recurring.and_then(|r| r.interval_count),
            trial_period_days: recurring.and_then(|r| r.trial_period_days),
            lookup_key: p.lookup_key.as_deref(),
            metadata: &p.metadata,
        }
    }

    /// With the id of the event whose claim guards the write.
    fn params<'b>(&'b self, event_id: &'b String) -> [&'b (dyn ToSql + Sync); 13] {
        [
            &self.id,
            &self.product_id,
            &self.active,
            &self.description,
            &self.unit_amount,
            &self.currency,
            &self.price_type,
            &self.interval,
            &self.interval_count,
            &self.trial_period_days,
            &self.lookup_key,
            self.metadata,
            event_id,
        ]
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
        tx: &EventTx,
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
        let row = PriceRow {
            id: &p.id,
            product_id: Some(&product),
            active: p.active && !deleted,
            description: p.nickname.as_deref().or(p.name.as_deref()),
            unit_amount: p.amount,
            currency,
            price_type: "recurring",
            interval,
            interval_count: p.interval_count,
            trial_period_days: p.trial_period_days,
            lookup_key: None,
            metadata: &p.metadata,
        };
        let stmt = tx.prepare_cached(UPSERT_PRICE).await?;
        tx.execute(&stmt, &row.params(&event.id)).await?;
        Ok(Applied::default())
    }
}
