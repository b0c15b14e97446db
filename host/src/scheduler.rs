//! The scheduler: runs a workflow's DAG on tokio, and owns the failure model.
//!
//! Owns: when a step starts (as soon as every step it depends on has
//! succeeded, bounded by a concurrency limit), each step's input (built from
//! workflow inputs and other steps' outputs), retries with backoff, the
//! compensation decision of a failed step, cancelling steps still running when
//! the run fails, undoing completed steps in reverse completion order,
//! releasing a failed run's claims, journaling all of it, and the run report.
//!
//! Must not know wasmtime: a step call is executed by a [`StepExecutor`]
//! (the sandbox in production; anything else in tests and baselines).

use crate::journal::{JournalEntry, JournalError, LocalRuns, RunJournal, RunStart};
use crate::report::{
    AttemptReport, CompensationReport, EventRecord, RunRecorder, RunReport, StepReport, UndoReport,
};
use crate::store::ClaimStore;
use crate::trace::{AttemptTrace, IncomingTrace, SpanId};
use crate::workflow::{ArgSource, InputError, StepSpec, Workflow};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Who is running: everything a host capability needs to tag and check a call.
#[derive(Clone)]
pub struct AttemptContext {
    pub run_id: String,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub trace: AttemptTrace,
    pub recorder: RunRecorder,
}

/// Why a step call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// The step said it may succeed if tried again.
    #[error("{0}")]
    Retryable(String),
    /// The step said retrying cannot help.
    #[error("{0}")]
    Fatal(String),
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The guest trapped (panic, unreachable, out of bounds, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    #[error("output is not valid JSON: {0}")]
    InvalidOutput(String),
    /// The attempt hit one of its limits.
    #[error("{kind}: {1}", kind = .0.as_str())]
    Limit(LimitKind, String),
    /// The host could not run the step at all (e.g. instantiation failed).
    #[error("host error: {0}")]
    Host(String),
}

/// Which limit an attempt hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A linear memory tried to grow past `memory_limit_mb`.
    Memory,
    /// The output was larger than `max_output_bytes`.
    Output,
    /// The guest's call stack overflowed.
    Stack,
    /// A table tried to grow past the sandbox's limit.
    Table,
    /// The attempt used up its `fuel` (CPU budget).
    Fuel,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory-limit",
            LimitKind::Output => "output-too-large",
            LimitKind::Stack => "stack-overflow",
            LimitKind::Table => "table-limit",
            LimitKind::Fuel => "fuel-exhausted",
        }
    }
}

impl StepFailure {
    /// Whether the retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepFailure::Retryable(_) | StepFailure::Timeout(_))
    }
    /// The attempt outcome as it appears in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            StepFailure::Retryable(_) => "retryable",
            StepFailure::Fatal(_) => "fatal",
            StepFailure::Timeout(_) => "timeout",
            StepFailure::Trap(_) => "trap",
            StepFailure::InvalidOutput(_) => "invalid-output",
            StepFailure::Limit(kind, _) => kind.as_str(),
            StepFailure::Host(_) => "host-error",
        }
    }
}

/// A reversible step's answer to its own failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compensation {
    Retry,
    ContinueWith(String),
    GiveUp,
}

/// Runs step calls. Implementations must enforce `step.timeout` on each call.
pub trait StepExecutor: Send + Sync + 'static {
    /// The component that runs `step`, and its sha256, for the report.
    fn component_of(&self, step: &str) -> (String, String);

    /// Whether `step` implements `compensate` and `undo`.
    fn is_reversible(&self, step: &str) -> bool;

    /// Runs one attempt and returns the step's output text (the scheduler
    /// checks that it is JSON).
    fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> impl Future<Output = Result<String, StepFailure>> + Send;

    /// Asks a reversible step what to do about its failure.
    fn compensate(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        error: StepFailure,
    ) -> impl Future<Output = Result<Compensation, StepFailure>> + Send;

    /// Reverts a completed step.
    fn undo(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        output: String,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
}

/// A request to run a workflow once.
pub struct RunRequest {
    pub workflow: Arc<Workflow>,
    pub input: Value,
    pub trace: IncomingTrace,
}

/// Runs workflows with one executor and a shared concurrency bound. A clone
/// shares the executor, the bound, the journal and the claim store.
pub struct Scheduler<E> {
    executor: Arc<E>,
    /// Bounds step calls in flight across every run of this scheduler.
    permits: Arc<Semaphore>,
    /// Where runs are journaled (none: runs live only in memory).
    journal: Option<Arc<dyn RunJournal>>,
    /// Where a failed run's leftover claims are released.
    claims: Option<Arc<dyn ClaimStore>>,
    /// This host, as a run owner (`hostname:pid`).
    owner: String,
    /// The runs this host is executing, shared with its recovery loop.
    local: LocalRuns,
}

impl<E> Clone for Scheduler<E> {
    fn clone(&self) -> Self {
        Scheduler {
            executor: Arc::clone(&self.executor),
            permits: Arc::clone(&self.permits),
            journal: self.journal.clone(),
            claims: self.claims.clone(),
            owner: self.owner.clone(),
            local: self.local.clone(),
        }
    }
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The input does not fit the workflow.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The run's start could not be journaled (after the journal's own
    /// retries): a run the journal does not know could not be recovered if
    /// this host died, so it is refused before any step runs.
    #[error("run not started: {0}")]
    JournalUnavailable(JournalError),
}

/// The error of a run aborted by [`Scheduler::run_until`]'s cancellation.
pub const ABORTED: &str = "run aborted: the host is shutting down";

/// First retry waits about this long; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// `compensate` may ask for a retry at most this many times per step.
pub const MAX_COMPENSATION_RETRIES: u32 = 3;
/// A failed undo is tried again at most this many times.
pub const UNDO_RETRIES: u32 = 3;
/// A running run's lease in the journal; renewed at a third of it.
pub const RUN_LEASE: Duration = Duration::from_secs(6);
/// A host stops a run whose lease it has not renewed for this long: before
/// the lease runs out and another host may take the run over and undo it.
pub const LEASE_FENCE: Duration = Duration::from_secs(4);
/// How long a run stopped by [`LEASE_FENCE`] keeps trying to take its lease
/// back (to undo itself) before it leaves the run to recovery.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(10);
/// The error of a run stopped by [`LEASE_FENCE`] that got its lease back
/// and undid itself (outcome `failed`).
pub const LEASE_UNRENEWED: &str = "run stopped: the run journal was unavailable for 4 s, so the run's lease could not be renewed; undone by this host once the journal answered again";
/// The error of a run stopped because another host took it over; that host
/// undoes it and records it `aborted`, as this one reports it.
pub const TAKEN_OVER: &str =
    "run aborted: its lease ran out and another host took the run over (which undoes it)";
/// The error of a run stopped by [`LEASE_FENCE`] whose journal stayed out of
/// reach for [`RECLAIM_WAIT`] too: recovery undoes it once its lease has
/// run out (any host's, this one's included).
pub const LEFT_TO_RECOVERY: &str = "run aborted: the run journal stayed unavailable, so the run's lease could not be kept; recovery undoes the run once its lease has run out";

/// Why a run's lease keeper stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseEnd {
    /// The journal says another host owns the run.
    TakenOver,
    /// No renewal got through for [`LEASE_FENCE`].
    Unrenewed,
    /// The run is finishing (or the keeper was stopped).
    Finished,
}

/// Keeps a run's lease alive; `lost` fires when it cannot (see [`LEASE_FENCE`]).
struct LeaseKeeper {
    task: tokio::task::JoinHandle<LeaseEnd>,
    lost: CancellationToken,
    /// Set before the terminal record is written: a renewal that then finds
    /// the run no longer running is not news.
    finishing: Arc<std::sync::atomic::AtomicBool>,
}

/// Exponential backoff with jitter: a random wait between half and all of
/// `base * 2^(retry-1)`, capped.
pub fn backoff(retry: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    ceiling.mul_f64(jitter)
}

