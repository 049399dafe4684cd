-- The parts of Supabase's `auth` schema (GoTrue) that stripe-worker and the migrations touch.
-- Local/test only. Idempotent.
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;
grant all on schema auth to supabase_auth_admin;

-- auth.users exactly as in production.
create table if not exists auth.users (
  instance_id uuid null,
  id uuid not null,
  aud character varying(255) null,
  role character varying(255) null,
  email character varying(255) null,
  encrypted_password character varying(255) null,
  email_confirmed_at timestamp with time zone null,
  invited_at timestamp with time zone null,
  confirmation_token character varying(255) null,
  confirmation_sent_at timestamp with time zone null,
  recovery_token character varying(255) null,
  recovery_sent_at timestamp with time zone null,
  email_change_token_new character varying(255) null,
  email_change character varying(255) null,
  email_change_sent_at timestamp with time zone null,
  last_sign_in_at timestamp with time zone null,
  raw_app_meta_data jsonb null,
  raw_user_meta_data jsonb null,
  is_super_admin boolean null,
  created_at timestamp with time zone null,
  updated_at timestamp with time zone null,
  phone text null default null::character varying,
  phone_confirmed_at timestamp with time zone null,
  phone_change text null default ''::character varying,
  phone_change_token character varying(255) null default ''::character varying,
  phone_change_sent_at timestamp with time zone null,
  confirmed_at timestamp with time zone generated always as (least(email_confirmed_at, phone_confirmed_at)) stored null,
  email_change_token_current character varying(255) null default ''::character varying,
  email_change_confirm_status smallint null default 0,
  banned_until timestamp with time zone null,
  reauthentication_token character varying(255) null default ''::character varying,
  reauthentication_sent_at timestamp with time zone null,
  is_sso_user boolean not null default false,
  deleted_at timestamp with time zone null,
  is_anonymous boolean not null default false,
  constraint users_pkey primary key (id),
  constraint users_phone_key unique (phone),
  constraint users_email_change_confirm_status_check check (
    ((email_change_confirm_status >= 0) and (email_change_confirm_status <= 2))
  )
);

create index if not exists users_instance_id_idx on auth.users using btree (instance_id);
create index if not exists users_is_anonymous_idx on auth.users using btree (is_anonymous);
create index if not exists users_instance_id_email_idx on auth.users using btree (instance_id, lower((email)::text));
create unique index if not exists confirmation_token_idx on auth.users using btree (confirmation_token)
  where ((confirmation_token)::text !~ '^[0-9 ]*$'::text);
create unique index if not exists recovery_token_idx on auth.users using btree (recovery_token)
  where ((recovery_token)::text !~ '^[0-9 ]*$'::text);
create unique index if not exists email_change_token_current_idx on auth.users using btree (email_change_token_current)
  where ((email_change_token_current)::text !~ '^[0-9 ]*$'::text);
create unique index if not exists email_change_token_new_idx on auth.users using btree (email_change_token_new)
  where ((email_change_token_new)::text !~ '^[0-9 ]*$'::text);
create unique index if not exists reauthentication_token_idx on auth.users using btree (reauthentication_token)
  where ((reauthentication_token)::text !~ '^[0-9 ]*$'::text);
create unique index if not exists users_email_partial_key on auth.users using btree (email)
  where (is_sso_user = false);

-- auth.identities as current GoTrue has it.
create table if not exists auth.identities (
  id uuid not null default gen_random_uuid(),
  provider_id text not null,
  user_id uuid not null,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamp with time zone null,
  created_at timestamp with time zone null,
  updated_at timestamp with time zone null,
  email text generated always as (lower((identity_data ->> 'email'::text))) stored,
  constraint identities_pkey primary key (id),
  constraint identities_provider_id_provider_unique unique (provider_id, provider),
  constraint identities_user_id_fkey foreign key (user_id) references auth.users (id) on delete cascade
);
create index if not exists identities_user_id_idx on auth.identities using btree (user_id);
create index if not exists identities_email_idx on auth.identities using btree (email text_pattern_ops);

-- JWT helpers, as Supabase defines them (PostgREST sets request.jwt.claims per request).
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- Supabase never exposes auth tables to the API roles.
revoke all on auth.users, auth.identities from anon, authenticated;
grant all on auth.users, auth.identities to supabase_auth_admin;
