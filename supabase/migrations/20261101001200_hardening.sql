-- Hardening (idempotent).

-- 1. The exact signed body of an event whose event_data had to be changed to be storable as
--    jsonb (a \u0000 escape or an unpaired UTF-16 surrogate escape, replaced with \ufffd).
--    NULL for every other event: event_data is then the body, key order aside.
alter table public.stripe_webhook_events add column if not exists event_raw_body bytea;
comment on column public.stripe_webhook_events.event_raw_body is
  'The body exactly as Stripe signed it, kept only when event_data differs from it (escapes jsonb cannot hold were replaced with U+FFFD); NULL otherwise.';

-- 2. Auth users created by SQL: is_super_admin is false, never NULL (GoTrue before v2.17 scanned
--    it into a plain bool, so NULL broke /recover:
--    https://github.com/supabase/auth/commit/30eeb389081cfbb85f798fb63b4a2d360d4971c5), and
--    whether the Checkout email counts as confirmed is the caller's setting
--    (AUTH_CONFIRM_CHECKOUT_EMAIL in the worker; false unless the project decides otherwise:
--    Stripe never verified the address). The two-argument form keeps its signature and
--    creates unconfirmed users.
create or replace function public.find_or_create_auth_user(
  p_email text, p_full_name text, p_email_confirmed boolean)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_email text := lower(btrim(p_email));
  v_name text := nullif(btrim(p_full_name), '');
  v_confirmed boolean := coalesce(p_email_confirmed, false);
  v_id uuid;
begin
  if v_email is null or v_email = '' or position('@' in v_email) < 2 then
    raise exception 'find_or_create_auth_user: invalid email %', coalesce(p_email, 'NULL')
      using errcode = '22023';
  end if;

  perform pg_advisory_xact_lock(hashtext('auth-user:' || v_email));

  -- (instance_id, lower(email)) is indexed in auth.users; both arms can use it.
  select u.id into v_id
    from auth.users u
   where lower(u.email::text) = v_email
     and (u.instance_id = '00000000-0000-0000-0000-000000000000' or u.instance_id is null)
     and u.is_sso_user = false
     and u.deleted_at is null
   order by u.created_at nulls last, u.id
   limit 1;

  if v_id is null then
    v_id := gen_random_uuid();
    insert into auth.users (
      instance_id, id, aud, role, email, encrypted_password, email_confirmed_at, is_super_admin,
      confirmation_token, recovery_token, email_change_token_new, email_change,
      raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
    values (
      '00000000-0000-0000-0000-000000000000', v_id, 'authenticated', 'authenticated', v_email, '',
      case when v_confirmed then now() end, false,
      '', '', '', '',
      '{"provider": "email", "providers": ["email"]}'::jsonb,
      case when v_name is null then '{}'::jsonb else jsonb_build_object('full_name', v_name) end,
      now(), now());

    insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (
      v_id::text, v_id,
      jsonb_build_object('sub', v_id::text, 'email', v_email, 'email_verified', v_confirmed, 'phone_verified', false),
      'email', null, now(), now());
    -- on_auth_user_created (handle_new_user) has created public.users.
  else
    -- Existing user: make sure the profile row exists and fill a missing name.
    insert into public.users as pu (id, email, full_name)
    select u.id, u.email, v_name from auth.users u where u.id = v_id
    on conflict (id) do update
      set full_name = coalesce(pu.full_name, excluded.full_name),
          email = coalesce(pu.email, excluded.email)
      where (pu.full_name is null and excluded.full_name is not null)
         or (pu.email is null and excluded.email is not null);
  end if;

  return v_id;
end
$$;

create or replace function public.find_or_create_auth_user(p_email text, p_full_name text default null)
returns uuid
language sql
security definer
set search_path = ''
as $$
  select public.find_or_create_auth_user(p_email, p_full_name, false)
$$;

revoke all on function public.find_or_create_auth_user(text, text, boolean) from public, anon, authenticated;
revoke all on function public.find_or_create_auth_user(text, text) from public, anon, authenticated;
grant execute on function public.find_or_create_auth_user(text, text, boolean) to service_role;
grant execute on function public.find_or_create_auth_user(text, text) to service_role;

-- Users an earlier version of this function created (no password, email provider) get false.
update auth.users
   set is_super_admin = false
 where is_super_admin is null
   and encrypted_password = ''
   and raw_app_meta_data ->> 'provider' = 'email';