/// A new random run id (`run-` and 16 hex digits).
pub fn new_run_id() -> String {
    format!("run-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// How a step ended.
enum StepOutcome {
    Succeeded(Value),
    /// `compensate` said `continue-with`: this output stands in.
    Compensated(Value),
    Failed(String),
}

/// Renews a run's lease every third of [`RUN_LEASE`] until aborted. Fires
/// `lost` and ends when the journal says another host owns the run, or when
/// no renewal got through for [`LEASE_FENCE`] (counted from when the last
/// successful renewal was sent, so the run stops at least
/// `RUN_LEASE - LEASE_FENCE` before anyone may take it over).
async fn keep_lease(
    journal: Arc<dyn RunJournal>,
    run_id: String,
    owner: String,
    lost: CancellationToken,
    finishing: Arc<std::sync::atomic::AtomicBool>,
) -> LeaseEnd {
    use tokio::time::Instant;
    // The start (or a renewal) was just journaled with a full lease.
    let mut renewed = Instant::now();
    let period = RUN_LEASE / 3;
    let mut tick = tokio::time::interval_at(renewed + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sent = Instant::now();
        let renewal = journal.heartbeat(&run_id, &owner, RUN_LEASE);
        match tokio::time::timeout_at(renewed + LEASE_FENCE, renewal).await {
            Ok(Ok(true)) => renewed = sent,
            Ok(Ok(false)) if finishing.load(std::sync::atomic::Ordering::SeqCst) => {
                return LeaseEnd::Finished;
            }
            Ok(Ok(false)) => {
                tracing::warn!(run_id, "another host took this run over");
                lost.cancel();
                return LeaseEnd::TakenOver;
            }
            Ok(Err(e)) => tracing::warn!(run_id, "run lease renewal failed: {e}"),
            Err(_) => {}
        }
        if Instant::now() >= renewed + LEASE_FENCE {
            tracing::error!(
                run_id,
                "run lease not renewed for {} s: stopping the run",
                LEASE_FENCE.as_secs()
            );
            lost.cancel();
            return LeaseEnd::Unrenewed;
        }
    }
}

/// Journals entries of one run; a journal failure is logged, never fatal to
/// the run (the report still says what happened).
#[derive(Clone)]
struct RunLog {
    journal: Option<Arc<dyn RunJournal>>,
    run_id: String,
}

impl RunLog {
    async fn append(&self, entry: JournalEntry) {
        if let Some(j) = &self.journal
            && let Err(e) = j.append(&self.run_id, entry).await
        {
            tracing::error!(run_id = %self.run_id, "journal write failed: {e}");
        }
    }
}

impl<E: StepExecutor> Scheduler<E> {
    pub fn new(executor: Arc<E>, max_concurrency: usize) -> Self {
        Scheduler {
            executor,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            journal: None,
            claims: None,
            owner: format!("local:{}", std::process::id()),
            local: LocalRuns::default(),
        }
    }

    /// Lists the runs in progress in `local` (shared with the host's
    /// recovery, which must not take them over).
    pub fn with_local_runs(mut self, local: LocalRuns) -> Self {
        self.local = local;
        self
    }

    /// Journals every run; `owner` names this host in run leases.
    pub fn with_journal(mut self, journal: Arc<dyn RunJournal>, owner: String) -> Self {
        self.journal = Some(journal);
        self.owner = owner;
        self
    }

    /// Releases a failed run's leftover claims in `claims`.
    pub fn with_claims(mut self, claims: Arc<dyn ClaimStore>) -> Self {
        self.claims = Some(claims);
        self
    }

    pub fn executor(&self) -> &Arc<E> {
        &self.executor
    }

    /// A scheduler for `executor` that shares this one's concurrency bound,
    /// journal and claim store: how a hot swap changes the components new
    /// runs use while runs in flight keep theirs.
    pub fn with_executor<F>(&self, executor: Arc<F>) -> Scheduler<F> {
        Scheduler {
            executor,
            permits: Arc::clone(&self.permits),
            journal: self.journal.clone(),
            claims: self.claims.clone(),
            owner: self.owner.clone(),
            local: self.local.clone(),
        }
    }

    /// Runs the workflow to completion. An input that does not fit the
    /// workflow is refused before anything runs; every other failure is in
    /// the report (`outcome: failed`), after cancelling what still ran and
    /// undoing what completed.
    pub async fn run(&self, request: RunRequest) -> Result<RunReport, RunError> {
        self.run_until(request, &CancellationToken::new()).await
    }

    /// [`Scheduler::run`], aborted when `cancel` fires: steps still running
    /// are cancelled and the run fails through the normal failure path
    /// (completed steps undone, claims released, all journaled) with the
    /// error "run aborted: the host is shutting down".
    pub async fn run_until(
        &self,
        request: RunRequest,
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        self.run_as(request, new_run_id(), cancel).await
    }

    /// [`Scheduler::run_until`] under a run id chosen beforehand (from
    /// [`new_run_id`]), e.g. one already reserved for an `Idempotency-Key`.
    pub async fn run_as(
        &self,
        request: RunRequest,
        run_id: String,
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        let wf = request.workflow;
        let inputs = wf.bind_inputs(&request.input)?;
        let incoming = request.trace;
        let run_span = SpanId::random();
        let trace_id = incoming.parent.trace_id;
        let recorder = RunRecorder::new();
        let started_at_ms = crate::store::now_ms();
        let started = Instant::now();
        let log = RunLog {
            journal: self.journal.clone(),
            run_id: run_id.clone(),
        };
        let run_tracing_span = tracing::info_span!(
            "run",
            workflow = %wf.name,
            run_id = %run_id,
            trace_id = %trace_id,
            span_id = %run_span,
        );
        if let Some(why) = &incoming.rejected {
            tracing::warn!(parent: &run_tracing_span, trace_id = %trace_id, "{why}");
        }
        tracing::info!(parent: &run_tracing_span, trace_id = %trace_id, continued = incoming.continued, "run started");
        // Until this run returns, this host's recovery leaves it alone.
        let _here = self.local.enter(&run_id);
        let mut lease = self
            .journal_start(&wf, &run_id, run_span, &incoming, &inputs)
            .await
            .map_err(|e| {
                tracing::error!(parent: &run_tracing_span, trace_id = %trace_id, "run refused: {e}");
                RunError::JournalUnavailable(e)
            })?;
        let lease_lost = lease
            .as_ref()
            .map_or_else(CancellationToken::new, |l| l.lost.clone());
        // Set when the lease is lost: the run stops at once (see
        // `LEASE_FENCE`); what then happens is up to `after_fence`.
        let mut fenced = false;

        let base = AttemptContext {
            run_id: run_id.clone(),
            workflow: wf.name.clone(),
            step: String::new(),
            attempt: 0,
            trace: AttemptTrace {
                trace_id,
                span_id: run_span,
                parent_span_id: run_span,
                flags: incoming.parent.flags,
                state: incoming.state.clone(),
            },
            recorder: recorder.clone(),
        };
        let mut outputs: HashMap<String, Value> = HashMap::new();
        let mut outcomes: HashMap<String, String> = HashMap::new();
        let mut errors: HashMap<String, String> = HashMap::new();
        // Steps that completed (not compensated), in completion order, with their input.
        let mut completed: Vec<(String, String)> = Vec::new();
        let mut inputs_of: HashMap<String, String> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut failure: Option<String> = None;
        let mut degraded = false;
        let mut tasks: JoinSet<StepOutcome> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, String> = HashMap::new();

        loop {
            if failure.is_none() {
                for step in &wf.steps {
                    if order.contains(&step.name)
                        || !step.dependencies().iter().all(|d| outputs.contains_key(*d))
                    {
                        continue;
                    }
                    order.push(step.name.clone());
                    recorder.step_started(&step.name, Instant::now());
                    let input = match build_input(step, &inputs, &outputs) {
                        Ok(v) => v.to_string(),
                        Err(e) => {
                            recorder.step_finished(&step.name, Instant::now());
                            outcomes.insert(step.name.clone(), "failed".into());
                            errors.insert(step.name.clone(), e.clone());
                            failure = Some(format!("step `{}`: {e}", step.name));
                            break;
                        }
                    };
                    inputs_of.insert(step.name.clone(), input.clone());
                    let span = tracing::info_span!(parent: &run_tracing_span, "step", step = %step.name, trace_id = %trace_id);
                    let handle = tasks.spawn(
                        run_step(
                            Arc::clone(&self.executor),
                            Arc::clone(&self.permits),
                            step.clone(),
                            input,
                            AttemptContext {
                                step: step.name.clone(),
                                ..base.clone()
                            },
                            log.clone(),
                        )
                        .instrument(span),
                    );
                    task_steps.insert(handle.id(), step.name.clone());
                }
                if failure.is_some() {
                    // Stop whatever is still running: the run has failed.
                    tasks.abort_all();
                }
            }
            let joined = if failure.is_none() {
                tokio::select! {
                    joined = tasks.join_next_with_id() => joined,
                    () = cancel.cancelled() => {
                        tracing::warn!(parent: &run_tracing_span, trace_id = %trace_id, "run aborted: the host is shutting down");
                        failure = Some(ABORTED.to_string());
                        tasks.abort_all();
                        continue;
                    }
                    () = lease_lost.cancelled() => {
                        tracing::error!(parent: &run_tracing_span, trace_id = %trace_id, "run stopped: its lease was lost");
                        // Stands until the lease check after the loop
                        // says what happened (taken back or handed over).
                        failure = Some(TAKEN_OVER.to_string());
                        fenced = true;
                        tasks.abort_all();
                        continue;
                    }
                }
            } else {
                tasks.join_next_with_id().await
            };
            let Some(joined) = joined else {
                break;
            };
            let (name, outcome) = match joined {
                Ok((id, outcome)) => (task_steps.remove(&id).unwrap_or_default(), Some(outcome)),
                Err(e) => {
                    let name = task_steps.remove(&e.id()).unwrap_or_default();
                    if e.is_cancelled() {
                        (name, None)
                    } else {
                        (
                            name,
                            Some(StepOutcome::Failed(format!(
                                "step task ended abnormally: {e}"
                            ))),
                        )
                    }
                }
            };
            recorder.step_finished(&name, Instant::now());
            match outcome {
                Some(StepOutcome::Succeeded(v)) => {
                    outputs.insert(name.clone(), v);
                    outcomes.insert(name.clone(), "succeeded".into());
                    completed.push((
                        name.clone(),
                        inputs_of.get(&name).cloned().unwrap_or_default(),
                    ));
                }
                Some(StepOutcome::Compensated(v)) => {
                    outputs.insert(name.clone(), v);
                    outcomes.insert(name.clone(), "compensated".into());
                    degraded = true;
                }
                Some(StepOutcome::Failed(e)) => {
                    outcomes.insert(name.clone(), "failed".into());
                    errors.insert(name.clone(), e.clone());
                    if failure.is_none() {
                        failure = Some(format!("step `{name}` failed: {e}"));
                        tasks.abort_all();
                    }
                }
                None => {
                    outcomes.insert(name.clone(), "cancelled".into());
                    tracing::warn!(parent: &run_tracing_span, step = %name, trace_id = %trace_id, "step cancelled: the run failed");
                    log.append(JournalEntry {
                        kind: "cancelled".into(),
                        step: name.clone(),
                        outcome: "cancelled".into(),
                        ..Default::default()
                    })
                    .await;
                }
            }
        }

        // From here on, each move (undo, release, terminal record) is made
        // only while the lease is held: a run that lost it and cannot take
        // it back is left to the host that takes it over (or to recovery),
        // which undoes the rest and records it `aborted`, as this report
        // then says.
        let mut handed_over: Option<&'static str> = None;
        match self.hold_lease(&mut lease, &run_id).await {
            Ok(retaken) if fenced && retaken => {
                tracing::warn!(parent: &run_tracing_span, trace_id = %trace_id, "run lease taken back: undoing the run here");
                failure = Some(LEASE_UNRENEWED.to_string());
            }
            Ok(_) => {}
            Err(why) => handed_over = Some(why),
        }

        let mut undo = Vec::new();
        let mut released_claims = Vec::new();
        if failure.is_some() && handed_over.is_none() {
            for (name, input) in completed.iter().rev() {
                let Some(step) = wf.step(name) else { continue };
                if !self.executor.is_reversible(name) {
                    continue;
                }
                if let Err(why) = self.hold_lease(&mut lease, &run_id).await {
                    handed_over = Some(why);
                    break;
                }
                let output = outputs.get(name).map(Value::to_string).unwrap_or_default();
                let report = undo_step(
                    self.executor.as_ref(),
                    step,
                    AttemptContext {
                        step: name.clone(),
                        ..base.clone()
                    },
                    input.clone(),
                    output,
                    &log,
                )
                .instrument(run_tracing_span.clone())
                .await;
                undo.push(report);
            }
            if handed_over.is_none() {
                match self.hold_lease(&mut lease, &run_id).await {
                    Ok(_) => released_claims = self.release_claims(&run_id, &log).await,
                    Err(why) => handed_over = Some(why),
                }
            }
        }
        if handed_over.is_none()
            && let Err(why) = self.hold_lease(&mut lease, &run_id).await
        {
            handed_over = Some(why);
        }

        let steps = build_step_reports(
            &wf,
            &order,
            &outcomes,
            &errors,
            &recorder,
            self.executor.as_ref(),
        );
        let result = outputs.get(&wf.result).cloned();
        let (mut outcome, mut error) = match (&failure, &result) {
            _ if handed_over.is_some() => ("aborted", handed_over.map(str::to_string)),
            (None, Some(_)) => ("succeeded", None),
            (Some(f), _) => ("failed", Some(f.clone())),
            (None, None) => (
                "failed",
                Some(format!("result step `{}` did not run", wf.result)),
            ),
        };
        if let Some(l) = &lease {
            l.finishing.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(j) = &self.journal
            && handed_over.is_none()
        {
            match j
                .finish(&run_id, &self.owner, outcome, degraded, error.clone())
                .await
            {
                Ok(true) => {}
                // Taken over while the terminal record waited for the
                // journal: the new owner undoes the run and records it.
                Ok(false) => {
                    tracing::error!(parent: &run_tracing_span, trace_id = %trace_id, "{TAKEN_OVER}");
                    (outcome, error) = ("aborted", Some(TAKEN_OVER.to_string()));
                }
                Err(e) => tracing::error!(run_id = %run_id, "journal write failed: {e}"),
            }
        }
        if let Some(l) = lease {
            l.task.abort();
        }
        let duration = started.elapsed();
        tracing::info!(
            parent: &run_tracing_span,
            trace_id = %trace_id,
            outcome,
            degraded,
            duration_ms = duration.as_secs_f64() * 1000.0,
            error = error.as_deref().unwrap_or(""),
            "run finished"
        );
        let (events, http_calls) = recorder.take();
        Ok(RunReport {
            run_id,
            workflow: wf.name.clone(),
            trace_id: trace_id.to_string(),
            span_id: run_span.to_string(),
            parent_span_id: incoming
                .continued
                .then(|| incoming.parent.parent_id.to_string()),
            traceparent: incoming.parent.with_parent(run_span).to_string(),
            tracestate: incoming.state.to_string(),
            continued_trace: incoming.continued,
            started_at_ms,
            duration_ms: duration.as_secs_f64() * 1000.0,
            outcome: outcome.to_string(),
            degraded,
            error,
            result,
            steps,
            events,
            http_calls,
            undo,
            released_claims,
        })
    }

    /// Journals the run's start and keeps its lease alive while it runs.
    async fn journal_start(
        &self,
        wf: &Workflow,
        run_id: &str,
        run_span: SpanId,
        incoming: &IncomingTrace,
        inputs: &serde_json::Map<String, Value>,
    ) -> Result<Option<LeaseKeeper>, JournalError> {
        let Some(journal) = self.journal.as_ref() else {
            return Ok(None);
        };
        let start = RunStart {
            run_id: run_id.to_string(),
            workflow: wf.name.clone(),
            workflow_path: wf.source.display().to_string(),
            trace_id: incoming.parent.trace_id.to_string(),
            span_id: run_span.to_string(),
            trace_flags: incoming.parent.flags.bits(),
            tracestate: incoming.state.to_string(),
            input: Value::Object(inputs.clone()),
            components: wf
                .steps
                .iter()
                .map(|s| {
                    let (path, sha) = self.executor.component_of(&s.name);
                    (s.name.clone(), path, sha)
                })
                .collect(),
            owner: self.owner.clone(),
        };
        journal.start(&start, RUN_LEASE).await?;
        Ok(Some(self.keep_lease_of(journal, run_id)))
    }

    /// Renews `run_id`'s lease (just taken with a full [`RUN_LEASE`]) until
    /// the run finishes.
    fn keep_lease_of(&self, journal: &Arc<dyn RunJournal>, run_id: &str) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let finishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(keep_lease(
            Arc::clone(journal),
            run_id.to_string(),
            self.owner.clone(),
            lost.clone(),
            Arc::clone(&finishing),
        ));
        LeaseKeeper {
            task,
            lost,
            finishing,
        }
    }

    /// Whether this host may go on with the run: `Ok(false)` while its
    /// lease keeper holds the lease; `Ok(true)` once the keeper gave up but
    /// the lease was taken back (see [`Scheduler::after_fence`]); `Err`
    /// says why the run is another host's to finish.
    async fn hold_lease(
        &self,
        lease: &mut Option<LeaseKeeper>,
        run_id: &str,
    ) -> Result<bool, &'static str> {
        match lease.take() {
            Some(keeper) if keeper.lost.is_cancelled() => {
                *lease = Some(self.after_fence(keeper, run_id).await?);
                Ok(true)
            }
            kept => {
                *lease = kept;
                Ok(false)
            }
        }
    }

    /// After a run's lease keeper gave up: if only the journal was silent,
    /// tries for [`RECLAIM_WAIT`] to renew the lease (which succeeds only
    /// while no other host has taken the run over) and keeps it from then
    /// on. `Err` says why the run is left to others.
    async fn after_fence(
        &self,
        keeper: LeaseKeeper,
        run_id: &str,
    ) -> Result<LeaseKeeper, &'static str> {
        let Some(journal) = &self.journal else {
            return Err(LEFT_TO_RECOVERY);
        };
        match keeper.task.await {
            Ok(LeaseEnd::Unrenewed) => {}
            Ok(LeaseEnd::TakenOver | LeaseEnd::Finished) => return Err(TAKEN_OVER),
            Err(_) => return Err(LEFT_TO_RECOVERY),
        }
        let deadline = tokio::time::Instant::now() + RECLAIM_WAIT;
        for retry in 1.. {
            let renewal = journal.heartbeat(run_id, &self.owner, RUN_LEASE);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => return Ok(self.keep_lease_of(journal, run_id)),
                Ok(Ok(false)) => return Err(TAKEN_OVER),
                Ok(Err(e)) => tracing::warn!(run_id, "taking the run's lease back failed: {e}"),
                Err(_) => break,
            }
            let wait = backoff(retry);
            if tokio::time::Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(LEFT_TO_RECOVERY)
    }

    async fn release_claims(&self, run_id: &str, log: &RunLog) -> Vec<String> {
        let Some(claims) = &self.claims else {
            return Vec::new();
        };
        match claims.release_all(run_id).await {
            Ok(released) => {
                let ids: Vec<String> = released.iter().map(|c| c.claim_id.clone()).collect();
                if !ids.is_empty() {
                    tracing::info!(run_id, claims = ?ids, "released the failed run's claims");
                }
                log.append(JournalEntry {
                    kind: "claims-released".into(),
                    outcome: ids.join(","),
                    ..Default::default()
                })
                .await;
                ids
            }
            Err(e) => {
                tracing::error!(
                    run_id,
                    "could not release the failed run's claims (their leases will expire): {e}"
                );
                Vec::new()
            }
        }
    }
}

