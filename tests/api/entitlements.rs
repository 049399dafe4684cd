//! Access is bought, not observed: whole Stripe flows (src/fixtures) as a buyer meets them,
//! delivered in Stripe's order and then shuffled with redeliveries; grants, vouchers,
//! accounts.expiry and billing history asserted exactly, in several API versions.

use std::collections::BTreeMap;

use serde_json::Value;
use stripe_worker::fixtures::{ApiVersion, Buyer, DunningEnd, Outcome, Shop, ShopOptions, DAY};

use crate::helpers::{spawn_app, TestApp};
use crate::money::{add_months, deliver_in_order, deliver_shuffled, holdings, iso, Holdings};

/// The versions every scenario runs in: before basil (the invoice names its payment), basil
/// (invoice_payment.paid links them), and the newest.
const VERSIONS: [ApiVersion; 3] = [
    ApiVersion::V2020_08_27,
    ApiVersion::Basil,
    ApiVersion::DEFAULT,
];

/// A scenario: builds one buyer's story in a shop; returns what they must end up with.
type Scenario = fn(&mut Shop) -> Expected;

/// What the buyer must hold, exactly (grants and vouchers in `Holdings`' notation).
struct Expected {
    expiry: Option<i64>,
    grants: Vec<String>,
    vouchers: Vec<String>,
    /// (event type, amount) of the billing rows that move money, in time order.
    money: Vec<(&'static str, &'static str)>,
}

/// Runs `scenario` in every version: in order, then three shuffled deliveries with duplicates
/// (each in its own shop, so ids differ); every delivery must give exactly `Expected`.
async fn check(name: &str, scenario: Scenario) {
    check_edited(name, scenario, |_| {}).await;
}

/// `check`, with the flow's events edited before delivery (a shape the shop does not write).
async fn check_edited(name: &str, scenario: Scenario, edit: fn(&mut [Value])) {
    let app = spawn_app().await;
    for (n, version) in VERSIONS.into_iter().enumerate() {
        for round in 0..4u64 {
            let mut shop = Shop::new(ShopOptions {
                seed: 1_000 * n as u64 + round,
                api_version: version,
                ..ShopOptions::default()
            });
            let expected = scenario(&mut shop);
            let email = shop.email().to_owned();
            let mut events = shop.into_events();
            edit(&mut events);
            if round == 0 {
                deliver_in_order(&app, &events).await;
            } else {
                deliver_shuffled(&app, &events, round).await;
            }
            let got = holdings(&app, &email).await;
            let what = format!("{name}, {version}, delivery {round}");
            assert_matches(&got, &expected, &what);
        }
    }
}

fn assert_matches(got: &Holdings, expected: &Expected, what: &str) {
    assert_eq!(got.users, 1, "{what}: one user");
    assert_eq!(got.accounts, 1, "{what}: one account");
    assert_eq!(got.grants, expected.grants, "{what}: grants");
    assert_eq!(got.vouchers, expected.vouchers, "{what}: vouchers");
    assert_eq!(got.expiry, expected.expiry.map(iso), "{what}: expiry");
    let money: Vec<String> = got
        .history
        .iter()
        .filter(|h| !h.ends_with(" failed"))
        .map(|h| {
            h.rsplit_once(' ')
                .map_or(h.clone(), |(rest, _)| rest.to_owned())
        })
        .collect();
    let want: Vec<String> = expected
        .money
        .iter()
        .map(|(t, a)| format!("{t} {a}"))
        .collect();
    assert_eq!(money, want, "{what}: billing history ({:#?})", got.history);
    // Failed attempts are recorded as such, never as money.
    assert!(
        got.history
            .iter()
            .filter(|h| h.ends_with(" failed"))
            .all(|h| h.contains(" 0.00 ") || h.ends_with(" 0.00 failed")),
        "{what}: {:#?}",
        got.history
    );
}

