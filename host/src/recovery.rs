//! Crash recovery: runs whose host died are taken over, then resumed or
//! undone, as each workflow's `on_crash` says.
//!
//! A running run keeps a lease in the journal. When its host is killed, the
//! lease runs out (or, on the same machine, its process is plainly gone), and
//! the next `braid run`, `braid recover` or a `braid serve` sharing the store
//! takes the run over (atomically: exactly one recoverer gets it). Then:
//!
//! - `on_crash = "resume"` (the default): the run goes on here
//!   ([`Scheduler::resume`]) with the definition and the component versions
//!   it started with (pinned by sha256; a version hot-swapped out since is
//!   taken from `component-history/`). Completed steps are not run again;
//!   steps in flight are, with the same idempotency keys. It ends
//!   `succeeded` or `failed` with its report, as it would have.
//! - `on_crash = "undo"`, or a run that cannot be resumed (a journal of an
//!   older braid, a component version this host does not have): its
//!   completed reversible steps are undone in reverse completion order under
//!   the run's original trace id, its claims released, and it is recorded
//!   `aborted`. Undos are journaled as they happen, so a recoverer that dies
//!   too leaves no step undone twice.
//!
//! A live host's own runs are left alone while it executes them
//! ([`LocalRuns`]); one it stopped because it could not keep its lease and
//! could not take back either (the journal stayed out of reach) is
//! recovered like any other once its lease has run out, by another host or
//! by this one's recovery loop.

use crate::journal::{AbandonedRun, JournalError, LocalRuns, RunJournal, Unsuspend};
use crate::report::{
    AttemptReport, MAX_SHOWN_BYTES, RunRecorder, RunReport, StepReport, UndoReport, bounded,
};
use crate::sandbox::{PreparedComponent, Sandbox, SandboxExecutor};
use crate::scheduler::{
    AttemptContext, JournalUndoLog, LEFT_TO_RECOVERY, RUN_LEASE, Scheduler, StepExecutor,
    TAKEN_OVER, stored_report, undo_step,
};
use crate::store::ClaimStore;
use crate::trace::{AttemptTrace, SpanId, TraceFlags, TraceId, TraceState};
use crate::workflow::{OnCrash, StepSpec, Workflow};
use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What recovery did with one abandoned run.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveredRun {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub previous_owner: String,
    /// `resumed` (carried on to its end) or `undone` (undone and aborted).
    pub action: &'static str,
    /// How the run ended: `succeeded` or `failed` (resumed), `aborted` (undone).
    pub outcome: String,
    pub error: Option<String>,
    pub undo: Vec<UndoReport>,
    pub released_claims: Vec<String>,
}

/// How recovery tells that a run's host is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The store is on this machine (SQLite): a run whose owner process
    /// (`hostname:pid`) no longer exists here is taken at once; otherwise
    /// its lease must run out.
    ThisMachine,
    /// The store is shared by several machines (PostgreSQL): only an
    /// expired lease says a host is gone. A process id seen from another
    /// machine (or another pid namespace) proves nothing.
    LeasesOnly,
}

/// What recovery needs: the host's sandbox and stores, its name as a run
/// owner, how it tells a dead host, and the runs it is executing itself.
#[derive(Clone)]
pub struct Recoverer {
    pub sandbox: Arc<Sandbox>,
    pub journal: Arc<dyn RunJournal>,
    pub claims: Arc<dyn ClaimStore>,
    pub owner: String,
    pub liveness: Liveness,
    /// This host's runs in progress: never taken over (see [`LocalRuns`]).
    pub local: LocalRuns,
    /// Where earlier component versions are kept
    /// (`<state-dir>/component-history`, see [`crate::registry`]): a run
    /// resumed after a hot swap runs the version it started with from there.
    pub history_dir: Option<PathBuf>,
    /// Step calls in flight at once across the runs one pass resumes.
    pub max_concurrency: usize,
    /// Called with each resumed run's report when it ends (`braid serve`
    /// counts it in its metrics and exports its spans).
    pub on_resumed: Option<ResumedHook>,
    /// The components a workflow runs now, by workflow name (`braid
    /// serve`'s live versions, hot swaps included): what a suspended run
    /// an operator resumes goes on with. `None`, or a workflow it does not
    /// serve: the component files as they are now.
    pub live: Option<LiveComponents>,
}

