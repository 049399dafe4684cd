#!/usr/bin/env bash
# Benchmark: the optimized worker (the `profiling` profile: release plus symbols and line tables,
# so perf can attribute time) against a throwaway PostgreSQL with default durability (fsync
# on), driven by stripe-worker-loadgen, next to the pgbench ceiling for the same SQL per event.
# Everything listens on 127.0.0.1, is bounded, and is stopped on exit (by PID / pg_ctl).
#
#   scripts/bench.sh                      # all mixes at concurrency 16
#   BENCH_CONCURRENCY=32 BENCH_SCALE=2 scripts/bench.sh
#
# Output: one markdown table on stdout (paste into BENCHMARKS.md), raw JSON lines and the
# captured per-event SQL under target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

conc="${BENCH_CONCURRENCY:-16}"
scale="${BENCH_SCALE:-1}"
pool="${BENCH_POOL_SIZE:-16}"
max_load="${BENCH_MAX_LOAD:-1.5}"
n_catalog=$((20000 * scale)); n_purchase=$((10000 * scale)); n_sub=$((5000 * scale)); n_dup=$((10000 * scale))
secret="whsec_bench_only_not_a_real_secret"
build="${CARGO_TARGET_DIR:-target}/profiling"
out="${CARGO_TARGET_DIR:-target}/bench"; mkdir -p "$out"

ensure_postgres
cargo build --profile profiling --locked --bins --quiet
bin="$(pg_bindir)"

work="$(mktemp -d)"
worker_pid=""
cleanup() {
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker_pid" 2>/dev/null || true
  fi
  pg_stop "$work/data" fast
  rm -rf "$work"
}
trap cleanup EXIT

pg_port="$(free_port)"
pg_start "$work/data" "$pg_port" max_connections=100
db="postgres://postgres@127.0.0.1:${pg_port}/postgres"
psql_db=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres)
DATABASE_URL="$db" "$build/stripe-worker" migrate --platform >/dev/null
"${psql_db[@]}" -f supabase/seed.sql >/dev/null

http_port="$(free_port)"
DATABASE_URL="$db" STRIPE_WEBHOOK_SECRET="$secret" HOST=127.0.0.1 PORT="$http_port" \
  LOG_FORMAT=json RUST_LOG=warn DATABASE_POOL_SIZE="$pool" \
  "$build/stripe-worker" serve >"$out/worker.log" 2>&1 &
worker_pid=$!
url="http://127.0.0.1:${http_port}"
for _ in $(seq 100); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$url/readyz" >/dev/null

loadgen() { STRIPE_WEBHOOK_SECRET="$secret" "$build/stripe-worker-loadgen" --url "$url" "$@"; }

# 1. The SQL each kind of event costs, from the server's own log (a few events per mix).
"${psql_db[@]}" -c "alter system set log_statement = 'all'" -c "select pg_reload_conf()" >/dev/null
log_from=$(wc -l <"$work/data/server.log")
for mix in catalog purchase subscription duplicates; do
  loadgen --mix "$mix" --events 2 --concurrency 1 --run "cap${mix:0:3}" --products 1 >/dev/null
done
"${psql_db[@]}" -c "alter system reset log_statement" -c "select pg_reload_conf()" >/dev/null
# statements with their continuation lines and parameters, in order (one event per BEGIN..COMMIT)
tail -n +"$((log_from + 1))" "$work/data/server.log" | awk '
  /^[0-9][0-9][0-9][0-9]-/ { keep = ($0 ~ /(LOG:  (statement|execute)|DETAIL:  parameters)/) && ($0 !~ /system|reload/);
                 if (keep) { sub(/^.*(LOG|DETAIL):  /, ""); print } ; next }
  keep { print }' >"$out/captured.sql"
[[ -n "${BENCH_CAPTURE_ONLY:-}" ]] && { cp "$work/data/server.log" "$out/server-capture.log"; cat "$out/captured.sql"; exit 0; }

# 2. Wait for a quiet machine (shared), then warm up the pool.
load() { cut -d' ' -f1 /proc/loadavg; }
for _ in $(seq 20); do
  awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l > m) }' || break
  echo "load $(load) > $max_load, waiting 30 s ..." >&2; sleep 30
done
load_before="$(load)"
loadgen --mix catalog --events 1000 --concurrency "$conc" --run warm >/dev/null

# 3. The worker, mix by mix; peak RSS after each.
: >"$out/results.jsonl"
declare -A runs
run_mix() {
  local mix="$1" n="$2" line hwm
  runs[$mix]="${mix:0:3}$(date +%s)"
  # CPU per event (worker; PostgreSQL = postmaster and backends) over the timed phase only.
  line="$(loadgen --mix "$mix" --events "$n" --concurrency "$conc" --run "${runs[$mix]}" \
    --worker-pid "$worker_pid" --postmaster-pid "$(head -1 "$work/data/postmaster.pid")")"
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$worker_pid/status")"
  echo "${line%\}},\"worker_vmhwm_kib\":$hwm}" | tee -a "$out/results.jsonl" >&2
}
run_mix catalog "$n_catalog"
run_mix purchase "$n_purchase"
run_mix subscription "$n_sub"
run_mix duplicates "$n_dup"