/// When Stripe first reported the payment of an intent: its `payment_intent.succeeded` (or the
/// checkout that completed with it).
fn paid_at(shop: &Shop, intent: &str) -> i64 {
    shop.events()
        .iter()
        .filter(|e| {
            (e["type"] == "payment_intent.succeeded" && e["data"]["object"]["id"] == intent)
                || (e["type"] == "checkout.session.completed"
                    && e["data"]["object"]["payment_intent"] == intent)
        })
        .filter_map(|e| e["created"].as_i64())
        .min()
        .expect("the intent succeeded")
}

fn period(kind: &str, p: (i64, i64), status: &str, coverage: Option<(i64, i64)>) -> String {
    match coverage {
        Some(c) => format!("{kind} {}..{} {status} {}..{}", p.0, p.1, c.0, c.1),
        None => format!("{kind} {}..{} {status} -", p.0, p.1),
    }
}

fn months(kind: &str, n: u32, status: &str, coverage: Option<(i64, i64)>) -> String {
    match coverage {
        Some(c) => format!("{kind} {n} {status} {}..{}", c.0, c.1),
        None => format!("{kind} {n} {status} -"),
    }
}

fn period_voucher(n: u32, p: (i64, i64)) -> String {
    format!("{n} used active {}..{}", p.0, p.1)
}

fn subscribe_monthly(shop: &mut Shop) -> stripe_worker::fixtures::SubscriptionIds {
    let monthly = shop.catalog.monthly.clone();
    shop.checkout_subscription(Buyer::New, monthly, None)
}

fn p(period: stripe_worker::fixtures::Period) -> (i64, i64) {
    (period.start, period.end)
}

#[tokio::test]
async fn a_renewal_whose_payment_fails_grants_only_the_period_paid() {
    check("renewal payment fails", |shop| {
        let sub = subscribe_monthly(shop);
        let renewal = shop.renewal(&sub.subscription, Outcome::Declined);
        shop.retry_payment(&renewal.invoice, Outcome::Declined);
        shop.retry_payment(&renewal.invoice, Outcome::Declined);
        shop.dunning_exhausted(&sub.subscription, DunningEnd::MarkUnpaid);
        shop.advance(7 * DAY);
        shop.cancel_now(&sub.subscription);
        let p1 = p(sub.period);
        Expected {
            expiry: Some(p1.1),
            grants: vec![period("subscription_period", p1, "active", Some(p1))],
            vouchers: vec![period_voucher(1, p1)],
            money: vec![("stripe.invoice.paid", "9.00")],
        }
    })
    .await;
}

#[tokio::test]
async fn a_trial_grants_its_days_and_a_failed_first_payment_adds_nothing() {
    check("trial, then the first payment fails", |shop| {
        let yearly = shop.catalog.yearly.clone();
        shop.catalog_created(&yearly);
        let sub = shop.checkout_subscription(Buyer::New, yearly, Some(7));
        let first = shop.trial_ends(&sub.subscription, Outcome::Declined);
        shop.retry_payment(&first.invoice, Outcome::Declined);
        shop.dunning_exhausted(&sub.subscription, DunningEnd::Cancel);
        let trial = p(sub.period);
        Expected {
            expiry: Some(trial.1),
            grants: vec![period("trial", trial, "active", Some(trial))],
            vouchers: vec![period_voucher(0, trial)],
            money: vec![("stripe.invoice.paid", "0.00")],
        }
    })
    .await;
}

#[tokio::test]
async fn a_trial_then_its_paid_first_period() {
    check("trial, then paid", |shop| {
        let monthly = shop.catalog.monthly.clone();
        let sub = shop.checkout_subscription(Buyer::New, monthly, Some(7));
        let first = shop.trial_ends(&sub.subscription, Outcome::Paid);
        let trial = p(sub.period);
        let p1 = p(first.period.expect("the first period"));
        Expected {
            expiry: Some(p1.1),
            grants: vec![
                period("trial", trial, "active", Some(trial)),
                period("subscription_period", p1, "active", Some(p1)),
            ],
            vouchers: vec![period_voucher(0, trial), period_voucher(1, p1)],
            money: vec![
                ("stripe.invoice.paid", "0.00"),
                ("stripe.invoice.paid", "9.00"),
            ],
        }
    })
    .await;
}

