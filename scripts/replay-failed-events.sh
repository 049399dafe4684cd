#!/usr/bin/env bash
# Replays failed Stripe events: `stripe-worker replay --status failed "$@"`.
# DATABASE_URL comes from the environment or from .env (the binary reads .env itself).
set -euo pipefail

usage() {
  cat <<'HELP'
Usage: scripts/replay-failed-events.sh [replay options]

Reprocesses stored Stripe events that failed, through the same handlers and transaction
rules as live deliveries (stripe-worker replay --status failed). Options pass through to
`stripe-worker replay`; a later flag overrides an earlier one, so --status dead or
--status any replaces the default. A running worker is safe: each event is claimed first,
one held by the worker is reported as skipped (busy).

Needs DATABASE_URL (environment or .env in the project directory).

Common cases:
  scripts/replay-failed-events.sh                          every failed event
  scripts/replay-failed-events.sh --dry-run                list what would be replayed
  scripts/replay-failed-events.sh --event-id evt_123       one event (if it is failed;
                                                           add --status any for any status)
  scripts/replay-failed-events.sh --status dead            dead ones, after fixing the cause
  scripts/replay-failed-events.sh --since 2026-01-31T08:00:00Z
                                                           failed since that instant (UTC)
  scripts/replay-failed-events.sh --type checkout.session.completed --limit 50

Other options: --force (also replay processed/ignored events with --status any; handlers
are idempotent). Output: one line per event, then
  replayed N: processed X, ignored Y, failed Z, dead W, skipped S
Exit status: 0 when every replayed event ended processed or ignored, 1 otherwise.
HELP
}

for arg in "$@"; do
  if [[ "$arg" == "-h" || "$arg" == "--help" ]]; then
    usage
    exit 0
  fi
done

cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
if [[ -x "$target_dir/release/stripe-worker" ]]; then
  bin="$target_dir/release/stripe-worker"
elif [[ -x "$target_dir/debug/stripe-worker" ]]; then
  bin="$target_dir/debug/stripe-worker"
else
  echo "building stripe-worker (debug) ..." >&2
  cargo build --quiet --bin stripe-worker
  bin="$target_dir/debug/stripe-worker"
fi

exec "$bin" replay --status failed "$@"
