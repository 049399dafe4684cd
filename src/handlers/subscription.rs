//! customer.subscription.*: the subscription row (vouchers per period follow by SQL trigger).

use deadpool_postgres::Transaction;
use uuid::Uuid;

const LINK_TO_USER: &str =
    "update public.subscriptions set user_id = $2 where id = $1 and user_id <> $2";

/// checkout.session.completed (mode=subscription) names the buyer of a subscription whose
/// events may have arrived first.
pub async fn link_to_user(
    tx: &Transaction<'_>,
    subscription_id: &str,
    user_id: Uuid,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx.prepare_cached(LINK_TO_USER).await?;
    tx.execute(&stmt, &[&subscription_id, &user_id]).await?;
    Ok(())
}
