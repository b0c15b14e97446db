//! `braid bench`: turns its flags into a [`braid::bench::suite::Plan`] and
//! prints the tables (see docs/PERFORMANCE.md); the harness itself is the
//! library's `bench` module.

use super::host::{StoreKind, open_stores};
use super::{Exit, StateArgs, print_json};
use braid::bench::Load;
use braid::bench::suite::{Plan, Scaling, SuiteError};
use braid::sample_api::Latencies;
use braid::store::{ClaimStore, SqliteClaimStore};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod serve;

#[derive(Args)]
pub struct BenchArgs {
    /// The workflow to run (its steps must be the reference workflow's for the native baseline).
    #[arg(long, default_value = "workflows/api-orchestration.toml")]
    workflow: PathBuf,
    /// What to measure.
    #[arg(long, value_enum, default_value = "sequential")]
    mode: BenchMode,
    /// Sample API latencies: the seed's (~33/28/35 ms) or none.
    #[arg(long, value_enum, default_value = "zero")]
    latency: BenchLatency,
    /// Every sample API call answers after this many milliseconds (overrides --latency).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Which executors to run; with both, the table gives the sandbox/native ratio.
    #[arg(long, value_enum, default_value = "both")]
    executor: BenchExecutor,
    /// Runs per load (sequential, and per ladder rung at least).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Ladder rungs (runs in flight): 1,2,5,10,20,100 unless given (claims
    /// mode: claimers, the same default); serve mode: closed-loop rungs,
    /// 100,1000 unless given or `--rate` is.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Open-loop rates (runs started per second); rate mode: 5,15,30,300
    /// unless given; serve mode: none unless given.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Serve modes: open-loop rates as multiples of the capacity measured
    /// first (the steady runs/s of 100 clients in a closed loop on the same
    /// server), e.g. `1,2` for at capacity and twice it. serve-memory bursts
    /// at 0.9x capacity unless this or `--rate` is given.
    #[arg(long, value_delimiter = ',')]
    rate_of_capacity: Vec<f64>,
    /// How long each rate is held.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Scaling mode: chains of this many `noop` steps (100-byte payload).
    #[arg(long, value_delimiter = ',', default_value = "1,2,6,12,24")]
    steps: Vec<usize>,
    /// Scaling mode: maps of `noop` over this many elements (one run at a
    /// time, 20 elements at once); `0` for none.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000")]
    map_elements: Vec<usize>,
    /// Scaling mode: payload sizes in bytes handed along a 6-step chain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,10000,100000,1000000"
    )]
    payload_bytes: Vec<usize>,
    /// Claims mode: how many distinct work items the claimers pick from
    /// (few items: contended, many conflicts).
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Serve modes: the `braid` binary to start as the server (default:
    /// this one), so two builds can be measured in one run.
    #[arg(long)]
    server: Option<PathBuf>,
    /// Serve modes: a `braid serve` flag to add (repeatable), e.g.
    /// `--serve-arg=--durability=machine`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Serve-memory mode: how long idle after the burst the resident set
    /// may take to come back (seconds).
    #[arg(long, default_value_t = 60.0)]
    idle_s: f64,
    /// Serve mode: the closed-loop clients resend at once on every `503`,
    /// ignoring `Retry-After` (a retry storm), e.g. `--concurrency 1000`.
    #[arg(long)]
    retry_storm: bool,
    /// Attempt mode: time this step of `--workflow` (called with
    /// `--attempt-input`) instead of `noop` and `aggregate`, e.g. the step of
    /// a `braid new` project.
    #[arg(long)]
    time_step: Option<String>,
    /// Attempt mode with `--time-step`: the step's input (JSON).
    #[arg(long, default_value = "{}")]
    attempt_input: String,
    /// Do not journal runs (measures the journal's cost when compared).
    #[arg(long)]
    no_journal: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchMode {
    Sequential,
    Ladder,
    Rate,
    Attempt,
    /// Cost vs number of steps and payload size (generated chains of `noop`).
    Scaling,
    /// The claim store alone (`--store`: sqlite in a scratch directory, or a
    /// postgres:// URL): claim calls per second and latency, `--concurrency`
    /// claimers, `--runs` claim calls per rung, on `--items` work items.
    Claims,
    /// Carrying on the runs of a host that died: `--runs` runs in flight
    /// are dropped at once, then taken over and resumed to their end.
    Resume,
    /// `braid serve` from outside (another process, over HTTP): closed
    /// loop at each `--concurrency`, then open loop at each `--rate` for
    /// `--duration-s` (latency from the scheduled send; 503s counted).
    Serve,
    /// `braid serve`'s resident set before, during and after an open-loop
    /// burst at the first `--rate` for `--duration-s`.
    ServeMemory,
    /// Runs that wait: `--runs` runs parked on a signal (memory and journal
    /// bytes per waiting run), signalled and woken (signals/s), then
    /// `--runs` timers due at once woken by a fresh host (due -> next step).
    Waiting,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchLatency {
    Seed,
    Zero,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchExecutor {
    Sandbox,
    Native,
    Both,
}

/// `--concurrency` unless given.
const DEFAULT_RUNGS: [usize; 6] = [1, 2, 5, 10, 20, 100];
/// Rate mode's `--rate` unless given.
const DEFAULT_RATES: [f64; 4] = [5.0, 15.0, 30.0, 300.0];

impl BenchArgs {
    /// The ladder's rungs.
    fn rungs(&self) -> &[usize] {
        if self.concurrency.is_empty() {
            &DEFAULT_RUNGS
        } else {
            &self.concurrency
        }
    }

    /// The sample API's latencies, and how the tables name them.
    fn latencies(&self) -> (Latencies, String) {
        match (self.latency_ms, self.latency) {
            (Some(ms), _) => (
                Latencies::uniform(Duration::from_millis(ms)),
                format!("{ms} ms per call"),
            ),
            (None, BenchLatency::Seed) => (Latencies::default(), "seed (33/28/35 ms)".to_string()),
            (None, BenchLatency::Zero) => (Latencies::uniform(Duration::ZERO), "zero".to_string()),
        }
    }
}

pub async fn exec(args: BenchArgs) -> Result<u8, Exit> {
    if args.mode == BenchMode::Claims {
        return bench_claims(&args).await;
    }
    if args.mode == BenchMode::Resume {
        return bench_resume(&args).await;
    }
    if args.mode == BenchMode::Waiting {
        return bench_waiting(&args).await;
    }
    if matches!(args.mode, BenchMode::Serve | BenchMode::ServeMemory) {
        return serve::exec(&args).await;
    }
    let (latencies, latency_label) = args.latencies();
    let mut loads = Vec::new();
    let (seq, ladder, rate) = match args.mode {
        BenchMode::Sequential => (true, false, false),
        BenchMode::Ladder => (false, true, false),
        BenchMode::Rate => (false, false, true),
        BenchMode::Attempt
        | BenchMode::Scaling
        | BenchMode::Claims
        | BenchMode::Resume
        | BenchMode::Waiting
        | BenchMode::Serve
        | BenchMode::ServeMemory => (false, false, false),
        BenchMode::All => (true, true, true),
    };
    if seq {
        loads.push(Load::Sequential { runs: args.runs });
    }
    if ladder {
        for &c in args.rungs() {
            loads.push(Load::Concurrent {
                in_flight: c,
                runs: args.runs.max(c * 3),
            });
        }
    }
    if rate {
        let rates = if args.rate.is_empty() {
            &DEFAULT_RATES[..]
        } else {
            &args.rate[..]
        };
        for &r in rates {
            loads.push(Load::Rate {
                per_sec: r,
                duration: Duration::from_secs_f64(args.duration_s),
            });
        }
    }
    let plan = Plan {
        workflow: args.workflow.clone(),
        latencies,
        cache_dir: args.state.cache_dir(),
        durability: args.state.durability.into(),
        journal: !args.no_journal,
        shared: match args.state.store_kind()? {
            StoreKind::Sqlite => None,
            StoreKind::Postgres(_) => {
                let stores = open_stores(&args.state).await?;
                Some(braid::bench::suite::SharedStores {
                    claims: stores.claims,
                    journal: stores.journal,
                })
            }
        },
        sandbox: args.executor != BenchExecutor::Native,
        native: args.executor != BenchExecutor::Sandbox,
        loads,
        scaling: matches!(args.mode, BenchMode::Scaling | BenchMode::All).then(|| Scaling {
            steps: args.steps.clone(),
            payload_bytes: args.payload_bytes.clone(),
            map_elements: args
                .map_elements
                .iter()
                .copied()
                .filter(|n| *n > 0)
                .collect(),
            runs: args.runs,
        }),
        attempt_calls: matches!(args.mode, BenchMode::Attempt | BenchMode::All)
            .then(|| args.runs.max(1000)),
        attempt_step: args
            .time_step
            .clone()
            .map(|step| (step, args.attempt_input.clone())),
    };
    let outcome = braid::bench::suite::run(&plan, &progress)
        .await
        .map_err(suite_exit)?;
    let results = outcome.loads;
    let attempt = outcome.attempt;
    let violations: usize = results.iter().map(|r| r.trace_violations.len()).sum();
    if args.json {
        let out = serde_json::json!({ "loads": results, "attempt": attempt, "trace_violations": violations });
        print_json(&out)?;
    } else {
        print_bench(
            &results,
            attempt.as_deref(),
            &latency_label,
            match (args.no_journal, plan.shared.is_some()) {
                (true, _) => "off",
                (false, false) => "on (SQLite)",
                (false, true) => "on (PostgreSQL)",
            },
        );
    }
    for r in &results {
        for v in r.trace_violations.iter().take(5) {
            eprintln!("trace check failed ({} · {}): {v}", r.load, r.executor);
        }
    }
    Ok(if violations == 0 { 0 } else { 1 })
}

/// A progress bar for one load of one executor.
fn progress(load: &Load, who: &str) -> Option<indicatif::ProgressBar> {
    let total = match load {
        Load::Sequential { runs } | Load::Concurrent { runs, .. } => *runs as u64,
        Load::Rate { per_sec, duration } => (per_sec * duration.as_secs_f64()).round() as u64,
    };
    let bar = indicatif::ProgressBar::new(total);
    bar.set_message(format!("{} · {who}", load.label()));
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:28} {bar:40} {pos}/{len} {per_sec}")
    {
        bar.set_style(style);
    }
    Some(bar)
}

/// `braid bench --mode claims`: the claim store alone, one rung per
/// `--concurrency` value.
async fn bench_claims(args: &BenchArgs) -> Result<u8, Exit> {
    let (store, label): (Arc<dyn ClaimStore>, &str) = match args.state.store_kind()? {
        StoreKind::Sqlite => {
            let scratch = std::env::temp_dir().join(format!(
                "braid-bench-{}",
                hex::encode(rand::random::<[u8; 6]>())
            ));
            let store = SqliteClaimStore::open_with(&scratch, args.state.durability.into())
                .map_err(|e| Exit(1, e.into()))?;
            (Arc::new(store), "sqlite")
        }
        StoreKind::Postgres(_) => (open_stores(&args.state).await?.claims, "postgres"),
    };
    let mut rungs = Vec::new();
    for &claimers in args.rungs() {
        let rung =
            braid::bench::claim_rung(Arc::clone(&store), label, claimers, args.runs, args.items)
                .await
                .map_err(|e| Exit(1, e.into()))?;
        if !args.json {
            println!(
                "{:<9} {:>4} claimers {:>7} items: {:>8.0} claims/s  claim p50 {:>7.0} us p99 {:>7.0} us  release p50 {:>7.0} us  {} conflicts",
                rung.store,
                rung.claimers,
                rung.items,
                rung.claims_per_s,
                rung.claim_p50_us,
                rung.claim_p99_us,
                rung.release_p50_us,
                rung.conflicts
            );
        }
        rungs.push(rung);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rungs).map_err(|e| Exit(1, e.into()))?
        );
    }
    Ok(0)
}

