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
  echo; echo "### Per step attempt"
  $BRAID bench --mode attempt --executor sandbox --runs 2000
} 2>&1 | tee "$out/tables.md"
