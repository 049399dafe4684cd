-- Seed 002 pending step 1: public.users.email, filled from auth.users and kept in sync.
alter table public.users add column if not exists email character varying(255);

-- Backfill existing profiles from auth.users (the source of truth). Only rows that differ are
-- touched, so a rerun changes nothing; an auth user without email never blanks a stored one.
update public.users u
   set email = a.email
  from auth.users a
 where a.id = u.id
   and a.email is not null
   and u.email is distinct from a.email;

-- New users: handle_new_user() (baseline) already copies the email on insert.
-- Email changes (confirmed through GoTrue or written by the worker) follow here.
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