/// A benchmark's failure as an exit: 2 for bad input or setup, 1 when a
/// run went wrong.
pub(super) fn suite_exit(e: SuiteError) -> Exit {
    match e {
        SuiteError::Input(_) | SuiteError::Setup(_) => Exit(2, e.into()),
        SuiteError::Run(_) => Exit(1, e.into()),
    }
}

/// `braid bench --mode resume`: the runs of a killed host carried on.
async fn bench_resume(args: &BenchArgs) -> Result<u8, Exit> {
    let r = braid::bench::resume::resume_after_kill(
        &args.workflow,
        args.state.cache_dir(),
        args.state.durability.into(),
        args.runs,
    )
    .await
    .map_err(suite_exit)?;
    if args.json {
        print_json(&r)?;
    } else {
        println!(
            "| runs in flight at the kill | take-over | resume to the last end | resumed runs/s | succeeded | tokens issued |"
        );
        println!("|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {:.0} ms | {:.0} ms | {:.0} | {} | {} |",
            r.in_flight_at_kill,
            r.take_over_ms,
            r.resume_ms,
            r.runs_per_s,
            r.succeeded,
            r.tokens_issued
        );
    }
    // Runs whose hanging call timed out and was retried may end before the
    // kill: every run still in flight then must be carried on.
    Ok(
        if r.succeeded == r.in_flight_at_kill && r.tokens_issued == r.runs {
            0
        } else {
            1
        },
    )
}

