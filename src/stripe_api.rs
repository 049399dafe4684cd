//! Look-ups in Stripe's API (async-stripe), available when STRIPE_SECRET_KEY is set.
//! Responses are rendered in the library's pinned API version, so its types fit them.

use stripe::{Client, ClientBuilder, StripeError};

use crate::config::StripeApiSettings;

#[derive(Clone)]
pub struct StripeApi {
    client: Client,
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
        Ok(Self { client })
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
