#!/usr/bin/env bash
# Benchmark: the optimized worker (the `profiling` profile: release plus symbols and line tables,
# so perf can attribute time) against a throwaway PostgreSQL with default durability (fsync
# on, synchronous_commit on), driven by stripe-worker-loadgen, next to two pgbench ceilings:
# the statements the worker sends per event, and the minimal transaction per event (the event
# row and the upsert of the object it carries). Everything listens on 127.0.0.1, is bounded,
# and is stopped on exit (by PID / pg_ctl).
#
#   scripts/bench.sh                      # every mix at concurrency 16
#   BENCH_MIXES="catalog purchase" scripts/bench.sh
#   BENCH_ROWS=1000000 scripts/bench.sh   # with 1 M rows already in stripe_webhook_events
#   BENCH_GROWTH="0 1000000 5000000" scripts/bench.sh   # the growth curve and its plot
#   BENCH_WORKER=/path/to/stripe-worker scripts/bench.sh   # another build of the worker (A/B)
#
# Output: markdown tables on stdout (paste into BENCHMARKS.md); under target/bench/: raw JSON
# lines, the captured per-event SQL, pg_stat_statements' top statements and index use per mix.
# The growth mode also writes scripts/bench/growth.tsv and scripts/bench/growth.png.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/pg.sh

conc="${BENCH_CONCURRENCY:-16}"
scale="${BENCH_SCALE:-1}"
pool="${BENCH_POOL_SIZE:-16}"
max_load="${BENCH_MAX_LOAD:-1.5}"
all_mixes="catalog purchase subscription duplicates product subscription-updated intent-mapped intent-unknown charge"
mixes="${BENCH_MIXES:-$all_mixes}"
ceilings="${BENCH_CEILINGS:-1}"
growth="${BENCH_GROWTH:-}"
rows="${BENCH_ROWS:-0}"
secret="whsec_bench_only_not_a_real_secret"
build="${CARGO_TARGET_DIR:-target}/profiling"
out="${CARGO_TARGET_DIR:-target}/bench"; mkdir -p "$out"

events_of() {
  case $1 in
    catalog|product) echo $((20000 * scale)) ;;
    purchase|duplicates|intent-unknown) echo $((10000 * scale)) ;;
    intent-mapped) echo $((6000 * scale)) ;;
    charge) echo $((3000 * scale)) ;;
    subscription) echo $((6000 * scale)) ;;
    subscription-updated) echo $((4000 * scale)) ;;
  esac
}

ensure_postgres
if [[ -z "${BENCH_WORKER:-}" ]]; then
  cargo build --profile profiling --locked --bins --quiet
fi
worker_bin="${BENCH_WORKER:-$build/stripe-worker}"
loadgen_bin="$build/stripe-worker-loadgen"
bin="$(pg_bindir)"

work="$(mktemp -d)"
worker_pid=""
stop_worker() {
  if [[ -n "$worker_pid" ]] && kill -0 "$worker_pid" 2>/dev/null; then
    kill -TERM "$worker_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$worker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$worker_pid" 2>/dev/null || true
  fi
  worker_pid=""
}
cleanup() {
  stop_worker
  pg_stop "$work/data" fast
  rm -rf "$work"
}
trap cleanup EXIT

pg_port="$(free_port)"
pg_start "$work/data" "$pg_port" max_connections=100 shared_preload_libraries=pg_stat_statements \
  pg_stat_statements.track="${BENCH_PGSS_TRACK:-top}"
db="postgres://postgres@127.0.0.1:${pg_port}/postgres"
psql_db=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres)
DATABASE_URL="$db" "$worker_bin" migrate --platform >/dev/null
"${psql_db[@]}" -f supabase/seed.sql >/dev/null
"${psql_db[@]}" -c "create extension if not exists pg_stat_statements" >/dev/null
postmaster_pid() { head -1 "$work/data/postmaster.pid"; }

start_worker() {
  http_port="$(free_port)"
  DATABASE_URL="$db" STRIPE_WEBHOOK_SECRET="$secret" HOST=127.0.0.1 PORT="$http_port" \
    LOG_FORMAT=json RUST_LOG=warn DATABASE_POOL_SIZE="$pool" \
    "$worker_bin" serve >>"$out/worker.log" 2>&1 &
  worker_pid=$!
  url="http://127.0.0.1:${http_port}"
  for _ in $(seq 100); do curl -fsS "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "$url/readyz" >/dev/null
}
: >"$out/worker.log"
start_worker

loadgen() { STRIPE_WEBHOOK_SECRET="$secret" "$loadgen_bin" --url "$url" "$@"; }

