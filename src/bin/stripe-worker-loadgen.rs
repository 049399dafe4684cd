//! Load generator for `scripts/bench.sh`: N unique, signed Stripe events at concurrency C over
//! keep-alive HTTP/1.1. Every body is built and signed before the clock starts; events that
//! must exist first (subscribers, the originals of duplicates) are delivered untimed.
//!
//! Prints one JSON line: events/s, latency percentiles, non-2xx and transport errors.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use stripe_worker::signature::WebhookSecret;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mix {
    /// product.updated / price.updated across many products.
    Catalog,
    /// checkout.session.completed for new buyers plus their payment_intent.succeeded.
    Purchase,
    /// customer.subscription.updated for subscribers provisioned before the clock starts.
    Subscription,
    /// catalog events delivered once untimed, then the same events again (timed).
    Duplicates,
}

#[derive(Parser)]
struct Args {
    /// The worker's base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    #[arg(long, value_enum)]
    mix: Mix,
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Makes ids unique across runs against the same database.
    #[arg(long, default_value = "run")]
    run: String,
    /// Products the catalog mix spreads its events over.
    #[arg(long, default_value_t = 1_000)]
    products: usize,
    /// The worker's PID: its CPU time during the timed phase is reported per event.
    #[arg(long)]
    worker_pid: Option<u32>,
    /// The postmaster's PID: CPU time of it and its children (the backends), per event.
    #[arg(long)]
    postmaster_pid: Option<u32>,
}

/// utime + stime of `pid` in clock ticks (0 when it is gone).
fn ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// `pid` and its children.
fn family(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            if rest.split_whitespace().nth(1) == Some(pid.to_string().as_str()) {
                pids.push(child);
            }
        }
    }
    pids
}

/// CPU ticks of the worker and of PostgreSQL, as far as their PIDs are known.
fn cpu(args: &Args) -> (u64, u64) {
    let worker = args.worker_pid.map_or(0, ticks);
    let pg = args
        .postmaster_pid
        .map_or(0, |pm| family(pm).into_iter().map(ticks).sum());
    (worker, pg)
}

const DAY: i64 = 86_400;

fn envelope(id: String, kind: &str, created: i64, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "api_version": "2025-03-31.basil", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind
    })
}

fn catalog(run: &str, n: usize, products: usize, t0: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let p = i % products;
            let created = t0 + (i / products) as i64;
            let id = format!("evt_{run}_cat_{i}");
            if i % 2 == 0 {
                envelope(
                    id,
                    "product.updated",
                    created,
                    json!({
                    "id": format!("prod_{run}_{p}"), "object": "product", "active": true,
                    "name": format!("Product {p}"), "description": "bench", "images": [],
                    "metadata": {"tier": "basic"}, "livemode": false}),
                )
            } else {
                envelope(
                    id,
                    "price.updated",
                    created,
                    json!({
                    "id": format!("price_{run}_{p}"), "object": "price", "active": true,
                    "product": format!("prod_{run}_{p}"), "currency": "usd", "unit_amount": 900,
                    "type": "recurring", "nickname": "Monthly", "lookup_key": null, "metadata": {},
                    "recurring": {"interval": "month", "interval_count": 1}, "livemode": false}),
                )
            }
        })
        .collect()
}

fn purchase(run: &str, n: usize, t0: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let b = i / 2;
            let (customer, intent) = (format!("cus_{run}_{b}"), format!("pi_{run}_{b}"));
            let id = format!("evt_{run}_buy_{i}");
            if i % 2 == 0 {
                envelope(
                    id,
                    "checkout.session.completed",
                    t0,
                    json!({
                    "id": format!("cs_{run}_{b}"), "object": "checkout.session", "mode": "payment",
                    "status": "complete", "payment_status": "paid", "amount_total": 4900,
                    "currency": "usd", "customer": customer, "customer_email": null,
                    "customer_details": {"email": format!("buyer.{run}.{b}@example.com"),
                                         "name": "Bench Buyer", "address": {"country": "DE"}},
                    "payment_intent": intent, "subscription": null,
                    "metadata": {"price_id": "price_demo_onetime"}, "livemode": false}),
                )
            } else {
                envelope(
                    id,
                    "payment_intent.succeeded",
                    t0,
                    json!({
                    "id": intent, "object": "payment_intent", "amount": 4900,
                    "amount_received": 4900, "currency": "usd", "customer": customer,
                    "receipt_email": null, "status": "succeeded", "metadata": {},
                    "latest_charge": format!("ch_{run}_{b}"), "livemode": false}),
                )
            }
        })
        .collect()
}

fn subscription_snapshot(run: &str, s: usize, kind: &str, at: i64, period: (i64, i64)) -> Value {
    let price = json!({"id": "price_demo_monthly", "object": "price", "product": "prod_demo_monthly",
        "active": true, "currency": "usd", "unit_amount": 900, "type": "recurring",
        "recurring": {"interval": "month", "interval_count": 1}});
    envelope(
        format!("evt_{run}_sub_{kind}_{s}"),
        kind,
        at,
        json!({
        "id": format!("sub_{run}_{s}"), "object": "subscription",
        "customer": format!("cus_{run}_s{s}"), "status": "active", "cancel_at_period_end": false,
        "created": at, "cancel_at": null, "canceled_at": null, "ended_at": null,
        "trial_start": null, "trial_end": null, "metadata": {}, "livemode": false,
        "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
            "price": price, "quantity": 1,
            "current_period_start": period.0, "current_period_end": period.1}]}}),
    )
}

