//! `stripe-worker trigger <event-type>`: like `stripe trigger`, builds a realistic event
//! (src/fixtures), signs it with the configured endpoint secret and POSTs it to the worker.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use crate::config::{Source, WebhookSettings};
use crate::email::Email;
use crate::fixtures::{CheckoutMode, Scenario, SUPPORTED};

/// Sign and POST a realistic event of TYPE to the worker (like `stripe trigger`).
///
/// The event has the current API shape (2025-03-31.basil), fresh ids (evt_, cus_, pi_, … with
/// random suffixes) and prices of the demo catalog (price_demo_onetime, price_demo_monthly).
/// It is signed with the first STRIPE_WEBHOOK_SECRET. Prints the HTTP status and body; exit
/// status 0 on a 2xx answer.
#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  stripe-worker trigger checkout.session.completed --email buyer@example.com
  stripe-worker trigger checkout.session.completed --mode subscription
  stripe-worker trigger product.created --url http://127.0.0.1:8080/webhooks/stripe")]
pub struct TriggerArgs {
    /// The event type.
    #[arg(value_name = "TYPE", value_parser = clap::builder::PossibleValuesParser::new(SUPPORTED))]
    pub event_type: String,
    /// The buyer's email address (default: buyer+<random>@example.com).
    #[arg(long, value_parser = parse_email)]
    pub email: Option<Email>,
    /// Where to POST (default: http://127.0.0.1:$PORT/webhooks/stripe, PORT default 8080).
    #[arg(long)]
    pub url: Option<String>,
    /// checkout.session.completed only: a one-time payment (price_demo_onetime) or a
    /// subscription (price_demo_monthly).
    #[arg(long, value_enum, default_value_t = CheckoutMode::Payment)]
    pub mode: CheckoutMode,
}

fn parse_email(raw: &str) -> Result<Email, String> {
    Email::parse(raw).ok_or_else(|| format!("not an email address: {raw:?}"))
}

/// The worker's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerAnswer {
    pub event_id: String,
    pub status: u16,
    pub body: String,
}

impl TriggerAnswer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub async fn run(
    args: &TriggerArgs,
    src: &dyn Source,
    out: &mut dyn Write,
) -> anyhow::Result<TriggerAnswer> {
    let webhook = WebhookSettings::from_source(src)?;
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
    let scenario = Scenario::new(args.email.clone(), args.mode);
    let event = scenario.event(&args.event_type)?;
    let body = serde_json::to_vec(&event)?;
    let secret = webhook
        .secrets
        .first()
        .ok_or_else(|| anyhow::anyhow!("STRIPE_WEBHOOK_SECRET is required but not set"))?;
    let signature = secret.sign(chrono::Utc::now().timestamp(), &body);
    writeln!(
        out,
        "POST {url}  {} {}  (customer {}, email {})",
        args.event_type,
        scenario.ids.event,
        scenario.ids.customer,
        scenario.email.as_str()
    )?;
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .post(&url)
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
    let text = response.text().await.unwrap_or_default();
    writeln!(out, "HTTP {status}")?;
    writeln!(out, "{text}")?;
    Ok(TriggerAnswer {
        event_id: scenario.ids.event,
        status,
        body: text,
    })
}
