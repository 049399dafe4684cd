//! `migrate`: Supabase-compatible history, idempotent, safe concurrently, and safe on top of
//! the production schema (seed 002) with its data and duplicates.

use stripe_worker::db::migrate;

use crate::helpers::{connect, empty_db};

async fn recorded(client: &tokio_postgres::Client) -> Vec<(String, String, usize)> {
    client
        .query(
            "select version, name, coalesce(array_length(statements, 1), 0)
             from supabase_migrations.schema_migrations order by version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get::<_, i32>(2) as usize))
        .collect()
}

#[tokio::test]
async fn migrate_with_platform_twice_records_nothing_new_the_second_time() {
    let db = empty_db().await;
    let mut client = connect(&db.url).await;
    let first = migrate::run(&mut client, true).await.unwrap();
    assert!(first.platform_files >= 3);
    assert_eq!(first.applied.len(), migrate::migrations().len());
    let history = recorded(&client).await;
    assert_eq!(history.len(), migrate::migrations().len());
    for ((version, name, statements), m) in history.iter().zip(migrate::migrations()) {
        assert_eq!((version.as_str(), name.as_str()), (m.version, m.name));
        assert!(*statements > 0, "{} recorded without statements", m.file);
    }
    let second = migrate::run(&mut client, true).await.unwrap();
    assert!(second.applied.is_empty());
    assert_eq!(second.already_applied, migrate::migrations().len());
    assert_eq!(recorded(&client).await, history);
    assert!(migrate::pending(&client).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_runs_apply_each_migration_once() {
    let db = empty_db().await;
    let runs = (0..3).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let mut client = connect(&url).await;
            migrate::run(&mut client, true)
                .await
                .map(|r| r.applied.len())
        })
    });
    let applied: Vec<usize> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap().expect("every concurrent run succeeds"))
        .collect();
    assert_eq!(
        applied.iter().sum::<usize>(),
        migrate::migrations().len(),
        "{applied:?}"
    );
    let client = connect(&db.url).await;
    assert_eq!(recorded(&client).await.len(), migrate::migrations().len());
}

const TABLES: &[&str] = &[
    "auth.users",
    "public.users",
    "public.customers",
    "public.accounts",
    "public.payment_intents",
    "public.charges",
    "public.payment_methods",
    "public.subscriptions",
    "public.vouchers",
    "public.channels",
    "public.products",
    "public.prices",
    "public.stripe_webhook_events",
];

async fn counts(client: &tokio_postgres::Client) -> Vec<i64> {
    let mut out = Vec::new();
    for t in TABLES {
        out.push(
            client
                .query_one(&format!("select count(*) from {t}"), &[])
                .await
                .unwrap()
                .get(0),
        );
    }
    out
}