# 4. The ceiling: pgbench sending the same statements per event (scripts/bench/ceiling-*.sql,
# written from target/bench/captured.sql), one transaction per event, same concurrency and
# database. A script's "events per run: K" converts its tx/s (script runs/s) to events/s.
: >"$out/pgbench.log"
declare -A ceiling pgcpu
# postmaster utime+stime+cutime+cstime plus its live children's utime+stime, in clock ticks
pg_ticks() {
  local pm t=0 p f
  pm="$(head -1 "$work/data/postmaster.pid")"
  read -r -a f <"/proc/$pm/stat"; t=$((f[13] + f[14] + f[15] + f[16]))
  for p in $(pgrep -P "$pm"); do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
for mix in catalog purchase subscription duplicates; do
  case $mix in
    catalog) n=$n_catalog ;; purchase) n=$n_purchase ;; subscription) n=$n_sub ;; duplicates) n=$n_dup ;;
  esac
  files=(); per=1
  for f in scripts/bench/ceiling-"$mix"*.sql; do
    files+=(-f "$f")
    per="$(grep -o 'events per run: [0-9]*' "$f" | grep -o '[0-9]*$')"
  done
  p0="$(pg_ticks)"
  tps="$("$bin/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U postgres -M prepared -c "$conc" -j 2 \
    -t $((n / conc / per)) -D run="${runs[$mix]}" -D nsub="$n_sub" -D ndup="$n_dup" "${files[@]}" postgres \
    2>&1 | tee -a "$out/pgbench.log" | awk '/^tps/ {print $3; exit}' || true)"
  ceiling[$mix]="$(awk -v t="$tps" -v k="$per" 'BEGIN { printf "%.1f", t * k }')"
  # PostgreSQL CPU per event under pgbench (backends that exit are counted by their parent's
  # cutime/cstime), to compare with the worker's run of the same mix.
  pgcpu[$mix]=$(( ($(pg_ticks) - p0) * 1000000 / $(getconf CLK_TCK) / n ))
  echo "pgbench $mix: ${ceiling[$mix]} events/s, PostgreSQL ${pgcpu[$mix]} µs CPU/event" >&2
done
# What the commit flush costs: the catalog ceiling again without waiting for it (diagnostic).
nosync="$(PGOPTIONS="-c synchronous_commit=off" "$bin/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U postgres \
  -M prepared -c "$conc" -j 2 -t $((n_catalog / conc)) -f scripts/bench/ceiling-catalog-product.sql \
  -f scripts/bench/ceiling-catalog-price.sql postgres 2>&1 | awk '/^tps/ {print $3; exit}' || true)"
load_after="$(load)"

# 5. The table.
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo
echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs ($cpu), $mem; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), fsync on;"
echo "1-min load before $load_before, after $load_after. Command: \`BENCH_CONCURRENCY=$conc BENCH_SCALE=$scale BENCH_POOL_SIZE=$pool scripts/bench.sh\`"
echo
echo "| mix | events | conc | events/s | p50 ms | p95 ms | p99 ms | max ms | non-2xx | errors | worker RSS MiB | worker CPU µs/event | PostgreSQL CPU µs/event | pgbench ceiling events/s | worker / ceiling |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r line; do
  python3 - "$line" "catalog=${ceiling[catalog]}" "purchase=${ceiling[purchase]}" \
    "subscription=${ceiling[subscription]}" "duplicates=${ceiling[duplicates]}" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ceil = dict(a.split("=", 1) for a in sys.argv[2:])
c = float(ceil.get(r["mix"]) or "nan")
print(f"| {r['mix']} | {r['events']} | {r['concurrency']} | {r['events_per_s']:.0f} | {r['p50_ms']:.1f} | "
      f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['non_2xx']} | {r['errors']} | "
      f"{r['worker_vmhwm_kib']/1024:.1f} | {r['worker_cpu_us_per_event']} | {r['pg_cpu_us_per_event']} | "
      f"{c:.0f} | {r['events_per_s']/c:.0%} |")
PY
done <"$out/results.jsonl"
echo
echo "PostgreSQL CPU µs/event under pgbench: catalog ${pgcpu[catalog]}, purchase ${pgcpu[purchase]}, subscription ${pgcpu[subscription]}, duplicates ${pgcpu[duplicates]}."
echo "Diagnostic: catalog ceiling with synchronous_commit=off (no wait for the WAL flush): ${nosync:-?} tx/s."
