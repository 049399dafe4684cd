//! Auth users created for a buyer: `is_super_admin` false, and the Checkout email confirmed
//! only with AUTH_CONFIRM_CHECKOUT_EMAIL=true, on both paths (SQL and Supabase Auth's admin
//! API).

use crate::fakes;
use crate::helpers::{fresh_db, spawn_app_with, unique, TestApp};
use crate::purchase::{processed, Purchase, Shape};

/// (email_confirmed_at is set, is_super_admin, identity's email_verified) of the buyer.
async fn auth_row(app: &TestApp, email: &str) -> (bool, Option<bool>, Option<bool>) {
    let row = app
        .sql
        .query_one(
            "select u.email_confirmed_at is not null, u.is_super_admin,
                    (select (i.identity_data ->> 'email_verified')::boolean
                       from auth.identities i where i.user_id = u.id and i.provider = 'email')
             from auth.users u where u.email = lower($1)",
            &[&email],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn a_checkout_email_is_not_confirmed_by_default_and_never_a_super_admin() {
    let app = spawn_app_with(fresh_db().await, &[]).await;
    let email = format!("{}@example.com", unique("unconfirmed"));
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(
        auth_row(&app, &email).await,
        (false, Some(false), Some(false))
    );
}

#[tokio::test]
async fn auth_confirm_checkout_email_marks_the_address_confirmed() {
    let app = spawn_app_with(fresh_db().await, &[("AUTH_CONFIRM_CHECKOUT_EMAIL", "true")]).await;
    let email = format!("{}@example.com", unique("confirmed"));
    processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
    assert_eq!(
        auth_row(&app, &email).await,
        (true, Some(false), Some(true))
    );
}

#[tokio::test]
async fn the_admin_api_is_asked_for_the_configured_confirmation() {
    // (AUTH_CONFIRM_CHECKOUT_EMAIL, the project's mailer_autoconfirm) -> email_confirm
    for (setting, autoconfirm, expected) in [
        (None, false, false),
        (None, true, true),
        (Some("auto"), true, true),
        (Some("false"), true, false),
        (Some("true"), false, true),
    ] {
        let db = fresh_db().await;
        let auth = fakes::supabase_auth_confirming(
            db.url.clone(),
            "service-role-key-for-tests",
            vec![],
            autoconfirm,
        );
        let mut env = vec![
            ("SUPABASE_URL", auth.url.as_str()),
            ("SUPABASE_SERVICE_ROLE_KEY", "service-role-key-for-tests"),
        ];
        if let Some(v) = setting {
            env.push(("AUTH_CONFIRM_CHECKOUT_EMAIL", v));
        }
        let app = spawn_app_with(db, &env).await;
        let email = format!("{}@example.com", unique("admin"));
        processed(&app, &Purchase::new(&email, None).checkout(Shape::Basil)).await;
        let requests = auth.requests.lock().unwrap();
        let created: Vec<_> = requests.iter().filter(|r| r.0 == "POST").collect();
        assert_eq!(created.len(), 1);
        assert_eq!(
            created[0].2["email_confirm"], expected,
            "{setting:?} with autoconfirm {autoconfirm}"
        );
    }
}
