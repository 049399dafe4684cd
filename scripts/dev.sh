#!/usr/bin/env bash
# Local development: PostgreSQL on 127.0.0.1:54322 (data under .local/), platform + migrations
# + demo catalog, then the worker on http://127.0.0.1:8080. Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

ensure_postgres
mkdir -p .local
data="$PWD/.local/pgdata"
db_port="${DEV_DB_PORT:-54322}"

worker_pid=""
cleanup() {
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    wait "$worker_pid" 2>/dev/null || true
  fi
  pg_stop "$data"
  echo "stopped worker and database"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -f "$data/postmaster.pid" ]]; then pg_stop "$data"; fi
pg_start "$data" "$db_port"

export DATABASE_URL="${DEV_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:${db_port}/postgres}"
# One dev secret per checkout, kept under .local/.
if [[ ! -f .local/webhook_secret ]]; then
  echo "whsec_dev_$(python3 -c 'import secrets; print(secrets.token_hex(24))')" > .local/webhook_secret
fi
export STRIPE_WEBHOOK_SECRET="$(cat .local/webhook_secret)"
export HOST=127.0.0.1 PORT="${PORT:-8080}"
# Development is test mode: live events are recorded and ignored (as with a test secret key).
export STRIPE_LIVEMODE="${STRIPE_LIVEMODE:-false}"
export RETRY_BASE_DELAY_SECS="${RETRY_BASE_DELAY_SECS:-5}"

cargo build --quiet
bin="${CARGO_TARGET_DIR:-target}/debug/stripe-worker"
"$bin" migrate --platform
psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$db_port" -U postgres -d postgres -f supabase/seed.sql

"$bin" serve &
worker_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:${PORT}/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
cat <<MSG

stripe-worker is running on http://127.0.0.1:${PORT}  (database: 127.0.0.1:${db_port})
  webhook secret (dev): ${STRIPE_WEBHOOK_SECRET}
  readiness:            curl http://127.0.0.1:${PORT}/readyz
  try an event:         STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET} $bin trigger checkout.session.completed --email you@example.com --url http://127.0.0.1:${PORT}/webhooks/stripe
  or a whole flow:      STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET} $bin trigger renewal-failed --email you@example.com --url http://127.0.0.1:${PORT}/webhooks/stripe   (trigger --list)
  see what happened:    DATABASE_URL=${DATABASE_URL} $bin status
Ctrl-C stops the worker and the database.

MSG
wait "$worker_pid"