#[tokio::test]
async fn migrating_the_production_schema_keeps_every_row_and_logs_resolved_duplicates() {
    let db = empty_db().await;
    let mut client = connect(&db.url).await;
    // The platform (roles, auth schema) as hosted Supabase has it, then production as it is.
    for (file, sql) in migrate::PLATFORM {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    client
        .batch_execute(include_str!("../fixtures/production_seed002.sql"))
        .await
        .expect("production fixture");
    let before = counts(&client).await;
    let expiries_before = expiries(&client).await;
    let vouchers_before = vouchers(&client).await;
    let dup_charges: i64 = client
        .query_one(
            "select count(*) - count(distinct stripe_charge_id) from public.charges",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(dup_charges > 0, "the fixture must hold duplicate charges");

    let report = migrate::run(&mut client, false)
        .await
        .expect("migrate on top of production");
    assert_eq!(report.applied.len(), migrate::migrations().len());

    let after = counts(&client).await;
    let logged: Vec<(String, i64)> = client
        .query(
            "select table_name, count(*) from public.migration_dedup_log
             where action = 'deleted' group by table_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for ((table, b), a) in TABLES.iter().zip(&before).zip(&after) {
        let short = table.trim_start_matches("public.");
        let deleted = logged
            .iter()
            .find(|(t, _)| t == short)
            .map_or(0, |(_, n)| *n);
        assert_eq!(
            *a + deleted,
            *b,
            "{table}: rows before {b}, after {a}, logged deletions {deleted}"
        );
    }
    assert_eq!(
        client
            .query_one(
                "select count(*) - count(distinct stripe_charge_id) from public.charges",
                &[]
            )
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );
    // Seed 002's pending step 1: every profile has its email now.
    let missing_email: i64 = client
        .query_one(
            "select count(*) from public.users u join auth.users a on a.id = u.id
             where u.email is distinct from a.email",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(missing_email, 0);
    let paused: bool = client
        .query_one(
            "select 'paused' = any(enum_range(null::public.subscription_status)::text[])",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(paused);

    // Nobody loses a day: every expiry and voucher is as it was, and each account with an
    // expiry starts the ledger with it as its starting balance.
    assert_eq!(expiries(&client).await, expiries_before);
    assert_eq!(vouchers(&client).await, vouchers_before);
    let balances: Vec<(String, String)> = client
        .query(
            "select a.account_number, public.format_expiry(g.period_end) from public.access_grants g
               join public.accounts a on a.id = g.account_id where g.kind = 'baseline' order by 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        balances,
        vec![
            ("1111222233334444".to_owned(), "2025-01-01T00:00:00Z".to_owned()),
            ("3333444455556666".to_owned(), "2031-03-01T00:00:00Z".to_owned()),
        ]
    );

    // Idempotent: every migration's SQL run once more changes nothing.
    let ledger = "select count(*)::text || coalesce(string_agg(source || period_end::text, ',' order by source), '') from public.access_grants";
    let ledger_before: String = client.query_one(ledger, &[]).await.unwrap().get(0);
    for m in migrate::migrations() {
        client
            .batch_execute(m.sql)
            .await
            .unwrap_or_else(|e| panic!("{} again: {e}", m.file));
    }
    assert_eq!(counts(&client).await, after);
    assert_eq!(expiries(&client).await, expiries_before);
    assert_eq!(vouchers(&client).await, vouchers_before);
    let ledger_after: String = client.query_one(ledger, &[]).await.unwrap().get(0);
    assert_eq!(ledger_after, ledger_before);

    // A purchase after the migration adds its month after the balance (2031-03-01), and a
    // payment recorded before the migration never grants again.
    client
        .batch_execute(
            "insert into public.prices (id, active, currency, type) values ('price_after', true, 'usd', 'one_time');
             insert into public.payment_intents (stripe_payment_intent_id, status, amount, currency, customer_id,
                                                 price_id, checkout_session_id, paid_at)
             values ('pi_after', 'succeeded', 900, 'usd', 'c3333333-3333-4333-8333-333333333333',
                     'price_after', 'cs_after', now());
             update public.payment_intents set price_id = 'price_after', checkout_session_id = 'cs_old'
              where stripe_payment_intent_id = 'pi_carol_1';",
        )
        .await
        .unwrap();
    let carol: String = client
        .query_one(
            "select expiry from public.accounts where account_number = '3333444455556666'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(carol, "2031-04-01T00:00:00Z");
}

/// account number -> expiry text, as stored.
async fn expiries(client: &tokio_postgres::Client) -> Vec<(Option<String>, Option<String>)> {
    client
        .query(
            "select account_number, expiry from public.accounts order by account_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Every voucher as it reads to its owner.
async fn vouchers(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "select concat_ws('|', code, duration_months, is_used, associated_account, status, used_at)
               from public.vouchers order by code",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_failing_statement_is_named_with_its_file_and_nothing_of_it_stays() {
    let db = empty_db().await;
    let mut client = connect(&db.url).await;
    // Without the platform the baseline's references to auth.users cannot resolve.
    let err = migrate::run(&mut client, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("20261101000000_baseline.sql"), "{err}");
    assert!(err.contains("statement"), "{err}");
    let recorded: i64 = client
        .query_one(
            "select count(*) from supabase_migrations.schema_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 0);
}