/// Builds a step's input object from its argument sources.
fn build_input(
    step: &StepSpec,
    inputs: &serde_json::Map<String, Value>,
    outputs: &HashMap<String, Value>,
) -> Result<Value, String> {
    let mut obj = serde_json::Map::new();
    for (name, source) in &step.args {
        let value = match source {
            ArgSource::Input(input) => inputs.get(input).cloned().unwrap_or(Value::Null),
            ArgSource::Value(v) => v.clone(),
            ArgSource::Step { step: dep, pointer } => {
                let output = outputs
                    .get(dep)
                    .ok_or_else(|| format!("argument `{name}`: step `{dep}` has no output"))?;
                match pointer {
                    None => output.clone(),
                    Some(p) => output.pointer(p).cloned().ok_or_else(|| {
                        format!("argument `{name}`: pointer `{p}` matches nothing in the output of step `{dep}`")
                    })?,
                }
            }
        };
        obj.insert(name.clone(), value);
    }
    Ok(Value::Object(obj))
}

/// One attempt of `run`: a new span, the call, the JSON check, the record.
async fn attempt_once<E: StepExecutor>(
    executor: &E,
    permits: &Semaphore,
    step: &StepSpec,
    base: &AttemptContext,
    attempt: u32,
    input: &str,
    log: &RunLog,
) -> Result<Value, StepFailure> {
    let recorder = &base.recorder;
    let span_id = SpanId::random();
    let ctx = AttemptContext {
        attempt,
        trace: AttemptTrace {
            span_id,
            ..base.trace.clone()
        },
        ..base.clone()
    };
    let parsed = {
        let _permit = permits.acquire().await;
        let index =
            recorder.attempt_started(&step.name, attempt, span_id.to_string(), Instant::now());
        let span = tracing::info_span!("attempt", step = %step.name, attempt, trace_id = %base.trace.trace_id, span_id = %span_id);
        let out = executor
            .execute(step, ctx, input.to_string())
            .instrument(span)
            .await;
        let parsed = out.and_then(|text| {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| StepFailure::InvalidOutput(e.to_string()))
        });
        let outcome = parsed.as_ref().map_or_else(|f| f.kind(), |_| "succeeded");
        recorder.attempt_finished(
            &step.name,
            index,
            outcome,
            parsed.as_ref().err().map(ToString::to_string),
        );
        parsed
    };
    log.append(JournalEntry {
        kind: "attempt".into(),
        step: step.name.clone(),
        span_id: span_id.to_string(),
        attempt,
        outcome: parsed
            .as_ref()
            .map_or_else(|f| f.kind(), |_| "succeeded")
            .to_string(),
        error: parsed.as_ref().err().map(ToString::to_string),
        ..Default::default()
    })
    .await;
    parsed
}

