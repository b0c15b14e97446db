//! `braid bench`: load tests of a workflow against the in-process sample API,
//! measured the seed's ways (sequential, a concurrency ladder, a sustained
//! open-loop rate) and against a native baseline: the same workflow through
//! the same scheduler with in-process Rust steps, no sandbox.
//!
//! Latencies go into an HDR histogram; in rate mode each run's latency counts
//! from its *scheduled* start, so a host that falls behind is charged for it
//! (no coordinated omission). Every run's trace is checked: distinct trace ids,
//! every event and outbound call on the run's own trace, and the sample API
//! saw exactly the run's calls on it.
//!
//! Must not print for humans (the CLI does).

mod claims;
pub mod counting;
mod native;
pub mod resume;
pub mod serve;
pub mod suite;
pub mod waiting;

pub use claims::{ClaimRung, claim_rung};
pub use native::NativeExecutor;

use crate::report::RunReport;
use crate::sample_api::{self, Latencies, RequestLog};
use crate::scheduler::{RunRequest, Scheduler, StepExecutor};
use crate::trace::IncomingTrace;
use crate::workflow::Workflow;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One load to apply.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// One run at a time.
    Sequential { runs: usize },
    /// `in_flight` runs at a time until `runs` are done.
    Concurrent { in_flight: usize, runs: usize },
    /// Runs started at `per_sec` for `duration`, whatever happens to them.
    Rate { per_sec: f64, duration: Duration },
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Sequential { .. } => "sequential".into(),
            Load::Concurrent { in_flight, .. } => format!("{in_flight} in flight"),
            Load::Rate { per_sec, .. } => format!("{per_sec} ops/s"),
        }
    }
}

/// What one load measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub load: String,
    pub executor: String,
    pub runs: usize,
    pub succeeded: usize,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Trace problems found (empty when every run's trace is intact).
    pub trace_violations: Vec<String>,
    pub peak_rss_mib: f64,
    /// Durable writes per run (counted calls, see [`counting`]), in the run
    /// journal and in the claim store; `None` where not counted.
    pub writes_per_run: Option<WritesPerRun>,
}

/// Durable writes per run of a load.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WritesPerRun {
    pub journal: f64,
    pub claims: f64,
}

impl WritesPerRun {
    /// `count` spread over `runs`.
    pub fn of(count: counting::WriteCount, runs: usize) -> WritesPerRun {
        let runs = runs.max(1) as f64;
        WritesPerRun {
            journal: count.journal as f64 / runs,
            claims: count.claims as f64 / runs,
        }
    }
}

/// The in-process sample API a bench runs against.
pub struct BenchApi {
    pub addr: SocketAddr,
    pub log: RequestLog,
    server: tokio::task::JoinHandle<()>,
}

impl BenchApi {
    pub async fn start(latencies: Latencies) -> std::io::Result<BenchApi> {
        Self::start_with(latencies, Vec::new()).await
    }

    /// The sample API with fault rules from the start.
    pub async fn start_with(
        latencies: Latencies,
        faults: Vec<sample_api::FaultRule>,
    ) -> std::io::Result<BenchApi> {
        let (addr, server, log) = sample_api::bind(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            latencies,
            faults,
        )
        .await?;
        let server = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("bench sample API stopped: {e}");
            }
        });
        Ok(BenchApi { addr, log, server })
    }
}

impl Drop for BenchApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The process's peak resident set, in MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("self", "VmHWM:")
}

