//! `braid bench --mode waiting`: what runs that wait cost and how fast
//! they are carried on. Three measurements on scratch stores, one host in
//! this process:
//!
//! 1. `runs` runs of `noop -> signal -> noop` are started and parked: this
//!    process's memory and the journal's size before and after, per run,
//!    and how many runs the host still holds (none: a parked run is a row);
//! 2. every one is sent its signal, as fast as the journal takes them, and
//!    woken by a fresh host's wake loop (every `WAKE_INTERVAL`, as `braid
//!    serve`'s): signals per second, and the time until the last run ends;
//! 3. `runs` runs of `noop -> sleep until T -> noop` are parked, all due at
//!    the same time T; the host that parked them is dropped (a restart:
//!    nothing of theirs was in memory anyway) and a new one wakes them:
//!    for each run, from T to the start of the step after its sleep.
//!
//! Must not print for humans (the CLI does).

use super::suite::{Scratch, SuiteError, run_error};
use crate::db::Durability;
use crate::journal::RunJournal;
use crate::recovery::{Liveness, Recoverer, WAKE_INTERVAL};
use crate::scheduler::{RunRequest, Scheduler};
use crate::trace::IncomingTrace;
use crate::workflow::Workflow;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host that starts and parks the runs, and the one that wakes them.
const FIRST: &str = "bench-first:1";
const SECOND: &str = "bench-second:2";
/// Runs started at once while parking.
const STARTING: usize = 200;

/// What the waiting bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingResult {
    pub runs: usize,
    /// Starting and parking every run (runs/s).
    pub parked_per_s: f64,
    /// Runs the host still held once all were parked (its `LocalRuns`).
    pub held_in_memory: usize,
    /// Process RSS growth per parked run, over the second half parked
    /// (bytes; allocator noise included).
    pub rss_bytes_per_run: f64,
    pub rss_before_mib: f64,
    pub rss_parked_mib: f64,
    /// Journal file growth per parked run over the second half (SQLite
    /// file and WAL, bytes): its start, its first step's completion, its
    /// wait, and the index entry.
    pub journal_bytes_per_run: f64,
    /// Signals the journal took per second (one `send_signal` each).
    pub signals_per_s: f64,
    /// From the first signal to the last signalled run's end.
    pub signalled_runs_end_ms: f64,
    pub signalled_succeeded: usize,
    /// From the common due time to each woken run's next step starting.
    pub timer_p50_ms: f64,
    pub timer_p99_ms: f64,
    pub timer_max_ms: f64,
    pub timers_succeeded: usize,
}

/// Writes the two generated workflows into `dir`.
fn workflows(components: &Path, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let components = toml::Value::String(components.to_string_lossy().into_owned());
    let common = |name: &str, wait: &str| {
        format!(
            "name = \"{name}\"\ncomponents_dir = {components}\nresult = \"after\"\n[inputs.wake_at]\ndefault = 0\n\n\
             [[steps]]\nname = \"before\"\ncomponent = \"noop\"\nallowed_hosts = []\n\n\
             {wait}\n\n\
             [[steps]]\nname = \"after\"\ncomponent = \"noop\"\nallowed_hosts = []\nargs.waited = {{ step = \"wait\" }}\n"
        )
    };
    let signal = common(
        "wait-signal",
        "[[steps]]\nname = \"wait\"\nwait_for = [\"before\"]\n[steps.signal]\nname = \"go\"\ntimeout = \"1h\"",
    );
    let sleep = common(
        "wait-sleep",
        "[[steps]]\nname = \"wait\"\nwait_for = [\"before\"]\n[steps.sleep]\nuntil = { input = \"wake_at\" }",
    );
    std::fs::create_dir_all(dir)?;
    let (a, b) = (dir.join("wait-signal.toml"), dir.join("wait-sleep.toml"));
    std::fs::write(&a, signal)?;
    std::fs::write(&b, sleep)?;
    Ok((a, b))
}

