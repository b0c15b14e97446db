#!/usr/bin/env bash
# The standard benchmark suite (`make bench`): prints docs/PERFORMANCE.md-ready
# tables, and keeps them in target/bench/tables.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-target/release/braid}
# Step-level warnings (retries, cancellations under overload) would drown the tables.
export BRAID_LOG=${BRAID_LOG:-error}
out=target/bench
mkdir -p "$out"

# `braid serve` from outside (another process, over HTTP), beside the
# in-process engine in the same run. BRAID_BASELINE=path/to/braid adds the
# same loads against another build (e.g. an older main) for a ratio.
serve_tables() {
  echo; echo "### braid serve from outside vs in-process (zero-latency API, closed loop)"
  echo
  $BRAID bench --mode serve --concurrency 1,100,1000 --runs 6000
  if [ -n "${BRAID_BASELINE:-}" ]; then
    echo; $BRAID bench --mode serve --server "$BRAID_BASELINE" --concurrency 1,100,1000 --runs 6000
  fi
  echo; $BRAID bench --mode ladder --executor sandbox --concurrency 1,100,1000 --runs 3000
  echo; echo "### braid serve, open loop at capacity (measured first) and at twice it (30 s each)"
  echo
  $BRAID bench --mode serve --rate-of-capacity 1,2 --duration-s 30
  echo; echo "### braid serve, durability machine vs process"
  echo
  for d in machine process; do
    $BRAID bench --mode serve --concurrency 1,100 --runs 3000 --serve-arg=--durability=$d; echo
  done
  # Retention under load: 6,000 runs kept to the newest 1,000 with a prune
  # every 5 s (about 5,000 runs deleted while runs go on), beside no prune.
  echo "### braid serve while pruning: --retain-runs 1000 --prune-interval-s 5 vs not pruning"
  echo
  $BRAID bench --mode serve --concurrency 100 --runs 6000; echo
  $BRAID bench --mode serve --concurrency 100 --runs 6000 \
    --serve-arg=--retain-runs=1000 --serve-arg=--prune-interval-s=5; echo
  echo "### braid serve's memory after a 30 s burst at capacity"
  echo
  $BRAID bench --mode serve-memory --duration-s 30 --idle-s 60
}
# The same tiny step in each language: a `braid new step` project (greets,
# logs, emits an event, JSON in and out; no HTTP call), built cold (a fresh
# project; the package managers' download caches as they are), then its
# size, first and cached load, and per-attempt cost.
language_table() {
  echo "### The same tiny step in each language (\`braid new step\`, no HTTP call)"
  echo
  echo "| language | cold build of a new project | component | first load | cached load (median of 3) | per attempt p50 | p99 |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  local root; root=$(mktemp -d)
  for lang in rust python js c; do
    local name=tiny_$lang dir=$root/tiny_$lang cache=$root/cache-$lang
    $BRAID new step "$name" --lang "$lang" --dir "$dir" > /dev/null
    local t0 t1; t0=$(date +%s%N)
    make -C "$dir" BRAID="$(realpath "$BRAID")" > "$root/make-$lang.log" 2>&1 || { echo "make failed for $lang:" >&2; tail -20 "$root/make-$lang.log" >&2; return 1; }
    t1=$(date +%s%N)
    load() { $BRAID inspect "$dir/$name.wasm" --json --cache-dir "$cache" --state-dir "$cache" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["load_ms"], d["from_cache"], d["size_bytes"])'; }
    local first first_cached size cached
    read -r first first_cached size < <(load)
    [ "$first_cached" = False ] || echo "unexpected: first load came from the cache" >&2
    cached=$(for _ in 1 2 3; do load | cut -d' ' -f1; done | sort -g | sed -n 2p)
    local p50 p99
    read -r p50 p99 < <($BRAID bench --workflow "$dir/workflow.toml" --mode attempt --executor sandbox --runs 1000 \
      --time-step "$name" --attempt-input '{"name": "bench"}' --cache-dir "$cache" --state-dir "$cache" --json \
      | python3 -c 'import json,sys; a=json.load(sys.stdin)["attempt"][0]; print(a["p50_us"], a["p99_us"])')
    printf '| %s | %.0f s | %s | %.0f ms | %.1f ms | %s us | %s us |\n' "$lang" "$(( (t1 - t0) / 1000000 ))e-3" \
      "$(python3 -c "s=$size; print(f'{s/1e6:.1f} MB' if s >= 1e6 else f'{s/1e3:.0f} KB')")" "$first" "$cached" "$p50" "$p99"
  done
  rm -rf "$root"
}
# The run viewer in headless Chromium (Debian's chromium, as `make test`
# installs it): the page of a run with 50 attempts and 1,000 events beside a
# one-step run's, from tests/viewer.rs's `bench_run_page_render` (an ignored
# test: it drives Chromium over DevTools), on the release build.
viewer_table() {
  echo "### The run viewer: a run's page in headless Chromium (medians of 7 loads, ms from navigation start)"
  echo
  ${CARGO:-cargo} test --release --quiet --test integration -- --ignored --nocapture --test-threads 1 \
    viewer::bench_run_page_render 2>/dev/null | grep -E '^(\||big / small)'
}
if [ "${1:-}" = languages ]; then
  language_table
  exit
fi
if [ "${1:-}" = viewer ]; then
  viewer_table
  exit
