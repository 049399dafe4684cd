//! `stripe-worker trigger <flow|event-type>`: like `stripe trigger`, sends realistic events
//! (src/fixtures) to the worker, signed with the configured endpoint secret: a whole named
//! flow, or one event type together with the events that lead to it.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use crate::config::{Source, WebhookSettings};
use crate::email::Email;
use crate::fixtures::{self, ApiVersion, Flow, ShopOptions, FLOWS};

/// Sign and POST a flow of realistic Stripe events to the worker (like `stripe trigger`).
///
/// TARGET is a flow (`--list` shows them) or an event type; an event type is sent after the
/// events that lead to it (e.g. `invoice.paid` after a subscription's checkout and the
/// renewal it pays), so that it applies instead of failing. Events have fresh ids, the
/// shape of `--api-version`, prices of the demo catalog, and `created` times that end now.
/// They are signed with the first STRIPE_WEBHOOK_SECRET. One line per event with the
/// worker's answer; exit status 0 when every answer is 2xx.
#[derive(Args, Debug, Clone, Default)]
#[command(after_help = "Examples:
  stripe-worker trigger --list
  stripe-worker trigger renewal-failed --email buyer@example.com
  stripe-worker trigger invoice.paid --api-version 2020-08-27
  stripe-worker trigger checkout.session.completed --mode subscription
  stripe-worker trigger product.created --url http://127.0.0.1:8080/webhooks/stripe")]
pub struct TriggerArgs {
    /// A flow name or an event type.
    #[arg(value_name = "FLOW|EVENT_TYPE", required_unless_present = "list")]
    pub target: Option<String>,
    /// The buyer's email address (default: buyer+<random>@example.com).
    #[arg(long, value_parser = parse_email)]
    pub email: Option<Email>,
    /// Where to POST (default: http://127.0.0.1:$PORT/webhooks/stripe, PORT default 8080).
    #[arg(long)]
    pub url: Option<String>,
    /// The API version to render (exact, or basil / clover / dahlia).
    #[arg(long, value_parser = parse_version, default_value_t = ApiVersion::DEFAULT)]
    pub api_version: ApiVersion,
    /// checkout.session.completed only: a one-time payment (price_demo_onetime) or a
    /// subscription (price_demo_monthly).
    #[arg(long, value_enum, default_value_t = CheckoutMode::Payment)]
    pub mode: CheckoutMode,
    /// Ids from this seed instead of random ones (the same seed gives the same ids: the
    /// worker answers `duplicate` the second time).
    #[arg(long)]
    pub seed: Option<u64>,
    /// List the flows with a line each, and send nothing.
    #[arg(long)]
    pub list: bool,
}

/// What a checkout session sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CheckoutMode {
    #[default]
    Payment,
    Subscription,
}

fn parse_email(raw: &str) -> Result<Email, String> {
    Email::parse(raw).ok_or_else(|| format!("not an email address: {raw:?}"))
}

fn parse_version(raw: &str) -> Result<ApiVersion, String> {
    ApiVersion::parse(raw).map_err(|e| e.to_string())
}

/// The worker's answer to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerAnswer {
    pub event_id: String,
    pub event_type: String,
    pub status: u16,
    pub body: String,
}

impl TriggerAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TriggerReport {
    /// In sending order; sending stops after the first answer that is not 2xx.
    pub answers: Vec<TriggerAnswer>,
    /// How many events the flow has.
    pub planned: usize,
}

impl TriggerReport {
    pub fn is_success(&self) -> bool {
        self.answers.len() == self.planned && self.answers.iter().all(TriggerAnswer::is_success)
    }

    /// The answer to the last event sent (for an event type: that event).
    pub fn last(&self) -> Option<&TriggerAnswer> {
        self.answers.last()
    }
}

/// What to send: a flow, whole or up to (and including) its last event of one type.
struct Plan {
    flow: &'static Flow,
    until: Option<String>,
}

impl Plan {
    fn new(target: &str, args: &TriggerArgs) -> anyhow::Result<Self> {
        if let Some(flow) = fixtures::flow(target) {
            return Ok(Self { flow, until: None });
        }
        let host = match (target, args.mode) {
            ("checkout.session.completed", CheckoutMode::Subscription) => {
                fixtures::flow("checkout-subscription")
            }
            _ => fixtures::host_flow(target, args.api_version),
        };
        match host {
            Some(flow) => Ok(Self {
                flow,
                until: Some(target.to_owned()),
            }),
            None => anyhow::bail!(
                "unknown flow or event type {target:?}\n  flows: {}\n  event types (API {}): {}",
                FLOWS.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
                args.api_version,
                fixtures::event_types(args.api_version).join(", ")
            ),
        }
    }

    fn events(&self, options: ShopOptions) -> Vec<Value> {
        let events = self.flow.events(options);
        match &self.until {
            Some(t) => fixtures::up_to_last(events, t),
            None => events,
        }
    }

