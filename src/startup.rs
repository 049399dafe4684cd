//! Builds the application: the pool, the pipeline, the HTTP server, the retrier and (with
//! STRIPE_SECRET_KEY) the catch-up.

use actix_web::dev::{Server, ServerHandle};
use tokio::sync::watch;

use crate::catchup::CatchUp;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::ingest::Pipeline;
use crate::retrier;
use crate::signature::Verifier;
use crate::stripe_list::{RateLimitBackoff, StripeLists};

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    ops_server: Option<Server>,
    pipeline: Pipeline,
    catch_up: Option<CatchUp>,
}

impl Application {
    /// Binds the listeners (port 0 picks a free one) and prepares everything; nothing runs
    /// until `run_until_stopped`. Succeeds while the database is down.
    pub fn build(settings: &Settings, handle_signals: bool) -> anyhow::Result<Self> {
        if settings.pipeline.livemode.is_none() {
            tracing::warn!(
                "neither STRIPE_LIVEMODE nor STRIPE_SECRET_KEY says which mode this endpoint serves: test and live events are both processed"
            );
        }
        let pipeline = Pipeline::new(&settings.pipeline)?;
        let catch_up = match &settings.pipeline.stripe_api {
            Some(api) => Some(CatchUp::new(
                pipeline.clone(),
                StripeLists::new(
                    api,
                    settings.catch_up.reads_per_sec,
                    RateLimitBackoff::default(),
                )?,
                settings.catch_up.clone(),
                settings.pipeline.livemode,
                settings.pipeline.worker_id.clone(),
                settings.pipeline.retry.lease,
            )),
            None => {
                tracing::info!(
                    "catch-up is off: STRIPE_SECRET_KEY is not set, so missed events are recovered only by `stripe-worker backfill`"
                );
                None
            }
        };
        let shared = http::Shared::new(AppState {
            pipeline: pipeline.clone(),
            verifier: Verifier::new(settings.webhook.secrets.clone(), settings.webhook.tolerance),
        });
        let listener = http::bind(&settings.host, settings.port).map_err(|e| {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port)
        })?;
        let port = listener.local_addr()?.port();
        let ops_listener = settings
            .metrics_addr
            .map(|addr| {
                http::bind_addr(addr)
                    .map_err(|e| anyhow::anyhow!("cannot listen on METRICS_ADDR {addr}: {e}"))
            })
            .transpose()?;
        let metrics_port = match &ops_listener {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        let server = http::public_server(
            listener,
            &shared,
            settings.http_workers,
            &settings.http_limits,
            settings.pipeline.database.pool_size,
            ops_listener.is_none(),
            handle_signals,
        )?;
        let ops_server = ops_listener
            .map(|l| http::ops_server(l, &shared))
            .transpose()?;
        Ok(Self {
            port,
            metrics_port,
            server,
            ops_server,
            pipeline,
            catch_up,
        })
    }

    /// The port of METRICS_ADDR's listener, when set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGTERM/SIGINT or the handle), then lets the retrier
    /// and the catch-up finish what they hold.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let retrier = tokio::spawn(retrier::run(self.pipeline.clone(), stop_rx.clone()));
        let catch_up = self.catch_up.map(|c| tokio::spawn(c.run(stop_rx)));
        tracing::info!(
            port = self.port,
            metrics_port = self.metrics_port,
            "stripe-worker listening"
        );
        let ops = self.ops_server.map(|server| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let served = self.server.await;
        if let Some((handle, task)) = ops {
            handle.stop(true).await;
            let _ = task.await;
        }
        let _ = stop_tx.send(true);
        let _ = retrier.await;
        if let Some(catch_up) = catch_up {
            let _ = catch_up.await;
        }
        tracing::info!("stopped");
        served.map_err(Into::into)
    }
}
