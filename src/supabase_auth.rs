//! Supabase Auth's admin API (GoTrue), used to create auth users when SUPABASE_URL and
//! SUPABASE_SERVICE_ROLE_KEY are set: then Auth sends its own hooks and keeps its own invariants.
//! `POST /auth/v1/admin/users` with `email_confirm` (AUTH_CONFIRM_CHECKOUT_EMAIL) and
//! `user_metadata`; an address that is already registered answers 422 (`email_exists`) and is
//! resolved by looking the user up. `GET /auth/v1/settings` tells whether the project confirms
//! sign-ups by itself (`mailer_autoconfirm`).

use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::config::SupabaseAuthSettings;
use crate::email::Email;

#[derive(Clone)]
pub struct AuthAdmin {
    http: reqwest::Client,
    settings: SupabaseAuthSettings,
    /// `mailer_autoconfirm` and when the project said so.
    autoconfirm: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, bool)>>>,
}

impl std::fmt::Debug for AuthAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthAdmin")
            .field("url", &self.settings.url)
            .finish()
    }
}

/// How long the project's sign-up setting is trusted before it is asked again.
const AUTOCONFIRM_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New(Uuid),
    AlreadyRegistered,
}

#[derive(Debug, thiserror::Error)]
#[error("Supabase Auth admin API: {0}")]
pub struct AuthAdminError(String);

impl AuthAdminError {
    /// A failed request, named by its cause (never its URL).
    fn request(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return Self("request timed out".into());
        }
        if e.is_connect() {
            return Self("cannot connect".into());
        }
        let e = e.without_url();
        let mut message = format!("request failed: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        Self(message)
    }
}

#[derive(Deserialize)]
struct UserResponse {
    id: Uuid,
}

#[derive(Deserialize, Default)]
struct ErrorResponse {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl AuthAdmin {
    pub fn new(settings: &SupabaseAuthSettings) -> Result<Self, AuthAdminError> {
        // A hung Auth server fails the event that needs it (retried later), nothing else.
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| AuthAdminError(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            settings: settings.clone(),
            autoconfirm: Default::default(),
        })
    }

    /// Whether the project confirms new sign-ups by itself ("Confirm email" off). The answer is
    /// kept for `AUTOCONFIRM_MAX_AGE`; a request that fails is an error (the event that needed
    /// it is retried), and concurrent callers never wait for each other.
    pub async fn project_autoconfirms(&self) -> Result<bool, AuthAdminError> {
        #[derive(Deserialize)]
        struct Settings {
            #[serde(default)]
            mailer_autoconfirm: bool,
        }
        if let Some((at, known)) = *self.autoconfirm.lock().unwrap() {
            if at.elapsed() < AUTOCONFIRM_MAX_AGE {
                return Ok(known);
            }
        }
        let key = self.settings.service_role_key.expose();
        let resp = self
            .http
            .get(format!("{}/auth/v1/settings", self.settings.url))
            .header("apikey", key)
            .bearer_auth(key)
            .send()
            .await
            .map_err(AuthAdminError::request)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AuthAdminError(format!("settings: {status}")));
        }
        let settings: Settings = resp
            .json()
            .await
            .map_err(|e| AuthAdminError(format!("unexpected settings: {e}")))?;
        *self.autoconfirm.lock().unwrap() =
            Some((std::time::Instant::now(), settings.mailer_autoconfirm));
        Ok(settings.mailer_autoconfirm)
    }

    pub async fn create_user(
        &self,
        email: &Email,
        full_name: Option<&str>,
        email_confirm: bool,
    ) -> Result<Created, AuthAdminError> {
        let key = self.settings.service_role_key.expose();
        let mut metadata = serde_json::Map::new();
        if let Some(name) = full_name {
            metadata.insert("full_name".into(), json!(name));
        }
        let resp = self
            .http
            .post(format!("{}/auth/v1/admin/users", self.settings.url))
            .header("apikey", key)
            .bearer_auth(key)
            .json(&json!({
                "email": email.normalized(),
                "email_confirm": email_confirm,
                "user_metadata": metadata,
            }))
            .send()
            .await
            .map_err(AuthAdminError::request)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(AuthAdminError::request)?;
        if status.is_success() {
            let user: UserResponse = serde_json::from_slice(&body)
                .map_err(|e| AuthAdminError(format!("unexpected answer: {e}")))?;
            return Ok(Created::New(user.id));
        }
        let err: ErrorResponse = serde_json::from_slice(&body).unwrap_or_default();
        let text = err.msg.or(err.message).unwrap_or_default();
        let registered = err.error_code.as_deref() == Some("email_exists")
            || (status.as_u16() == 422 && text.to_lowercase().contains("already been registered"));
        if registered {
            return Ok(Created::AlreadyRegistered);
        }
        Err(AuthAdminError(format!(
            "{status}: {}",
            err.error_code.unwrap_or(text)
        )))
    }
}
