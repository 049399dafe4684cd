# shellcheck shell=bash
# The real Supabase CLI against the migrations: `supabase db push`, `supabase migration list`
# and `supabase db lint` must agree with `stripe-worker migrate`. Sourced by test.sh after
# pg.sh (it uses apt_install). The CLI comes from npm, pinned exactly with its lock file
# (scripts/supabase-cli), installed once into .local/supabase-cli.

SUPABASE_CLI_VERSION=2.117.0
SUPABASE_CLI_DIR="${SUPABASE_CLI_DIR:-.local/supabase-cli}"

# Node and npm from Debian when missing, the pinned CLI when missing or another version, and
# plpgsql_check (what `supabase db lint` runs).
ensure_supabase_cli() {
  if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm ..." >&2
    apt_install nodejs npm || return 1
  fi
  if [[ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/plpgsql_check.control" ]]; then
    echo "installing postgresql-${PG_MAJOR}-plpgsql-check ..." >&2
    apt_install "postgresql-${PG_MAJOR}-plpgsql-check" || return 1
  fi
  local bin="$SUPABASE_CLI_DIR/node_modules/.bin/supabase"
  if [[ -x "$bin" ]] && cmp -s scripts/supabase-cli/package-lock.json "$SUPABASE_CLI_DIR/package-lock.json" \
     && [[ "$("$bin" --version 2>/dev/null)" == "$SUPABASE_CLI_VERSION" ]]; then
    return 0
  fi
  echo "installing the Supabase CLI $SUPABASE_CLI_VERSION (npm) ..." >&2
  rm -rf "$SUPABASE_CLI_DIR"
  mkdir -p "$SUPABASE_CLI_DIR"
  cp scripts/supabase-cli/package.json scripts/supabase-cli/package-lock.json "$SUPABASE_CLI_DIR/"
  (cd "$SUPABASE_CLI_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) || return 1
  [[ "$("$bin" --version)" == "$SUPABASE_CLI_VERSION" ]] || {
    echo "the installed Supabase CLI is not $SUPABASE_CLI_VERSION" >&2; return 1; }
}

supabase_cli() {
  "$SUPABASE_CLI_DIR/node_modules/.bin/supabase" --workdir . "$@"
}

# supabase_cli_check PORT WORKER_BIN LOG_DIR: TAP-like lines on stdout; on a failure the
# command's output and a non-zero status.
supabase_cli_check() {
  local port="$1" bin="$2" log="$3"
  local base="postgres://postgres@127.0.0.1:${port}"
  local psql=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres)
  local files; files=$(ls supabase/migrations/*.sql | wc -l)
  local n=0
  ok() { n=$((n + 1)); echo "ok $n - $*"; }
  not_ok() { n=$((n + 1)); echo "not ok $n - $1"; [[ -f "${2:-}" ]] && sed 's/^/#   /' "$2"; return 1; }

  "${psql[@]}" -d postgres -c 'create database cli_pushed' -c 'create database cli_migrated'
  # The CLI applies supabase/migrations only: the platform SQL (what hosted Supabase has) first.
  for f in sql/platform/*.sql; do
    PGOPTIONS='-c client_min_messages=warning' "${psql[@]}" -d cli_pushed -f "$f" >"$log/platform.log" 2>&1 \
      || { not_ok "platform SQL $f applies" "$log/platform.log"; return 1; }
  done
  local pushed="$base/cli_pushed?sslmode=disable" migrated="$base/cli_migrated?sslmode=disable"

  supabase_cli db push --db-url "$pushed" --yes >"$log/push.log" 2>&1 \
    && [[ $(grep -c '^Applying migration' "$log/push.log") -eq $files ]] \
    || { not_ok "supabase db push applies all $files migrations" "$log/push.log"; return 1; }
  ok "supabase db push applies all $files migrations"

  DATABASE_URL="$pushed" "$bin" migrate >"$log/migrate.log" 2>&1 \
    && grep -qx "migrations: 0 applied, $files already applied" "$log/migrate.log" \
    || { not_ok "stripe-worker migrate then finds every version applied" "$log/migrate.log"; return 1; }
  ok "stripe-worker migrate then finds every version applied"

  supabase_cli migration list --db-url "$pushed" >"$log/list.log" 2>&1 \
    || { not_ok "supabase migration list runs" "$log/list.log"; return 1; }
  # Rows look like "   `20261101000000` | `20261101000000` | `2026-11-01 00:00:00`"; a version
  # on one side only leaves the other column empty.
  local rows same
  rows=$(grep -cE '`[0-9]{14}`' "$log/list.log" || true)
  same=$(grep -cE '^\s*`([0-9]{14})`\s*\|\s*`\1`\s*\|' "$log/list.log" || true)
  [[ $rows -eq $files && $same -eq $files ]] \
    || { not_ok "supabase migration list: local = remote for all $files versions" "$log/list.log"; return 1; }
  ok "supabase migration list: local = remote for all $files versions"

  supabase_cli db lint --db-url "$pushed" --level warning --fail-on error >"$log/lint.log" 2>&1 \
    || { not_ok "supabase db lint: no errors" "$log/lint.log"; return 1; }
  ok "supabase db lint: no errors"
  if ! grep -q "No schema errors found" "$log/lint.log"; then
    echo "# supabase db lint warnings:"; sed 's/^/#   /' "$log/lint.log"
  fi

  # The other way round: what `stripe-worker migrate` records, the CLI reads as applied, and
  # both record the same rows (version, name, statements).
  DATABASE_URL="$migrated" "$bin" migrate --platform >"$log/migrate-platform.log" 2>&1 \
    || { not_ok "stripe-worker migrate --platform" "$log/migrate-platform.log"; return 1; }
  supabase_cli db push --db-url "$migrated" --yes >"$log/push-again.log" 2>&1 \
    && grep -q "Remote database is up to date" "$log/push-again.log" \
    || { not_ok "supabase db push after stripe-worker migrate finds nothing to push" "$log/push-again.log"; return 1; }
  ok "supabase db push after stripe-worker migrate finds nothing to push"

  local history="select version || ' ' || coalesce(name, '') || ' ' || md5(array_to_string(statements, chr(31)))
                 from supabase_migrations.schema_migrations order by version"
  "${psql[@]}" -At -d cli_pushed -c "$history" >"$log/history-cli.txt"
  "${psql[@]}" -At -d cli_migrated -c "$history" >"$log/history-worker.txt"
  diff "$log/history-cli.txt" "$log/history-worker.txt" >"$log/history.diff" \
    && [[ $(wc -l <"$log/history-cli.txt") -eq $files ]] \
    || { not_ok "supabase db push and stripe-worker migrate record identical history rows" "$log/history.diff"; return 1; }
  ok "supabase db push and stripe-worker migrate record identical history rows"
  echo "1..$n"
}
