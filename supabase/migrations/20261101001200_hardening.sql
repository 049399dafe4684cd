-- Hardening (idempotent).

-- 1. The exact signed body of an event whose event_data had to be changed to be storable as
--    jsonb (a \u0000 escape or an unpaired UTF-16 surrogate escape, replaced with \ufffd).
--    NULL for every other event: event_data is then the body, key order aside.
alter table public.stripe_webhook_events add column if not exists event_raw_body bytea;
comment on column public.stripe_webhook_events.event_raw_body is
  'The body exactly as Stripe signed it, kept only when event_data differs from it (escapes jsonb cannot hold were replaced with U+FFFD); NULL otherwise.';

-- 2. Auth users an earlier find_or_create_auth_user created (no password, email provider) were
--    left with is_super_admin NULL, which GoTrue before August 2022 scanned into a plain bool
--    (/recover failed: https://github.com/supabase/auth/commit/30eeb389081cfbb85f798fb63b4a2d360d4971c5).
update auth.users
   set is_super_admin = false
 where is_super_admin is null
   and encrypted_password = ''
   and raw_app_meta_data ->> 'provider' = 'email';
