-- Supabase installs extensions into their own schema `extensions`.
create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;

create extension if not exists pgcrypto with schema extensions;
create extension if not exists "uuid-ossp" with schema extensions;

-- Supabase makes `extensions` reachable through the search_path of new sessions.
-- Set per database (not per role) so other databases of the cluster are untouched.
-- Migrations do not rely on it: they only use core gen_random_uuid().
do $$
begin
  execute format('alter database %I set search_path = "$user", public, extensions', current_database());
end
$$;