#[tokio::test]
async fn paused_collection_grants_nothing_for_the_voided_periods() {
    check("pause_collection void for two cycles", |shop| {
        let sub = subscribe_monthly(shop);
        shop.advance(3 * DAY);
        shop.pause_collection(&sub.subscription);
        let v1 = shop.renewal(&sub.subscription, Outcome::Paid);
        let v2 = shop.renewal(&sub.subscription, Outcome::Paid);
        assert_eq!((v1.status, v2.status), ("void", "void"));
        shop.advance(5 * DAY);
        shop.resume_collection(&sub.subscription);
        let paid = shop.renewal(&sub.subscription, Outcome::Paid);
        let (p1, p4) = (p(sub.period), p(paid.period.expect("a period")));
        Expected {
            expiry: Some(p4.1),
            grants: vec![
                period("subscription_period", p1, "active", Some(p1)),
                period("subscription_period", p4, "active", Some(p4)),
            ],
            vouchers: vec![period_voucher(1, p1), period_voucher(1, p4)],
            money: vec![
                ("stripe.invoice.paid", "9.00"),
                ("stripe.invoice.paid", "9.00"),
            ],
        }
    })
    .await;
}

#[tokio::test]
async fn an_upgrade_to_yearly_grants_the_year_once_paid_and_cuts_the_month_short() {
    check("upgrade monthly -> yearly, paid", |shop| {
        let yearly = shop.catalog.yearly.clone();
        shop.catalog_created(&yearly);
        let sub = subscribe_monthly(shop);
        shop.advance(10 * DAY);
        let up = shop.change_price(&sub.subscription, yearly, Outcome::Paid);
        let (p1, year) = (p(sub.period), p(up.period.expect("the new period")));
        Expected {
            expiry: Some(year.1),
            grants: vec![
                period("subscription_period", p1, "active", Some((p1.0, year.0))),
                period("subscription_period", year, "active", Some(year)),
            ],
            vouchers: vec![period_voucher(1, p1), period_voucher(12, year)],
            money: vec![
                ("stripe.invoice.paid", "9.00"),
                ("stripe.invoice.paid", up_amount(up.amount_due)),
            ],
        }
    })
    .await;
    check("upgrade monthly -> yearly, declined", |shop| {
        let yearly = shop.catalog.yearly.clone();
        shop.catalog_created(&yearly);
        let sub = subscribe_monthly(shop);
        shop.advance(10 * DAY);
        shop.change_price(&sub.subscription, yearly, Outcome::Declined);
        let p1 = p(sub.period);
        Expected {
            expiry: Some(p1.1),
            grants: vec![period("subscription_period", p1, "active", Some(p1))],
            vouchers: vec![period_voucher(1, p1)],
            money: vec![("stripe.invoice.paid", "9.00")],
        }
    })
    .await;
}

/// The upgrade invoice's total in dollars, as billing history writes it (leaked: the
/// scenario's expectations outlive the shop).
fn up_amount(cents: i64) -> &'static str {
    Box::leak(format!("{}.{:02}", cents / 100, cents % 100).into_boxed_str())
}