/// What a host does with the report of a run it resumed.
pub type ResumedHook = Arc<dyn Fn(&RunReport) + Send + Sync>;

/// The executor a served workflow runs its new runs with, by name.
pub type LiveComponents = Arc<dyn Fn(&str) -> Option<Arc<SandboxExecutor>> + Send + Sync>;

/// How often `braid serve` looks for abandoned runs: well within a run
/// lease, so a dead host's runs are taken over soon after its leases run out.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// How often `braid serve` looks for waiting runs whose time has come: a
/// timer fires within this much of its time (plus the run's start).
pub const WAKE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// Most waiting runs one host wakes per look.
pub const WAKE_BATCH: usize = 500;

/// What a taken-over run goes on with: its definition and the executor of
/// its components.
type Plan = (Arc<Workflow>, Arc<SandboxExecutor>);

/// Prepared components by (file, sha256), shared by the runs of one pass.
type Loaded = HashMap<(PathBuf, String), Arc<PreparedComponent>>;

impl Recoverer {
    /// Finds runs abandoned by dead hosts (or stopped by this one after it
    /// lost their lease) and resumes or undoes each; returns when every
    /// one has ended.
    pub async fn recover(&self) -> Result<Vec<RecoveredRun>, JournalError> {
        let is_dead: Option<crate::journal::OwnerIsDead> = match self.liveness {
            Liveness::ThisMachine => {
                let this = self.owner.clone();
                Some(Box::new(move |o| {
                    crate::journal::owner_is_dead_here(o, &this)
                }))
            }
            Liveness::LeasesOnly => None,
        };
        let abandoned = self
            .journal
            .take_over_abandoned(&self.owner, RUN_LEASE, is_dead, &self.local.list())
            .await?;
        self.recover_runs(abandoned).await
    }

    /// Resumes or undoes runs this host has taken over (resumed runs go on
    /// side by side); returns when every one has ended.
    pub async fn recover_runs(
        &self,
        abandoned: Vec<AbandonedRun>,
    ) -> Result<Vec<RecoveredRun>, JournalError> {
        let mut loaded = Loaded::new();
        let base = Scheduler::new(
            Arc::new(SandboxExecutor::from_shared(
                Arc::clone(&self.sandbox),
                std::iter::empty(),
            )),
            self.max_concurrency,
        )
        .with_journal(Arc::clone(&self.journal), self.owner.clone())
        .with_claims(Arc::clone(&self.claims))
        .with_local_runs(self.local.clone())
        // Stored with the terminal record, as `braid serve` stores its runs'
        // (it answers `GET /v1/runs/ID` and a repeated key from them).
        .with_reports();
        let mut resuming = tokio::task::JoinSet::new();
        let mut to_undo = Vec::new();
        for run in abandoned {
            match self.resume_plan(&run, &mut loaded) {
                Ok(Some((wf, executor))) => {
                    let scheduler = base.with_executor(executor);
                    resuming.spawn(async move {
                        let resumed = scheduler.resume(wf, &run, &CancellationToken::new()).await;
                        (run, resumed)
                    });
                }
                Ok(None) => to_undo.push((run, None)),
                Err(why) => to_undo.push((run, Some(why))),
            }
        }
        let mut recovered = Vec::new();
        for (run, why) in to_undo {
            recovered.extend(self.undo_and_abort(run, why).await?);
        }
        while let Some(joined) = resuming.join_next().await {
            let Ok((run, resumed)) = joined else {
                tracing::error!("a resumed run's task ended abnormally");
                continue;
            };
            match resumed {
                // It lost its lease to another recoverer, which finishes it.
                Ok(report)
                    if report.outcome == "aborted"
                        && matches!(
                            report.error.as_deref(),
                            Some(TAKEN_OVER | LEFT_TO_RECOVERY)
                        ) =>
                {
                    tracing::warn!(run_id = %report.run_id, "another host took this resumed run over; it finishes the run");
                }
                Ok(report) => {
                    if let Some(hook) = &self.on_resumed {
                        hook(&report);
                    }
                    recovered.push(RecoveredRun {
                        run_id: report.run_id,
                        workflow: report.workflow,
                        trace_id: report.trace_id,
                        previous_owner: run.previous_owner,
                        action: "resumed",
                        outcome: report.outcome,
                        error: report.error,
                        undo: report.undo,
                        released_claims: report.released_claims,
                    });
                }
                Err(why) => {
                    let why = Some(format!("cannot resume: {why}"));
                    recovered.extend(self.undo_and_abort(run, why).await?);
                }
            }
        }
        Ok(recovered)
    }

