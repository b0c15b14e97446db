#!/usr/bin/env python3
"""The engine's cost goals (issue 30) beside what this machine measures now,
each met or not, from one run of release-build benches (docs/PERFORMANCE.md,
"The engine's cost").

Usage: scripts/bench_goals.py   (BRAID=path/to/braid to pick the binary)

Every figure comes from `braid bench --json`, run here one after another:
ratios are taken within one run, as the machine is shared and noisy.
"""

import json
import os
import subprocess
import sys
import tempfile

BRAID = os.environ.get("BRAID", "target/release/braid")


def bench(*args):
    with tempfile.TemporaryDirectory() as state:
        out = subprocess.run([BRAID, "bench", "--json", "--state-dir", state, *args],
                             check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def load(loads, label, executor):
    return next(l for l in loads if l["load"] == label and l["executor"] == executor)


def row(goal, target, measured, met):
    """`met`: True, False, or None for a figure with no bound to meet."""
    verdict = {True: "met", False: "not met", None: "(measured)"}[met]
    print(f"| {goal} | {target} | {measured} | {verdict} |")


def main():
    ladder = bench("--mode", "ladder", "--executor", "both", "--concurrency", "20,100",
                   "--runs", "3000")["loads"]
    attempt = bench("--mode", "attempt", "--executor", "sandbox", "--runs", "2000")["attempt"]
    closed = bench("--mode", "serve", "--concurrency", "100", "--runs", "3000")[0]
    storm = bench("--mode", "serve", "--retry-storm", "--concurrency", "1000", "--runs", "3000")[0]
    bare = bench("--mode", "serve", "--retry-storm", "--concurrency", "1000", "--runs", "3000",
                 "--serve-arg=--admission-wait-ms=0")[0]

    native20, sandbox20 = load(ladder, "20 in flight", "native"), load(ladder, "20 in flight", "sandbox")
    sandbox100 = load(ladder, "100 in flight", "sandbox")
    noop = next(a for a in attempt if a["step"] == "noop")
    ratio = sandbox20["throughput_per_s"] / native20["throughput_per_s"]
    served = closed["steady_runs_per_s"] / sandbox100["throughput_per_s"]
    writes = native20["writes_per_run"]
    capacity = closed["steady_runs_per_s"]
    # A refusal's server CPU: what the storm without a wait cost beyond its runs.
    per_run_ms = closed["server_ms_per_run"]
    refusal_us = 1000.0 * (bare["server_ms_per_run"] * bare["ran"] - per_run_ms * bare["ran"]) \
        / max(bare["refused"], 1)

    print("| goal | target | measured | |")
    print("|---|---|---|---|")
    row("native baseline, journaled, zero latency, 20 in flight", ">= 2,500 runs/s",
        f"{native20['throughput_per_s']:.0f} runs/s", native20["throughput_per_s"] >= 2500)
    row("sandboxed / native, same load", ">= 0.8",
        f"{ratio:.2f} ({sandbox20['throughput_per_s']:.0f} / {native20['throughput_per_s']:.0f} runs/s)",
        ratio >= 0.8)
    row("`braid serve` from another process / in-process, 100 in flight", ">= 0.9x",
        f"{served:.2f}x ({closed['steady_runs_per_s']:.0f} / {sandbox100['throughput_per_s']:.0f} runs/s; "
        f"load generator {closed['client_cores']:.2f} cores, server {closed['server_cores']:.2f})",
        served >= 0.9)
    row("journal writes", "<= 1 per completed step + 2 per run (8 for 6 steps)",
        f"{writes['journal']:.2f} per run (+ {writes['claims']:.2f} claim writes)",
        writes["journal"] <= 8.0 + 0.05)
    row("a refusal (`503`) costs the server little CPU", "measured per refusal",
        f"{refusal_us:.0f} us of server CPU per refusal ({bare['refused']} refusals, "
        f"no admission wait)", None)
    row("retry storm: 1,000 clients resending at once on every 503", ">= 0.7x capacity",
        f"{storm['steady_runs_per_s'] / capacity:.2f}x ({storm['steady_runs_per_s']:.0f} / "
        f"{capacity:.0f} runs/s; without the admission wait "
        f"{bare['steady_runs_per_s'] / capacity:.2f}x)",
        storm["steady_runs_per_s"] >= 0.7 * capacity)
    row("noop attempt p50", "<= 5 us", f"{noop['p50_us']} us (p99 {noop['p99_us']} us)",
        noop["p50_us"] <= 5)
    map_rows()


def map_rows():
    """Issue 27: a map element costs no more than a step of a chain of the
    same length (both `noop`, 20 at once, journaled)."""
    sizes = (100, 1000, 10000)
    scaling = bench("--mode", "scaling", "--executor", "both", "--steps", "24",
                    "--payload-bytes", "100", "--map-elements", ",".join(map(str, sizes)),
                    "--runs", "200")["loads"]
    for ex in ("sandbox", "native"):
        chain = load(scaling, "24 steps, 100 B", ex)
        per_step = 1e6 / (chain["throughput_per_s"] * 24)
        per_element = {n: 1e6 / (load(scaling, f"map of {n}", ex)["throughput_per_s"] * n)
                       for n in sizes}
        shown = " / ".join(f"{per_element[n]:.0f}" for n in sizes)
        rss = load(scaling, f"map of {sizes[-1]}", ex)["peak_rss_mib"]
        row(f"a map element, {ex}", "<= a step of a chain",
            f"{shown} us per element at 100 / 1,000 / 10,000 elements vs {per_step:.0f} us "
            f"per step of a 24-step chain; peak RSS {rss:.0f} MiB",
            max(per_element.values()) <= per_step)


if __name__ == "__main__":
    sys.exit(main())