fi
{
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); braid $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo; echo "### Orchestration cost: zero-latency API, sequential"
  $BRAID bench --latency zero --mode sequential --runs 300
  echo; echo "### Concurrency ladder, zero-latency API"
  $BRAID bench --latency zero --mode ladder --concurrency 1,2,5,10,20,100,1000 --runs 300
  echo; echo "### Concurrency ladder, zero-latency API, journal off"
  $BRAID bench --latency zero --mode ladder --concurrency 1,20,100 --runs 300 --no-journal
  echo; echo "### Seed latencies (auth 33 ms, profile 28 ms, permissions 35 ms)"
  $BRAID bench --latency seed --mode ladder --concurrency 1,20,100,1000 --runs 200
  echo; echo "### Sustained open-loop rate, seed latencies (latency from the scheduled start)"
  $BRAID bench --latency seed --mode rate --rate 5,15,30,300 --duration-s 5
  echo; echo "### 10,000 runs in flight (100 ms per API call)"
  $BRAID bench --latency-ms 100 --mode ladder --concurrency 10000 --runs 10000
  echo; echo "### Cost vs steps and payload size (chains of \`noop\`, 20 in flight, zero-latency, journal on)"
  $BRAID bench --mode scaling --runs 200
  echo; echo "### Cost vs steps and payload size, journal off"
  $BRAID bench --mode scaling --runs 200 --no-journal
  echo; echo "### Resuming 1,000 runs in flight after their host is dropped (zero-latency API)"
  echo
  $BRAID bench --mode resume --runs 1000
  echo; echo "### Runs that wait: parked, signalled and woken; timers all due at once woken by a fresh host"
  echo
  $BRAID bench --mode waiting --runs 10000
  $BRAID bench --mode waiting --runs 100000 | tail -1
  echo; echo "### Per step attempt"
  $BRAID bench --mode attempt --executor sandbox --runs 2000
  echo; echo "### Component load: first (compile) vs cached (braid inspect, compile + check + pre-instantiate)"
  echo
  echo "| component | language | size | first load | cached load (median of 3) |"
  echo "| --- | --- | ---: | ---: | ---: |"
  for c in authenticate:Rust claim_work_c:C validate_access_py:Python fetch_profile_js:"JavaScript (componentize-js)" policy_rbac_js:"JavaScript (componentize-qjs)"; do
    name=${c%%:*}; lang=${c#*:}; cache=$(mktemp -d)
    load() { $BRAID inspect "target/components/$name.wasm" --json --cache-dir "$cache" --state-dir "$cache" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["load_ms"], d["from_cache"], d["size_bytes"] / 1e6)'; }
    read -r first first_cached size < <(load)
    cached=$(for _ in 1 2 3; do load | cut -d' ' -f1; done | sort -g | sed -n 2p)
    [ "$first_cached" = False ] || echo "unexpected: first load came from the cache" >&2
    printf '| %s | %s | %.1f MB | %.0f ms | %.1f ms |\n' "$name" "$lang" "$size" "$first" "$cached"
    rm -rf "$cache"
  done
  echo; language_table
  echo; echo "### Process start to first completed run (warm compiled-component cache, zero-latency API)"
  echo
  rm -f "$out/api.addr"   # a stale file from an earlier run would name a dead port
  $BRAID sample-api --listen 127.0.0.1:0 --latency-ms 0 --addr-file "$out/api.addr" > /dev/null & api=$!
  trap 'kill $api 2>/dev/null' EXIT
  for _ in $(seq 100); do [ -s "$out/api.addr" ] && break; sleep 0.05; done
  input() { echo "{\"api_base\": \"http://$(cat "$out/api.addr")\", \"user_id\": \"u-100\", \"work_item\": \"start-$1-$RANDOM\"}"; }
  $BRAID run workflows/api-orchestration.toml --input "$(input warm)" > /dev/null   # fills the cache
  for i in 1 2 3 4 5; do
    t0=$(date +%s%N); $BRAID run workflows/api-orchestration.toml --input "$(input "$i")" > /dev/null; t1=$(date +%s%N)
    echo "- run $i: $(( (t1 - t0) / 1000000 )) ms"
  done
  serve_tables
  echo; viewer_table
  echo; echo "### Claim store: SQLite (this machine's disk, WAL, --durability machine: synchronous=FULL) vs PostgreSQL (local server, fsync on)"
  echo
  echo "Uncontended (100,000 items), then contended (16 items: most calls are conflicts)."
  echo
  pg=$(BRAID_TEST_PG_PORT=25434 BRAID_TEST_PG_FSYNC=on scripts/test-postgres.sh)
  trap 'kill $api 2>/dev/null; BRAID_TEST_PG_PORT=25434 scripts/test-postgres.sh stop' EXIT
  bench_db="braid_bench_$RANDOM"
  psql "$pg" -qc "CREATE DATABASE $bench_db"
  for store in sqlite "${pg%/*}/$bench_db"; do
    $BRAID bench --mode claims --store "$store" --concurrency 1,8,32 --runs 4000
    $BRAID bench --mode claims --store "$store" --concurrency 32 --runs 4000 --items 16
  done
  echo; echo "### The engine's cost: goals (issue 30)"
  echo
  BRAID=$BRAID python3 scripts/bench_goals.py
  echo; echo "### Several hosts on one PostgreSQL (fsync on), and its write ceiling"
  echo
  BRAID=$BRAID IN_FLIGHT=20 RUNS=1500 python3 scripts/bench_hosts.py "$pg" 1 2 4
} 2>&1 | tee "$out/tables.md"
