#!/usr/bin/env python3
"""Several braid hosts on one PostgreSQL database, and that database's own
write ceiling (docs/scaling.md, "What adding hosts adds").

Usage: scripts/bench_hosts.py SERVER_URL [HOSTS ...]

SERVER_URL is a postgres:// URL of a test server (its database part is
replaced by fresh databases). For each count in HOSTS (default 1 2 4), that
many `braid bench` processes (each a host: its own scheduler, native
executor, HTTP client and sample API with the seed's latencies) run the
reference workflow at once, each with IN_FLIGHT runs in flight (default
100) for RUNS runs (default 3000), all journaling and claiming in one
database. Printed: runs/s of all hosts together (all runs over the longest
host's wall time), durable writes per run, and CPU over the same window:
the hosts' own (their rusage) and the rest of the machine's (the database,
mostly: /proc/stat busy time minus the hosts'). Then pgbench's one-row
INSERT transactions per second at 32 clients on the same server: the
database's write ceiling here.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

BRAID = os.environ.get("BRAID", "target/release/braid")
RUNS = int(os.environ.get("RUNS", "3000"))
IN_FLIGHT = int(os.environ.get("IN_FLIGHT", "100"))


def busy_seconds():
    """CPU seconds the whole machine has spent busy (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def psql(url, sql):
    subprocess.run(["psql", url, "-qc", sql], check=True, stdout=subprocess.DEVNULL)


def hosts_run(server, n, tag):
    db = f"braid_hosts_{tag}_{n}_{os.getpid()}"
    psql(server + "/postgres", f"CREATE DATABASE {db}")
    url = f"{server}/{db}"
    # Create the schema once, before the hosts race to.
    subprocess.run([BRAID, "runs", "--store", url, "--json"], check=True, stdout=subprocess.DEVNULL)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, t0 = busy_seconds(), time.monotonic()
    with tempfile.TemporaryDirectory() as state:
        procs = [
            subprocess.Popen(
                [BRAID, "bench", "--mode", "ladder", "--executor", "native", "--latency", "seed",
                 "--concurrency", str(IN_FLIGHT), "--runs", str(RUNS), "--json",
                 "--store", url, "--state-dir", os.path.join(state, str(i))],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for i in range(n)
        ]
        outs = [p.communicate()[0] for p in procs]
    wall, busy = time.monotonic() - t0, busy_seconds() - busy0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    hosts_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if any(p.returncode for p in procs):
        sys.exit(f"a host failed: {[p.returncode for p in procs]}")
    loads = [json.loads(o)["loads"][0] for o in outs]
    runs = sum(l["runs"] for l in loads)
    ok = sum(l["succeeded"] for l in loads)
    longest = max(l["elapsed_s"] for l in loads)
    writes = sum(l["writes_per_run"]["journal"] * l["runs"] for l in loads) / runs
    claims = sum(l["writes_per_run"]["claims"] * l["runs"] for l in loads) / runs
    rest = max(busy - hosts_cpu, 0.0)
    print(f"| {n} | {runs} | {100.0 * ok / runs:.1f}% | {runs / longest:.0f} | "
          f"{runs / longest / n:.0f} | {writes:.2f} + {claims:.2f} | "
          f"{(writes + claims) * runs / longest:.0f} | {hosts_cpu / wall:.2f} | {rest / wall:.2f} |")
    psql(server + "/postgres", f"DROP DATABASE {db} WITH (FORCE)")


def write_ceiling(server):
    db = f"braid_ceiling_{os.getpid()}"
    psql(server + "/postgres", f"CREATE DATABASE {db}")
    url = f"{server}/{db}"
    psql(url, "CREATE TABLE t (id bigserial PRIMARY KEY, at bigint, entry text)")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        # About a journal entry's size (one completed step, ~700 bytes).
        f.write("INSERT INTO t (at, entry) VALUES (1, repeat('x', 700));\n")
        script = f.name
    pgbench = next(
        (os.path.join(d, "pgbench") for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True)
         for d in [f"/usr/lib/postgresql/{d}/bin"] if os.path.exists(os.path.join(d, "pgbench"))),
        "pgbench")
    out = subprocess.run([pgbench, "-n", "-c", "32", "-j", "2", "-T", "10", "-f", script, url],
                         check=True, capture_output=True, text=True).stdout
    os.unlink(script)
    tps = next(l for l in out.splitlines() if l.startswith("tps"))
    print(f"\npgbench, one-row INSERT (~700 bytes) per transaction, 32 clients, 10 s: {tps}")
    psql(server + "/postgres", f"DROP DATABASE {db} WITH (FORCE)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    server = sys.argv[1].rsplit("/", 1)[0]
    counts = [int(a) for a in sys.argv[2:]] or [1, 2, 4]
    print(f"{IN_FLIGHT} runs in flight per host, {RUNS} runs per host, seed latencies, native executor\n")
    print("| hosts | runs | ok | runs/s, all hosts | runs/s per host | writes/run (journal + claims) "
          "| database writes/s | hosts' CPU (cores) | rest of the machine's CPU (cores) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        hosts_run(server, n, "h")
    write_ceiling(server)


if __name__ == "__main__":
    main()