    /// The workflow and executor to resume `run` with, as it started;
    /// `Ok(None)`: its workflow says `on_crash = "undo"`; `Err`: why it
    /// cannot be resumed here.
    fn resume_plan(&self, run: &AbandonedRun, loaded: &mut Loaded) -> Result<Option<Plan>, String> {
        let start = &run.start;
        if start.definition.is_empty() {
            return Err(
                "cannot resume: the run's journal holds no definition (started by an older braid)"
                    .into(),
            );
        }
        let wf = Workflow::from_toml(&start.definition, Path::new(&start.workflow_path))
            .map_err(|e| format!("cannot resume: its definition no longer loads: {e}"))?;
        // A run woken from its wait did not crash: it goes on.
        if wf.on_crash == OnCrash::Undo && !run.woken {
            return Ok(None);
        }
        // Resumed by an operator: on the components live now (the fixed
        // version, after a hot swap).
        if run.unsuspend == Some(Unsuspend::Resume) {
            return self.live_plan(wf, run).map(Some);
        }
        let mut components = Vec::new();
        for (step, path, sha) in &start.components {
            let prepared = match loaded.entry((PathBuf::from(path), sha.clone())) {
                Entry::Occupied(known) => Arc::clone(known.get()),
                Entry::Vacant(new) => {
                    let c = Arc::new(self.load_pinned(step, &new.key().0, sha)?);
                    Arc::clone(new.insert(c))
                }
            };
            components.push((step.clone(), prepared));
        }
        let executor = SandboxExecutor::from_shared(Arc::clone(&self.sandbox), components);
        Ok(Some((Arc::new(wf), Arc::new(executor))))
    }

    /// The workflow and executor to go on with a suspended run that was
    /// resumed: the components live now (`live`, else the files as they are).
    fn live_plan(&self, wf: Workflow, run: &AbandonedRun) -> Result<Plan, String> {
        if let Some(executor) = self.live.as_ref().and_then(|live| live(&wf.name)) {
            return Ok((Arc::new(wf), executor));
        }
        let mut components = Vec::new();
        for (step, path, _) in &run.start.components {
            let prepared = self.sandbox.load(Path::new(path)).map_err(|e| {
                format!("cannot resume: step `{step}`'s component does not load: {e}")
            })?;
            components.push((step.clone(), Arc::new(prepared)));
        }
        let executor = SandboxExecutor::from_shared(Arc::clone(&self.sandbox), components);
        Ok((Arc::new(wf), Arc::new(executor)))
    }

