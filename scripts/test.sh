#!/usr/bin/env bash
# The whole test suite, set-up included: installs what is missing, checks formatting and lints,
# starts a throwaway PostgreSQL on a free port (stopped on exit, also on failure), runs the
# pgTAP suite through pg_prove, checks the migrations with the real Supabase CLI, and then the
# Rust tests (unit + integration against the real database). A green run prints test results
# only; TEST_LOG=1 shows the logs of what the tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh
source scripts/lib/supabase.sh

ensure_postgres
ensure_pgtap
ensure_supabase_cli
# The official SDK's signature generator, used by the signature cross-check test.
if ! python3 -c 'import stripe' >/dev/null 2>&1; then
  echo "installing stripe-python (signature cross-check) ..." >&2
  python3 -m pip install --quiet --disable-pip-version-check 'stripe>=7' >&2
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy >&2
fi

work="$(mktemp -d)"
cleanup() {
  pg_stop "$work/data" immediate
  rm -rf "$work"
}
trap cleanup EXIT

echo "== cargo fmt --check, cargo clippy =="
cargo fmt --check
cargo clippy --all-targets --locked --quiet -- -D warnings
echo "ok"

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
RUST_LOG=warn DATABASE_URL="postgres://postgres@127.0.0.1:${port}/sql_tests" "$bin" migrate --platform >/dev/null
PGOPTIONS='-c client_min_messages=warning' "${psql_admin[@]}" -d sql_tests -f supabase/seed.sql
"${psql_admin[@]}" -d sql_tests -c 'create extension if not exists pgtap'
pg_prove -h 127.0.0.1 -p "$port" -U postgres -d sql_tests supabase/tests/*.sql

echo "== Supabase CLI $SUPABASE_CLI_VERSION (supabase/migrations) =="
mkdir -p "$work/supabase-cli"
supabase_cli_check "$port" "$bin" "$work/supabase-cli"

echo "== cargo test =="
cargo test --locked -- --test-threads "${TEST_THREADS:-4}"