/// `braid bench --mode waiting`: what waiting runs cost, and waking them.
async fn bench_waiting(args: &BenchArgs) -> Result<u8, Exit> {
    let reference =
        braid::workflow::Workflow::load(&args.workflow).map_err(|e| Exit(2, e.into()))?;
    let components = reference
        .step("aggregate")
        .and_then(|s| s.component.parent())
        .and_then(|dir| std::path::absolute(dir).ok())
        .ok_or_else(|| Exit(2, anyhow::anyhow!("the workflow has no `aggregate` step")))?;
    let r = braid::bench::waiting::waiting(
        &components,
        args.state.cache_dir(),
        args.state.durability.into(),
        args.runs,
    )
    .await
    .map_err(suite_exit)?;
    if args.json {
        print_json(&r)?;
    } else {
        println!(
            "| waiting runs | parked/s | held in memory | RSS per run | journal per run | signals/s | signalled runs ended in | timer: due -> next step p50 / p99 / max |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        println!(
            "| {} | {:.0} | {} | {:.0} B ({:.0} -> {:.0} MiB) | {:.0} B | {:.0} | {:.0} ms | {:.0} / {:.0} / {:.0} ms |",
            r.runs,
            r.parked_per_s,
            r.held_in_memory,
            r.rss_bytes_per_run,
            r.rss_before_mib,
            r.rss_parked_mib,
            r.journal_bytes_per_run,
            r.signals_per_s,
            r.signalled_runs_end_ms,
            r.timer_p50_ms,
            r.timer_p99_ms,
            r.timer_max_ms
        );
    }
    Ok(
        if r.held_in_memory == 0 && r.signalled_succeeded == r.runs && r.timers_succeeded == r.runs
        {
            0
        } else {
            1
        },
    )
}

