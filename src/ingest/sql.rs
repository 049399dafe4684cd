//! The statements of the state machine (prepared once per pooled connection). A statement with
//! many parameters has a row struct beside it that lists them in their order.

use chrono::{DateTime, Utc};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Names the event being processed for the SQL that derives from its facts (an access grant
/// remembers the event that established it); local to the event's transaction.
pub const SET_CURRENT_EVENT: &str = "select set_config('stripe_worker.event_id', $1, true)";

/// Deliveries of one event id take turns for the rest of their transaction: a second delivery
/// waits here until the first has committed, then finds its row (`CURRENT_STATUS`) instead of
/// running the handler again only to find the row at its final insert. Different ids hashing
/// alike merely take turns.
pub const LOCK_EVENT_ID: &str = "select pg_advisory_xact_lock(hashtext('stripe-event:' || $1))";

pub const CURRENT_STATUS: &str =
    "select processing_status from public.stripe_webhook_events where stripe_event_id = $1";

/// A first delivery's row, written once when its attempt is over (with the status it ended
/// in, so it is never updated afterwards). A concurrent delivery of the same id waits on the
/// unique index until the other commits and then fails on it, which rolls its attempt back
/// (COMMIT follows in the same round trip, so a conflict must abort rather than insert
/// nothing). Parameters: `NewEvent` then `Finished`.
pub const INSERT_FINISHED: &str = "
insert into public.stripe_webhook_events
  (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at,
   request_id, event_raw_body, processing_status, processed_at, user_id, old_tier, new_tier,
   processing_note, error_message, next_attempt_at, retry_count)
values ($1, $2, $3::text::jsonb, $4, $5, $6, $7, $8, $9,
        case when $9 in ('processed', 'ignored') then now() end,
        $10, $11, $12, $13, $14, $15, $16)";

/// The delivered event, `INSERT_FINISHED`'s first parameters ($1 … $8).
pub struct NewEvent<'a> {
    pub stripe_event_id: &'a str,
    pub event_type: &'a str,
    pub event_data: &'a str,
    /// The exact signed body, only when `event_data` had to differ from it.
    pub event_raw_body: Option<&'a [u8]>,
    pub livemode: bool,
    pub api_version: Option<&'a str>,
    pub event_created_at: Option<DateTime<Utc>>,
    pub request_id: &'a str,
}

/// How its first attempt ended, `INSERT_FINISHED`'s last parameters ($9 … $16).
pub struct Finished<'a> {
    pub status: &'static str,
    pub user_id: Option<Uuid>,
    pub old_tier: Option<&'a str>,
    pub new_tier: Option<&'a str>,
    pub note: Option<&'a str>,
    pub error: Option<&'a str>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub retry_count: i32,
}

impl NewEvent<'_> {
    pub fn params<'b>(&'b self, finished: &'b Finished<'b>) -> [&'b (dyn ToSql + Sync); 16] {
        [
            &self.stripe_event_id,
            &self.event_type,
            &self.event_data,
            &self.livemode,
            &self.api_version,
            &self.event_created_at,
            &self.request_id,
            &self.event_raw_body,
            &finished.status,
            &finished.user_id,
            &finished.old_tier,
            &finished.new_tier,
            &finished.note,
            &finished.error,
            &finished.next_attempt_at,
            &finished.retry_count,
        ]
    }
}

pub const RETAKE_WAITING: &str = "
select id, retry_count from public.stripe_webhook_events
where stripe_event_id = $1
  and (processing_status in ('failed', 'pending')
       or (processing_status = 'processing' and locked_until < now()))
for update skip locked";

/// Parameters: `Done`.
pub const MARK_DONE: &str = "
update public.stripe_webhook_events
set processing_status = $2, processed_at = now(), error_message = null, next_attempt_at = null,
    locked_by = null, locked_until = null,
    user_id = coalesce($3, user_id), old_tier = coalesce($4, old_tier),
    new_tier = coalesce($5, new_tier), processing_note = $6
where id = $1";

/// `MARK_DONE`'s parameters, in their order ($1 … $6).
pub struct Done<'a> {
    pub row_id: Uuid,
    pub status: &'static str,
    pub user_id: Option<Uuid>,
    pub old_tier: Option<&'a str>,
    pub new_tier: Option<&'a str>,
    pub note: Option<&'a str>,
}

impl Done<'_> {
    pub fn params(&self) -> [&(dyn ToSql + Sync); 6] {
        [
            &self.row_id,
            &self.status,
            &self.user_id,
            &self.old_tier,
            &self.new_tier,
            &self.note,
        ]
    }
}

/// `$1` row id, `$2` status (failed or dead), `$3` error, `$4` next attempt (null when dead).
pub const MARK_FAILED: &str = "
update public.stripe_webhook_events
set processing_status = $2, error_message = $3, retry_count = retry_count + 1,
    next_attempt_at = $4, locked_by = null, locked_until = null
where id = $1";

/// Events that failed because this Stripe customer was not mapped yet (typically the
/// subscription events Stripe sends before checkout.session.completed) need not wait out their
/// backoff once it is.
pub const WAKE_WAITING: &str = "
update public.stripe_webhook_events set next_attempt_at = now()
where processing_status = 'failed' and next_attempt_at > now()
  and event_data->'data'->'object'->>'customer' = $1";

pub const READ_CLAIMED: &str = "
select event_data::text from public.stripe_webhook_events
where id = $1 and processing_status = 'processing' and locked_by = $2";

pub const LOCK_CLAIMED: &str = "
select retry_count from public.stripe_webhook_events
where id = $1 and processing_status = 'processing' and locked_by = $2
for update";

/// "Due" is defined once, in SQL (`stripe_webhook_event_is_due`, inlined by the planner).
pub const CLAIM_DUE: &str = "
update public.stripe_webhook_events e
set processing_status = 'processing', locked_by = $1,
    locked_until = now() + make_interval(secs => $2)
where e.id in (
  select id from public.stripe_webhook_events d
  where public.stripe_webhook_event_is_due(d)
  order by coalesce(next_attempt_at, created_at)
  limit $3
  for update skip locked)
returning e.id";
