//! Local fakes of the SaaS APIs that cannot run here, each following the documented request
//! and response shapes. They listen on 127.0.0.1:0 and stop when dropped.

use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

pub struct Fake {
    pub url: String,
    pub requests: Arc<Mutex<Vec<(String, String, Value)>>>,
    handle: ServerHandle,
}

impl Drop for Fake {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

fn start(
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
    routes: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> Fake {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    let handle = server.handle();
    tokio::spawn(server);
    Fake {
        url: format!("http://127.0.0.1:{port}"),
        requests,
        handle,
    }
}

/// Stripe's `GET /v1/customers/{id}`: the customer object of `tests/fixtures/stripe-objects-current.json`
/// with the given id, email and name; an unknown id answers 404 `resource_missing`.
pub fn stripe_customers(customers: Vec<(&str, Option<&str>, Option<&str>)>) -> Fake {
    let fixture: Value =
        serde_json::from_str(include_str!("../fixtures/stripe-objects-current.json")).unwrap();
    let template = fixture["resources"]["customer"].clone();
    let known: Vec<Value> = customers
        .into_iter()
        .map(|(id, email, name)| {
            let mut c = template.clone();
            c["id"] = json!(id);
            c["email"] = json!(email);
            c["name"] = json!(name);
            c
        })
        .collect();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    start(requests, move |cfg| {
        let known = known.clone();
        let log = log.clone();
        cfg.route(
            "/v1/customers/{id}",
            web::get().to(move |req: HttpRequest, path: web::Path<String>| {
                let known = known.clone();
                let log = log.clone();
                async move {
                    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    log.lock().unwrap().push(("GET".into(), req.path().to_owned(), json!({"authorization": auth})));
                    match known.iter().find(|c| c["id"] == json!(path.as_str())) {
                        Some(c) => HttpResponse::Ok().json(c),
                        None => HttpResponse::NotFound().json(json!({"error": {
                            "code": "resource_missing", "message": format!("No such customer: '{}'", path),
                            "param": "id", "type": "invalid_request_error"}})),
                    }
                }
            }),
        );
    })
}

/// Supabase Auth (GoTrue) `POST /auth/v1/admin/users`: creates the user in auth.users as GoTrue
/// does (so the `on_auth_user_created` trigger runs) and answers the user object; an address
/// already registered answers 422 `email_exists`. `race_emails` are created and still answered
/// 422, as when a concurrent request won.
pub fn supabase_auth(db_url: String, service_key: &str, race_emails: Vec<String>) -> Fake {
    supabase_auth_confirming(db_url, service_key, race_emails, false)
}

/// `supabase_auth`, whose `GET /auth/v1/settings` says `mailer_autoconfirm` (the project's
/// "Confirm email" switched off when true), as GoTrue answers it. Only user creations are
/// logged.
pub fn supabase_auth_confirming(
    db_url: String,
    service_key: &str,
    race_emails: Vec<String>,
    autoconfirm: bool,
) -> Fake {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let key = service_key.to_owned();
    start(requests, move |cfg| {
        let log = log.clone();
        let db_url = db_url.clone();
        let key = key.clone();
        let race = race_emails.clone();
        let settings_key = key.clone();
        cfg.route(
            "/auth/v1/settings",
            web::get().to(move |req: HttpRequest| {
                let key = settings_key.clone();
                async move {
                    let apikey = req
                        .headers()
                        .get("apikey")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if apikey != key {
                        return HttpResponse::Unauthorized()
                            .json(json!({"message": "Invalid API key"}));
                    }
                    HttpResponse::Ok().json(json!({
                        "external": {"email": true, "phone": false, "google": false},
                        "disable_signup": false, "mailer_autoconfirm": autoconfirm,
                        "phone_autoconfirm": false, "sms_provider": "", "saml_enabled": false
                    }))
                }
            }),
        );
        cfg.route(
            "/auth/v1/admin/users",
            web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                let (log, db_url, key, race) = (log.clone(), db_url.clone(), key.clone(), race.clone());
                async move {
                    let apikey = req.headers().get("apikey").and_then(|v| v.to_str().ok()).unwrap_or("");
                    let bearer = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    log.lock().unwrap().push(("POST".into(), req.path().to_owned(), body.0.clone()));
                    if apikey != key || bearer != format!("Bearer {key}") {
                        return HttpResponse::Unauthorized().json(json!({"code": 401, "error_code": "no_authorization", "msg": "invalid JWT"}));
                    }
                    let email = body["email"].as_str().unwrap_or("").to_lowercase();
                    let client = crate::helpers::connect(&db_url).await;
                    let exists = client
                        .query_opt("select id from auth.users where lower(email) = $1", &[&email])
                        .await
                        .unwrap();
                    if exists.is_some() {
                        return email_exists();
                    }
                    let id = uuid::Uuid::new_v4();
                    client
                        .execute(
                            "insert into auth.users (instance_id, id, aud, role, email, email_confirmed_at,
                               raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
                               encrypted_password, confirmation_token, recovery_token, email_change_token_new, email_change)
                             values ('00000000-0000-0000-0000-000000000000', $1, 'authenticated', 'authenticated', $2,
                               case when $3 then now() end, '{\"provider\":\"email\",\"providers\":[\"email\"]}', $4, now(), now(),
                               '', '', '', '', '')",
                            &[&id, &email, &body["email_confirm"].as_bool().unwrap_or(false), &body["user_metadata"]],
                        )
                        .await
                        .unwrap();
                    if race.contains(&email) {
                        return email_exists();
                    }
                    HttpResponse::Ok().json(json!({
                        "id": id, "aud": "authenticated", "role": "authenticated", "email": email,
                        "email_confirmed_at": chrono::Utc::now(), "phone": "", "app_metadata": {"provider": "email", "providers": ["email"]},
                        "user_metadata": body["user_metadata"], "identities": [], "created_at": chrono::Utc::now(),
                        "updated_at": chrono::Utc::now(), "is_anonymous": false
                    }))
                }
            }),
        );
    })
}