    /// The component version `sha256` a run's step started with: the file
    /// it ran from if it still holds that version, else the version kept in
    /// the component history.
    fn load_pinned(
        &self,
        step: &str,
        path: &Path,
        sha256: &str,
    ) -> Result<PreparedComponent, String> {
        let kept = self.history_dir.as_ref().map(|dir| {
            dir.join(crate::registry::component_name(path))
                .join(format!("{sha256}.wasm"))
        });
        let mut tried = Vec::new();
        for file in std::iter::once(path.to_path_buf()).chain(kept) {
            match self.sandbox.load(&file) {
                Ok(c) if c.sha256 == sha256 => return Ok(c),
                Ok(c) => tried.push(format!("{} is version {}", file.display(), c.sha256)),
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(format!(
            "cannot resume: step `{step}` started with component version {sha256}, which this host does not have ({})",
            tried.join("; ")
        ))
    }

    /// Wakes at most [`WAKE_BATCH`] waiting runs whose time has come (a
    /// timer, a signal, a cancel) and carries each on from its journal, on
    /// the component versions it started with; returns when every one has
    /// ended or waits again.
    pub async fn wake(&self) -> Result<Vec<RecoveredRun>, JournalError> {
        let due = self
            .journal
            .take_over_waiting(&self.owner, RUN_LEASE, WAKE_BATCH)
            .await?;
        self.recover_runs(due).await
    }

    /// Runs [`Recoverer::wake`] every [`WAKE_INTERVAL`] until the task is
    /// aborted (each pass on its own task, so runs woken by one go on while
    /// the next wakes others): how `braid serve` carries on waiting runs,
    /// its own and those of hosts sharing its store.
    pub fn spawn_wake_loop(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WAKE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut passes = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                while let Some(done) = passes.try_join_next() {
                    log_wake(done);
                }
                let this = self.clone();
                passes.spawn(async move { this.wake().await });
            }
        })
    }

    /// Runs [`Recoverer::recover`] now and then every [`RECOVERY_INTERVAL`]
    /// until the task is aborted: how `braid serve` carries on the runs it
    /// left when it last stopped, and how hosts sharing a store (`--store
    /// postgres://`) carry on (or undo) the runs of a host that died and is
    /// not coming back. Errors are logged and tried again on the next pass.
    pub fn spawn_loop(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECOVERY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Each pass on its own task: runs a pass resumes go on while the
            // next passes look for other dead hosts' runs (a run being
            // resumed here is in `local`, so no pass takes it twice).
            // Aborting the loop drops them all.
            let mut passes = tokio::task::JoinSet::new();
            loop {
                tick.tick().await;
                while let Some(done) = passes.try_join_next() {
                    log_pass(done);
                }
                let this = self.clone();
                passes.spawn(async move { this.recover().await });
            }
        })
    }
}

/// Logs what one wake pass did.
fn log_wake(done: Result<Result<Vec<RecoveredRun>, JournalError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(runs)) => {
            for r in runs {
                tracing::info!(run_id = %r.run_id, trace_id = %r.trace_id,
                    outcome = %r.outcome, "a waiting run was woken and carried on");
            }
        }
        Ok(Err(e)) => tracing::error!("looking for runs to wake failed: {e}"),
        Err(e) => tracing::error!("a wake pass ended abnormally: {e}"),
    }
}

/// Logs what one recovery pass did.
fn log_pass(done: Result<Result<Vec<RecoveredRun>, JournalError>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(runs)) => {
            for r in runs {
                tracing::warn!(run_id = %r.run_id, trace_id = %r.trace_id,
                    previous_owner = %r.previous_owner, action = r.action,
                    outcome = %r.outcome, undone = r.undo.len(),
                    "recovered a run its host had left");
            }
        }
        Ok(Err(e)) => tracing::error!("looking for abandoned runs failed: {e}"),
        Err(e) => tracing::error!("a recovery pass ended abnormally: {e}"),
    }
}

