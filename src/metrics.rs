//! Prometheus text exposition, without a metrics framework: a few counters and one histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Upper bounds (seconds) of the processing latency histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (outcome, reason) -> count; outcome is accepted/duplicate/rejected/unavailable.
    deliveries: BTreeMap<(&'static str, &'static str), u64>,
    /// (event type, final status) -> count.
    events: BTreeMap<(String, &'static str), u64>,
    buckets: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    /// Set once the catch-up runs in this process.
    catch_up: Option<CatchUpGauges>,
}

/// The catch-up's state as this replica last read it (every replica reads it each interval,
/// whichever one ran), and its own counters.
#[derive(Debug, Clone, Default)]
pub struct CatchUpGauges {
    /// The high-water mark (or where the first run started): the lag is measured from it.
    pub mark: Option<DateTime<Utc>>,
    pub last_run_ok: Option<bool>,
    pub last_run_finished: Option<DateTime<Utc>>,
    /// Events this replica's catch-up stored that no delivery had brought.
    pub recovered: u64,
    /// 429 answers this replica's catch-up waited out.
    pub rate_limited: u64,
}

/// Database-side gauges, read when /metrics is scraped.
#[derive(Debug, Default)]
pub struct QueueGauges {
    pub retry_due: i64,
    pub retry_scheduled: i64,
    pub oldest_pending_secs: f64,
    pub dead: i64,
}

pub struct PoolGauges {
    pub size: usize,
    pub available: usize,
    pub waiting: usize,
    pub max_size: usize,
}

impl Metrics {
    pub fn delivery(&self, outcome: &'static str, reason: &'static str) {
        *self
            .inner
            .lock()
            .unwrap()
            .deliveries
            .entry((outcome, reason))
            .or_default() += 1;
    }

    /// An attempt ended with the row in `status` (a `processing_status` value).
    pub fn event_finished(&self, event_type: &str, status: &'static str) {
        let mut inner = self.inner.lock().unwrap();
        // Event types come from signed events only; still, cap the label set.
        let key = if inner.events.len() < 500 {
            event_type.to_owned()
        } else {
            "other".into()
        };
        *inner.events.entry((key, status)).or_default() += 1;
    }

    /// The catch-up's state as last read from its table (counters are kept).
    pub fn catch_up_state(
        &self,
        mark: Option<DateTime<Utc>>,
        last_run_ok: Option<bool>,
        last_run_finished: Option<DateTime<Utc>>,
    ) {
        let mut inner = self.inner.lock().unwrap();
        let gauges = inner.catch_up.get_or_insert_with(CatchUpGauges::default);
        gauges.mark = mark;
        gauges.last_run_ok = last_run_ok;
        gauges.last_run_finished = last_run_finished;
    }

    pub fn catch_up_counts(&self, recovered: u64, rate_limited: u64) {
        let mut inner = self.inner.lock().unwrap();
        let gauges = inner.catch_up.get_or_insert_with(CatchUpGauges::default);
        gauges.recovered += recovered;
        gauges.rate_limited += rate_limited;
    }

    pub fn observe_processing(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                inner.buckets[i] += 1;
            }
        }
        inner.latency_count += 1;
        inner.latency_sum += secs;
    }

    pub fn render(&self, queue: Option<&QueueGauges>, pool: &PoolGauges) -> String {
        let mut out = String::with_capacity(4096);
        self.inner.lock().unwrap().render(&mut out);
        if let Some(q) = queue {
            q.render(&mut out);
        }
        pool.render(&mut out);
        out
    }
}

impl Inner {
    fn render(&self, out: &mut String) {
        out.push_str("# HELP stripe_worker_deliveries_total Webhook deliveries by outcome.\n");
        out.push_str("# TYPE stripe_worker_deliveries_total counter\n");
        for ((outcome, reason), n) in &self.deliveries {
            let _ = writeln!(
                out,
                "stripe_worker_deliveries_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP stripe_worker_events_total Events processed, by type and resulting status.\n",
        );
        out.push_str("# TYPE stripe_worker_events_total counter\n");
        for ((event_type, status), n) in &self.events {
            let _ = writeln!(
                out,
                "stripe_worker_events_total{{type=\"{}\",status=\"{status}\"}} {n}",
                escape(event_type)
            );
        }
        out.push_str("# HELP stripe_worker_processing_seconds Time to apply one event inside its transaction.\n");
        out.push_str("# TYPE stripe_worker_processing_seconds histogram\n");
        for (i, le) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "stripe_worker_processing_seconds_bucket{{le=\"{le}\"}} {}",
                self.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "stripe_worker_processing_seconds_bucket{{le=\"+Inf\"}} {}",
            self.latency_count
        );
        let _ = writeln!(
            out,
            "stripe_worker_processing_seconds_sum {}",
            self.latency_sum
        );
        let _ = writeln!(
            out,
            "stripe_worker_processing_seconds_count {}",
            self.latency_count
        );
        if let Some(c) = &self.catch_up {
            render_catch_up(out, c, Utc::now());
        }
    }
}

