//! Building a Pipeline from typed settings: shared by `serve` and the CLI commands (which need
//! no webhook secret).

use std::sync::Arc;

use super::Pipeline;
use crate::config::{
    DatabaseSettings, ProvisioningSettings, RetrySettings, StripeApiSettings, SupabaseAuthSettings,
};
use crate::db;
use crate::handlers::HandlerContext;
use crate::metrics::Metrics;
use crate::stripe_api::StripeApi;
use crate::supabase_auth::AuthAdmin;

impl Pipeline {
    /// A pipeline on its own pool (opened lazily). `livemode` is unset: callers that honour
    /// STRIPE_LIVEMODE set the public field.
    pub fn for_cli(
        database: &DatabaseSettings,
        retry: RetrySettings,
        stripe_api: Option<StripeApiSettings>,
        supabase_auth: Option<SupabaseAuthSettings>,
        provisioning: ProvisioningSettings,
        worker_id: String,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pool: db::pool(database)?,
            retry,
            livemode: None,
            worker_id,
            handlers: Arc::new(HandlerContext {
                stripe: stripe_api.as_ref().map(StripeApi::new).transpose()?,
                auth_admin: supabase_auth.map(AuthAdmin::new),
                confirm_checkout_email: provisioning.confirm_checkout_email,
            }),
            metrics: Arc::new(Metrics::default()),
        })
    }
}