/// (untimed set-up phases, timed events). The checkouts go first, so that the subscriptions
/// they map are created (not failed and waiting for a retry) before the clock starts.
fn subscription(run: &str, n: usize, t0: i64) -> (Vec<Vec<Value>>, Vec<Value>) {
    let p1 = (t0, t0 + 30 * DAY);
    let (mut checkouts, mut created) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for s in 0..n {
        checkouts.push(envelope(
            format!("evt_{run}_subco_{s}"),
            "checkout.session.completed",
            t0,
            json!({
            "id": format!("cs_{run}_s{s}"), "object": "checkout.session", "mode": "subscription",
            "status": "complete", "payment_status": "paid", "amount_total": 900, "currency": "usd",
            "customer": format!("cus_{run}_s{s}"), "payment_intent": null,
            "customer_details": {"email": format!("sub.{run}.{s}@example.com"), "name": "Sam"},
            "subscription": format!("sub_{run}_{s}"), "metadata": {}}),
        ));
        created.push(subscription_snapshot(
            run,
            s,
            "customer.subscription.created",
            t0,
            p1,
        ));
    }
    let timed = (0..n)
        .map(|s| subscription_snapshot(run, s, "customer.subscription.updated", t0 + 60, p1))
        .collect();
    (vec![checkouts, created], timed)
}

struct Signed {
    /// Leaked: a `&'static` body is sent without a copy, and the process is short-lived.
    body: &'static [u8],
    header: String,
}

fn sign_all(secret: &WebhookSecret, events: &[Value]) -> Vec<Signed> {
    let now = chrono::Utc::now().timestamp();
    events
        .iter()
        .map(|e| {
            let body = serde_json::to_vec(e).expect("serialisable");
            let header = secret.sign(now, &body);
            Signed {
                body: Box::leak(body.into_boxed_slice()),
                header,
            }
        })
        .collect()
}

struct Outcome {
    latencies_us: Vec<u64>,
    non_2xx: usize,
    errors: usize,
    wall: Duration,
}

async fn drive(http: &reqwest::Client, url: &str, events: Vec<Signed>, c: usize) -> Outcome {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (events, next, http, url) =
                (events.clone(), next.clone(), http.clone(), url.to_owned());
            tokio::spawn(async move {
                let (mut lat, mut non_2xx, mut errors) = (Vec::new(), 0, 0);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(e) = events.get(i) else { break };
                    let t = Instant::now();
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("stripe-signature", &e.header)
                        .body(e.body)
                        .send()
                        .await;
                    match sent {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            let _ = resp.bytes().await;
                            if !ok {
                                non_2xx += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    lat.push(t.elapsed().as_micros() as u64);
                }
                (lat, non_2xx, errors)
            })
        })
        .collect();
    let mut out = Outcome {
        latencies_us: Vec::with_capacity(events.len()),
        non_2xx: 0,
        errors: 0,
        wall: Duration::ZERO,
    };
    for t in tasks {
        let (lat, n, e) = t.await.expect("task");
        out.latencies_us.extend(lat);
        out.non_2xx += n;
        out.errors += e;
    }
    out.wall = started.elapsed();
    out
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::env::var("STRIPE_WEBHOOK_SECRET")
        .map_err(|_| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET is required but not set"))
        .and_then(|s| WebhookSecret::parse(&s).map_err(anyhow::Error::msg))?;
    let url = format!("{}/webhooks/stripe", args.url.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let t0 = chrono::Utc::now().timestamp() - 3600;
    let (setup, timed) = match args.mix {
        Mix::Catalog => (vec![], catalog(&args.run, args.events, args.products, t0)),
        Mix::Purchase => (vec![], purchase(&args.run, args.events, t0)),
        Mix::Subscription => subscription(&args.run, args.events, t0),
        Mix::Duplicates => {
            let events = catalog(&args.run, args.events, args.products, t0);
            (vec![events.clone()], events)
        }
    };
    for phase in &setup {
        let s = drive(&http, &url, sign_all(&secret, phase), args.concurrency).await;
        if s.non_2xx + s.errors > 0 {
            anyhow::bail!("set-up: {} non-2xx, {} errors", s.non_2xx, s.errors);
        }
    }
    let signed = sign_all(&secret, &timed); // before the clock starts
    let cpu_before = cpu(&args);
    let mut o = drive(&http, &url, signed, args.concurrency).await;
    let cpu_after = cpu(&args);
    // Clock ticks (USER_HZ, 100 on Linux) -> microseconds per event.
    let per_event = |before: u64, after: u64| (after - before) * 10_000 / timed.len().max(1) as u64;
    o.latencies_us.sort_unstable();
    let secs = o.wall.as_secs_f64();
    let line = json!({
        "mix": format!("{:?}", args.mix).to_lowercase(),
        "events": timed.len(), "concurrency": args.concurrency, "seconds": secs,
        "events_per_s": timed.len() as f64 / secs,
        "p50_ms": percentile_ms(&o.latencies_us, 50.0),
        "p95_ms": percentile_ms(&o.latencies_us, 95.0),
        "p99_ms": percentile_ms(&o.latencies_us, 99.0),
        "max_ms": percentile_ms(&o.latencies_us, 100.0),
        "non_2xx": o.non_2xx, "errors": o.errors,
        "worker_cpu_us_per_event": per_event(cpu_before.0, cpu_after.0),
        "pg_cpu_us_per_event": per_event(cpu_before.1, cpu_after.1),
    });
    println!("{line}");
    Ok(())
}
