#!/usr/bin/env bash
# The whole test suite, set-up included: installs what is missing, starts a throwaway
# PostgreSQL on a free port (stopped on exit, also on failure), runs the pgTAP suite through
# pg_prove and then the Rust tests (unit + integration against the real database).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

ensure_postgres
ensure_pgtap
# The official SDK's signature generator, used by the signature cross-check test.
if ! python3 -c 'import stripe' >/dev/null 2>&1; then
  echo "installing stripe-python (signature cross-check) ..." >&2
  python3 -m pip install --quiet --disable-pip-version-check 'stripe>=7' >&2
fi

work="$(mktemp -d)"
cleanup() {
  pg_stop "$work/data" immediate
  rm -rf "$work"
}
trap cleanup EXIT

port="$(free_port)"
# Durability off: test clusters are thrown away (the benchmark keeps fsync on).
pg_start "$work/data" "$port" fsync=off synchronous_commit=off full_page_writes=off max_connections=300
export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:${port}/postgres"
export TEST_PG_BINDIR="$(pg_bindir)"

cargo build --locked --bins --tests --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/stripe-worker"

echo "== pgTAP (supabase/tests) =="
psql_admin=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
"${psql_admin[@]}" -d postgres -c 'create database sql_tests'
DATABASE_URL="postgres://postgres@127.0.0.1:${port}/sql_tests" "$bin" migrate --platform >/dev/null
"${psql_admin[@]}" -d sql_tests -f supabase/seed.sql
"${psql_admin[@]}" -d sql_tests -c 'create extension if not exists pgtap'
pg_prove -h 127.0.0.1 -p "$port" -U postgres -d sql_tests supabase/tests/*.sql

echo "== cargo test =="
cargo test --locked -- --test-threads "${TEST_THREADS:-4}"