/// Runs a step until it succeeds, is compensated, or fails for good:
/// retries retryable failures with backoff, then asks a reversible step to
/// compensate.
async fn run_step<E: StepExecutor>(
    executor: Arc<E>,
    permits: Arc<Semaphore>,
    step: StepSpec,
    input: String,
    base: AttemptContext,
    log: RunLog,
) -> StepOutcome {
    let started = Instant::now();
    let recorder = base.recorder.clone();
    let trace_id = base.trace.trace_id;
    let mut attempt = 0u32;
    // Attempts left before the step has failed for good.
    let mut budget = step.max_retries + 1;
    let mut compensation_retries = 0u32;
    let outcome = loop {
        attempt += 1;
        budget -= 1;
        let failure = match attempt_once(
            executor.as_ref(),
            &permits,
            &step,
            &base,
            attempt,
            &input,
            &log,
        )
        .await
        {
            Ok(v) => break StepOutcome::Succeeded(v),
            Err(f) => f,
        };
        if failure.is_retryable() && budget > 0 {
            let wait = backoff(attempt);
            tracing::warn!(step = %step.name, attempt, trace_id = %trace_id,
                wait_ms = wait.as_millis() as u64, "attempt failed ({}): {failure}; retrying", failure.kind());
            tokio::time::sleep(wait).await;
            continue;
        }
        if !executor.is_reversible(&step.name) {
            break StepOutcome::Failed(format!("{}: {failure}", failure.kind()));
        }
        // Failed for good: the step may compensate.
        let span_id = SpanId::random();
        let ctx = AttemptContext {
            attempt,
            trace: AttemptTrace {
                span_id,
                ..base.trace.clone()
            },
            ..base.clone()
        };
        let t0 = Instant::now();
        let answer = {
            let _permit = permits.acquire().await;
            executor
                .compensate(&step, ctx, input.clone(), failure.clone())
                .await
        };
        let mut report = CompensationReport {
            span_id: span_id.to_string(),
            start_ms: recorder.offset_ms(t0),
            duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
            failure: format!("{}: {failure}", failure.kind()),
            decision: String::new(),
            error: None,
        };
        let next = match answer {
            Ok(Compensation::Retry) if compensation_retries < MAX_COMPENSATION_RETRIES => {
                compensation_retries += 1;
                budget = 1;
                report.decision = "retry".into();
                None
            }
            Ok(Compensation::Retry) => {
                report.decision = "give-up".into();
                report.error = Some(format!(
                    "retry refused: {MAX_COMPENSATION_RETRIES} compensation retries spent"
                ));
                Some(StepOutcome::Failed(format!(
                    "{}: {failure} (compensation retries spent)",
                    failure.kind()
                )))
            }
            Ok(Compensation::ContinueWith(text)) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => {
                    report.decision = "continue-with".into();
                    Some(StepOutcome::Compensated(v))
                }
                Err(e) => {
                    report.decision = "error".into();
                    report.error = Some(format!("continue-with value is not JSON: {e}"));
                    Some(StepOutcome::Failed(format!(
                        "{}: {failure}",
                        failure.kind()
                    )))
                }
            },
            Ok(Compensation::GiveUp) => {
                report.decision = "give-up".into();
                Some(StepOutcome::Failed(format!(
                    "{}: {failure}",
                    failure.kind()
                )))
            }
            Err(e) => {
                report.decision = "error".into();
                report.error = Some(format!("{}: {e}", e.kind()));
                Some(StepOutcome::Failed(format!(
                    "{}: {failure} (compensate failed: {e})",
                    failure.kind()
                )))
            }
        };
        tracing::info!(step = %step.name, trace_id = %trace_id, span_id = %span_id, decision = %report.decision, "compensated");
        log.append(JournalEntry {
            kind: "compensation".into(),
            step: step.name.clone(),
            span_id: span_id.to_string(),
            attempt,
            outcome: report.decision.clone(),
            error: report.error.clone(),
            ..Default::default()
        })
        .await;
        recorder.compensation(&step.name, report);
        if let Some(outcome) = next {
            break outcome;
        }
    };

    if let StepOutcome::Succeeded(v) = &outcome {
        let (component, sha) = executor.component_of(&step.name);
        log.append(JournalEntry {
            kind: "completed".into(),
            step: step.name.clone(),
            outcome: "succeeded".into(),
            input: Some(input.clone()),
            output: Some(v.to_string()),
            component: Some(component),
            component_sha256: Some(sha),
            timeout_ms: Some(step.timeout.as_millis() as u64),
            allowed_hosts: Some(step.allowed_hosts.clone()),
            ..Default::default()
        })
        .await;
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (name, level, message) = match &outcome {
        StepOutcome::Succeeded(_) => ("step.succeeded", "info", String::new()),
        StepOutcome::Compensated(_) => (
            "step.compensated",
            "warn",
            "continued with a substitute output".to_string(),
        ),
        StepOutcome::Failed(e) => ("step.failed", "warn", e.clone()),
    };
    tracing::info!(step = %step.name, outcome = name, duration_ms, attempts = attempt, trace_id = %trace_id, "step finished {message}");
    let mut measurements = BTreeMap::new();
    measurements.insert("duration_ms".to_string(), duration_ms);
    measurements.insert("attempts".to_string(), f64::from(attempt));
    let last_span = recorder
        .timeline(&step.name)
        .attempts
        .last()
        .map(|(a, _)| a.span_id.clone())
        .unwrap_or_default();
    recorder.event(EventRecord {
        kind: "host".into(),
        name: name.into(),
        level: level.into(),
        message,
        trace_id: trace_id.to_string(),
        span_id: last_span,
        step: step.name.clone(),
        at_ms: 0.0,
        measurements,
        metadata: BTreeMap::new(),
    });
    outcome
}