/// Starts `runs` runs of `wf` (input `input`) on `scheduler`, at most
/// [`STARTING`] at once, each until it parks; the ids of those that parked.
async fn park_all<E: crate::scheduler::StepExecutor>(
    scheduler: &Scheduler<E>,
    wf: &Arc<Workflow>,
    runs: usize,
    input: serde_json::Value,
) -> Result<Vec<String>, SuiteError> {
    let mut set = tokio::task::JoinSet::new();
    let mut parked = Vec::new();
    for _ in 0..runs {
        if set.len() >= STARTING
            && let Some(done) = set.join_next().await
        {
            parked.extend(done.map_err(run_error)?);
        }
        let (scheduler, request) = (
            scheduler.clone(),
            RunRequest {
                workflow: Arc::clone(wf),
                input: input.clone(),
                trace: IncomingTrace::from_headers(None, None),
            },
        );
        set.spawn(async move {
            let report = scheduler.run(request).await.ok()?;
            (report.outcome == "waiting").then_some(report.run_id)
        });
    }
    while let Some(done) = set.join_next().await {
        parked.extend(done.map_err(run_error)?);
    }
    Ok(parked)
}

fn rss_mib() -> f64 {
    super::status_mib("self", "VmRSS:")
}

/// The journal's files' size.
fn journal_bytes(dir: &Path) -> u64 {
    ["runs.sqlite3", "runs.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Wakes runs every [`WAKE_INTERVAL`] as `recoverer`'s host until `done`
/// of them have ended; the reports of those that ended.
async fn wake_until(
    recoverer: &Recoverer,
    done: usize,
    limit: Duration,
) -> Result<Vec<crate::recovery::RecoveredRun>, SuiteError> {
    let deadline = Instant::now() + limit;
    let mut ended = Vec::new();
    let mut passes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(WAKE_INTERVAL);
    while ended.len() < done {
        if Instant::now() > deadline {
            return Err(run_error(format!(
                "only {} of {done} runs ended",
                ended.len()
            )));
        }
        tick.tick().await;
        let r = recoverer.clone();
        passes.spawn(async move { r.wake().await });
        while let Some(pass) = passes.try_join_next() {
            ended.extend(pass.map_err(run_error)?.map_err(run_error)?);
        }
    }
    passes.abort_all();
    Ok(ended)
}

/// Runs the three measurements with `runs` runs each, the `noop` component
/// from `components`, on scratch stores as durable as `durability`.
pub async fn waiting(
    components: &Path,
    cache_dir: Option<PathBuf>,
    durability: Durability,
    runs: usize,
) -> Result<WaitingResult, SuiteError> {
    let scratch = Scratch::open(cache_dir, durability)?;
    let journal: Arc<dyn RunJournal> = Arc::clone(&scratch.journal);
    let (signal_path, sleep_path) =
        workflows(components, &scratch.dir.join("wf")).map_err(run_error)?;
    let load = |path: &Path| {
        crate::check::load_and_prepare(path, Arc::clone(&scratch.sandbox))
            .map_err(|e| SuiteError::Input(e.into()))
    };
    let (signal_wf, signal_exec) = load(&signal_path)?;
    let (sleep_wf, sleep_exec) = load(&sleep_path)?;
    let local = crate::journal::LocalRuns::default();
    let first = Scheduler::new(Arc::new(signal_exec), 4096)
        .with_journal(Arc::clone(&journal), FIRST.into())
        .with_local_runs(local.clone());
    let recoverer = Recoverer {
        sandbox: Arc::clone(&scratch.sandbox),
        journal: Arc::clone(&journal),
        claims: Arc::clone(&scratch.claims),
        owner: SECOND.into(),
        liveness: Liveness::LeasesOnly,
        local: Default::default(),
        history_dir: None,
        max_concurrency: 4096,
        on_resumed: None,
        live: None,
    };

    // 1. Park them, in two halves: memory and journal per waiting run are
    // what the second half adds (the first warms the host up: compiled
    // components, pools, the allocator's arenas).
    let half = (runs / 2).max(1);
    let t0 = Instant::now();
    let mut ids = park_all(&first, &signal_wf, runs - half, serde_json::json!({})).await?;
    let (rss_before, bytes_before) = (rss_mib(), journal_bytes(&scratch.dir));
    ids.extend(park_all(&first, &signal_wf, half, serde_json::json!({})).await?);
    let parking = t0.elapsed();
    if ids.len() != runs {
        return Err(run_error(format!(
            "only {} of {runs} runs parked",
            ids.len()
        )));
    }
    let (rss_parked, bytes_parked) = (rss_mib(), journal_bytes(&scratch.dir));
    let held_in_memory = local.list().len();

    // 2. Signal them all, then wake them.
    let t1 = Instant::now();
    for id in &ids {
        journal
            .send_signal(id, "go", "{\"ok\":true}", "")
            .await
            .map_err(run_error)?;
    }
    let signalling = t1.elapsed();
    let signalled = wake_until(&recoverer, ids.len(), Duration::from_secs(600)).await?;
    let signalled_end = t1.elapsed();

    // 3. Timers all due at once, woken by a fresh host.
    let sleeper = first.with_executor(Arc::new(sleep_exec));
    // Room to park them all first (at the rate measured above), and 3 s.
    let per_run = parking.as_secs_f64() / runs.max(1) as f64;
    let lead = Duration::from_secs_f64(per_run * runs as f64 * 1.5) + Duration::from_secs(3);
    let due = crate::store::now_ms() + lead.as_millis() as u64;
    let parked = park_all(
        &sleeper,
        &sleep_wf,
        runs,
        serde_json::json!({ "wake_at": due }),
    )
    .await?
    .len();
    if parked != runs {
        return Err(run_error(format!(
            "only {parked} of {runs} sleeping runs parked in time"
        )));
    }
    drop(sleeper);
    drop(first);
    let woken = wake_until(&recoverer, runs, lead + Duration::from_secs(600)).await?;
    let mut latencies = timer_latencies(&journal, &woken, due).await?;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let per = |v: f64| v / half as f64;
    Ok(WaitingResult {
        runs,
        parked_per_s: runs as f64 / parking.as_secs_f64().max(1e-9),
        held_in_memory,
        rss_bytes_per_run: per((rss_parked - rss_before).max(0.0) * 1024.0 * 1024.0),
        rss_before_mib: rss_before,
        rss_parked_mib: rss_parked,
        journal_bytes_per_run: per(bytes_parked.saturating_sub(bytes_before) as f64),
        signals_per_s: ids.len() as f64 / signalling.as_secs_f64().max(1e-9),
        signalled_runs_end_ms: signalled_end.as_secs_f64() * 1000.0,
        signalled_succeeded: signalled
            .iter()
            .filter(|r| r.outcome == "succeeded")
            .count(),
        timer_p50_ms: at(0.5),
        timer_p99_ms: at(0.99),
        timer_max_ms: latencies.last().copied().unwrap_or(0.0),
        timers_succeeded: woken.iter().filter(|r| r.outcome == "succeeded").count(),
    })
}

/// For each woken run, from `due` to the start of its step after the sleep
/// (from its stored report: the run's start plus the step's offset).
async fn timer_latencies(
    journal: &Arc<dyn RunJournal>,
    woken: &[crate::recovery::RecoveredRun],
    due: u64,
) -> Result<Vec<f64>, SuiteError> {
    let mut out = Vec::new();
    for run in woken {
        let Some(json) = journal.report(&run.run_id).await.map_err(run_error)? else {
            continue;
        };
        let report: serde_json::Value = serde_json::from_str(&json).map_err(run_error)?;
        let started = report["started_at_ms"].as_f64().unwrap_or(0.0);
        let after = report["steps"]
            .as_array()
            .and_then(|steps| steps.iter().find(|s| s["name"] == "after"))
            .and_then(|s| s["start_ms"].as_f64());
        if let Some(offset) = after {
            out.push(started + offset - due as f64);
        }
    }
    Ok(out)
}
