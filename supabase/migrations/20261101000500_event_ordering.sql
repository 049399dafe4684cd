-- Per-object ordering: Stripe delivers events at least once and in no particular order, so
-- every handler that writes a snapshot of a Stripe object first asks whether its event is newer
-- than the last one applied to that object. Internal to the worker: no grants to anon or
-- authenticated (RLS is enabled by the row-level security migration).

create table if not exists public.stripe_object_versions (
  object_id text primary key,
  object_type text not null,
  -- the ordering key of the last applied state: the event's created time, then a tie-break the
  -- handler derives from the snapshot (status progression, period end) for same-second events
  event_created_at timestamptz not null,
  tie_break bigint not null default 0,
  stripe_event_id text not null,
  -- deletion wins: once deleted, later updates of the object are stale
  deleted boolean not null default false,
  updated_at timestamptz not null default now()
);

comment on table public.stripe_object_versions is
  'Ordering key of the last applied event per Stripe object (stripe-worker internal).';

-- Returns true when the event may be applied, and records it as the object's latest state.
-- A replay of the event already recorded is allowed (handlers are idempotent); an older one
-- is not; a deletion applies even when late, and nothing applies after it.
create or replace function public.claim_object_version(
  p_object_id text,
  p_object_type text,
  p_event_created_at timestamptz,
  p_tie_break bigint,
  p_stripe_event_id text,
  p_deleted boolean
) returns boolean
language sql
set search_path = ''
as $$
  with claimed as (
    insert into public.stripe_object_versions as v
      (object_id, object_type, event_created_at, tie_break, stripe_event_id, deleted)
    values
      (p_object_id, p_object_type, p_event_created_at, p_tie_break, p_stripe_event_id, p_deleted)
    on conflict (object_id) do update
      set event_created_at = excluded.event_created_at,
          tie_break = excluded.tie_break,
          stripe_event_id = excluded.stripe_event_id,
          deleted = v.deleted or excluded.deleted,
          updated_at = now()
      where (excluded.deleted and not v.deleted)
         or (excluded.stripe_event_id = v.stripe_event_id and (excluded.deleted or not v.deleted))
         or (not v.deleted
             and (excluded.event_created_at, excluded.tie_break, excluded.stripe_event_id)
               > (v.event_created_at, v.tie_break, v.stripe_event_id))
    returning true
  )
  select coalesce((select true from claimed), false)
$$;

revoke all on function public.claim_object_version(text, text, timestamptz, bigint, text, boolean)
  from public, anon, authenticated;