# Fills stripe_webhook_events up to $1 rows of years of history (bench/fill_events.sql):
# the worker is stopped meanwhile, the table vacuumed and analyzed after.
fill_to() {
  local target="$1" have
  have="$("${psql_db[@]}" -At -c "select count(*) from public.stripe_webhook_events")"
  (( target > have )) || return 0
  echo "filling stripe_webhook_events: $have -> $target rows ..." >&2
  stop_worker
  "${psql_db[@]}" -v rows="$((target - have))" -f scripts/bench/fill_events.sql >/dev/null
  "${psql_db[@]}" -c "vacuum (analyze) public.stripe_webhook_events" -c checkpoint >/dev/null
  start_worker
}
fill_to "$rows"

# 1. The SQL each kind of event costs, from the server's own log (a few events per mix).
"${psql_db[@]}" -c "alter system set log_statement = 'all'" -c "select pg_reload_conf()" >/dev/null
log_from=$(wc -l <"$work/data/server.log")
for mix in $mixes; do
  loadgen --mix "$mix" --events 2 --concurrency 1 --run "cap${mix:0:3}$RANDOM" --products 1 >/dev/null
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
wait_quiet() {
  for _ in $(seq 20); do
    awk -v l="$(load)" -v m="$max_load" 'BEGIN { exit !(l > m) }' || break
    echo "load $(load) > $max_load, waiting 30 s ..." >&2; sleep 30
  done
}
wait_quiet
load_before="$(load)"
loadgen --mix catalog --events 1000 --concurrency "$conc" --run "warm$RANDOM" >/dev/null

# FPI and record bytes in a WAL range (pg_waldump --stats): "records fpi combined".
wal_split() {
  # a range without a whole record (duplicates write next to nothing) makes pg_waldump fail
  { _as_pg_owner "$bin/pg_waldump" --stats -p "$work/data/pg_wal" -s "$1" -e "$2" 2>/dev/null || true; } |
    awk '/^Total/ { gsub(/\[[^]]*\]/, ""); print $3, $4, $5; exit }'
}

top_statements() { # mix events
  "${psql_db[@]}" -At -F ' | ' -v events="$2" <<'SQL'
select round(calls::numeric / :events, 2), round((100 * total_exec_time / sum(total_exec_time) over ())::numeric, 1) || '%',
       round(mean_exec_time::numeric * 1000), round(total_exec_time::numeric * 1000 / :events),
       '`' || regexp_replace(left(regexp_replace(query, '\s+', ' ', 'g'), 110), '\|', '/', 'g') || '`'
from pg_stat_statements
where dbid = (select oid from pg_database where datname = current_database())
  and query not like '%pg_stat_statements%' and query not like '%pg_stat_wal%'
order by total_exec_time desc limit 12
SQL
}

index_scans() { # the event log's indexes: scans so far
  "${psql_db[@]}" -At -F ' ' -c "select indexrelname, idx_scan from pg_stat_user_indexes
    where relname = 'stripe_webhook_events' order by indexrelname"
}

# 3. The worker, mix by mix; peak RSS after each. Each timed phase starts right after an
# ANALYZE (the set-up grows tables from empty in seconds, faster than autovacuum re-reads
# them: the plans are those of a database whose statistics describe its rows) and a
# CHECKPOINT (same state for every mix and every run: the first change of a page after a
# checkpoint writes its full image), with pg_stat_statements reset.
# The two payment mixes with no set-up of their own (the catalog's tables are filled by the
# warm-up) would otherwise meet their tables empty at that ANALYZE, and the plans made then read
# every row until autovacuum analyzes again: they start in a shop that has sold before, with
# the whole Checkout purchases of earlier buyers.
history_of() {
  case $1 in purchase|intent-unknown) echo "${BENCH_HISTORY:-1000}" ;; *) echo 0 ;; esac
}
declare -A runs
run_mix() { # mix rows-label
  local mix="$1" n line hwm split
  n="$(events_of "$mix")"
  runs[$mix]="${mix:0:3}$(date +%s)$RANDOM"
  index_scans >"$out/indexes-before.txt"
  line="$(loadgen --mix "$mix" --events "$n" --concurrency "$conc" --run "${runs[$mix]}" \
    --worker-pid "$worker_pid" --postmaster-pid "$(postmaster_pid)" \
    --database-url "$db" --analyze --checkpoint --reset-statements --history "$(history_of "$mix")")"
  hwm="$(awk '/VmHWM/ {print $2}' "/proc/$worker_pid/status")"
  split="$(wal_split "$(jq -r .wal_from <<<"$line")" "$(jq -r .wal_to <<<"$line")")"
  read -r rec fpi comb <<<"${split:-0 0 0}"
  line="$(jq -c --argjson hwm "$hwm" --argjson rec "$rec" --argjson fpi "$fpi" --arg rows "$2" \
    '. + {worker_vmhwm_kib: $hwm, wal_record_bytes_per_event: ($rec / .events),
          wal_fpi_bytes_per_event: ($fpi / .events), table_rows: ($rows | tonumber)}' <<<"$line")"
  echo "$line" | tee -a "$out/results.jsonl" >&2
  { echo "### $mix ($n events, $2 rows before): calls/event | share | mean µs | µs/event | statement"
    top_statements "$mix" "$n"; echo; } >>"$out/statements.md"
  { echo "### $mix: index scans during the run"
    join -a2 "$out/indexes-before.txt" <(index_scans) | awk '{ d = $3 - $2; if (NF == 2) d = $2; print $1, d }'
    echo; } >>"$out/indexes.md"
}