#[tokio::test]
async fn a_subscriptions_first_invoice_with_its_intent_and_charge_grants_once() {
    check(
        "subscription_create invoice with its intent and charge",
        |shop| {
            let sub = subscribe_monthly(shop);
            let p1 = p(sub.period);
            Expected {
                expiry: Some(p1.1),
                grants: vec![period("subscription_period", p1, "active", Some(p1))],
                vouchers: vec![period_voucher(1, p1)],
                // One row for the payment: the invoice's (its intent's merges into it).
                money: vec![("stripe.invoice.paid", "9.00")],
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_one_off_invoice_grants_its_lines_terms() {
    check("one-off invoice", |shop| {
        let customer = shop.api_customer();
        shop.advance(3_600);
        let onetime = shop.catalog.onetime.clone();
        let inv = shop.one_off_invoice(&customer, onetime, Outcome::Paid);
        let paid = shop
            .events()
            .iter()
            .filter(|e| e["type"] == "invoice.paid" && e["data"]["object"]["id"] == inv.invoice)
            .filter_map(|e| {
                e["data"]["object"]["status_transitions"]["paid_at"]
                    .as_i64()
                    .or(e["created"].as_i64())
            })
            .min()
            .unwrap();
        let end = add_months(paid, 12);
        Expected {
            expiry: Some(end),
            grants: vec![months("invoice", 12, "active", Some((paid, end)))],
            vouchers: vec!["12 used active".into()],
            money: vec![("stripe.invoice.paid", "49.00")],
        }
    })
    .await;
}

#[tokio::test]
async fn a_lost_dispute_revokes_and_a_won_one_restores() {
    check(
        "dispute lost, then a won dispute on another payment",
        |shop| {
            let onetime = shop.catalog.onetime.clone();
            let first = shop.checkout_payment(Buyer::New, onetime.clone());
            let customer = first.customer.clone().expect("checkout created a customer");
            shop.advance(DAY);
            let second = shop.checkout_payment(Buyer::Existing(customer), onetime);
            shop.advance(3 * DAY);
            let lost = shop.dispute_opened(&first.charge);
            shop.dispute_closed(&lost.dispute, false);
            let won = shop.dispute_opened(&second.charge);
            shop.dispute_closed(&won.dispute, true);
            let t2 = paid_at(shop, &second.payment_intent);
            Expected {
                expiry: Some(add_months(t2, 12)),
                grants: vec![
                    months("purchase", 12, "restored", Some((t2, add_months(t2, 12)))),
                    months("purchase", 12, "revoked disputed", None),
                ],
                vouchers: vec!["12 used active".into(), "12 used revoked revoked_at".into()],
                money: vec![
                    ("stripe.payment_intent.succeeded", "49.00"),
                    ("stripe.payment_intent.succeeded", "49.00"),
                    ("stripe.charge.dispute.funds_withdrawn", "-49.00"),
                    ("stripe.charge.dispute.funds_withdrawn", "-49.00"),
                    ("stripe.charge.dispute.funds_reinstated", "49.00"),
                ],
            }
        },
    )
    .await;
}

/// Refunds and disputes of a payment made through the Charges API name only their charge
/// (`payment_intent` null on the refund and the dispute, wherever they appear).
fn refunds_and_disputes_name_only_their_charge(events: &mut [Value]) {
    /// Unnames every refund and dispute; counts those that named their intent, per kind.
    fn strip(v: &mut Value, unnamed: &mut BTreeMap<String, usize>) {
        match v {
            Value::Object(o) => {
                if let Some(kind @ ("refund" | "dispute")) = o.get("object").and_then(Value::as_str)
                {
                    let kind = kind.to_owned();
                    if o.insert("payment_intent".into(), Value::Null)
                        .is_some_and(|p| p.is_string())
                    {
                        *unnamed.entry(kind).or_default() += 1;
                    }
                }
                o.values_mut().for_each(|v| strip(v, unnamed));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| strip(v, unnamed)),
            _ => {}
        }
    }
    let mut unnamed = BTreeMap::new();
    events
        .iter_mut()
        .for_each(|e| strip(&mut e["data"], &mut unnamed));
    for kind in ["refund", "dispute"] {
        assert!(
            unnamed.get(kind).is_some_and(|&n| n > 0),
            "the flow has a {kind} naming its intent: {unnamed:?}"
        );
    }
}

#[tokio::test]
async fn a_refund_and_a_lost_dispute_that_name_only_their_charge_revoke_their_passes() {
    check_edited(
        "full refund and lost dispute, each naming only its charge",
        |shop| {
            let onetime = shop.catalog.onetime.clone();
            let first = shop.checkout_payment(Buyer::New, onetime.clone());
            let customer = first.customer.clone().expect("checkout created a customer");
            shop.advance(DAY);
            let second = shop.checkout_payment(Buyer::Existing(customer), onetime);
            shop.advance(3 * DAY);
            shop.refund(&first.charge, None);
            shop.advance(DAY);
            let lost = shop.dispute_opened(&second.charge);
            shop.dispute_closed(&lost.dispute, false);
            Expected {
                expiry: None,
                grants: vec![
                    months("purchase", 12, "revoked refunded", None),
                    months("purchase", 12, "revoked disputed", None),
                ],
                vouchers: vec![
                    "12 used revoked revoked_at".into(),
                    "12 used revoked revoked_at".into(),
                ],
                money: vec![
                    ("stripe.payment_intent.succeeded", "49.00"),
                    ("stripe.payment_intent.succeeded", "49.00"),
                    ("stripe.refund", "-49.00"),
                    ("stripe.charge.dispute.funds_withdrawn", "-49.00"),
                ],
            }
        },
        refunds_and_disputes_name_only_their_charge,
    )
    .await;
}

#[tokio::test]
async fn a_full_refund_of_a_subscription_payment_takes_that_period_back() {
    check("full refund of a subscription payment", |shop| {
        let sub = subscribe_monthly(shop);
        let renewal = shop.renewal(&sub.subscription, Outcome::Paid);
        shop.advance(DAY);
        shop.refund(&renewal.charge.clone().expect("a charge"), None);
        let (p1, p2) = (p(sub.period), p(renewal.period.expect("a period")));
        Expected {
            expiry: Some(p1.1),
            grants: vec![
                period("subscription_period", p1, "active", Some(p1)),
                period("subscription_period", p2, "revoked refunded", None),
            ],
            vouchers: vec![
                period_voucher(1, p1),
                format!("1 used revoked revoked_at {}..{}", p2.0, p2.1),
            ],
            money: vec![
                ("stripe.invoice.paid", "9.00"),
                ("stripe.invoice.paid", "9.00"),
                ("stripe.refund", "-9.00"),
            ],
        }
    })
    .await;
}

#[tokio::test]
async fn a_refund_that_fails_gives_the_time_back() {
    check("refund, then refund.failed", |shop| {
        let onetime = shop.catalog.onetime.clone();
        let pay = shop.checkout_payment(Buyer::New, onetime);
        shop.advance(DAY);
        let refund = shop.refund(&pay.charge, None);
        shop.refund_fails(&refund.refund);
        let t = paid_at(shop, &pay.payment_intent);
        Expected {
            expiry: Some(add_months(t, 12)),
            grants: vec![months(
                "purchase",
                12,
                "restored",
                Some((t, add_months(t, 12))),
            )],
            vouchers: vec!["12 used active".into()],
            // The refund's own row stays, amount 0 and status failed (checked below).
            money: vec![("stripe.payment_intent.succeeded", "49.00")],
        }
    })
    .await;
    let app = spawn_app().await;
    let mut shop = Shop::new(ShopOptions::default());
    let onetime = shop.catalog.onetime.clone();
    let pay = shop.checkout_payment(Buyer::New, onetime);
    let refund = shop.refund(&pay.charge, None);
    shop.refund_fails(&refund.refund);
    let email = shop.email().to_owned();
    deliver_in_order(&app, &shop.into_events()).await;
    let history = holdings(&app, &email).await.history;
    assert!(
        history.contains(&"stripe.refund 0.00 failed".to_owned()),
        "{history:#?}"
    );
}

#[tokio::test]
async fn a_pass_and_a_subscription_add_up_whichever_arrives_first() {
    check("pass, then subscription", |shop| {
        let onetime = shop.catalog.onetime.clone();
        let pass = shop.checkout_payment(Buyer::New, onetime);
        let customer = pass.customer.clone().expect("a customer");
        shop.advance(DAY);
        let monthly = shop.catalog.monthly.clone();
        let sub = shop.checkout_subscription(Buyer::Existing(customer), monthly, None);
        let t = paid_at(shop, &pass.payment_intent);
        let pass_end = add_months(t, 12);
        let p1 = p(sub.period);
        let p1_end = pass_end + (p1.1 - p1.0);
        Expected {
            expiry: Some(p1_end),
            grants: vec![
                months("purchase", 12, "active", Some((t, pass_end))),
                period(
                    "subscription_period",
                    p1,
                    "active",
                    Some((pass_end, p1_end)),
                ),
            ],
            vouchers: vec![
                "1 used active".to_owned() + &format!(" {}..{}", p1.0, p1.1),
                "12 used active".into(),
            ],
            money: vec![
                ("stripe.payment_intent.succeeded", "49.00"),
                ("stripe.invoice.paid", "9.00"),
            ],
        }
    })
    .await;
    check("subscription, then pass", |shop| {
        let sub = subscribe_monthly(shop);
        shop.advance(DAY);
        let onetime = shop.catalog.onetime.clone();
        let pass = shop.checkout_payment(Buyer::Existing(sub.customer.clone()), onetime);
        let t = paid_at(shop, &pass.payment_intent);
        let p1 = p(sub.period);
        let pass_end = add_months(p1.1, 12);
        Expected {
            expiry: Some(pass_end),
            grants: vec![
                period("subscription_period", p1, "active", Some(p1)),
                months("purchase", 12, "active", Some((p1.1.max(t), pass_end))),
            ],
            vouchers: vec![period_voucher(1, p1), "12 used active".into()],
            money: vec![
                ("stripe.invoice.paid", "9.00"),
                ("stripe.payment_intent.succeeded", "49.00"),
            ],
        }
    })
    .await;
}

#[tokio::test]
async fn refunding_the_pass_after_a_renewal_keeps_the_subscriptions_time() {
    check("refund of the pass after a renewal", |shop| {
        let onetime = shop.catalog.onetime.clone();
        let pass = shop.checkout_payment(Buyer::New, onetime);
        let customer = pass.customer.clone().expect("a customer");
        shop.advance(DAY);
        let monthly = shop.catalog.monthly.clone();
        let sub = shop.checkout_subscription(Buyer::Existing(customer), monthly, None);
        let renewal = shop.renewal(&sub.subscription, Outcome::Paid);
        shop.advance(DAY);
        shop.refund(&pass.charge, None);
        let (p1, p2) = (p(sub.period), p(renewal.period.expect("a period")));
        Expected {
            expiry: Some(p2.1),
            grants: vec![
                period("subscription_period", p1, "active", Some(p1)),
                period("subscription_period", p2, "active", Some(p2)),
                months("purchase", 12, "revoked refunded", None),
            ],
            vouchers: vec![
                period_voucher(1, p1),
                period_voucher(1, p2),
                "12 used revoked revoked_at".into(),
            ],
            money: vec![
                ("stripe.payment_intent.succeeded", "49.00"),
                ("stripe.invoice.paid", "9.00"),
                ("stripe.invoice.paid", "9.00"),
                ("stripe.refund", "-49.00"),
            ],
        }
    })
    .await;
}

/// The billing history of every scenario above adds up to the money actually received.
#[tokio::test]
async fn billing_history_sums_to_the_money_received() {
    let app: TestApp = spawn_app().await;
    let mut shop = Shop::new(ShopOptions::default());
    let onetime = shop.catalog.onetime.clone();
    let pass = shop.checkout_payment(Buyer::New, onetime);
    let sub = shop.checkout_subscription(
        Buyer::Existing(pass.customer.clone().unwrap()),
        shop.catalog.monthly.clone(),
        None,
    );
    let failed = shop.renewal(&sub.subscription, Outcome::Declined);
    shop.retry_payment(&failed.invoice, Outcome::Paid);
    shop.refund(&pass.charge, Some(1_000));
    let email = shop.email().to_owned();
    let events: Vec<Value> = shop.into_events();
    deliver_in_order(&app, &events).await;
    let got = holdings(&app, &email).await;
    // 49 + 9 + 9 (the retried renewal) - 10 refunded; the declined attempts are 0.
    assert!((got.total() - 57.0).abs() < 1e-9, "{:#?}", got.history);
    assert!(
        got.history.iter().any(|h| h.ends_with(" failed")),
        "{:#?}",
        got.history
    );
}