impl Recoverer {
    /// Undoes `run` and records it `aborted` (`not_resumed`: why it was not
    /// resumed instead, for its error). `None`: another host took it over.
    async fn undo_and_abort(
        &self,
        run: AbandonedRun,
        not_resumed: Option<String>,
    ) -> Result<Option<RecoveredRun>, JournalError> {
        let (sandbox, journal, claims) = (&self.sandbox, &self.journal, self.claims.as_ref());
        let start = &run.start;
        let completed = run.completed();
        // Each undo (and the release, and the end) only while the run is still
        // ours, its lease renewed: a recoverer slower than a lease must not undo
        // alongside the one that took the run from it.
        let still_ours = || async {
            let ours = journal.heartbeat(&run.fence, RUN_LEASE).await?;
            if !ours {
                tracing::warn!(run_id = %start.run_id, "another host took over this recovery; leaving the rest to it");
            }
            Ok::<_, JournalError>(ours)
        };
        tracing::warn!(run_id = %start.run_id, trace_id = %start.trace_id, previous_owner = %run.previous_owner,
            steps = completed.len(), "recovering a run whose host died");
        let trace = AttemptTrace {
            trace_id: TraceId::parse(&start.trace_id).unwrap_or_else(|_| TraceId::random()),
            span_id: SpanId::parse(&start.span_id).unwrap_or_else(|_| SpanId::random()),
            parent_span_id: SpanId::parse(&start.span_id).unwrap_or_else(|_| SpanId::random()),
            flags: TraceFlags::from_bits(start.trace_flags),
            state: TraceState::parse(&start.tracestate).unwrap_or_default(),
        };
        let recorder = RunRecorder::new();
        let log = JournalUndoLog {
            journal: Arc::clone(journal),
            fence: run.fence.clone(),
        };
        let mut undo = Vec::new();
        let mut problems: Vec<String> = not_resumed.into_iter().collect();
        for done in completed.iter().rev() {
            let prepared = match sandbox.load(&done.component) {
                Ok(c) if c.sha256 == done.component_sha256 => c,
                Ok(c) => {
                    problems.push(format!(
                        "step `{}`: component {} changed since the run (sha256 {} != {}); not undone",
                        done.step,
                        done.component.display(),
                        c.sha256,
                        done.component_sha256
                    ));
                    continue;
                }
                Err(e) => {
                    problems.push(format!("step `{}`: {e}; not undone", done.step));
                    continue;
                }
            };
            if !prepared.is_reversible() {
                continue;
            }
            if !still_ours().await? {
                return Ok(None);
            }
            let executor = SandboxExecutor::from_components(
                Arc::clone(sandbox),
                [(done.step.clone(), prepared)],
            );
            let spec = StepSpec {
                name: done.step.clone(),
                kind: Default::default(),
                component: done.component.clone(),
                args: BTreeMap::new(),
                wait_for: Vec::new(),
                when: None,
                map: None,
                timeout: done.timeout,
                max_retries: 0,
                allowed_hosts: done.allowed_hosts.clone(),
                limits: crate::workflow::StepLimits::default(),
                idempotency_header: None,
                deny_continues: false,
                on_failure: None,
            };
            let ctx = AttemptContext {
                run_id: start.run_id.clone(),
                workflow: start.workflow.clone(),
                step: done.step.clone(),
                attempt: 0,
                trace: trace.clone(),
                recorder: recorder.clone(),
                keys: crate::scheduler::KeySecret::from_hex(&start.idempotency_secret),
            };
            debug_assert!(executor.is_reversible(&done.step));
            undo.push(
                undo_step(
                    &executor,
                    &spec,
                    ctx,
                    done.input.clone(),
                    done.output.clone(),
                    &log,
                )
                .await,
            );
        }
        if !still_ours().await? {
            return Ok(None);
        }
        let released_claims = match claims.release_all(&start.run_id).await {
            Ok(list) => list.into_iter().map(|c| c.claim_id).collect(),
            Err(e) => {
                problems.push(format!(
                    "claims not released (their leases will expire): {e}"
                ));
                Vec::new()
            }
        };
        let failed_undos = undo.iter().filter(|u| u.outcome != "undone").count();
        let mut error = format!(
            "host {} stopped mid-run; recovered: {} step(s) undone, {} undo(s) failed, {} claim(s) released",
            run.previous_owner,
            undo.len() - failed_undos,
            failed_undos,
            released_claims.len()
        );
        for p in &problems {
            error.push_str("; ");
            error.push_str(p);
        }
        // Stored with the terminal record, like every run's end: `GET
        // /v1/runs/ID` and listings answer for aborted runs too.
        let mut report = aborted_report(&run, &trace, &error, &undo, &released_claims, &recorder);
        // A run cancelled before its host died ends as it was asked to.
        let outcome = if run.cancelled() {
            "cancelled"
        } else {
            "aborted"
        };
        report.outcome = outcome.into();
        let recorded = journal
            .finish(
                &run.fence,
                outcome,
                false,
                Some(error.clone()),
                stored_report(&report),
            )
            .await?;
        if !recorded {
            tracing::warn!(run_id = %start.run_id, "another host took over this recovery; it records the end");
            return Ok(None);
        }
        tracing::warn!(run_id = %start.run_id, trace_id = %start.trace_id, "run {outcome}: {error}");
        Ok(Some(RecoveredRun {
            run_id: start.run_id.clone(),
            workflow: start.workflow.clone(),
            trace_id: start.trace_id.clone(),
            previous_owner: run.previous_owner,
            action: "undone",
            outcome: outcome.into(),
            error: Some(error),
            undo,
            released_claims,
        }))
    }
}

