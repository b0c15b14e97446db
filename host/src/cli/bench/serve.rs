//! `braid bench --mode serve` and `--mode serve-memory`: `braid serve`
//! driven from outside (see [`braid::bench::serve`]); prints the tables.

use super::{BenchArgs, BenchMode};
use crate::cli::{Exit, print_json};
use braid::bench::serve::{CAPACITY_SHARE, ServeBench, ServeLoad, ServeResult, ServeTarget};
use std::time::Duration;

/// Runs of the closed loop that measures capacity (100 clients): long
/// enough for a steady rate of several seconds.
const PROBE_RUNS: usize = 3000;

pub async fn exec(args: &BenchArgs) -> Result<u8, Exit> {
    let (latencies, latency_label) = args.latencies();
    let braid = match &args.server {
        Some(path) => path.clone(),
        None => std::env::current_exe().map_err(|e| Exit(2, e.into()))?,
    };
    let target = ServeTarget {
        braid: braid.clone(),
        workflow: args.workflow.clone(),
        cache_dir: args.state.cache_dir(),
        extra_args: args.serve_args.clone(),
        latencies,
    };
    let bench = ServeBench::start(&target)
        .await
        .map_err(super::suite_exit)?;
    // Connections opened and code paths warmed before anything is measured.
    bench
        .drive(ServeLoad::Closed {
            in_flight: 20,
            runs: 200,
        })
        .await;
    let duration = Duration::from_secs_f64(args.duration_s);
    let server = format!(
        "{}{}",
        braid.display(),
        if args.serve_args.is_empty() {
            String::new()
        } else {
            format!(" {}", args.serve_args.join(" "))
        }
    );
    // Rates given as multiples of capacity are measured against this server,
    // now: a fixed rate is over capacity on a busy machine and under it on
    // an idle one.
    let multiples = match (&args.rate_of_capacity[..], &args.rate[..], args.mode) {
        ([], [], BenchMode::ServeMemory) => vec![CAPACITY_SHARE],
        (given, _, _) => given.to_vec(),
    };
    let fresh_mib = bench.server_rss_mib();
    let mut rates = args.rate.clone();
    if !multiples.is_empty() {
        let probe = bench
            .drive(ServeLoad::Closed {
                in_flight: 100,
                runs: args.runs.max(PROBE_RUNS),
            })
            .await;
        let capacity = probe.steady_runs_per_s;
        if !args.json {
            println!(
                "capacity: {capacity:.0} runs/s (steady, 100 clients, closed loop); rates at {}x of it",
                multiples
                    .iter()
                    .map(f64::to_string)
                    .collect::<Vec<_>>()
                    .join("x, ")
            );
        }
        rates.extend(multiples.iter().map(|m| (capacity * m).round().max(1.0)));
    }
    let exit = if args.mode == BenchMode::ServeMemory {
        let rate = rates.first().copied().unwrap_or(1.0);
        let m = bench
            .memory(rate, duration, Duration::from_secs_f64(args.idle_s))
            .await;
        if args.json {
            print_json(&m)?;
        } else {
            println!("server: {server}; API latency: {latency_label}\n");
            println!(
                "| burst | runs/s | refused | RSS fresh | RSS before | peak | idle after | back within 1.5x of before after |"
            );
            println!("|---|---:|---:|---:|---:|---:|---:|---:|");
            println!(
                "| {} | {:.0} | {} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.0} MiB | {} |",
                m.burst.load,
                m.burst.runs_per_s,
                m.burst.refused,
                fresh_mib,
                m.before_mib,
                m.peak_mib,
                m.after_mib,
                m.back_within_1_5x_after_s
                    .map_or(format!("not within {:.0} s", args.idle_s), |s| format!(
                        "{s:.1} s"
                    ))
            );
        }
        u8::from(m.burst.trace_mismatches > 0)
    } else {
        let mut results = Vec::new();
        let rungs = match (&args.concurrency[..], &rates[..]) {
            ([], []) => &[100, 1000][..],
            (given, _) => given,
        };
        for &c in rungs {
            let runs = args.runs.max(c * 3);
            let load = if args.retry_storm {
                ServeLoad::Storm { clients: c, runs }
            } else {
                ServeLoad::Closed { in_flight: c, runs }
            };
            results.push(bench.drive(load).await);
        }
        for &per_sec in &rates {
            results.push(bench.drive(ServeLoad::Open { per_sec, duration }).await);
        }
        if args.json {
            print_json(&results)?;
        } else {
            println!("server: {server}; API latency: {latency_label}\n");
            print_table(&results);
        }
        u8::from(results.iter().any(|r| r.trace_mismatches > 0))
    };
    bench.stop().await;
    Ok(exit)
}

fn print_table(results: &[ServeResult]) {
    println!(
        "| load | sent | ran | ok | refused (503) | errors | runs/s | steady runs/s | p50 ms | p99 ms | max ms | slowest refusal ms | server cores | load generator cores | server CPU ms/run | server RSS | step timeouts | traces |"
    );
    println!(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in results {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} MiB | {} | {} |",
            r.load,
            r.sent,
            r.ran,
            r.succeeded,
            r.refused,
            r.errors,
            r.runs_per_s,
            r.steady_runs_per_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.refused_max_ms,
            r.server_cores,
            r.client_cores,
            r.server_ms_per_run,
            r.server_rss_mib,
            r.step_timeouts,
            if r.trace_mismatches == 0 {
                "intact".to_string()
            } else {
                format!("{} mismatches", r.trace_mismatches)
            }
        );
    }
}
