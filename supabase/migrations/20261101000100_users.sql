-- People: auth users, their profiles (public.users with email) and their accounts.
--
-- A buyer becomes an auth user the first time money arrives from them. The worker creates the
-- user either through Supabase Auth's admin API or, without it, with find_or_create_auth_user
-- below, which writes the rows GoTrue needs to sign the user in by magic link or password reset.
-- Idempotent: every statement can run again without changing anything.

-- ---------------------------------------------------------------------------------------
-- public.users.email, filled from auth.users and kept in sync.
alter table public.users add column if not exists email character varying(255);

-- Backfill existing profiles from auth.users (the source of truth). Only rows that differ are
-- touched, so a rerun changes nothing; an auth user without email never blanks a stored one.
update public.users u
   set email = a.email
  from auth.users a
 where a.id = u.id
   and a.email is not null
   and u.email is distinct from a.email;

-- New users: handle_new_user() (baseline) copies the email on insert. Email changes (confirmed
-- through GoTrue) follow here: the profile always shows the address the user signs in with.
create or replace function public.handle_user_email_change()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.users
     set email = new.email
   where id = new.id
     and email is distinct from new.email;
  return null;
end
$$;

do $$
begin
  if not exists (select 1 from pg_trigger
                 where tgrelid = 'auth.users'::regclass and tgname = 'on_auth_user_email_updated') then
    create trigger on_auth_user_email_updated
      after update of email on auth.users
      for each row when (old.email is distinct from new.email)
      execute function public.handle_user_email_change();
  end if;
end
$$;

-- Lookups by email are case-insensitive (Stripe and GoTrue may differ in case).
create index if not exists users_email_lower_idx on public.users using btree (lower((email)::text));
create index if not exists accounts_user_id_idx on public.accounts (user_id);

-- ---------------------------------------------------------------------------------------
-- Random identifiers (core sha256 + gen_random_uuid: no pgcrypto dependency).

-- 16 digits, first digit 1-9 (the shape of production's account numbers), random, not
-- sequential, not present in accounts. A concurrent transaction may still pick the same
-- number: callers insert with ON CONFLICT and draw again.
create or replace function public.generate_account_number()
returns text
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_rand bigint;
  v_number text;
begin
  loop
    v_rand := ('x' || encode(substr(sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())), 1, 8), 'hex'))::bit(64)::bigint
              & 9223372036854775807;
    v_number := (1000000000000000 + v_rand % 9000000000000000)::text;
    exit when not exists (select 1 from public.accounts a where a.account_number = v_number);
  end loop;
  return v_number;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Accounts.

-- The user's account: the oldest one (created_at, id), numbered if it had no number, else a new
-- active account. Never creates a second account for a user. Returns the account id.
create or replace function public.ensure_account(p_user_id uuid)
returns uuid
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_account_id uuid;
  v_number text;
  v_attempt integer := 0;
begin
  if p_user_id is null then
    raise exception 'ensure_account: user id is null' using errcode = '22004';
  end if;

  select a.id, a.account_number into v_account_id, v_number
    from public.accounts a
   where a.user_id = p_user_id
   order by a.created_at, a.id
   limit 1;
  if v_account_id is not null and v_number is not null then
    return v_account_id;           -- the common case: no lock needed
  end if;

  perform pg_advisory_xact_lock(hashtext('account:' || p_user_id::text));

  select a.id, a.account_number into v_account_id, v_number
    from public.accounts a
   where a.user_id = p_user_id
   order by a.created_at, a.id
   limit 1
   for update;

  if v_account_id is not null then
    while v_number is null loop
      v_attempt := v_attempt + 1;
      begin
        v_number := public.generate_account_number();
        update public.accounts set account_number = v_number where id = v_account_id;
      exception when unique_violation then
        v_number := null;
        if v_attempt >= 20 then raise; end if;
      end;
    end loop;
    return v_account_id;
  end if;

  -- accounts.user_id references public.users: legacy auth users may lack the profile row.
  insert into public.users (id, email)
  select u.id, u.email from auth.users u where u.id = p_user_id
  on conflict (id) do nothing;

  loop
    v_attempt := v_attempt + 1;
    insert into public.accounts (user_id, account_number, status)
    values (p_user_id, public.generate_account_number(), 'active')
    on conflict do nothing
    returning id into v_account_id;
    exit when v_account_id is not null;
    if v_attempt >= 20 then
      raise exception 'ensure_account: could not allocate an account number' using errcode = '23505';
    end if;
  end loop;
  return v_account_id;
end
$$;

-- ---------------------------------------------------------------------------------------
-- Who may do what. Writes come from the worker (table owner) or service_role (bypasses RLS).
alter table public.users enable row level security;
alter table public.accounts enable row level security;
revoke all on table public.users from public, anon, authenticated;
revoke all on table public.accounts from public, anon, authenticated;
grant all on table public.users, public.accounts to service_role;
grant select on table public.users, public.accounts to authenticated;
-- The frontend lets a user edit their own name and avatar, nothing else.
grant update (full_name, avatar_url) on table public.users to authenticated;

-- auth.uid() is wrapped in a scalar subquery so it is evaluated once per statement (initplan),
-- not once per row.
drop policy if exists users_select_own on public.users;
create policy users_select_own on public.users
  for select to authenticated
  using (id = (select auth.uid()));

-- Column privileges (above) limit which columns; this limits which row.
drop policy if exists users_update_own on public.users;
create policy users_update_own on public.users
  for update to authenticated
  using (id = (select auth.uid()))
  with check (id = (select auth.uid()));

drop policy if exists accounts_select_own on public.accounts;
create policy accounts_select_own on public.accounts
  for select to authenticated
  using (user_id = (select auth.uid()));

revoke all on function public.handle_user_email_change() from public, anon, authenticated;
revoke all on function public.generate_account_number() from public, anon, authenticated;
revoke all on function public.ensure_account(uuid) from public, anon, authenticated;
grant execute on function public.ensure_account(uuid) to service_role;