/// A size field (`VmRSS:`, `VmHWM:`, in kB) of `/proc/{process}/status`,
/// in MiB; 0 when it cannot be read.
fn status_mib(process: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Builds run `i`'s input; `tag` is unique to one load, so work items differ.
pub type InputFn<'a> = dyn Fn(usize, &str) -> Value + Sync + 'a;

/// The reference workflow's input for run `i` against the sample API at `api`.
pub fn reference_input(api: &SocketAddr, i: usize, tag: &str) -> Value {
    json!({
        "api_base": format!("http://{api}"),
        "user_id": "u-100",
        "resource": "reports/q3",
        "action": "read",
        "work_item": format!("bench-{tag}-{i}"),
        "lease_ms": 60000,
    })
}

/// Applies `load` and measures it.
pub async fn drive<E: StepExecutor>(
    scheduler: Arc<Scheduler<E>>,
    workflow: Arc<Workflow>,
    api: &BenchApi,
    load: Load,
    executor: &str,
    make_input: &InputFn<'_>,
    progress: Option<indicatif::ProgressBar>,
) -> LoadResult {
    if let Ok(mut log) = api.log.lock() {
        log.clear();
    }
    let tag = hex::encode(rand::random::<[u8; 4]>());
    let started = Instant::now();
    // Only what the checks need is kept of each report, so a load of tens of
    // thousands of runs does not measure the bench's own memory.
    let mut reports: Vec<(RunFacts, Duration)> = Vec::new();
    let one = |i: usize, scheduled: Instant| {
        let (scheduler, workflow) = (Arc::clone(&scheduler), Arc::clone(&workflow));
        let input = make_input(i, &tag);
        async move {
            let report = scheduler
                .run(RunRequest {
                    workflow,
                    input,
                    trace: IncomingTrace::from_headers(None, None),
                })
                .await;
            (report, scheduled.elapsed())
        }
    };
    let done = |r: Result<RunReport, crate::scheduler::RunError>,
                latency: Duration,
                reports: &mut Vec<(RunFacts, Duration)>| {
        if let Some(p) = &progress {
            p.inc(1);
        }
        if let Ok(report) = r {
            reports.push((RunFacts::of(&report), latency));
        }
    };
    match load {
        Load::Sequential { runs } => {
            for i in 0..runs {
                let (r, latency) = one(i, Instant::now()).await;
                done(r, latency, &mut reports);
            }
        }
        Load::Concurrent { in_flight, runs } => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut next = 0;
            while next < runs.min(in_flight) {
                tasks.spawn(one(next, Instant::now()));
                next += 1;
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((r, latency)) = joined {
                    done(r, latency, &mut reports);
                }
                if next < runs {
                    tasks.spawn(one(next, Instant::now()));
                    next += 1;
                }
            }
        }
        Load::Rate { per_sec, duration } => {
            let total = (per_sec * duration.as_secs_f64()).round().max(1.0) as usize;
            let interval = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..total {
                let scheduled = started + interval.mul_f64(i as f64);
                let run = one(i, scheduled);
                tasks.spawn(async move {
                    tokio::time::sleep_until(scheduled.into()).await;
                    run.await
                });
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((r, latency)) = joined {
                    done(r, latency, &mut reports);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    summarize(load, executor, &reports, elapsed, &api.log)
}

fn summarize(
    load: Load,
    executor: &str,
    reports: &[(RunFacts, Duration)],
    elapsed: Duration,
    log: &RequestLog,
) -> LoadResult {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
    let mut violations = Vec::new();
    let mut traces = HashSet::new();
    let received: HashMap<String, usize> = log
        .lock()
        .map(|l| {
            let mut counts = HashMap::new();
            for r in l.iter() {
                *counts
                    .entry(r.trace_id.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            }
            counts
        })
        .unwrap_or_default();
    for (report, latency) in reports {
        if let Some(h) = hist.as_mut() {
            let _ = h.record(latency.as_micros().max(1) as u64);
        }
        check_trace(report, &received, &mut traces, &mut violations);
    }
    let q = |p: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    let succeeded = reports.iter().filter(|(r, _)| r.succeeded).count();
    LoadResult {
        load: load.label(),
        executor: executor.into(),
        runs: reports.len(),
        succeeded,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: reports.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: hist.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        trace_violations: violations,
        peak_rss_mib: peak_rss_mib(),
        writes_per_run: None,
    }
}

/// What the trace checks need of one run's report.
struct RunFacts {
    run_id: String,
    trace_id: String,
    succeeded: bool,
    /// Events, or calls, found on another trace than the run's.
    foreign: Vec<String>,
    /// Calls sent with a `traceparent`, and calls that got an answer.
    sent: usize,
    answered: usize,
}

impl RunFacts {
    fn of(report: &RunReport) -> Self {
        let t = &report.trace_id;
        let mut foreign = Vec::new();
        if let Some(e) = report.events.iter().find(|e| &e.trace_id != t) {
            foreign.push(format!("event {} on trace {}", e.name, e.trace_id));
        }
        if let Some(c) = report.http_calls.iter().find(|c| {
            c.traceparent
                .as_ref()
                .is_some_and(|tp| !tp.contains(t.as_str()))
        }) {
            foreign.push(format!("call {} sent under another trace", c.url));
        }
        RunFacts {
            run_id: report.run_id.clone(),
            trace_id: t.clone(),
            succeeded: report.outcome == "succeeded",
            foreign,
            sent: report
                .http_calls
                .iter()
                .filter(|c| c.traceparent.is_some())
                .count(),
            answered: report
                .http_calls
                .iter()
                .filter(|c| c.status.is_some())
                .count(),
        }
    }
}

/// Checks one run's trace; appends what is wrong.
fn check_trace(
    run: &RunFacts,
    received: &HashMap<String, usize>,
    seen: &mut HashSet<String>,
    violations: &mut Vec<String>,
) {
    let t = &run.trace_id;
    if !seen.insert(t.clone()) {
        violations.push(format!("trace id {t} used by two runs"));
    }
    for f in &run.foreign {
        violations.push(format!("run {}: {f}", run.run_id));
    }
    // Every call that got an answer reached the API on this trace; calls cut
    // short by a timeout may or may not have arrived; none arrived unsent.
    let got = received.get(t).copied().unwrap_or(0);
    if got < run.answered || got > run.sent {
        violations.push(format!(
            "run {}: {} calls answered and {} sent on its trace, but the API saw {got}",
            run.run_id, run.answered, run.sent
        ));
    }
}

/// Writes `map-N.toml` into `dir`: one map step of `noop` over the input
/// `items`, [`MAP_PARALLEL`] elements at once: what a map element costs
/// against a step of a chain.
pub fn map_workflow(
    components_dir: &std::path::Path,
    elements: usize,
    dir: &std::path::Path,
) -> std::io::Result<std::path::PathBuf> {
    let components = toml::Value::String(components_dir.to_string_lossy().into_owned());
    let toml = format!(
        "name = \"map-{elements}\"\ncomponents_dir = {components}\nresult = \"each\"\n\n\
         [inputs.items]\n\n[[steps]]\nname = \"each\"\ncomponent = \"noop\"\nallowed_hosts = []\n\
         [steps.map]\nover = {{ input = \"items\" }}\nmax_parallel = {MAP_PARALLEL}\nmax_elements = 100000\n"
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("map-{elements}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// Elements of a generated map running at once: as many as the chains'
/// runs in flight, so a map element and a chain step are compared at the
/// same parallelism.
pub const MAP_PARALLEL: usize = 20;

/// Writes `chain-N.toml` into `dir`: `steps` `noop` steps in a row, each
/// handing the `payload` input on to the next (cost vs steps and payload).
pub fn chain_workflow(
    components_dir: &std::path::Path,
    steps: usize,
    dir: &std::path::Path,
) -> std::io::Result<std::path::PathBuf> {
    use std::fmt::Write as _;
    let mut toml = String::new();
    let components = toml::Value::String(components_dir.to_string_lossy().into_owned());
    let _ = writeln!(
        toml,
        "name = \"chain-{steps}\"\ncomponents_dir = {components}\nresult = \"s{steps}\"\n\n[inputs.payload]\n"
    );
    for i in 1..=steps {
        let arg = if i == 1 {
            "{ input = \"payload\" }".to_string()
        } else {
            format!("{{ step = \"s{}\", pointer = \"/x\" }}", i - 1)
        };
        let _ = writeln!(
            toml,
            "[[steps]]\nname = \"s{i}\"\ncomponent = \"noop\"\nallowed_hosts = []\nargs.x = {arg}\n"
        );
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("chain-{steps}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}
