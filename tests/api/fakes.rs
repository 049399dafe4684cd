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

/// A server that accepts connections and never answers (a hung dependency): requests to it
/// end only by the client's timeout. Records the request line of each connection (`GET
/// /v1/customers/cus_1 HTTP/1.1`); stops when dropped.
pub struct Unresponsive {
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Unresponsive {
    /// Requests waiting for an answer whose request line contains `path`.
    pub fn waiting_on(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(path))
            .count()
    }
}

impl Drop for Unresponsive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn unresponsive() -> Unresponsive {
    use tokio::io::AsyncBufReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let task = tokio::spawn(async move {
        let mut readers = tokio::task::JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            let log = log.clone();
            // Reads the request line, then holds the connection without answering.
            readers.spawn(async move {
                let mut reader = tokio::io::BufReader::new(socket);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_ok() {
                    log.lock().unwrap().push(line.trim_end().to_owned());
                }
                std::future::pending::<()>().await;
                drop(reader);
            });
        }
    });
    Unresponsive {
        url,
        requests,
        task,
    }
}

/// What the fake Stripe API serves and how it behaves; tests change it while it runs.
#[derive(Default)]
pub struct StripeState {
    /// Events as raw JSON text, served byte for byte (any order; listed newest first).
    pub events: Vec<String>,
    /// Customers, subscriptions and invoices by id, in their current state, in creation order.
    pub objects: Vec<Value>,
    /// Customers Stripe deleted (retrievable as `{"id", "object": "customer", "deleted": true}`).
    pub deleted_customers: Vec<String>,
    /// Checkout Sessions' line items (price id, quantity), served by
    /// `GET /v1/checkout/sessions/{id}/line_items` as Stripe's list of `item` objects.
    pub line_items: std::collections::HashMap<String, Vec<(String, i64)>>,
    /// Every request is answered 429 while set.
    pub storm: bool,
    /// The request numbered this (0-based, all paths) is answered 429, once.
    pub rate_limit_at: Option<usize>,
    /// Requests to /v1/events beyond this many wait until it is lifted (None) or raised.
    pub events_gate: Option<usize>,
    /// Each answer waits this long first.
    pub delay: std::time::Duration,
    pub requests: Vec<Logged>,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub path: String,
    pub query: String,
    /// The API key the request was made with.
    pub key: String,
    pub answered: u16,
}

impl Logged {
    pub fn param(&self, name: &str) -> Option<String> {
        url_params(&self.query).remove(name)
    }
}

fn url_params(query: &str) -> std::collections::HashMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                if let Ok(b) = u8::from_str_radix(hex, 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl StripeState {
    /// Customers, subscriptions and invoices as the last event about each shows them; a
    /// `customer.deleted` deletes its customer.
    pub fn objects_from_events(&mut self, events: &[Value]) {
        for e in events {
            let object = &e["data"]["object"];
            let kind = object["object"].as_str().unwrap_or("");
            if !matches!(kind, "customer" | "subscription" | "invoice") {
                continue;
            }
            let id = object["id"].as_str().unwrap_or("").to_owned();
            if e["type"] == "customer.deleted" {
                self.objects.retain(|o| o["id"] != json!(id));
                self.deleted_customers.push(id);
                continue;
            }
            match self.objects.iter_mut().find(|o| o["id"] == json!(id)) {
                Some(o) => *o = object.clone(),
                None => self.objects.push(object.clone()),
            }
        }
    }

    pub fn object_mut(&mut self, id: &str) -> &mut Value {
        self.objects
            .iter_mut()
            .find(|o| o["id"] == json!(id))
            .unwrap_or_else(|| panic!("the fake has no {id}"))
    }
}

fn stripe_error(status: u16, kind: &str, message: String, code: Option<&str>) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).json(json!({
        "error": {"type": kind, "message": message, "code": code}
    }))
}

fn list_page(
    items: Vec<(String, i64, String)>,
    query: &std::collections::HashMap<String, String>,
    url: &str,
) -> HttpResponse {
    // Newest first; same-second items in reverse insertion order.
    let mut items = items;
    items.reverse();
    items.sort_by_key(|(_, created, _)| std::cmp::Reverse(*created));
    let int = |k: &str| query.get(k).and_then(|v| v.parse::<i64>().ok());
    let limit = int("limit").unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return stripe_error(
            400,
            "invalid_request_error",
            "Invalid integer: limit".into(),
            None,
        );
    }
    let in_range: Vec<&(String, i64, String)> = items
        .iter()
        .filter(|(_, t, _)| {
            int("created[gte]").is_none_or(|g| *t >= g)
                && int("created[lte]").is_none_or(|l| *t <= l)
        })
        .collect();
    let start = match query.get("starting_after") {
        None => 0,
        Some(after) => match in_range.iter().position(|(id, _, _)| id == after) {
            Some(i) => i + 1,
            None => {
                return stripe_error(
                    400,
                    "invalid_request_error",
                    format!("No such object: '{after}'"),
                    Some("resource_missing"),
                )
            }
        },
    };
    let page: Vec<&str> = in_range
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|(_, _, raw)| raw.as_str())
        .collect();
    let has_more = start + page.len() < in_range.len();
    // The elements go out exactly as stored.
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            r#"{{"object":"list","data":[{}],"has_more":{has_more},"url":"{url}"}}"#,
            page.join(",")
        ))
}

