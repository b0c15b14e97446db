//! `braid bench --mode resume`: how long a host takes to carry on the runs
//! of a host that died. Starts `runs` runs of the workflow whose first
//! permissions call hangs (so every run is in flight, past its first steps),
//! drops them all at once as a killed process would leave them (no terminal
//! record, leases no longer renewed), then takes them over as another host
//! and resumes them to their end.
//!
//! Must not print for humans (the CLI does).

use super::BenchApi;
use super::suite::{Scratch, SuiteError, run_error};
use crate::db::Durability;
use crate::recovery::{Liveness, Recoverer};
use crate::sample_api::{FaultRule, Latencies};
use crate::scheduler::{RUN_LEASE, RunRequest, Scheduler};
use crate::trace::IncomingTrace;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The host that "dies", as a run owner.
const DEAD: &str = "bench-killed:1";
/// The host that takes its runs over.
const SURVIVOR: &str = "bench-survivor:2";

/// What a resume measured.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeResult {
    pub runs: usize,
    /// Runs the journal held as `running` when the host was dropped (a run
    /// whose hanging call timed out and whose retry got through may have
    /// ended before).
    pub in_flight_at_kill: usize,
    /// Taking them over (one journal statement per run).
    pub take_over_ms: f64,
    /// From the take-over to the last resumed run's end.
    pub resume_ms: f64,
    pub succeeded: usize,
    /// Tokens the API issued (one per run: completed steps are not run again).
    pub tokens_issued: usize,
    pub runs_per_s: f64,
}

/// Measures resuming `runs` runs of `workflow` (the reference workflow's
/// steps) on scratch stores as durable as `durability`; `cache_dir` is the
/// compiled-component cache.
pub async fn resume_after_kill(
    workflow: &Path,
    cache_dir: Option<PathBuf>,
    durability: Durability,
    runs: usize,
) -> Result<ResumeResult, SuiteError> {
    let scratch = Scratch::open(cache_dir, durability)?;
    let (claims, journal, sandbox) = (
        Arc::clone(&scratch.claims),
        Arc::clone(&scratch.journal),
        Arc::clone(&scratch.sandbox),
    );
    let (workflow, executor) = crate::check::load_and_prepare(workflow, Arc::clone(&sandbox))
        .map_err(|e| SuiteError::Input(e.into()))?;
    // Each run's first permissions call hangs: every run stays in flight.
    let hang = FaultRule::parse(&format!("permissions:delay_ms=600000,times={runs}"))
        .map_err(run_error)?;
    let api = BenchApi::start_with(Latencies::uniform(Duration::ZERO), vec![hang])
        .await
        .map_err(run_error)?;
    let dying = Scheduler::new(Arc::new(executor), 4096)
        .with_journal(Arc::clone(&journal), DEAD.into())
        .with_claims(Arc::clone(&claims));
    let mut started = tokio::task::JoinSet::new();
    for i in 0..runs {
        let request = RunRequest {
            workflow: Arc::clone(&workflow),
            input: super::reference_input(&api.addr, i, "resume"),
            trace: IncomingTrace::from_headers(None, None),
        };
        let scheduler = dying.clone();
        started.spawn(async move { scheduler.run(request).await });
    }
    let hung = || {
        api.log.lock().map_or(0, |log| {
            log.iter()
                .filter(|r| r.path.ends_with("/permissions"))
                .count()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while hung() < runs {
        if Instant::now() > deadline {
            return Err(run_error(format!(
                "only {} of {runs} runs reached the hanging call",
                hung()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The kill: every run's future dropped mid-flight, as the process's end
    // would leave them (their lease keepers stop with them).
    started.abort_all();
    while started.join_next().await.is_some() {}
    drop(dying);
    let in_flight_at_kill = journal
        .runs()
        .await
        .map_err(run_error)?
        .iter()
        .filter(|r| r.status == "running")
        .count();

    let t0 = Instant::now();
    let dead: crate::journal::OwnerIsDead = Box::new(|owner| owner == DEAD);
    let abandoned = journal
        .take_over_abandoned(SURVIVOR, RUN_LEASE, Some(dead), &[])
        .await
        .map_err(run_error)?;
    let take_over = t0.elapsed();
    let recoverer = Recoverer {
        sandbox,
        journal: Arc::clone(&journal),
        claims,
        owner: SURVIVOR.into(),
        liveness: Liveness::LeasesOnly,
        local: Default::default(),
        history_dir: None,
        max_concurrency: 4096,
        on_resumed: None,
        live: None,
    };
    let t1 = Instant::now();
    let recovered = recoverer.recover_runs(abandoned).await.map_err(run_error)?;
    let resume = t1.elapsed();
    let succeeded = recovered
        .iter()
        .filter(|r| r.action == "resumed" && r.outcome == "succeeded")
        .count();
    let tokens_issued = api.log.lock().map_or(0, |log| {
        log.iter()
            .filter(|r| r.path == "/oauth/token" && r.status == Some(200) && !r.replayed)
            .count()
    });
    Ok(ResumeResult {
        runs,
        in_flight_at_kill,
        take_over_ms: take_over.as_secs_f64() * 1000.0,
        resume_ms: resume.as_secs_f64() * 1000.0,
        succeeded,
        tokens_issued,
        runs_per_s: succeeded as f64 / resume.as_secs_f64().max(1e-9),
    })
}