/// The report of a run recovery undid and aborted: its steps as its journal
/// recorded them (those that completed, with the attempt that succeeded),
/// the undos, the claims released and the host events of the recovery.
fn aborted_report(
    run: &AbandonedRun,
    trace: &AttemptTrace,
    error: &str,
    undo: &[UndoReport],
    released_claims: &[String],
    recorder: &RunRecorder,
) -> RunReport {
    let start = &run.start;
    let mut seen = std::collections::HashSet::new();
    let steps = run
        .entries
        .iter()
        .filter(|e| e.kind == "completed" && seen.insert(e.step.as_str()))
        .map(|e| StepReport {
            name: e.step.clone(),
            component: e.component.clone().unwrap_or_default(),
            component_sha256: e.component_sha256.clone().unwrap_or_default(),
            outcome: e.outcome.clone(),
            skipped_because: None,
            map: None,
            compose: None,
            wait: None,
            input: e.input.clone().map(|i| bounded(i, MAX_SHOWN_BYTES)),
            output: e.output.clone().map(|o| bounded(o, MAX_SHOWN_BYTES)),
            start_ms: 0.0,
            duration_ms: 0.0,
            parallel_with: Vec::new(),
            attempts: (e.attempt > 0)
                .then(|| AttemptReport {
                    attempt: e.attempt,
                    span_id: e.span_id.clone(),
                    start_ms: 0.0,
                    duration_ms: 0.0,
                    queued_ms: 0.0,
                    outcome: "succeeded".into(),
                    error: None,
                    parent_span_id: None,
                })
                .into_iter()
                .collect(),
            compensations: Vec::new(),
            error: None,
        })
        .collect();
    let (events, http_calls, dropped) = recorder.take();
    let now = crate::store::now_ms();
    RunReport {
        run_id: start.run_id.clone(),
        workflow: start.workflow.clone(),
        trace_id: start.trace_id.clone(),
        span_id: start.span_id.clone(),
        parent_span_id: start.parent_span_id.clone(),
        traceparent: format!(
            "00-{}-{}-{:02x}",
            trace.trace_id, trace.span_id, start.trace_flags
        ),
        tracestate: start.tracestate.clone(),
        continued_trace: start.parent_span_id.is_some(),
        started_at_ms: run.started_at_ms,
        duration_ms: now.saturating_sub(run.started_at_ms) as f64,
        outcome: "aborted".into(),
        degraded: false,
        error: Some(error.to_string()),
        result: None,
        input: Some(bounded(start.input.to_string(), MAX_SHOWN_BYTES)),
        steps,
        events,
        http_calls,
        undo: undo.to_vec(),
        released_claims: released_claims.to_vec(),
        dropped,
        resumed: None,
        restarted_from: None,
    }
}