/// Stripe's API as the catch-up, `backfill` and `reconcile` use it, following the documented
/// shapes: `GET /v1/events` (newest first, `created[gte]`/`created[lte]`, `limit` 1..=100,
/// `starting_after`), `GET /v1/customers` (not deleted), `/v1/subscriptions` (without `status`
/// not canceled; `status=all` every one), `/v1/invoices` (optional `status`), each
/// `/v1/<list>/{id}` (404 `resource_missing`, a deleted customer's stub), the list object
/// `{"object":"list","data":[…],"has_more":…,"url":…}`, `Authorization: Bearer sk_test_…`
/// required, 429 `rate_limit_error` when told.
pub struct FakeStripe {
    pub url: String,
    state: Arc<Mutex<StripeState>>,
    handle: ServerHandle,
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { handle.stop(false).await });
        }
    }
}

impl FakeStripe {
    pub fn state(&self) -> std::sync::MutexGuard<'_, StripeState> {
        self.state.lock().unwrap()
    }

    pub fn requests(&self, path: &str) -> Vec<Logged> {
        self.state()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

pub fn fake_stripe(state: StripeState) -> FakeStripe {
    let state = Arc::new(Mutex::new(state));
    let shared = state.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let state = shared.clone();
        App::new().default_service(web::to(move |req: HttpRequest| {
            let state = state.clone();
            async move { answer(&state, &req).await }
        }))
    })
    .workers(2)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    FakeStripe {
        url: format!("http://127.0.0.1:{port}"),
        state,
        handle,
    }
}

async fn answer(state: &Mutex<StripeState>, req: &HttpRequest) -> HttpResponse {
    let path = req.path().to_owned();
    let key = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_owned();
    let (n, delay) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Logged {
            path: path.clone(),
            query: req.query_string().to_owned(),
            key: key.clone(),
            answered: 0,
        });
        (s.requests.len() - 1, s.delay)
    };
    if path == "/v1/events" {
        let before = state
            .lock()
            .unwrap()
            .requests
            .iter()
            .take(n)
            .filter(|r| r.path == "/v1/events")
            .count();
        // Held while the gate is closed on this request.
        while state
            .lock()
            .unwrap()
            .events_gate
            .is_some_and(|gate| before >= gate)
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = respond(state, req, &path, &key, n);
    state.lock().unwrap().requests[n].answered = response.status().as_u16();
    response
}

fn respond(
    state: &Mutex<StripeState>,
    req: &HttpRequest,
    path: &str,
    key: &str,
    n: usize,
) -> HttpResponse {
    if !(key.starts_with("sk_test_") || key.starts_with("rk_test_")) {
        return stripe_error(
            401,
            "invalid_request_error",
            "Invalid API Key provided".into(),
            None,
        );
    }
    let s = state.lock().unwrap();
    if s.storm || s.rate_limit_at == Some(n) {
        return stripe_error(
            429,
            "rate_limit_error",
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.".into(),
            Some("rate_limit"),
        );
    }
    let query = url_params(req.query_string());
    let objects =
        |kind: &str| -> Vec<&Value> { s.objects.iter().filter(|o| o["object"] == kind).collect() };
    let as_items = |values: Vec<&Value>| -> Vec<(String, i64, String)> {
        values
            .into_iter()
            .map(|o| {
                (
                    o["id"].as_str().unwrap_or("").to_owned(),
                    o["created"].as_i64().unwrap_or(0),
                    o.to_string(),
                )
            })
            .collect()
    };
    let not_found = |id: &str| {
        stripe_error(
            404,
            "invalid_request_error",
            format!("No such object: '{id}'"),
            Some("resource_missing"),
        )
    };
    match path {
        "/v1/events" => {
            let items = s
                .events
                .iter()
                .map(|raw| {
                    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
                    (
                        v["id"].as_str().unwrap_or("").to_owned(),
                        v["created"].as_i64().unwrap_or(0),
                        raw.clone(),
                    )
                })
                .collect();
            list_page(items, &query, "/v1/events")
        }
        "/v1/customers" => list_page(as_items(objects("customer")), &query, path),
        "/v1/subscriptions" => {
            let wanted = query.get("status").cloned();
            let subs = objects("subscription")
                .into_iter()
                .filter(|o| match wanted.as_deref() {
                    Some("all") => true,
                    Some(status) => o["status"] == status,
                    None => o["status"] != "canceled",
                })
                .collect();
            list_page(as_items(subs), &query, path)
        }
        "/v1/invoices" => {
            let wanted = query.get("status").cloned();
            let invoices = objects("invoice")
                .into_iter()
                .filter(|o| wanted.as_deref().is_none_or(|w| o["status"] == w))
                .collect();
            list_page(as_items(invoices), &query, path)
        }
        _ if path.starts_with("/v1/checkout/sessions/") && path.ends_with("/line_items") => {
            let session = &path["/v1/checkout/sessions/".len()..path.len() - "/line_items".len()];
            let Some(items) = s.line_items.get(session) else {
                return not_found(session);
            };
            let data: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(n, (price, quantity))| {
                    json!({"id": format!("li_{session}_{n}"), "object": "item",
                           "amount_subtotal": 0, "amount_total": 0, "currency": "usd",
                           "description": "item", "quantity": quantity,
                           "price": {"id": price, "object": "price", "type": "one_time"}})
                })
                .collect();
            HttpResponse::Ok().json(json!({"object": "list", "data": data, "has_more": false,
                                           "url": path}))
        }
        _ => {
            let Some((list, id)) = path.rsplit_once('/') else {
                return not_found(path);
            };
            let kind = match list {
                "/v1/customers" => "customer",
                "/v1/subscriptions" => "subscription",
                "/v1/invoices" => "invoice",
                _ => return not_found(path),
            };
            if kind == "customer" && s.deleted_customers.iter().any(|d| d == id) {
                return HttpResponse::Ok()
                    .json(json!({"id": id, "object": "customer", "deleted": true}));
            }
            match objects(kind).into_iter().find(|o| o["id"] == json!(id)) {
                Some(o) => HttpResponse::Ok().json(o),
                None => not_found(id),
            }
        }
    }
}
