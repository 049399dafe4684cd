//! The statements of the state machine (prepared once per pooled connection).

pub const CURRENT_STATUS: &str =
    "select processing_status from public.stripe_webhook_events where stripe_event_id = $1";

pub const INSERT_PROCESSING: &str = "
insert into public.stripe_webhook_events
  (stripe_event_id, event_type, event_data, livemode, api_version, event_created_at,
   request_id, processing_status, locked_by, locked_until, event_raw_body)
values ($1, $2, $3::text::jsonb, $4, $5, $6, $7, 'processing', $8, now() + make_interval(secs => $9),
        $10)
on conflict (stripe_event_id) do nothing
returning id";

pub const RETAKE_WAITING: &str = "
select id, retry_count from public.stripe_webhook_events
where stripe_event_id = $1
  and (processing_status in ('failed', 'pending')
       or (processing_status = 'processing' and locked_until < now()))
for update skip locked";

pub const MARK_DONE: &str = "
update public.stripe_webhook_events
set processing_status = $2, processed_at = now(), error_message = null, next_attempt_at = null,
    locked_by = null, locked_until = null,
    user_id = coalesce($3, user_id), old_tier = coalesce($4, old_tier),
    new_tier = coalesce($5, new_tier), processing_note = $6
where id = $1";

pub const MARK_FAILED: &str = "
update public.stripe_webhook_events
set processing_status = $2, error_message = $3, retry_count = retry_count + 1,
    next_attempt_at = $4, locked_by = null, locked_until = null
where id = $1";

pub const READ_CLAIMED: &str = "
select event_data::text from public.stripe_webhook_events
where id = $1 and processing_status = 'processing' and locked_by = $2";

pub const LOCK_CLAIMED: &str = "
select retry_count from public.stripe_webhook_events
where id = $1 and processing_status = 'processing' and locked_by = $2
for update";

pub const CLAIM_DUE: &str = "
update public.stripe_webhook_events e
set processing_status = 'processing', locked_by = $1,
    locked_until = now() + make_interval(secs => $2)
where e.id in (
  select id from public.stripe_webhook_events
  where (processing_status = 'failed' and next_attempt_at <= now())
     or processing_status = 'pending'
     or (processing_status = 'processing' and locked_until < now())
  order by coalesce(next_attempt_at, created_at)
  limit $3
  for update skip locked)
returning e.id";
