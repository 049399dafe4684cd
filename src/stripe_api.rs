//! Look-ups in Stripe's API, available when STRIPE_SECRET_KEY is set: customers through
//! async-stripe (rendered in the library's pinned API version, so its types fit them), a
//! Checkout Session's line items as raw JSON read into a narrow type.

use serde::Deserialize;
use stripe::{Client, ClientBuilder, StripeError};

use crate::config::StripeApiSettings;
use crate::secret::Secret;

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
    http: reqwest::Client,
    base_url: String,
    key: Secret,
}

/// What a Checkout Session sold: one line item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub price: Option<String>,
    pub quantity: i64,
}

impl std::fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeApi")
    }
}

/// A Stripe customer's contact details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerContact {
    pub email: Option<String>,
    pub name: Option<String>,
    pub deleted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    #[error("Stripe API rate limit (429)")]
    RateLimited,
    #[error("Stripe API: {0}")]
    Other(String),
}

impl From<StripeError> for StripeApiError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(_, 429) => Self::RateLimited,
            // The library's error Display never includes the key.
            other => Self::Other(other.to_string()),
        }
    }
}

impl StripeApi {
    pub fn new(settings: &StripeApiSettings) -> Result<Self, StripeApiError> {
        let client = ClientBuilder::new(settings.secret_key.expose())
            .url(format!("{}/", settings.base_url))
            // A hung API fails the event that needs it (retried later), nothing else.
            .timeout(settings.timeout)
            .app_info(
                "stripe-worker",
                Some(env!("CARGO_PKG_VERSION").into()),
                None,
            )
            .build()?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("stripe-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StripeApiError::Other(e.to_string()))?;
        Ok(Self {
            client,
            http,
            base_url: settings.base_url.clone(),
            key: settings.secret_key.clone(),
        })
    }

    /// `GET /v1/checkout/sessions/{id}/line_items`: what the session sold (the webhook's
    /// session does not carry it). One attempt: a failure fails the event, which is retried.
    pub async fn checkout_line_items(
        &self,
        session: &str,
    ) -> Result<Vec<LineItem>, StripeApiError> {
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            data: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            #[serde(default, deserialize_with = "price_id")]
            price: Option<String>,
            #[serde(default)]
            quantity: Option<i64>,
        }
        fn price_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum IdOrObject {
                Id(String),
                Object { id: String },
                Other(serde::de::IgnoredAny),
            }
            Ok(match Option::<IdOrObject>::deserialize(d)? {
                Some(IdOrObject::Id(id) | IdOrObject::Object { id }) => Some(id),
                _ => None,
            })
        }
        let resp = self
            .http
            .get(format!(
                "{}/v1/checkout/sessions/{session}/line_items",
                self.base_url
            ))
            .query(&[("limit", "100")])
            .bearer_auth(self.key.expose())
            .send()
            .await
            .map_err(|e| {
                StripeApiError::Other(if e.is_timeout() {
                    "line items: request timed out".into()
                } else {
                    format!("line items: {}", e.without_url())
                })
            })?;
        match resp.status().as_u16() {
            429 => return Err(StripeApiError::RateLimited),
            // Not a session of this account (or mode): nothing to learn from it.
            404 => return Ok(Vec::new()),
            200..=299 => {}
            status => return Err(StripeApiError::Other(format!("line items: HTTP {status}"))),
        }
        let list: List = resp
            .json()
            .await
            .map_err(|e| StripeApiError::Other(format!("line items: {e}")))?;
        Ok(list
            .data
            .into_iter()
            .map(|i| LineItem {
                price: i.price,
                quantity: i.quantity.unwrap_or(1),
            })
            .collect())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn customer(&self, id: &str) -> Result<CustomerContact, StripeApiError> {
        use stripe_core::customer::{RetrieveCustomer, RetrieveCustomerReturned};
        Ok(match RetrieveCustomer::new(id).send(&self.client).await? {
            RetrieveCustomerReturned::Customer(c) => CustomerContact {
                email: c.email,
                name: c.name,
                deleted: false,
            },
            RetrieveCustomerReturned::DeletedCustomer(_) => CustomerContact {
                email: None,
                name: None,
                deleted: true,
            },
        })
    }
}