impl QueueGauges {
    fn render(&self, out: &mut String) {
        gauge(
            out,
            "stripe_worker_retry_queue_due",
            "Events the retrier takes on its next pass.",
            self.retry_due as f64,
        );
        gauge(
            out,
            "stripe_worker_retry_queue_scheduled",
            "Failed events waiting for a later attempt.",
            self.retry_scheduled as f64,
        );
        gauge(
            out,
            "stripe_worker_oldest_pending_seconds",
            "Age of the oldest event not yet finished.",
            self.oldest_pending_secs,
        );
        gauge(
            out,
            "stripe_worker_dead_events",
            "Events that ran out of retries.",
            self.dead as f64,
        );
    }
}

impl PoolGauges {
    fn render(&self, out: &mut String) {
        gauge(
            out,
            "stripe_worker_db_pool_connections",
            "Open database connections.",
            self.size as f64,
        );
        gauge(
            out,
            "stripe_worker_db_pool_available",
            "Idle database connections.",
            self.available as f64,
        );
        gauge(
            out,
            "stripe_worker_db_pool_waiting",
            "Requests waiting for a connection.",
            self.waiting as f64,
        );
        gauge(
            out,
            "stripe_worker_db_pool_max",
            "Pool size limit.",
            self.max_size as f64,
        );
    }
}

fn render_catch_up(out: &mut String, c: &CatchUpGauges, now: DateTime<Utc>) {
    if let Some(mark) = c.mark {
        gauge(
            out,
            "stripe_worker_reconcile_lag_seconds",
            "Seconds since the catch-up's high-water mark: events created before it are stored.",
            (now - mark).num_milliseconds().max(0) as f64 / 1000.0,
        );
    }
    counter(
        out,
        "stripe_worker_reconcile_recovered_total",
        "Events only the catch-up found: deliveries Stripe failed to make or the worker failed to take.",
        c.recovered,
    );
    counter(
        out,
        "stripe_worker_reconcile_rate_limited_total",
        "Stripe API 429 answers the catch-up waited out.",
        c.rate_limited,
    );
    if let Some(ok) = c.last_run_ok {
        gauge(
            out,
            "stripe_worker_reconcile_last_run_success",
            "1 if the catch-up's last finished run succeeded, else 0.",
            if ok { 1.0 } else { 0.0 },
        );
    }
    if let Some(at) = c.last_run_finished {
        gauge(
            out,
            "stripe_worker_reconcile_last_run_timestamp_seconds",
            "When the catch-up's last run finished (unix seconds).",
            at.timestamp() as f64,
        );
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.delivery("accepted", "processed");
        m.delivery("rejected", "invalid_signature");
        m.delivery("rejected", "invalid_signature");
        m.event_finished("product.created", "processed");
        m.observe_processing(Duration::from_millis(3));
        let text = m.render(
            None,
            &PoolGauges {
                size: 1,
                available: 1,
                waiting: 0,
                max_size: 4,
            },
        );
        assert!(text.contains(
            "stripe_worker_deliveries_total{outcome=\"rejected\",reason=\"invalid_signature\"} 2"
        ));
        assert!(text.contains(
            "stripe_worker_events_total{type=\"product.created\",status=\"processed\"} 1"
        ));
        assert!(text.contains("stripe_worker_processing_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("stripe_worker_processing_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("stripe_worker_db_pool_max 4"));
        assert!(!text.contains("stripe_worker_reconcile"), "catch-up off");
    }

    #[test]
    fn renders_the_catch_up_when_it_runs() {
        let m = Metrics::default();
        let now = Utc::now();
        m.catch_up_state(
            Some(now - chrono::Duration::seconds(90)),
            Some(false),
            Some(now),
        );
        m.catch_up_counts(2, 1);
        m.catch_up_counts(1, 0);
        let text = m.render(
            None,
            &PoolGauges {
                size: 1,
                available: 1,
                waiting: 0,
                max_size: 4,
            },
        );
        let lag: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("stripe_worker_reconcile_lag_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((90.0..3600.0).contains(&lag), "{lag}");
        assert!(text.contains("stripe_worker_reconcile_recovered_total 3\n"));
        assert!(text.contains("stripe_worker_reconcile_rate_limited_total 1\n"));
        assert!(text.contains("stripe_worker_reconcile_last_run_success 0\n"));
        assert!(text.contains(&format!(
            "stripe_worker_reconcile_last_run_timestamp_seconds {}\n",
            now.timestamp()
        )));
    }
}