fn email_exists() -> HttpResponse {
    HttpResponse::UnprocessableEntity().json(json!({
        "code": 422, "error_code": "email_exists",
        "msg": "A user with this email address has already been registered"
    }))
}

/// Stripe's `GET /v1/events` (list events): newest first, `created[gte]`/`created[lte]`,
/// `limit` (1..=100, default 10) and `starting_after` as documented, the list object
/// `{"object":"list","data":[…],"has_more":…,"url":"/v1/events"}`, and `Authorization: Bearer
/// sk_test_…` required. The request numbered `rate_limit_at` (0-based) is answered 429 once, as
/// Stripe answers when rate limited. Requests are logged as (method, query string, {}).
pub fn stripe_events(events: Vec<Value>, rate_limit_at: Option<usize>) -> Fake {
    let mut events = events;
    // Newest first; events of the same second keep their given order reversed (Stripe's
    // order for those is its own; any fixed one will do).
    events.reverse();
    events.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64().unwrap_or(0)));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    start(requests, move |cfg| {
        let events = events.clone();
        let log = log.clone();
        cfg.route(
            "/v1/events",
            web::get().to(move |req: HttpRequest, query: web::Query<std::collections::HashMap<String, String>>| {
                let events = events.clone();
                let log = log.clone();
                async move {
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(("GET".into(), req.query_string().to_owned(), json!({})));
                        log.len() - 1
                    };
                    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if !auth.starts_with("Bearer sk_test_") {
                        return HttpResponse::Unauthorized().json(json!({"error": {
                            "message": "Invalid API Key provided", "type": "invalid_request_error"}}));
                    }
                    if rate_limit_at == Some(n) {
                        return HttpResponse::TooManyRequests().json(json!({"error": {
                            "message": "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
                            "type": "rate_limit_error"}}));
                    }
                    let int = |k: &str| query.get(k).and_then(|v| v.parse::<i64>().ok());
                    let limit = int("limit").unwrap_or(10);
                    if !(1..=100).contains(&limit) {
                        return HttpResponse::BadRequest().json(json!({"error": {
                            "message": "Invalid integer: limit", "param": "limit", "type": "invalid_request_error"}}));
                    }
                    let in_range: Vec<&Value> = events
                        .iter()
                        .filter(|e| {
                            let t = e["created"].as_i64().unwrap_or(0);
                            int("created[gte]").is_none_or(|g| t >= g) && int("created[lte]").is_none_or(|l| t <= l)
                        })
                        .collect();
                    let start = match query.get("starting_after") {
                        None => 0,
                        Some(after) => match in_range.iter().position(|e| e["id"] == json!(after)) {
                            Some(i) => i + 1,
                            None => {
                                return HttpResponse::BadRequest().json(json!({"error": {
                                    "code": "resource_missing", "message": format!("No such event: '{after}'"),
                                    "param": "starting_after", "type": "invalid_request_error"}}))
                            }
                        },
                    };
                    let page: Vec<&Value> = in_range.iter().skip(start).take(limit as usize).copied().collect();
                    let has_more = start + page.len() < in_range.len();
                    HttpResponse::Ok().json(json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/events"}))
                }
            }),
        );
    })
}

/// A server that accepts connections and never answers (a hung dependency): requests to it
/// end only by the client's timeout. Counts the connections it accepted; stops when dropped.
pub struct Unresponsive {
    pub url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Unresponsive {
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Unresponsive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn unresponsive() -> Unresponsive {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    Unresponsive {
        url,
        accepted,
        task,
    }
}
