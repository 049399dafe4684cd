//! The entitlement rule as a property: a generated lifecycle (passes, a subscription's periods
//! paid and declined, full and partial refunds, refunds that fail, disputes lost and won) is
//! delivered to the real app in random orders with redeliveries. Every delivery must end with
//! the same vouchers and expiry, and the expiry must equal the rule computed here, on its own,
//! from what the lifecycle bought and returned.

use proptest::prelude::*;
use stripe_worker::fixtures::{ApiVersion, Buyer, Outcome, Shop, ShopOptions, DAY};

use crate::helpers::spawn_app;
use crate::money::{add_months, deliver_shuffled, holdings, iso};

/// One step of a buyer's life. Targets index the payments made so far (wrapping).
#[derive(Debug, Clone)]
enum Step {
    Pass,
    Renewal(bool),
    RefundFull(usize),
    RefundPartial(usize),
    RefundFails,
    Dispute(usize, bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Pass),
        4 => any::<bool>().prop_map(Step::Renewal),
        2 => (0usize..8).prop_map(Step::RefundFull),
        1 => (0usize..8).prop_map(Step::RefundPartial),
        1 => Just(Step::RefundFails),
        2 => ((0usize..8), any::<bool>()).prop_map(|(i, won)| Step::Dispute(i, won)),
    ]
}

/// What a payment bought, as the rule sees it.
#[derive(Debug, Clone)]
enum Bought {
    /// A pass: 12 months from when it was paid.
    Months { paid_at: i64, months: u32 },
    /// A subscription period.
    Period { start: i64, end: i64 },
}

#[derive(Debug, Clone)]
struct Payment {
    charge: String,
    bought: Bought,
    /// Money returned and not given back (a full refund standing, a lost dispute).
    returned: bool,
    /// A refund or dispute was opened on it (Stripe allows one reversal of a charge here).
    reversed: bool,
}

/// The rule, written out independently of the SQL: grants that stand, in the order they took
/// effect, each starting at the later of its own start and the coverage so far; a period ends
/// where the subscription's next standing period starts. The expiry is the last coverage end.
fn expected_expiry(payments: &[Payment]) -> Option<i64> {
    let standing: Vec<&Payment> = payments.iter().filter(|p| !p.returned).collect();
    let mut periods: Vec<(i64, i64)> = standing
        .iter()
        .filter_map(|p| match p.bought {
            Bought::Period { start, end } => Some((start, end)),
            Bought::Months { .. } => None,
        })
        .collect();
    periods.sort();
    let mut grants: Vec<(i64, Bought)> = standing
        .iter()
        .map(|p| match p.bought {
            Bought::Months { paid_at, .. } => (paid_at, p.bought.clone()),
            Bought::Period { start, .. } => (start, p.bought.clone()),
        })
        .collect();
    grants.sort_by_key(|g| g.0);
    let mut cover: Option<i64> = None;
    for (effective, bought) in grants {
        let start = cover.map_or(effective, |c| c.max(effective));
        let end = match bought {
            Bought::Months { months, .. } => add_months(start, months),
            Bought::Period { start: s, end: e } => {
                let next = periods.iter().map(|p| p.0).find(|n| *n > s);
                let e = next.map_or(e, |n| n.min(e));
                start + (e - s)
            }
        };
        cover = Some(cover.map_or(end, |c| c.max(end)));
    }
    cover
}

