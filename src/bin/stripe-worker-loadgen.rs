//! Load generator for `scripts/bench.sh`: N unique, signed Stripe events at concurrency C over
//! keep-alive HTTP/1.1. The events come from `stripe_worker::fixtures` (the shapes and order
//! Stripe sends); every body is built and signed before the clock starts, and the events that
//! must exist first (subscribers, earlier purchases, the originals of duplicates) are delivered
//! untimed, flow step by flow step so that each buyer's events arrive in Stripe's order.
//!
//! With `--database-url` it also reads the server's WAL counters around the timed phase (and
//! can checkpoint first and reset `pg_stat_statements`), so WAL bytes and full-page images per
//! event come from the same window as the rate.
//!
//! Prints one JSON line: events/s, latency percentiles, answers, CPU and WAL per event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{json, Value};
use stripe_worker::fixtures::{Buyer, Catalog, Outcome, PaymentIds, Price, Shop, ShopOptions, DAY};
use stripe_worker::signature::WebhookSecret;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mix {
    /// product.updated / price.updated alternating across many products.
    Catalog,
    /// product.updated only.
    Product,
    /// A new buyer's Checkout purchase: payment_intent.succeeded and checkout.session.completed
    /// (metadata[price_id] names what was bought).
    Purchase,
    /// A renewal of subscribers signed up before the clock: customer.subscription.updated (the
    /// period moves) and the invoice.paid that pays the new period.
    Subscription,
    /// customer.subscription.updated only (the renewal's period move).
    SubscriptionUpdated,
    /// A returning buyer's second purchase: payment_intent.succeeded of a mapped customer.
    IntentMapped,
    /// payment_intent.succeeded of a customer nobody knows, with no address anywhere (stored
    /// unlinked until the customer's own event arrives).
    IntentUnknown,
    /// charge.succeeded of a purchase whose other events arrived first: the money-movement
    /// derivation (the grants of its intent, their status, the billing rows), whose cost must
    /// not grow with the grants already stored.
    Charge,
    /// Catalog events delivered once untimed, then the same events again (timed).
    Duplicates,
}

