//! Slow and hostile clients against a real `stripe-worker serve` on loopback: stalled heads and
//! bodies are cut off at their deadlines, many slow large bodies cannot grow the process past
//! its memory bound, a low open-files limit never starves the pool, and Stripe's deliveries
//! keep being answered meanwhile. Every wait is bounded; the worker is stopped by PID.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{self, post_raw_to, unique};
use crate::processes::{product_event, signed, WorkerProcess};

const QUIET: (&str, &str) = ("RUST_LOG", "off");

fn address(worker: &WorkerProcess) -> String {
    worker.url.trim_start_matches("http://").to_owned()
}

/// Waits (at most `within`) for the server to close `stream`; the bytes it sent first.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None, // still open
            Ok(Ok(0)) | Ok(Err(_)) => return Some(seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Signed deliveries of new product events, `n` at a time: their HTTP statuses.
async fn deliveries(base: &str, n: usize) -> Vec<u16> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let url = format!("{base}/webhooks/stripe");
    let posts = (0..n).map(|_| {
        let (body, header) = signed(&product_event(&unique("evt")));
        let (http, url) = (http.clone(), url.clone());
        async move { post_raw_to(&http, &url, body, Some(&header)).await.status }
    });
    futures_util::future::join_all(posts).await
}

const BODY_TIMEOUT_SECS: u64 = 3;
const HEAD_TIMEOUT_SECS: u64 = 2;

#[tokio::test]
async fn stalled_heads_and_bodies_are_cut_off_at_their_deadlines_while_stripe_is_answered() {
    let db = helpers::fresh_db().await;
    let body_timeout = BODY_TIMEOUT_SECS.to_string();
    let head_timeout = HEAD_TIMEOUT_SECS.to_string();
    let worker = WorkerProcess::spawn(
        &db.url,
        &[
            QUIET,
            ("HTTP_BODY_TIMEOUT_SECS", &body_timeout),
            ("HTTP_HEAD_TIMEOUT_SECS", &head_timeout),
        ],
    )
    .await;
    let addr = address(&worker);
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=1,v1=00\r\n"
    );
    // 300 bodies stalled after one byte (declared lengths), 20 chunked bodies stalled inside
    // a chunk, 50 heads stalled before their end.
    let mut stalled = Vec::new();
    for i in 0..370 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let (kind, bytes) = match i {
            0..300 => ("body", format!("{head}Content-Length: 1000\r\n\r\n{{")),
            300..320 => (
                "chunked body",
                format!("{head}Transfer-Encoding: chunked\r\n\r\n10\r\n{{\"id\""),
            ),
            _ => ("head", head.clone()),
        };
        s.write_all(bytes.as_bytes()).await.unwrap();
        stalled.push((kind, s));
    }
    let opened = Instant::now();

    // Stripe meanwhile: every delivery answered and stored.
    let answers = deliveries(&worker.url, 30).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");

    // Each stalled connection is closed by the server within its deadline plus a margin
    // (the bound of this wait, not a speed assertion).
    let within = Duration::from_secs(BODY_TIMEOUT_SECS + 5)
        .saturating_sub(opened.elapsed())
        .max(Duration::from_secs(1));
    let closes = stalled
        .into_iter()
        .map(|(kind, s)| async move { (kind, closed_by_server(s, within).await) });
    let closes = futures_util::future::join_all(closes).await;
    let open: Vec<_> = closes
        .iter()
        .filter(|(_, c)| c.is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(
        open.is_empty(),
        "{} connections still open: {open:?}",
        open.len()
    );
    for (kind, seen) in &closes {
        let text = String::from_utf8_lossy(seen.as_ref().unwrap());
        if *kind != "head" {
            assert!(text.starts_with("HTTP/1.1 408"), "{kind}: {text}");
        }
    }
    let text = reqwest::get(format!("{}/metrics", worker.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "stripe_worker_deliveries_total{outcome=\"rejected\",reason=\"body_timeout\"} 320"
        ),
        "{text}"
    );
    // And the worker is as good as new.
    assert!(deliveries(&worker.url, 5).await.iter().all(|s| *s == 200));
}

