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

/// Stripe's `GET /v1/customers/{id}` (the customer object as fixtures3.json has it).
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
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let key = service_key.to_owned();
    start(requests, move |cfg| {
        let log = log.clone();
        let db_url = db_url.clone();
        let key = key.clone();
        let race = race_emails.clone();
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