fn print_bench(
    results: &[braid::bench::LoadResult],
    attempt: Option<&[serde_json::Value]>,
    latency: &str,
    journal: &str,
) {
    println!(
        "API latency: {latency}; journal: {journal}; peak RSS {:.0} MiB",
        braid::bench::peak_rss_mib()
    );
    if results.is_empty() {
        print_attempt(attempt);
        return;
    }
    println!();
    println!(
        "| load | executor | runs | ok | runs/s | p50 ms | p90 ms | p99 ms | max ms | traces | sandbox/native | writes/run (journal + claims) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in results {
        let ratio = results
            .iter()
            .find(|o| o.load == r.load && o.executor == "native")
            .filter(|_| r.executor == "sandbox")
            .map_or(String::new(), |n| {
                format!("{:.2}", r.throughput_per_s / n.throughput_per_s.max(1e-9))
            });
        let writes = r.writes_per_run.map_or(String::new(), |w| {
            format!("{:.2} + {:.2}", w.journal, w.claims)
        });
        println!(
            "| {} | {} | {} | {:.1}% | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
            r.load,
            r.executor,
            r.runs,
            100.0 * r.succeeded as f64 / r.runs.max(1) as f64,
            r.throughput_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            if r.trace_violations.is_empty() {
                "intact".to_string()
            } else {
                format!("{} violations", r.trace_violations.len())
            },
            ratio,
            writes
        );
    }
    print_attempt(attempt);
}

fn print_attempt(attempt: Option<&[serde_json::Value]>) {
    let Some(timed) = attempt else { return };
    println!(
        "\nper step attempt (fresh store + instance + call + teardown), sequential, after 100 warm-up calls:\n"
    );
    println!("| step | calls | p50 us | p90 us | p99 us | max us |");
    println!("|---|---:|---:|---:|---:|---:|");
    for a in timed {
        println!(
            "| `{}` | {} | {} | {} | {} | {} |",
            a["step"].as_str().unwrap_or(""),
            a["calls"],
            a["p50_us"],
            a["p90_us"],
            a["p99_us"],
            a["max_us"]
        );
    }
}