    /// The events, placed so that the last one is `created` now, or up to a few days before
    /// (months differ in length, so a flow's span depends on where it starts; the 31st of a
    /// month plus a month is the 30th or 28th).
    fn events_ending(&self, options: ShopOptions, now: i64) -> Vec<Value> {
        let build = |start: i64| {
            self.events(ShopOptions {
                start,
                ..options.clone()
            })
        };
        let end_of = |events: &[Value]| {
            events
                .last()
                .and_then(|e| e["created"].as_i64())
                .unwrap_or(now)
        };
        let first = build(now);
        let span = end_of(&first) - now;
        if span <= 0 {
            return first;
        }
        let shifted = build(now - span);
        if (now - 3 * fixtures::DAY..=now).contains(&end_of(&shifted)) {
            return shifted;
        }
        // A later start never ends earlier: find the latest start that ends by now.
        let (mut lo, mut hi) = (now - 2 * span - 7 * fixtures::DAY, now);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if end_of(&build(mid)) <= now {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        build(lo)
    }
}

pub async fn run(
    args: &TriggerArgs,
    src: &dyn Source,
    out: &mut dyn Write,
) -> anyhow::Result<TriggerReport> {
    if args.list {
        for f in FLOWS {
            writeln!(out, "{:<24} {}", f.name, f.about)?;
        }
        return Ok(TriggerReport::default());
    }
    let target = args.target.as_deref().unwrap_or_default().trim();
    let plan = Plan::new(target, args)?;
    let webhook = WebhookSettings::from_source(src)?;
    let secret = webhook
        .secrets
        .first()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET is required but not set"))?;
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let port: u16 = match src.get("PORT") {
                None => 8080,
                Some(raw) => raw
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("PORT is malformed: expected a port number"))?,
            };
            format!("http://127.0.0.1:{port}/webhooks/stripe")
        }
    };
    let now = chrono::Utc::now().timestamp();
    let options = ShopOptions {
        seed: args.seed.unwrap_or_else(rand::random),
        email: args.email.clone(),
        api_version: args.api_version,
        ..ShopOptions::default()
    };
    let events = plan.events_ending(options, now);
    let buyer = events
        .iter()
        .find_map(|e| {
            let o = &e["data"]["object"];
            o["email"]
                .as_str()
                .or(o["customer_details"]["email"].as_str())
        })
        .unwrap_or("-")
        .to_owned();
    writeln!(
        out,
        "POST {url}  {} ({} events, API {}, buyer {buyer})",
        plan.flow.name,
        events.len(),
        args.api_version
    )?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut report = TriggerReport {
        answers: Vec::new(),
        planned: events.len(),
    };
    for (n, event) in events.iter().enumerate() {
        let answer = post(&client, &url, secret, event).await?;
        writeln!(
            out,
            "{:>3}/{} {} {:<42} HTTP {} {}",
            n + 1,
            events.len(),
            answer.event_id,
            answer.event_type,
            answer.status,
            answer.body.trim()
        )?;
        let ok = answer.is_success();
        report.answers.push(answer);
        if !ok {
            writeln!(out, "stopped: the worker did not accept the event")?;
            break;
        }
    }
    Ok(report)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: &crate::signature::WebhookSecret,
    event: &Value,
) -> anyhow::Result<TriggerAnswer> {
    let body = serde_json::to_vec(event)?;
    let signature = secret.sign(chrono::Utc::now().timestamp(), &body);
    let response = client
        .post(url)
        .header("content-type", "application/json; charset=utf-8")
        .header(
            "user-agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot POST to {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.context("reading the answer")?;
    Ok(TriggerAnswer {
        event_id: event["id"].as_str().unwrap_or_default().to_owned(),
        event_type: event["type"].as_str().unwrap_or_default().to_owned(),
        status,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flow_ends_now_or_a_few_days_before_whatever_the_month() {
        // Month ends are where calendar periods stretch and shrink.
        for now in [1_769_817_600, 1_772_236_800, 1_774_958_400, 1_788_177_600] {
            for flow in FLOWS {
                let plan = Plan { flow, until: None };
                let events = plan.events_ending(ShopOptions::default(), now);
                let end = events.last().unwrap()["created"].as_i64().unwrap();
                assert!(
                    (now - 3 * fixtures::DAY..=now).contains(&end),
                    "{} ends {} s after now",
                    flow.name,
                    end - now
                );
            }
        }
    }

    #[test]
    fn an_event_type_is_sent_with_the_flow_that_leads_to_it() {
        let args = TriggerArgs::default();
        let plan = Plan::new("invoice.paid", &args).unwrap();
        assert_eq!(plan.flow.name, "renewal");
        let events = plan.events(ShopOptions::default());
        assert_eq!(events.last().unwrap()["type"], "invoice.paid");
        assert!(events
            .iter()
            .any(|e| e["type"] == "checkout.session.completed"));
        let subscription = TriggerArgs {
            mode: CheckoutMode::Subscription,
            ..TriggerArgs::default()
        };
        let plan = Plan::new("checkout.session.completed", &subscription).unwrap();
        assert_eq!(plan.flow.name, "checkout-subscription");
        let err = Plan::new("charge.exploded", &args)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("renewal-failed") && err.contains("invoice.paid"),
            "{err}"
        );
    }
}