/// Undoes one completed step: up to `1 + UNDO_RETRIES` calls with backoff,
/// each with its own span under the run span; the outcome is journaled.
pub async fn undo_step<E: StepExecutor>(
    executor: &E,
    step: &StepSpec,
    base: AttemptContext,
    input: String,
    output: String,
    log: &impl UndoLog,
) -> UndoReport {
    let recorder = base.recorder.clone();
    let mut attempts = Vec::new();
    let mut error = None;
    for attempt in 1..=UNDO_RETRIES + 1 {
        let span_id = SpanId::random();
        let ctx = AttemptContext {
            attempt,
            trace: AttemptTrace {
                span_id,
                ..base.trace.clone()
            },
            ..base.clone()
        };
        let t0 = Instant::now();
        let result = executor
            .undo(step, ctx, input.clone(), output.clone())
            .await;
        attempts.push(AttemptReport {
            attempt,
            span_id: span_id.to_string(),
            start_ms: recorder.offset_ms(t0),
            duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
            outcome: result
                .as_ref()
                .map_or_else(|f| f.kind(), |_| "undone")
                .to_string(),
            error: result.as_ref().err().map(ToString::to_string),
        });
        match result {
            Ok(()) => {
                error = None;
                tracing::info!(step = %step.name, trace_id = %base.trace.trace_id, span_id = %span_id, "step undone");
                break;
            }
            Err(f) => {
                tracing::warn!(step = %step.name, trace_id = %base.trace.trace_id, span_id = %span_id, attempt, "undo failed: {f}");
                error = Some(format!("{}: {f}", f.kind()));
                if attempt <= UNDO_RETRIES {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
    let outcome = if error.is_none() { "undone" } else { "failed" };
    log.undo_entry(JournalEntry {
        kind: "undo".into(),
        step: step.name.clone(),
        span_id: attempts
            .last()
            .map(|a| a.span_id.clone())
            .unwrap_or_default(),
        attempt: attempts.len() as u32,
        outcome: outcome.into(),
        error: error.clone(),
        ..Default::default()
    })
    .await;
    recorder.event(EventRecord {
        kind: "host".into(),
        name: format!("step.undo.{outcome}"),
        level: if error.is_none() { "info" } else { "error" }.into(),
        message: error.clone().unwrap_or_default(),
        trace_id: base.trace.trace_id.to_string(),
        span_id: attempts
            .last()
            .map(|a| a.span_id.clone())
            .unwrap_or_default(),
        step: step.name.clone(),
        at_ms: 0.0,
        measurements: BTreeMap::new(),
        metadata: BTreeMap::new(),
    });
    UndoReport {
        step: step.name.clone(),
        outcome: outcome.into(),
        attempts,
        error,
    }
}

/// Where `undo_step` journals its outcome.
pub trait UndoLog: Sync {
    fn undo_entry(&self, entry: JournalEntry) -> impl Future<Output = ()> + Send;
}

impl UndoLog for RunLog {
    async fn undo_entry(&self, entry: JournalEntry) {
        self.append(entry).await;
    }
}

/// Journals into `journal` under `run_id` (for recovery, outside a `Scheduler`).
pub struct JournalUndoLog {
    pub journal: Arc<dyn RunJournal>,
    pub run_id: String,
}

impl UndoLog for JournalUndoLog {
    async fn undo_entry(&self, entry: JournalEntry) {
        if let Err(e) = self.journal.append(&self.run_id, entry).await {
            tracing::error!(run_id = %self.run_id, "journal write failed: {e}");
        }
    }
}

fn build_step_reports<E: StepExecutor>(
    wf: &Workflow,
    order: &[String],
    outcomes: &HashMap<String, String>,
    errors: &HashMap<String, String>,
    recorder: &RunRecorder,
    executor: &E,
) -> Vec<StepReport> {
    let timelines: HashMap<String, _> = wf
        .steps
        .iter()
        .map(|s| (s.name.clone(), recorder.timeline(&s.name)))
        .collect();
    let interval = |name: &str| {
        let t = timelines.get(name)?;
        Some((t.started?, t.finished?))
    };
    let names = order.iter().cloned().chain(
        wf.steps
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| !order.contains(n)),
    );
    let mut reports = Vec::new();
    for name in names {
        let (component, component_sha256) = executor.component_of(&name);
        let timeline = timelines.get(&name).cloned().unwrap_or_default();
        let (start_ms, duration_ms) = match interval(&name) {
            Some((a, b)) => (recorder.offset_ms(a), (b - a).as_secs_f64() * 1000.0),
            None => (0.0, 0.0),
        };
        let parallel_with = match interval(&name) {
            Some((a, b)) => order
                .iter()
                .filter(|other| **other != name)
                .filter(|other| interval(other).is_some_and(|(c, d)| c < b && a < d))
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        reports.push(StepReport {
            outcome: outcomes
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "skipped".into()),
            error: errors.get(&name).cloned(),
            name,
            component,
            component_sha256,
            start_ms,
            duration_ms,
            parallel_with,
            attempts: timeline.attempts.into_iter().map(|(a, _)| a).collect(),
            compensations: timeline.compensations,
        });
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::Path;
    use std::sync::Mutex;

    /// An executor scripted per step: echoes its input, sleeps, or fails a
    /// number of times first; reversible steps compensate and undo as told.
    #[derive(Default)]
    struct Scripted {
        fail_first: HashMap<String, (u32, StepFailure)>,
        delay: HashMap<String, Duration>,
        reversible: HashSet<String>,
        compensation: HashMap<String, Compensation>,
        /// Undo of these steps fails this many times first.
        undo_fails: HashMap<String, u32>,
        calls: Mutex<Vec<(String, u32, String)>>,
        undos: Mutex<Vec<String>>,
    }

    impl StepExecutor for Scripted {
        fn component_of(&self, step: &str) -> (String, String) {
            (format!("{step}.wasm"), "00".repeat(32))
        }

        fn is_reversible(&self, step: &str) -> bool {
            self.reversible.contains(step)
        }

        async fn compensate(
            &self,
            step: &StepSpec,
            _: AttemptContext,
            _: String,
            _: StepFailure,
        ) -> Result<Compensation, StepFailure> {
            Ok(self
                .compensation
                .get(&step.name)
                .cloned()
                .unwrap_or(Compensation::GiveUp))
        }

        async fn undo(
            &self,
            step: &StepSpec,
            ctx: AttemptContext,
            _: String,
            output: String,
        ) -> Result<(), StepFailure> {
            assert!(
                output.contains(&step.name),
                "undo gets the step's own output"
            );
            if let Ok(mut u) = self.undos.lock() {
                u.push(format!("{}#{}", step.name, ctx.attempt));
            }
            match self.undo_fails.get(&step.name) {
                Some(n) if ctx.attempt <= *n => {
                    Err(StepFailure::Retryable("undo backend down".into()))
                }
                _ => Ok(()),
            }
        }
        async fn execute(
            &self,
            step: &StepSpec,
            ctx: AttemptContext,
            input: String,
        ) -> Result<String, StepFailure> {
            if let Ok(mut c) = self.calls.lock() {
                c.push((
                    step.name.clone(),
                    ctx.attempt,
                    ctx.trace.span_id.to_string(),
                ));
            }
            if let Some(d) = self.delay.get(&step.name) {
                tokio::time::sleep(*d).await;
            }
            if let Some((n, f)) = self.fail_first.get(&step.name)
                && ctx.attempt <= *n
            {
                return Err(f.clone());
            }
            Ok(serde_json::json!({"step": step.name, "input": serde_json::from_str::<Value>(&input).unwrap_or(Value::Null), "trace": ctx.trace.trace_id.to_string()}).to_string())
        }
    }

    fn diamond() -> Arc<Workflow> {
        let text = r#"
            name = "diamond"
            result = "d"
            [inputs.x]
            [defaults]
            max_retries = 2
            [[steps]]
            name = "a"
            component = "a"
            args.x = { input = "x" }
            [[steps]]
            name = "b"
            component = "b"
            args.a = { step = "a", pointer = "/input/x" }
            [[steps]]
            name = "c"
            component = "c"
            args.a = { step = "a" }
            [[steps]]
            name = "d"
            component = "d"
            args.b = { step = "b", pointer = "/step" }
            args.c = { step = "c", pointer = "/step" }
        "#;
        Arc::new(Workflow::from_toml(text, Path::new("diamond.toml")).expect("valid"))
    }

    fn request(wf: Arc<Workflow>) -> RunRequest {
        RunRequest {
            workflow: wf,
            input: serde_json::json!({"x": 7}),
            trace: IncomingTrace::from_headers(None, None),
        }
    }

    #[tokio::test]
    async fn runs_independent_steps_in_parallel_and_wires_outputs() {
        let exec = Scripted {
            delay: [
                ("b".to_string(), Duration::from_millis(80)),
                ("c".to_string(), Duration::from_millis(80)),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let sched = Scheduler::new(Arc::new(exec), 8);
        let report = sched.run(request(diamond())).await.expect("input ok");
        assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
        let result = report.result.expect("result");
        assert_eq!(result["input"], serde_json::json!({"b": "b", "c": "c"}));
        assert_eq!(result["trace"], report.trace_id);
        let b = report.steps.iter().find(|s| s.name == "b").expect("b");
        assert_eq!(b.parallel_with, vec!["c".to_string()]);
        let a = report.steps.iter().find(|s| s.name == "a").expect("a");
        assert!(a.parallel_with.is_empty());
        // b received a's output narrowed by the pointer
        let calls = sched.executor().calls.lock().expect("lock").clone();
        assert_eq!(calls.len(), 4);
        let spans: HashSet<_> = calls.iter().map(|c| c.2.clone()).collect();
        assert_eq!(spans.len(), 4, "every attempt has its own span id");
    }

    #[tokio::test]
    async fn retries_retryable_failures_then_succeeds() {
        let exec = Scripted {
            fail_first: [("b".to_string(), (2, StepFailure::Retryable("503".into())))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let sched = Scheduler::new(Arc::new(exec), 8);
        let report = sched.run(request(diamond())).await.expect("input ok");
        assert_eq!(report.outcome, "succeeded");
        let b = report.steps.iter().find(|s| s.name == "b").expect("b");
        let outcomes: Vec<_> = b.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["retryable", "retryable", "succeeded"]);
    }

    #[tokio::test]
    async fn fatal_failure_stops_the_run_and_skips_dependents() {
        let exec = Scripted {
            fail_first: [("b".to_string(), (9, StepFailure::Fatal("denied".into())))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let sched = Scheduler::new(Arc::new(exec), 8);
        let report = sched.run(request(diamond())).await.expect("input ok");
        assert_eq!(report.outcome, "failed");
        assert_eq!(
            report.error.as_deref(),
            Some("step `b` failed: fatal: denied")
        );
        let b = report.steps.iter().find(|s| s.name == "b").expect("b");
        assert_eq!(b.attempts.len(), 1, "fatal errors are not retried");
        assert!(
            b.compensations.is_empty(),
            "a step that is not reversible is not compensated"
        );
        let d = report.steps.iter().find(|s| s.name == "d").expect("d");
        assert_eq!(d.outcome, "skipped");
        assert!(report.result.is_none());
    }

    #[tokio::test]
    async fn a_missing_pointer_target_fails_the_step_with_a_clear_reason() {
        let text = r#"
            name = "p"
            result = "b"
            [[steps]]
            name = "a"
            component = "a"
            [[steps]]
            name = "b"
            component = "b"
            args.t = { step = "a", pointer = "/nope" }
        "#;
        let wf = Arc::new(Workflow::from_toml(text, Path::new("p.toml")).expect("valid"));
        let sched = Scheduler::new(Arc::new(Scripted::default()), 8);
        let report = sched
            .run(RunRequest {
                workflow: wf,
                input: serde_json::json!({}),
                trace: IncomingTrace::from_headers(None, None),
            })
            .await
            .expect("input ok");
        assert_eq!(
            report.error.as_deref(),
            Some(
                "step `b`: argument `t`: pointer `/nope` matches nothing in the output of step `a`"
            )
        );
    }

    fn names(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_failure_cancels_running_steps_and_undoes_completed_ones_in_reverse_completion_order()
    {
        // a completes; b completes quickly; c fails after 60 ms while `slow`
        // still runs; e never starts.
        let text = r#"
            name = "undo"
            result = "e"
            [[steps]]
            name = "a"
            component = "a"
            [[steps]]
            name = "b"
            component = "b"
            wait_for = ["a"]
            [[steps]]
            name = "c"
            component = "c"
            wait_for = ["a"]
            [[steps]]
            name = "slow"
            component = "slow"
            wait_for = ["a"]
            [[steps]]
            name = "e"
            component = "e"
            wait_for = ["b", "c", "slow"]
        "#;
        let wf = Arc::new(Workflow::from_toml(text, Path::new("undo.toml")).expect("valid"));
        let exec = Scripted {
            delay: [
                ("c".to_string(), Duration::from_millis(60)),
                ("slow".to_string(), Duration::from_secs(30)),
            ]
            .into_iter()
            .collect(),
            fail_first: [("c".to_string(), (9, StepFailure::Fatal("denied".into())))]
                .into_iter()
                .collect(),
            reversible: names(&["a", "b", "c", "slow"]),
            undo_fails: [("a".to_string(), 2)].into_iter().collect(),
            ..Default::default()
        };
        let sched = Scheduler::new(Arc::new(exec), 8);
        let started = Instant::now();
        let report = sched
            .run(RunRequest {
                workflow: wf,
                input: serde_json::json!({}),
                trace: IncomingTrace::from_headers(None, None),
            })
            .await
            .expect("input ok");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the slow step was cancelled, not awaited"
        );
        assert_eq!(report.outcome, "failed");
        let outcome = |n: &str| {
            report
                .steps
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.outcome.clone())
        };
        assert_eq!(outcome("a").as_deref(), Some("succeeded"));
        assert_eq!(outcome("b").as_deref(), Some("succeeded"));
        assert_eq!(outcome("c").as_deref(), Some("failed"));
        assert_eq!(outcome("slow").as_deref(), Some("cancelled"));
        assert_eq!(outcome("e").as_deref(), Some("skipped"));
        let slow = report
            .steps
            .iter()
            .find(|s| s.name == "slow")
            .expect("slow");
        assert_eq!(slow.attempts.len(), 1);
        assert_eq!(slow.attempts[0].outcome, "cancelled");
        // b completed after a: undo b first, then a (a's undo fails twice, then works).
        let undone: Vec<_> = report
            .undo
            .iter()
            .map(|u| (u.step.as_str(), u.outcome.as_str(), u.attempts.len()))
            .collect();
        assert_eq!(undone, [("b", "undone", 1), ("a", "undone", 3)]);
        let calls = sched.executor().undos.lock().expect("lock").clone();
        assert_eq!(calls, ["b#1", "a#1", "a#2", "a#3"]);
        // every undo attempt has its own span
        let spans: HashSet<_> = report
            .undo
            .iter()
            .flat_map(|u| u.attempts.iter().map(|a| a.span_id.clone()))
            .collect();
        assert_eq!(spans.len(), 4);
    }

    #[tokio::test]
    async fn undo_failures_are_collected_not_dropped() {
        let text = r#"
            name = "u"
            result = "b"
            [[steps]]
            name = "a"
            component = "a"
            [[steps]]
            name = "b"
            component = "b"
            wait_for = ["a"]
        "#;
        let wf = Arc::new(Workflow::from_toml(text, Path::new("u.toml")).expect("valid"));
        let exec = Scripted {
            fail_first: [("b".to_string(), (9, StepFailure::Fatal("no".into())))]
                .into_iter()
                .collect(),
            reversible: names(&["a"]),
            undo_fails: [("a".to_string(), 99)].into_iter().collect(),
            ..Default::default()
        };
        let report = Scheduler::new(Arc::new(exec), 8)
            .run(RunRequest {
                workflow: wf,
                input: serde_json::json!({}),
                trace: IncomingTrace::from_headers(None, None),
            })
            .await
            .expect("input ok");
        assert_eq!(report.undo.len(), 1);
        assert_eq!(report.undo[0].outcome, "failed");
        assert_eq!(report.undo[0].attempts.len(), (UNDO_RETRIES + 1) as usize);
        assert_eq!(
            report.undo[0].error.as_deref(),
            Some("retryable: undo backend down")
        );
    }

    #[tokio::test]
    async fn compensation_can_continue_degraded_or_retry() {
        // c keeps failing with a retryable error; it compensates with a substitute.
        let exec = Scripted {
            fail_first: [("c".to_string(), (99, StepFailure::Retryable("503".into())))]
                .into_iter()
                .collect(),
            reversible: names(&["c"]),
            compensation: [(
                "c".to_string(),
                Compensation::ContinueWith(r#"{"step":"c","safe":true}"#.into()),
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let report = Scheduler::new(Arc::new(exec), 8)
            .run(request(diamond()))
            .await
            .expect("input ok");
        assert_eq!(report.outcome, "succeeded");
        assert!(report.degraded);
        let c = report.steps.iter().find(|s| s.name == "c").expect("c");
        assert_eq!(c.outcome, "compensated");
        assert_eq!(
            c.attempts.len(),
            3,
            "1 + max_retries attempts before compensating"
        );
        assert_eq!(c.compensations.len(), 1);
        assert_eq!(c.compensations[0].decision, "continue-with");
        assert!(report.undo.is_empty());

        // b fails twice more than its retries allow; compensate asks for a retry, which succeeds.
        let exec = Scripted {
            fail_first: [(
                "b".to_string(),
                (3, StepFailure::Timeout(Duration::from_millis(5))),
            )]
            .into_iter()
            .collect(),
            reversible: names(&["b"]),
            compensation: [("b".to_string(), Compensation::Retry)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let report = Scheduler::new(Arc::new(exec), 8)
            .run(request(diamond()))
            .await
            .expect("input ok");
        assert_eq!(report.outcome, "succeeded");
        assert!(!report.degraded);
        let b = report.steps.iter().find(|s| s.name == "b").expect("b");
        let outcomes: Vec<_> = b.attempts.iter().map(|a| a.outcome.as_str()).collect();
        assert_eq!(outcomes, ["timeout", "timeout", "timeout", "succeeded"]);
        assert_eq!(b.compensations.len(), 1);
        assert_eq!(b.compensations[0].decision, "retry");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for retry in 1..20 {
            let b = backoff(retry);
            assert!(b <= BACKOFF_CAP, "{b:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE && backoff(1) >= BACKOFF_BASE / 2);
        assert!(backoff(3) >= BACKOFF_BASE * 2);
    }

    /// A journal for the lease tests: `start` fails unless `starts`; the
    /// n-th `heartbeat` answers `renews[n]` (the last one from then on;
    /// `None`: an error, as when the database is out of reach); finishes
    /// are recorded.
    #[derive(Default)]
    struct FakeJournal {
        starts: bool,
        renews: Vec<Option<bool>>,
        heartbeats: std::sync::atomic::AtomicUsize,
        finishes: Mutex<Vec<String>>,
        /// `finish` finds the run taken over.
        taken_before_finish: bool,
    }

    impl FakeJournal {
        fn renewing(renews: &[Option<bool>]) -> Arc<Self> {
            Arc::new(FakeJournal {
                starts: true,
                renews: renews.to_vec(),
                ..Default::default()
            })
        }
    }

    fn down<T>() -> Result<T, JournalError> {
        Err(JournalError::Unavailable("database is down".into()))
    }

    #[async_trait::async_trait]
    impl RunJournal for FakeJournal {
        async fn start(&self, _: &RunStart, _: Duration) -> Result<(), JournalError> {
            if self.starts { Ok(()) } else { down() }
        }
        async fn append(&self, _: &str, _: JournalEntry) -> Result<(), JournalError> {
            Ok(())
        }
        async fn finish(
            &self,
            _: &str,
            _: &str,
            status: &str,
            _: bool,
            _: Option<String>,
        ) -> Result<bool, JournalError> {
            self.finishes.lock().expect("lock").push(status.to_string());
            Ok(!self.taken_before_finish)
        }
        async fn heartbeat(&self, _: &str, _: &str, _: Duration) -> Result<bool, JournalError> {
            let n = self
                .heartbeats
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = self.renews.get(n).or(self.renews.last()).copied();
            answer.flatten().map_or_else(down, Ok)
        }
        async fn take_over_abandoned(
            &self,
            _: &str,
            _: Duration,
            _: Option<crate::journal::OwnerIsDead>,
            _: &[String],
        ) -> Result<Vec<crate::journal::AbandonedRun>, JournalError> {
            down()
        }
        async fn save_report(
            &self,
            _: crate::journal::ReportSummary,
            _: String,
        ) -> Result<(), JournalError> {
            down()
        }
        async fn report(&self, _: &str) -> Result<Option<String>, JournalError> {
            down()
        }
        async fn recent_reports(
            &self,
            _: Option<String>,
            _: Option<String>,
            _: usize,
        ) -> Result<Vec<crate::journal::ReportSummary>, JournalError> {
            down()
        }
        async fn idempotent_run(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<(String, String)>, JournalError> {
            down()
        }
        async fn reserve_idempotent(
            &self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<Option<(String, String)>, JournalError> {
            down()
        }
        async fn release_idempotent(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<bool, JournalError> {
            down()
        }
        async fn run(&self, _: &str) -> Result<Option<crate::journal::RunRecord>, JournalError> {
            down()
        }
        async fn runs(&self) -> Result<Vec<crate::journal::RunRecord>, JournalError> {
            down()
        }
        async fn ping(&self) -> Result<(), JournalError> {
            down()
        }
    }

    /// The diamond with `a` reversible and `b`, `c` taking `delay`.
    fn slow_reversible(delay: Duration) -> Scripted {
        Scripted {
            delay: [("b".to_string(), delay), ("c".to_string(), delay)]
                .into_iter()
                .collect(),
            reversible: ["a".to_string()].into_iter().collect(),
            ..Default::default()
        }
    }

    /// Runs the diamond with slow `b` and `c` (twice a lease) on `journal`;
    /// the run must end within `within`, with `b` cancelled.
    async fn lease_run(
        journal: &Arc<FakeJournal>,
        within: Duration,
    ) -> (RunReport, Scheduler<Scripted>) {
        let sched = Scheduler::new(Arc::new(slow_reversible(RUN_LEASE * 2)), 8)
            .with_journal(Arc::clone(journal) as Arc<dyn RunJournal>, "h:1".into());
        let started = tokio::time::Instant::now();
        let report = sched.run(request(diamond())).await.expect("started");
        assert!(
            started.elapsed() <= within,
            "stopped after {:?}",
            started.elapsed()
        );
        let b = report.steps.iter().find(|s| s.name == "b").expect("b");
        assert_eq!(b.outcome, "cancelled");
        (report, sched)
    }

    /// The run stopped and left undo and the terminal record to whoever
    /// takes it over: it reports `aborted` with `why`.
    fn assert_handed_over(
        report: &RunReport,
        sched: &Scheduler<Scripted>,
        journal: &FakeJournal,
        why: &str,
    ) {
        assert_eq!(report.outcome, "aborted");
        assert_eq!(report.error.as_deref(), Some(why));
        assert!(report.undo.is_empty(), "no undo here: {:?}", report.undo);
        assert!(sched.executor().undos.lock().expect("lock").is_empty());
        assert!(
            journal.finishes.lock().expect("lock").is_empty(),
            "no terminal record"
        );
    }

    #[tokio::test]
    async fn a_run_taken_over_by_another_host_stops_without_undoing() {
        // Found at the first renewal, a third of the lease in (the steps
        // would take twice the lease).
        let journal = FakeJournal::renewing(&[Some(false)]);
        let (report, sched) = lease_run(&journal, RUN_LEASE).await;
        assert_handed_over(&report, &sched, &journal, TAKEN_OVER);
    }

    #[tokio::test]
    async fn a_run_whose_lease_cannot_be_renewed_stops_and_undoes_itself_once_the_journal_is_back()
    {
        // Two renewals fail (the run stops, before the lease could run
        // out), then the journal answers and the lease is still this host's.
        let journal = FakeJournal::renewing(&[None, None, Some(true)]);
        let (report, sched) = lease_run(&journal, RUN_LEASE).await;
        assert_eq!(report.outcome, "failed");
        assert_eq!(report.error.as_deref(), Some(LEASE_UNRENEWED));
        let undone: Vec<&str> = report.undo.iter().map(|u| u.step.as_str()).collect();
        assert_eq!(undone, ["a"]);
        assert_eq!(*sched.executor().undos.lock().expect("lock"), ["a#1"]);
        assert_eq!(*journal.finishes.lock().expect("lock"), ["failed"]);
    }

    #[tokio::test]
    async fn a_run_taken_over_while_its_journal_was_silent_is_left_to_the_new_owner() {
        let journal = FakeJournal::renewing(&[None, None, Some(false)]);
        let (report, sched) = lease_run(&journal, RUN_LEASE).await;
        assert_handed_over(&report, &sched, &journal, TAKEN_OVER);
    }

    #[tokio::test]
    async fn a_run_whose_journal_stays_silent_is_left_to_recovery() {
        let journal = FakeJournal::renewing(&[None]);
        let within = LEASE_FENCE + RECLAIM_WAIT + Duration::from_secs(2);
        let (report, sched) = lease_run(&journal, within).await;
        assert_handed_over(&report, &sched, &journal, LEFT_TO_RECOVERY);
        // It kept trying to take the lease back, with backoff.
        let tries = journal.heartbeats.load(std::sync::atomic::Ordering::SeqCst);
        assert!(tries > 4, "{tries} heartbeats");
    }

    #[tokio::test]
    async fn a_run_that_renews_its_lease_runs_to_the_end() {
        let journal = FakeJournal::renewing(&[Some(true)]);
        // Long enough for a renewal or two.
        let delay = RUN_LEASE / 3 + Duration::from_millis(500);
        let sched = Scheduler::new(Arc::new(slow_reversible(delay)), 8)
            .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
        let report = sched.run(request(diamond())).await.expect("started");
        assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
        assert_eq!(*journal.finishes.lock().expect("lock"), ["succeeded"]);
    }

    #[tokio::test]
    async fn a_run_taken_over_before_its_end_was_recorded_reports_aborted() {
        let journal = Arc::new(FakeJournal {
            starts: true,
            renews: vec![Some(true)],
            taken_before_finish: true,
            ..Default::default()
        });
        let sched = Scheduler::new(Arc::new(Scripted::default()), 8)
            .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
        let report = sched.run(request(diamond())).await.expect("started");
        assert_eq!(*journal.finishes.lock().expect("lock"), ["succeeded"]);
        assert_eq!(report.outcome, "aborted");
        assert_eq!(report.error.as_deref(), Some(TAKEN_OVER));
    }

    #[tokio::test]
    async fn a_run_whose_start_cannot_be_journaled_is_refused_before_any_step() {
        let sched = Scheduler::new(Arc::new(Scripted::default()), 8)
            .with_journal(Arc::new(FakeJournal::default()), "h:1".into());
        let err = sched.run(request(diamond())).await.expect_err("refused");
        assert_eq!(
            err.to_string(),
            "run not started: run journal unavailable: database is down"
        );
        assert!(matches!(err, RunError::JournalUnavailable(_)));
        let calls = sched.executor().calls.lock().expect("lock").len();
        assert_eq!(calls, 0, "no step ran");
    }
}
