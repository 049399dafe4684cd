//! HTTP: the public listener (the webhook endpoint, `/healthz`, and the operational routes
//! unless METRICS_ADDR moves them) and the optional operational listener.

pub mod limits;
mod ops;
mod webhook;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpServer};

use crate::config::HttpLimits;
use crate::ingest::Pipeline;
use crate::signature::Verifier;

pub use limits::MAX_BODY_BYTES;

/// What every request handler shares.
pub struct AppState {
    pub pipeline: Pipeline,
    pub verifier: Verifier,
}

/// In-flight requests get this long to finish after SIGTERM.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// Connections the operational listener accepts at once (a scraper and a few probes).
const OPS_MAX_CONNECTIONS: usize = 16;

fn webhook_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(webhook::receive))
        .route("/healthz", web::get().to(ops::healthz));
}

fn ops_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/readyz", web::get().to(ops::readyz))
        .route("/metrics", web::get().to(ops::metrics));
}

/// The shared state of both listeners.
#[derive(Clone)]
pub struct Shared {
    pub app: web::Data<AppState>,
    probes: web::Data<ops::ProbeCache>,
}

impl Shared {
    pub fn new(app: AppState) -> Self {
        Self {
            app: web::Data::new(app),
            probes: web::Data::new(ops::ProbeCache::default()),
        }
    }
}

/// Connections the kernel completes and queues while every accept slot is taken (std's own
/// `bind` queues 128, which a burst beyond the connection cap overflows: the client's SYN is
/// dropped and it retries a second later or gives up).
const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket on `host:port` (its first address) with room for `LISTEN_BACKLOG`
/// waiting connections.
pub fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the host resolves to no address",
        )
    })?;
    bind_addr(addr)
}

/// `bind` on an address.
pub fn bind_addr(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The public listener, served by `workers` threads and bounded by `limits` (see `limits`).
/// With `serve_ops` it also answers `/readyz` and `/metrics`.
pub fn public_server(
    listener: TcpListener,
    shared: &Shared,
    workers: usize,
    limits: &HttpLimits,
    pool_size: usize,
    serve_ops: bool,
    handle_signals: bool,
) -> std::io::Result<Server> {
    let connections =
        limits::connection_cap(limits.max_connections, pool_size + OPS_MAX_CONNECTIONS);
    let body = web::Data::new(limits::BodyLimits::new(limits.body_timeout));
    let shared = shared.clone();
    let mut server = HttpServer::new(move || {
        let app = App::new()
            .wrap_fn(|mut req, srv| {
                let guard = limits::guard_body(&mut req);
                let answer = srv.call(req);
                async move { Ok(limits::hold_until_sent(answer.await?, guard)) }
            })
            .app_data(shared.app.clone())
            .app_data(shared.probes.clone())
            .app_data(body.clone())
            .configure(webhook_routes);
        if serve_ops {
            app.configure(ops_routes)
        } else {
            app
        }
    })
    .workers(workers)
    // Per worker: the accept loop hands a connection to a worker below its share.
    .max_connections(connections.div_ceil(workers))
    .client_request_timeout(limits.head_timeout)
    // No lingering after an answer to an unread body: the connection closes at once (a
    // lingering connection keeps reading, up to 128 KiB per connection, which a flood of
    // refused bodies turns into memory).
    .client_disconnect_timeout(std::time::Duration::ZERO)
    .keep_alive(limits.keep_alive)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
    .listen(listener)?;
    if !handle_signals {
        server = server.disable_signals();
    }
    Ok(server.run())
}

/// The operational listener (METRICS_ADDR): `/metrics`, `/readyz` and `/healthz`. Stopped by
/// the caller together with the public one.
pub fn ops_server(listener: TcpListener, shared: &Shared) -> std::io::Result<Server> {
    let shared = shared.clone();
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(shared.app.clone())
            .app_data(shared.probes.clone())
            .configure(ops_routes)
            .route("/healthz", web::get().to(ops::healthz))
    })
    .workers(1)
    .max_connections(OPS_MAX_CONNECTIONS)
    .client_request_timeout(std::time::Duration::from_secs(5))
    .keep_alive(std::time::Duration::from_secs(30))
    .shutdown_timeout(5)
    .disable_signals()
    .listen(listener)?
    .run())
}