/// Builds the lifecycle in `shop`; returns the payments with what they bought.
fn live(shop: &mut Shop, steps: &[Step]) -> Vec<Payment> {
    let monthly = shop.catalog.monthly.clone();
    let sub = shop.checkout_subscription(Buyer::New, monthly, None);
    let customer = sub.customer.clone();
    let mut payments = vec![Payment {
        charge: sub.charge.clone().expect("the first invoice was charged"),
        bought: Bought::Period {
            start: sub.period.start,
            end: sub.period.end,
        },
        returned: false,
        reversed: false,
    }];
    let mut last_full_refund: Option<(String, usize)> = None;
    let mut renewals_left = 4;
    for s in steps {
        shop.advance(DAY);
        match s {
            Step::Pass => {
                let onetime = shop.catalog.onetime.clone();
                let pay = shop.checkout_payment(Buyer::Existing(customer.clone()), onetime);
                let paid_at = shop
                    .events()
                    .iter()
                    .filter(|e| {
                        e["type"] == "payment_intent.succeeded"
                            && e["data"]["object"]["id"] == pay.payment_intent.as_str()
                    })
                    .filter_map(|e| e["created"].as_i64())
                    .min()
                    .expect("the pass was paid");
                payments.push(Payment {
                    charge: pay.charge,
                    bought: Bought::Months {
                        paid_at,
                        months: 12,
                    },
                    returned: false,
                    reversed: false,
                });
            }
            Step::Renewal(paid) => {
                if renewals_left == 0 {
                    continue;
                }
                renewals_left -= 1;
                let outcome = if *paid {
                    Outcome::Paid
                } else {
                    Outcome::Declined
                };
                let inv = shop.renewal(&sub.subscription, outcome);
                if let (true, Some(charge), Some(period)) = (*paid, inv.charge, inv.period) {
                    payments.push(Payment {
                        charge,
                        bought: Bought::Period {
                            start: period.start,
                            end: period.end,
                        },
                        returned: false,
                        reversed: false,
                    });
                }
            }
            Step::RefundFull(i) | Step::RefundPartial(i) | Step::Dispute(i, _) => {
                let i = i % payments.len();
                if payments[i].reversed {
                    continue;
                }
                payments[i].reversed = true;
                let charge = payments[i].charge.clone();
                match s {
                    Step::RefundFull(_) => {
                        let r = shop.refund(&charge, None);
                        payments[i].returned = true;
                        last_full_refund = Some((r.refund, i));
                    }
                    Step::RefundPartial(_) => {
                        shop.refund(&charge, Some(100));
                    }
                    Step::Dispute(_, won) => {
                        let d = shop.dispute_opened(&charge);
                        shop.dispute_closed(&d.dispute, *won);
                        payments[i].returned = !won;
                    }
                    _ => unreachable!(),
                }
            }
            Step::RefundFails => {
                if let Some((refund, i)) = last_full_refund.take() {
                    shop.refund_fails(&refund);
                    payments[i].returned = false;
                }
            }
        }
    }
    payments
}

#[test]
fn any_delivery_order_gives_the_rules_expiry_and_the_same_vouchers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app());
    let config = ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let versions = [
        ApiVersion::V2020_08_27,
        ApiVersion::Basil,
        ApiVersion::DEFAULT,
    ];
    let case = std::sync::atomic::AtomicU64::new(0);
    let lifecycle = (
        proptest::collection::vec(step(), 1..7),
        0usize..3,
        any::<u64>(),
    );
    proptest::test_runner::TestRunner::new(config)
        .run(&lifecycle, |(steps, v, order)| {
            let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let mut seen = Vec::new();
            // The same lifecycle twice, in two shops (ids differ) and two delivery orders.
            for run in 0..2u64 {
                let mut shop = Shop::new(ShopOptions {
                    seed: case * 10 + run,
                    api_version: versions[v],
                    ..ShopOptions::default()
                });
                let payments = live(&mut shop, &steps);
                let email = shop.email().to_owned();
                let events = shop.into_events();
                rt.block_on(deliver_shuffled(&app, &events, order.wrapping_add(run)));
                let got = rt.block_on(holdings(&app, &email));
                prop_assert_eq!(
                    &got.expiry,
                    &expected_expiry(&payments).map(iso),
                    "steps {:?} in {}: grants {:#?}",
                    steps,
                    versions[v],
                    got.grants
                );
                seen.push((got.vouchers, got.grants));
            }
            prop_assert_eq!(&seen[0], &seen[1], "the same lifecycle, another order");
            Ok(())
        })
        .unwrap();
    rt.block_on(async move { drop(app) });
}