#[derive(Parser)]
struct Args {
    /// The service's base URL (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    /// The webhook route.
    #[arg(long, default_value = "/webhooks/stripe")]
    path: String,
    #[arg(long, value_enum)]
    mix: Mix,
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Makes ids unique across runs against the same database.
    #[arg(long, default_value = "run")]
    run: String,
    /// Products the catalog mixes spread their events over.
    #[arg(long, default_value_t = 1_000)]
    products: usize,
    /// The service's PID: its CPU time during the timed phase is reported per event.
    #[arg(long)]
    worker_pid: Option<u32>,
    /// The postmaster's PID: CPU time of it and its children (the backends), per event.
    #[arg(long)]
    postmaster_pid: Option<u32>,
    /// A superuser connection to the server: WAL counters around the timed phase.
    #[arg(long)]
    database_url: Option<String>,
    /// ANALYZE after the set-up, before the clock starts. The set-up grows a fresh database's
    /// tables from empty to thousands of rows within seconds, faster than autovacuum (which
    /// looks every minute) re-reads them, and plans made on an empty table's statistics are not
    /// what a shop that has run for a while gets.
    #[arg(long)]
    analyze: bool,
    /// CHECKPOINT before the clock starts, so every timed phase starts from the same state
    /// (the first change of each page after a checkpoint writes a full-page image).
    #[arg(long)]
    checkpoint: bool,
    /// pg_stat_statements_reset() and the function counters' reset before the clock starts.
    #[arg(long)]
    reset_statements: bool,
    /// Send only the timed events, for a service that keeps no state per buyer: stripe-sync-engine
    /// stores each object as it arrives and asks Stripe's API for a Checkout session's line
    /// items, so the set-up of the purchase and renewal flows would only measure that call.
    #[arg(long)]
    skip_setup: bool,
    /// Buyers whose whole Checkout purchase is delivered before the clock, as in a shop that
    /// has sold before: the timed phase then runs on tables that hold rows when `--analyze`
    /// reads them. Plans made on an analyzed empty table (seq scans) stay until autovacuum
    /// analyzes again, which a table growing by thousands of rows a minute outruns.
    #[arg(long, default_value_t = 0)]
    history: usize,
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

/// CPU ticks of the service (and its children: a Node service may fork) and of PostgreSQL.
fn cpu(args: &Args) -> (u64, u64) {
    let worker = args
        .worker_pid
        .map_or(0, |pid| family(pid).into_iter().map(ticks).sum());
    let pg = args
        .postmaster_pid
        .map_or(0, |pm| family(pm).into_iter().map(ticks).sum());
    (worker, pg)
}

/// A seed per (run, index): every run and every buyer gets its own ids.
fn seed(run: &str, i: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
    }
    let mut z = h ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn shop(run: &str, i: usize, start: i64) -> Shop {
    Shop::new(ShopOptions {
        seed: seed(run, i),
        start,
        ..ShopOptions::default()
    })
}

fn of_types(events: &[Value], types: &[&str]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| types.contains(&e["type"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

/// The events of one flow, split at the clock: (before it, timed).
type Flow = (Vec<Value>, Vec<Value>);

/// Renames of `products` products (product.updated, price.updated), one round per second so
/// that every event is newer than the last one applied to its object.
fn catalog(run: &str, n: usize, products: usize, t0: i64, types: &[&str]) -> Vec<Value> {
    let mut shop = shop(run, usize::MAX, t0);
    let prices: Vec<Price> = (0..products)
        .map(|p| Price {
            id: format!("price_{run}_{p}"),
            product: format!("prod_{run}_{p}"),
            product_name: format!("Product {p}"),
            nickname: "Monthly".into(),
            ..Catalog::demo().monthly
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    let mut round = 0;
    while out.len() < n {
        let before = shop.events().len();
        for price in &prices {
            shop.catalog_renamed(price, &format!("Product {round}"), &format!("Nick {round}"));
        }
        out.extend(of_types(&shop.events()[before..], types));
        shop.advance(1);
        round += 1;
    }
    out.truncate(n);
    out
}

/// One flow per buyer, enough for `n` timed events at `per_flow` each.
fn flows(n: usize, per_flow: usize, build: impl Fn(usize) -> Flow) -> Vec<Flow> {
    (0..n.div_ceil(per_flow)).map(build).collect()
}

fn build(args: &Args, t0: i64) -> (Vec<Flow>, Vec<Value>) {
    let (run, n) = (args.run.as_str(), args.events);
    match args.mix {
        Mix::Catalog => (
            vec![],
            catalog(
                run,
                n,
                args.products,
                t0,
                &["product.updated", "price.updated"],
            ),
        ),
        Mix::Product => (
            vec![],
            catalog(run, n, args.products, t0, &["product.updated"]),
        ),
        Mix::Duplicates => {
            let events = catalog(
                run,
                n,
                args.products,
                t0,
                &["product.updated", "price.updated"],
            );
            (vec![(events.clone(), vec![])], events)
        }
        Mix::Purchase => by_flow(flows(n, 2, |b| {
            let (s, _) = new_buyers_purchase(run, b, t0);
            let timed = of_types(
                s.events(),
                &["payment_intent.succeeded", "checkout.session.completed"],
            );
            (vec![], timed)
        })),
        Mix::IntentUnknown => by_flow(flows(n, 1, |b| {
            let (s, _) = new_buyers_purchase(run, b, t0);
            let mut timed = of_types(s.events(), &["payment_intent.succeeded"]);
            for e in &mut timed {
                e["data"]["object"]["receipt_email"] = Value::Null;
            }
            (vec![], timed)
        })),
        Mix::IntentMapped => by_flow(flows(n, 1, |b| {
            let (mut s, first) = new_buyers_purchase(run, b, t0);
            let price = s.catalog.onetime.clone();
            let setup = s.events().to_vec();
            s.advance(DAY);
            let customer = first.customer.expect("Checkout created a customer");
            s.checkout_payment(Buyer::Existing(customer), price);
            let timed = of_types(&s.events()[setup.len()..], &["payment_intent.succeeded"]);
            (setup, timed)
        })),
        Mix::Charge => by_flow(flows(n, 1, |b| {
            let (s, _) = new_buyers_purchase(run, b, t0);
            let (timed, setup): (Vec<Value>, Vec<Value>) = s
                .events()
                .iter()
                .cloned()
                .partition(|e| e["type"] == "charge.succeeded");
            (setup, timed)
        })),
        Mix::Subscription | Mix::SubscriptionUpdated => {
            let types: &[&str] = match args.mix {
                Mix::Subscription => &["customer.subscription.updated", "invoice.paid"],
                _ => &["customer.subscription.updated"],
            };
            // Signed up a month and a bit ago: the renewal is due about now.
            let start = t0 - 31 * DAY;
            by_flow(flows(n, types.len(), |s| {
                let mut shop = shop(run, s, start);
                let price = shop.catalog.monthly.clone();
                let sub = shop.checkout_subscription(Buyer::New, price, None);
                let setup = shop.events().to_vec();
                shop.renewal(&sub.subscription, Outcome::Paid);
                (
                    setup.clone(),
                    of_types(&shop.events()[setup.len()..], types),
                )
            }))
        }
    }
}

/// A new buyer's Checkout purchase of the one-time price: the shop holding its events.
fn new_buyers_purchase(run: &str, i: usize, start: i64) -> (Shop, PaymentIds) {
    let mut s = shop(run, i, start);
    let price = s.catalog.onetime.clone();
    let ids = s.checkout_payment(Buyer::New, price);
    (s, ids)
}

/// Earlier buyers' Checkout purchases, a day before the timed ones (ids of their own).
fn history(run: &str, buyers: usize, start: i64) -> Vec<Flow> {
    (0..buyers)
        .map(|b| {
            let (s, _) = new_buyers_purchase(&format!("{run}-earlier"), b, start);
            (s.events().to_vec(), vec![])
        })
        .collect()
}

/// Set-up phases (the k-th event of every flow in phase k, so each buyer's events arrive in
/// order while different buyers' run concurrently) and the timed events, flow after flow.
fn by_flow(flows: Vec<Flow>) -> (Vec<Flow>, Vec<Value>) {
    let steps = flows.iter().map(|f| f.0.len()).max().unwrap_or(0);
    let phases = (0..steps)
        .map(|k| {
            let phase = flows.iter().filter_map(|f| f.0.get(k).cloned()).collect();
            (phase, vec![])
        })
        .collect();
    let timed = flows.into_iter().flat_map(|f| f.1).collect();
    (phases, timed)
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

#[derive(Default)]
struct Delivered {
    latencies_us: Vec<u64>,
    non_2xx: usize,
    errors: usize,
    /// The `status` of 2xx answers (processed, duplicate, failed, …; `other` when none).
    answers: BTreeMap<String, usize>,
    wall: Duration,
}

/// The `"status":"…"` of an answer, without parsing the whole body.
fn answer_status(body: &[u8]) -> String {
    let text = std::str::from_utf8(body).unwrap_or("");
    text.split_once("\"status\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "other".to_owned(), |(s, _)| s.to_owned())
}

async fn drive(http: &reqwest::Client, url: &str, events: Vec<Signed>, c: usize) -> Delivered {
    let events = Arc::new(events);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (events, next, http, url) =
                (events.clone(), next.clone(), http.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut out = Delivered::default();
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
                            let body = resp.bytes().await.unwrap_or_default();
                            if ok {
                                *out.answers.entry(answer_status(&body)).or_default() += 1;
                            } else {
                                out.non_2xx += 1;
                            }
                        }
                        Err(_) => out.errors += 1,
                    }
                    out.latencies_us.push(t.elapsed().as_micros() as u64);
                }
                out
            })
        })
        .collect();
    let mut out = Delivered {
        latencies_us: Vec::with_capacity(events.len()),
        ..Delivered::default()
    };
    for t in tasks {
        let o = t.await.expect("task");
        out.latencies_us.extend(o.latencies_us);
        out.non_2xx += o.non_2xx;
        out.errors += o.errors;
        for (k, v) in o.answers {
            *out.answers.entry(k).or_default() += v;
        }
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

/// The server's WAL insert position (cluster-wide). Its difference is exact, where pg_stat_wal's
/// counters lag behind (backends report them at most once a second).
const WAL_LSN: &str = "select (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8";

async fn wal_lsn(db: Option<&tokio_postgres::Client>) -> anyhow::Result<i64> {
    Ok(match db {
        Some(db) => db.query_one(WAL_LSN, &[]).await?.get(0),
        None => 0,
    })
}

fn lsn_text(lsn: i64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret = std::env::var("STRIPE_WEBHOOK_SECRET")
        .map_err(|_| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET is required but not set"))
        .and_then(|s| WebhookSecret::parse(&s).map_err(anyhow::Error::msg))?;
    let url = format!(
        "{}/{}",
        args.url.trim_end_matches('/'),
        args.path.trim_start_matches('/')
    );
    let http = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(args.concurrency)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let db = match &args.database_url {
        Some(url) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Some(client)
        }
        None => None,
    };
    let t0 = chrono::Utc::now().timestamp() - 3600;
    let (mut setup, timed) = build(&args, t0);
    if args.skip_setup {
        setup.clear();
    } else if args.history > 0 {
        let (mut earlier, _) = by_flow(history(&args.run, args.history, t0 - DAY));
        earlier.append(&mut setup);
        setup = earlier;
    }
    let mut setup_answers = BTreeMap::<String, usize>::new();
    for (phase, _) in &setup {
        let s = drive(&http, &url, sign_all(&secret, phase), args.concurrency).await;
        if s.non_2xx + s.errors > 0 {
            anyhow::bail!("set-up: {} non-2xx, {} errors", s.non_2xx, s.errors);
        }
        for (k, v) in s.answers {
            *setup_answers.entry(k).or_default() += v;
        }
    }
    let signed = sign_all(&secret, &timed); // before the clock starts
    if let Some(db) = &db {
        if args.analyze {
            db.batch_execute("analyze").await?;
        }
        if args.checkpoint {
            db.batch_execute("checkpoint").await?;
        }
        if args.reset_statements {
            // Function counters too (kept only with track_functions = 'all'): the call counts
            // of the derivation chain per timed event.
            db.batch_execute(
                "select pg_stat_statements_reset();
                 select pg_stat_reset_single_function_counters(funcid) from pg_stat_user_functions",
            )
            .await?;
        }
    }
    let wal_before = wal_lsn(db.as_ref()).await?;
    let cpu_before = cpu(&args);
    let mut o = drive(&http, &url, signed, args.concurrency).await;
    let cpu_after = cpu(&args);
    let wal_after = wal_lsn(db.as_ref()).await?;
    let events = timed.len().max(1) as f64;
    // Clock ticks (USER_HZ, 100 on Linux) -> microseconds per event.
    let per_event = |before: u64, after: u64| ((after - before) as f64 * 10_000.0 / events) as u64;
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
        "answers": o.answers, "setup_events": setup.iter().map(|p| p.0.len()).sum::<usize>(),
        "setup_answers": setup_answers,
        "worker_cpu_us_per_event": per_event(cpu_before.0, cpu_after.0),
        "pg_cpu_us_per_event": per_event(cpu_before.1, cpu_after.1),
        "wal_bytes_per_event": (wal_after - wal_before) as f64 / events,
        "wal_from": lsn_text(wal_before), "wal_to": lsn_text(wal_after),
    });
    println!("{line}");
    Ok(())
}