/// One client sending a body of `len` bytes in `chunk`-sized pieces with a pause between:
/// the status line the server answered with, if any, once it closed or answered.
async fn slow_body(addr: String, len: usize, chunk: &'static [u8], pause: Duration) -> String {
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return "connect failed".into();
    };
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Stripe-Signature: t=1,v1={}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        "0".repeat(64)
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return "closed".into();
    }
    let mut sent = 0;
    while sent < len {
        let n = chunk.len().min(len - sent);
        if s.write_all(&chunk[..n]).await.is_err() {
            break; // the server answered and closed
        }
        sent += n;
        tokio::time::sleep(pause).await;
    }
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer)).await {
        Err(_) => "still open".into(),
        Ok(_) if answer.is_empty() => "closed".into(),
        Ok(_) => String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

static CHUNK: [u8; 16 * 1024] = [b' '; 16 * 1024];

#[tokio::test]
async fn two_hundred_slow_one_mib_bodies_keep_the_worker_under_64_mib_and_stripe_answered() {
    let db = helpers::fresh_db().await;
    let worker = WorkerProcess::spawn(&db.url, &[QUIET]).await;
    let addr = address(&worker);
    let before = worker.memory_kib("VmRSS");
    let len = 1024 * 1024 - 1;
    // 64 pieces of 16 KiB, 40 ms apart: about 2.6 s per body, within the 10 s deadline.
    let clients: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(slow_body(
                addr.clone(),
                len,
                &CHUNK,
                Duration::from_millis(40),
            ))
        })
        .collect();
    // Stripe's deliveries during the attack, a few at a time.
    let mut stripe = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stripe.extend(deliveries(&worker.url, 3).await);
    }
    let mut answers = Vec::new();
    for c in clients {
        answers.push(c.await.unwrap());
    }
    let peak = worker.memory_kib("VmHWM");
    let rss = worker.memory_kib("VmRSS");
    eprintln!(
        "slow bodies: RSS before {before} KiB, peak {peak} KiB, after {rss} KiB; answers: {} x 503, {} x 400",
        answers.iter().filter(|a| a.contains(" 503")).count(),
        answers.iter().filter(|a| a.contains(" 400")).count(),
    );
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    assert!(stripe.iter().all(|s| *s == 200), "{stripe:?}");
    // No slow client is left hanging: each was refused for the budget (503), read and refused
    // for its signature (400), or disconnected; and the budget did refuse some.
    assert!(
        answers.iter().all(|a| a.starts_with("HTTP/1.1 503")
            || a.starts_with("HTTP/1.1 400")
            || a == "closed"),
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.starts_with("HTTP/1.1 400"))
            .count()
            < answers.len(),
        "{answers:?}"
    );
}

#[tokio::test]
async fn with_a_low_open_files_limit_idle_connections_never_starve_the_pool_or_healthz() {
    let db = helpers::fresh_db().await;
    // 256 descriptors: the worker keeps room for its pool (4), the ops listener and its own
    // needs, and takes at most the rest as client connections.
    let worker = WorkerProcess::spawn_with_open_files(
        &db.url,
        &[QUIET, ("HTTP_HEAD_TIMEOUT_SECS", "2")],
        Some(256),
    )
    .await;
    let addr = address(&worker);
    let connects = (0..400).map(|_| {
        let addr = addr.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .ok()
                .and_then(Result::ok)
        }
    });
    let idle: Vec<TcpStream> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .flatten()
        .collect();
    // All of them connect: those beyond the cap wait in the listen backlog, none is refused.
    assert_eq!(idle.len(), 400, "only {} connections opened", idle.len());
    // Beyond the cap, new connections wait in the accept queue until idle ones are cut off at
    // the head deadline: a delivery and /healthz are answered, the database pool still opens.
    let answers = deliveries(&worker.url, 4).await;
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    let health = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
        .get(format!("{}/healthz", worker.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    drop(idle);
}