command -v jq >/dev/null || apt_install jq
: >"$out/results.jsonl"; : >"$out/statements.md"; : >"$out/indexes.md"

if [[ -n "$growth" ]]; then
  # 4'. Growth: the mixes at each table size, then the plot.
  for size in $growth; do
    fill_to "$size"
    wait_quiet
    for mix in $mixes; do run_mix "$mix" "$size"; done
  done
  load_after="$(load)"
  python3 scripts/bench/plot_growth.py "$out/results.jsonl" scripts/bench/growth.tsv scripts/bench/growth.png
  echo "1-min load before $load_before, after $load_after; plot: scripts/bench/growth.png"
  column -t scripts/bench/growth.tsv
  exit 0
fi

for mix in $mixes; do run_mix "$mix" "$rows"; done

# 4. The ceilings: pgbench at the same concurrency against the same database, one transaction
# per event. "replayed": the statements the worker sends (scripts/bench/ceiling-<mix>*.sql,
# written from target/bench/captured.sql); "minimal": the event row and the upsert of the
# object the event carries (scripts/bench/minimal-<mix>*.sql; for the purchase, the renewal and
# the payment intents, every row the flow leaves, written once, one statement per event, without
# triggers). A script's "events per run: K" converts its tx/s (script runs/s) to events/s.
: >"$out/pgbench.log"
declare -A ceiling minimal pgcpu
# postmaster utime+stime+cutime+cstime plus its live children's utime+stime, in clock ticks
pg_ticks() {
  local pm t=0 p f
  pm="$(postmaster_pid)"
  read -r -a f <"/proc/$pm/stat"; t=$((f[13] + f[14] + f[15] + f[16]))
  for p in $(pgrep -P "$pm"); do
    read -r -a f <"/proc/$p/stat" 2>/dev/null || continue
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
pgbench_rate() { # kind mix -> events/s (empty without a script)
  local kind="$1" mix="$2" n files=() per=1 f tps other opts
  n="$(events_of "$mix")"
  for f in scripts/bench/"$kind"-"$mix".sql scripts/bench/"$kind"-"$mix"-*.sql; do
    [[ -f "$f" ]] || continue
    # a part of this mix (catalog-price), not another mix's file (subscription-updated)
    other="${f#scripts/bench/"$kind"-}"; other="${other%.sql}"
    [[ "$other" != "$mix" && " $all_mixes " == *" $other "* ]] && continue
    files+=(-f "$f")
    per="$(grep -o 'events per run: [0-9]*' "$f" | grep -o '[0-9]*$')"
  done
  (( ${#files[@]} )) || return 0
  # A script may name connection options ("-- pgbench: PGOPTIONS=…"): set per connection, as
  # a SET inside the transaction would discard every cached plan each time.
  opts="$(grep -ho '^-- pgbench: PGOPTIONS=.*' "${files[@]:1:1}" | sed 's/^-- pgbench: PGOPTIONS=//' || true)"
  "${psql_db[@]}" -c checkpoint >/dev/null
  tps="$(PGOPTIONS="$opts" "$bin/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U postgres -M prepared -c "$conc" -j 2 \
    -t $((n / conc / per)) -D run="${runs[$mix]}" -D nsub="${nsub:-1}" -D ndup="${nevents:-1}" -D nbuy="${nbuy:-1}" "${files[@]}" postgres \
    2>&1 | tee -a "$out/pgbench.log" | awk '/^tps/ {print $3; exit}' || true)"
  awk -v t="$tps" -v k="$per" 'BEGIN { if (t != "") printf "%.1f", t * k }'
}
if [[ "$ceilings" == 1 ]]; then
  stop_worker  # the worker's idle pool must not count in PostgreSQL's CPU
  # The subscription ceilings renew subscribers the worker provisioned, the mapped intent's
  # minimal one pays for buyers it provisioned, and the duplicates ceiling probes stored
  # events: numbered for pgbench, only for the mixes that run.
  if [[ " $mixes " == *" subscription-updated "* || " $mixes " == *" subscription "* ]]; then
    "${psql_db[@]}" -c "drop table if exists bench_subscribers" -c "create table bench_subscribers as
      select (row_number() over (order by id) - 1)::int as n, id as sid, stripe_customer_id as cid
      from public.subscriptions where stripe_customer_id is not null" \
      -c "alter table bench_subscribers add primary key (n)" >/dev/null
    nsub="$("${psql_db[@]}" -At -c "select greatest(count(*), 1) from bench_subscribers")"
  fi
  if [[ " $mixes " == *" intent-mapped "* ]]; then
    "${psql_db[@]}" -c "drop table if exists bench_buyers" -c "create table bench_buyers as
      select (row_number() over (order by a.id) - 1)::int as n, a.user_id as uid, a.id as aid,
             a.account_number as anum, c.stripe_customer_id as cid
      from public.accounts a join public.customers c on c.id = a.user_id
      where c.stripe_customer_id is not null" \
      -c "alter table bench_buyers add primary key (n)" >/dev/null
    nbuy="$("${psql_db[@]}" -At -c "select greatest(count(*), 1) from bench_buyers")"
  fi
  if [[ " $mixes " == *" duplicates "* ]]; then
    "${psql_db[@]}" -c "drop table if exists bench_events" -c "create table bench_events as
      select (row_number() over (order by stripe_event_id) - 1)::int as n, stripe_event_id
      from public.stripe_webhook_events" -c "alter table bench_events add primary key (n)" >/dev/null
    nevents="$("${psql_db[@]}" -At -c "select greatest(count(*), 1) from bench_events")"
  fi
  for mix in $mixes; do
    p0="$(pg_ticks)"
    ceiling[$mix]="$(pgbench_rate ceiling "$mix")"
    if [[ -n "${ceiling[$mix]}" ]]; then
      pgcpu[$mix]=$(( ($(pg_ticks) - p0) * 1000000 / $(getconf CLK_TCK) / $(events_of "$mix") ))
    fi
    minimal[$mix]="$(pgbench_rate minimal "$mix")"
    echo "pgbench $mix: replayed ${ceiling[$mix]:-—} events/s (PostgreSQL ${pgcpu[$mix]:-—} µs CPU/event), minimal ${minimal[$mix]:-—} events/s" >&2
  done
fi
load_after="$(load)"

# 5. The tables.
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"
echo
echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(nproc) CPUs ($cpu), $mem; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'), fsync on, synchronous_commit on;"
echo "commit $commit; 1-min load before $load_before, after $load_after; $rows rows in stripe_webhook_events before."
echo "Command: \`BENCH_CONCURRENCY=$conc BENCH_SCALE=$scale BENCH_POOL_SIZE=$pool BENCH_MIXES=\"$mixes\" scripts/bench.sh\`"
echo
echo "| mix | events | events/s | p50 ms | p99 ms | max ms | non-2xx | answers | worker RSS MiB | worker CPU µs/ev | PG CPU µs/ev | WAL B/ev | FPI B/ev | replayed ceiling ev/s | worker / replayed | minimal ceiling ev/s | worker / minimal |"
echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
known=""
# keyed as the load generator names the mix in its results (without hyphens)
for m in "${!ceiling[@]}"; do known+=" c:${m//-/}=${ceiling[$m]}"; done
for m in "${!minimal[@]}"; do known+=" m:${m//-/}=${minimal[$m]}"; done
while read -r line; do
  python3 - "$line" "$known" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
known = dict(a.split("=", 1) for arg in sys.argv[2:] for a in arg.split() if "=" in a)
def rate(kind):
    v = known.get(f"{kind}:{r['mix']}", "")
    return float(v) if v else None
c, m = rate("c"), rate("m")
eps = r["events_per_s"]
answers = ", ".join(f"{k} {v}" for k, v in sorted(r["answers"].items()))
ceil = "— | —" if c is None else f"{c:.0f} | {eps / c:.0%}"
mini = "— | —" if m is None else f"{m:.0f} | {eps / m:.0%}"
print(f"| {r['mix']} | {r['events']} | {eps:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
      f"{r['max_ms']:.1f} | {r['non_2xx'] + r['errors']} | {answers} | {r['worker_vmhwm_kib']/1024:.1f} | "
      f"{r['worker_cpu_us_per_event']} | {r['pg_cpu_us_per_event']} | {r['wal_bytes_per_event']:.0f} | "
      f"{r['wal_fpi_bytes_per_event']:.0f} | {ceil} | {mini} |")
PY
done <"$out/results.jsonl"
echo
if [[ "$ceilings" == 1 ]]; then
  echo -n "PostgreSQL CPU µs/event under the replayed ceiling:"
  for mix in $mixes; do [[ -n "${pgcpu[$mix]:-}" ]] && echo -n " $mix ${pgcpu[$mix]};"; done
  echo
fi
echo "Top statements per mix: $out/statements.md; index scans per mix: $out/indexes.md."
