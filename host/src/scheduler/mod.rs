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
//!
//! Rooms: this file holds the public [`Scheduler`] and a run's lifecycle
//! (start, execute, wind down, finish); [`executor`] the seam to whatever runs
//! a call; `dag` readiness, conditions, inputs and step reports; `map` the
//! elements of a map step; `attempt` one step's attempts, retries and
//! backoff; `saga` compensation, undo and releasing claims; `lease` the
//! run's lease and the fence around it.

mod attempt;
mod compose;
mod dag;
pub mod executor;
mod input;
mod lease;
mod map;
mod restart;
mod resume;
mod saga;
mod suspend;
#[cfg(test)]
mod tests;
mod wait;

pub use executor::{AttemptContext, Compensation, KeySecret, LimitKind, StepExecutor, StepFailure};
pub use lease::{
    LEASE_FENCE, LEASE_UNRENEWED, LEFT_TO_RECOVERY, RECLAIM_WAIT, RUN_LEASE, TAKEN_OVER,
};
pub use map::{MAX_MAP_OUTPUT_BYTES, MAX_REPORTED_ELEMENTS};
pub use restart::{Prior, RestartError};
pub use resume::ResumeError;
pub use saga::{JournalUndoLog, MAX_COMPENSATION_RETRIES, UNDO_RETRIES, UndoLog, undo_step};
pub use suspend::{ABORTED_BY_OPERATOR, CLAIM_MARGIN};
pub use wait::{PARK_AFTER, SIGNAL_POLL, wait_token_of};

use crate::journal::{
    JournalEntry, JournalError, LocalRuns, ReportSummary, RunCancel, RunFence, RunJournal,
    StoredReport,
};
use crate::report::{AttemptEnded, AttemptSink, Resumed, RunMeta, RunRecorder, RunReport};
use crate::store::ClaimStore;
use crate::trace::{AttemptTrace, IncomingTrace, SpanId, TraceId};
use crate::workflow::{InputError, Workflow};
use dag::build_step_reports;
use lease::{LeaseBook, LeaseKeeper};
use map::MapRun;
use saga::Ending;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    /// The leases of this scheduler's runs in the journal, renewed together.
    leases: Option<Arc<LeaseBook>>,
    /// Where a failed run's leftover claims are released.
    claims: Option<Arc<dyn ClaimStore>>,
    /// This host, as a run owner (`hostname:pid`).
    owner: String,
    /// The runs this host is executing, shared with its recovery loop.
    local: LocalRuns,
    /// Whether a journaled run with nothing to do but wait leaves memory
    /// (`waiting` in the journal until a host wakes it), or waits here.
    parking: bool,
    /// Whether a run's report is stored with its terminal record.
    store_reports: bool,
    /// Told of every step attempt as it starts and ends (live span
    /// export, the viewer's runs in flight).
    live: Vec<Arc<dyn AttemptSink>>,
}

impl<E> Clone for Scheduler<E> {
    fn clone(&self) -> Self {
        Scheduler {
            executor: Arc::clone(&self.executor),
            permits: Arc::clone(&self.permits),
            journal: self.journal.clone(),
            leases: self.leases.clone(),
            claims: self.claims.clone(),
            owner: self.owner.clone(),
            local: self.local.clone(),
            parking: self.parking,
            store_reports: self.store_reports,
            live: self.live.clone(),
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
    /// What a restart would reuse cannot be read (a damaged journal).
    #[error("run not restarted: {0}")]
    Restart(String),
}

/// The error of a run aborted by [`Scheduler::run_until`]'s cancellation.
pub const ABORTED: &str = "run aborted: the host is shutting down";

/// The start of the error of a run cancelled by request (the reason follows).
pub const CANCELLED: &str = "run cancelled";

/// First retry waits about this long; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter: a random wait between half and all of
/// `base * 2^(retry-1)`, capped.
pub fn backoff(retry: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    ceiling.mul_f64(jitter)
}

/// How a step ended.
enum StepOutcome {
    Succeeded(Value),
    /// `compensate` said `continue-with`: this output stands in.
    Compensated(Value),
    Failed(String),
    /// Stopped because the run failed (or is stopping) before it ended.
    Cancelled,
}

/// A step, or an element of a map step, that completed (not compensated):
/// what undoing it needs.
struct Completed {
    /// The step's name, or `STEP.INDEX` for a map's element.
    call: String,
    input: String,
    /// An element's output (a step's is in the run's outputs).
    output: Option<String>,
}

/// What a run knows about its steps while they run.
#[derive(Default)]
struct RunState {
    outputs: HashMap<String, Value>,
    outcomes: HashMap<String, String>,
    errors: HashMap<String, String>,
    /// Steps (and map elements) that completed, in completion order.
    completed: Vec<Completed>,
    /// The input of each step, and of each element in flight.
    inputs_of: HashMap<String, String>,
    /// Steps not run, with why (a condition was false, or a step they
    /// need was skipped).
    skipped: HashMap<String, String>,
    /// The map steps that have started.
    maps: HashMap<String, MapRun>,
    /// Outputs of map elements a resumed run had completed, by call name
    /// (`STEP.INDEX`), until their map starts again.
    reused_elements: HashMap<String, Value>,
    /// Steps in the order they started.
    order: Vec<String>,
    /// Why the run failed, once it has.
    failure: Option<String>,
    /// A step continued with a substitute output.
    degraded: bool,
    /// Whether the run's failure is in the journal (`run-failed`), so a
    /// host that takes the run over winds it down instead of going on.
    failure_journaled: bool,
    /// The run's failure is a cancel: it ends `cancelled`.
    cancelled: bool,
    /// The run's failure is the abort of its suspension: it ends `aborted`.
    aborted: bool,
    /// The step whose failure for good suspends the run, and its error
    /// (see `suspend`).
    suspended: Option<(String, String)>,
    /// The run left memory: it waits (or is suspended) in the journal.
    parked: bool,
    /// The component (file, sha256) each step completed with before the
    /// run was resumed, as journaled (a resumed run may run others).
    ran_with: HashMap<String, (String, String)>,
    /// When each wait step started ends at the latest (ms since the
    /// epoch), as journaled.
    wait_due: HashMap<String, u64>,
    /// Wait steps started and not ended.
    waiting: std::collections::BTreeSet<String>,
    /// How many signals the run has read (`None`: none yet), for `park`.
    signals_seen: Option<u64>,
    /// The signal that ended each signal step: its sender's
    /// `traceparent` and when it came.
    signalled: HashMap<String, (String, u64)>,
    /// Fired when the run fails: every step still running stops.
    stop: CancellationToken,
    tasks: JoinSet<StepOutcome>,
    /// The call (step, or `STEP.INDEX`) each task runs.
    task_steps: HashMap<tokio::task::Id, String>,
}

/// Runs `work` unless `stop` fires first (`None`: stopped): how a step's
/// waits and guest calls end when its run fails.
async fn unless_stopped<T>(
    stop: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        () = stop.cancelled() => None,
        done = work => Some(done),
    }
}

/// The report as the journal stores it (`None`: it cannot be encoded,
/// which is logged; the terminal record is written all the same).
pub fn stored_report(report: &RunReport) -> Option<StoredReport> {
    match serde_json::to_string(report) {
        Ok(json) => Some(StoredReport {
            summary: ReportSummary {
                run_id: report.run_id.clone(),
                workflow: report.workflow.clone(),
                trace_id: report.trace_id.clone(),
                outcome: report.outcome.clone(),
                degraded: report.degraded,
                started_at_ms: report.started_at_ms,
                duration_ms: report.duration_ms,
            },
            json,
        }),
        Err(e) => {
            tracing::error!(run_id = %report.run_id, "cannot encode the run report: {e}");
            None
        }
    }
}

/// A new random run id (`run-` and 16 hex digits).
pub fn new_run_id() -> String {
    format!("run-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Journals entries of one run under its fence (a journal failure is
/// logged, never fatal to the run: the report still says what happened;
/// a write refused by the fence stops the run, see `taken_over`), and
/// tells the live sinks, if any, of each attempt as it starts and ends.
#[derive(Clone)]
struct RunLog {
    journal: Option<Arc<dyn RunJournal>>,
    run_id: String,
    /// This host's ownership of the run (set once the start is journaled,
    /// or from the take-over of a resumed run).
    fence: Option<RunFence>,
    /// Fired when the journal refuses a write because another host owns
    /// the run now: the lease keeper then stops the run as taken over.
    taken_over: CancellationToken,
    live: Option<(AttemptSinks, Arc<RunMeta>)>,
}

/// The sinks a run's attempts are told of.
type AttemptSinks = Arc<[Arc<dyn AttemptSink>]>;

impl RunLog {
    /// Tells the live sinks that attempt `attempt` of `step` started.
    fn attempt_started(&self, step: &str, attempt: u32) {
        if let Some((sinks, run)) = &self.live {
            for sink in sinks.iter() {
                sink.attempt_started(run, step, attempt);
            }
        }
    }

    /// Hands attempt `index` of `step`, just ended, to the live sinks.
    fn attempt_ended(
        &self,
        recorder: &RunRecorder,
        step: &str,
        index: usize,
        component_of: impl FnOnce() -> (String, String),
    ) {
        let Some((sinks, run)) = &self.live else {
            return;
        };
        let detail = sinks.iter().any(|s| s.wants_calls_and_claims());
        if let Some((attempt, http_calls, claims)) = recorder.ended_attempt(step, index, detail) {
            let (component, component_sha256) = component_of();
            let ended = AttemptEnded {
                step: step.to_string(),
                component,
                component_sha256,
                attempt,
                http_calls,
                claims,
            };
            if let Some((last, others)) = sinks.split_last() {
                for sink in others {
                    sink.attempt_ended(run, ended.clone());
                }
                last.attempt_ended(run, ended);
            }
        }
    }

    async fn append(&self, entry: JournalEntry) {
        self.append_all(vec![entry]).await;
    }

    /// Journals `entries` in one write, in order (nothing to write: none).
    async fn append_all(&self, mut entries: Vec<JournalEntry>) {
        let (Some(j), Some(fence)) = (&self.journal, &self.fence) else {
            return;
        };
        let written = match entries.len() {
            0 => return,
            1 => j.append(fence, entries.remove(0)).await,
            _ => j.append_all(fence, entries).await,
        };
        match written {
            Ok(()) => {}
            Err(e @ JournalError::Fenced { .. }) => {
                tracing::error!(run_id = %self.run_id, "{e}: stopping the run");
                self.taken_over.cancel();
            }
            Err(e) => tracing::error!(run_id = %self.run_id, "journal write failed: {e}"),
        }
    }
}

/// What every phase of one run needs to know about it.
struct RunCtx {
    wf: Arc<Workflow>,
    run_id: String,
    /// The run's input, bound to the workflow's declared inputs.
    inputs: serde_json::Map<String, Value>,
    incoming: IncomingTrace,
    trace_id: TraceId,
    run_span: SpanId,
    /// What every attempt of the run shares (its step and span are set per call).
    base: AttemptContext,
    log: RunLog,
    /// The run's `tracing` span.
    span: tracing::Span,
    started_at_ms: u64,
    started: Instant,
    /// Set when this host carries on a run another host started.
    resumed: Option<Resumed>,
    /// Set when the run restarts an ended run from one of its steps.
    restarted: Option<crate::report::RestartedFrom>,
    /// Fired when the run is cancelled (`POST /v1/runs/ID/cancel`).
    cancel: RunCancel,
}

impl RunCtx {
    /// The token that may send signal step `step`'s signal in this run: an
    /// HMAC of the run's secret, so only who was handed it can send it.
    fn wait_token(&self, step: &str) -> String {
        self.base.keys.key(&self.run_id, step, "wait-token")
    }
}

impl<E: StepExecutor> Scheduler<E> {
    pub fn new(executor: Arc<E>, max_concurrency: usize) -> Self {
        Scheduler {
            executor,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
            journal: None,
            leases: None,
            claims: None,
            owner: format!("local:{}", std::process::id()),
            local: LocalRuns::default(),
            parking: true,
            store_reports: false,
            live: Vec::new(),
        }
    }

    /// Tells `sink` (too) of every step attempt as it starts and ends: the
    /// OTLP exporter sends each attempt's span then, not when the run ends;
    /// `braid serve` shows each run's current step.
    pub fn with_attempt_sink(mut self, sink: Arc<dyn AttemptSink>) -> Self {
        self.live.push(sink);
        self
    }

    /// Stores each run's report in the journal, in the same transaction as
    /// its terminal record (what `braid serve` answers `GET /v1/runs/ID`
    /// and a repeated `Idempotency-Key` from).
    pub fn with_reports(mut self) -> Self {
        self.store_reports = true;
        self
    }

    /// Lists the runs in progress in `local` (shared with the host's
    /// recovery, which must not take them over).
    pub fn with_local_runs(mut self, local: LocalRuns) -> Self {
        self.local = local;
        self
    }

    /// Keeps a run that waits (a `sleep` or `signal` step) in memory
    /// instead of parking it in the journal: what `braid run` does, which
    /// holds its one run to the end.
    pub fn without_parking(mut self) -> Self {
        self.parking = false;
        self
    }

    /// Journals every run; `owner` names this host in run leases.
    pub fn with_journal(mut self, journal: Arc<dyn RunJournal>, owner: String) -> Self {
        self.leases = Some(LeaseBook::new(Arc::clone(&journal)));
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
            leases: self.leases.clone(),
            claims: self.claims.clone(),
            owner: self.owner.clone(),
            local: self.local.clone(),
            parking: self.parking,
            store_reports: self.store_reports,
            live: self.live.clone(),
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
        self.run_as_then(request, run_id, cancel, |_| {}).await
    }

    /// [`Scheduler::run_as`], calling `started` with the run's
    /// `traceparent` once its start is journaled, before any step runs:
    /// how `braid serve` answers a run it does not wait for.
    pub async fn run_as_then(
        &self,
        request: RunRequest,
        run_id: String,
        cancel: &CancellationToken,
        started: impl FnOnce(String) + Send,
    ) -> Result<RunReport, RunError> {
        self.run_restarted(request, run_id, None, cancel, started)
            .await
    }

    /// [`Scheduler::run_as_then`] of a run that restarts an ended one
    /// (`prior`: what it reuses of it; see [`Prior`]), or of a new run.
    pub async fn run_restarted(
        &self,
        request: RunRequest,
        run_id: String,
        prior: Option<Prior>,
        cancel: &CancellationToken,
        started: impl FnOnce(String) + Send,
    ) -> Result<RunReport, RunError> {
        let wf = request.workflow;
        let inputs = wf.bind_inputs(&request.input)?;
        let incoming = request.trace;
        let mut run = self.run_ctx(wf, run_id, SpanId::random(), inputs, incoming, None);
        let state = match &prior {
            // The reused completions, as a resumed run's journal gives them
            // (`Err`: a reused output is not JSON, the old journal damaged).
            Some(prior) => resume::state_from_entries(&run.wf, &prior.reused)
                .map_err(|e| RunError::Restart(e.to_string()))?,
            None => RunState::default(),
        };
        if let Some(why) = &run.incoming.rejected {
            tracing::warn!(parent: &run.span, trace_id = %run.trace_id, "{why}");
        }
        tracing::info!(parent: &run.span, trace_id = %run.trace_id, continued = run.incoming.continued, "run started");
        // Until this run returns, this host's recovery leaves it alone.
        let here = self.local.enter(&run.run_id);
        run.cancel = here.cancel.clone();
        let lease = self.journal_start(&mut run).await.map_err(|e| {
            tracing::error!(parent: &run.span, trace_id = %run.trace_id, "run refused: {e}");
            RunError::JournalUnavailable(e)
        })?;
        if let Some(prior) = prior {
            tracing::info!(parent: &run.span, trace_id = %run.trace_id, from_run = %prior.from.run_id,
                step = %prior.from.step, reused = prior.from.reused_steps.len(), "run restarts an ended run");
            // The old run's completions it reuses are its own from now on.
            run.log.append_all(prior.reused).await;
            run.restarted = Some(prior.from);
        }
        started(run.incoming.parent.with_parent(run.run_span).to_string());
        Ok(self.drive(run, state, lease, cancel).await)
    }

    /// What every phase of a run shares, for a run starting now or resumed.
    fn run_ctx(
        &self,
        wf: Arc<Workflow>,
        run_id: String,
        run_span: SpanId,
        inputs: serde_json::Map<String, Value>,
        incoming: IncomingTrace,
        resumed: Option<Resumed>,
    ) -> RunCtx {
        let trace_id = incoming.parent.trace_id;
        let started_at_ms = crate::store::now_ms();
        let live = (!self.live.is_empty()).then(|| {
            let meta = RunMeta {
                run_id: run_id.clone(),
                workflow: wf.name.clone(),
                traceparent: incoming.parent.with_parent(run_span).to_string(),
                tracestate: incoming.state.to_string(),
                started_at_ms,
            };
            (Arc::from(self.live.as_slice()), Arc::new(meta))
        });
        let span = tracing::info_span!(
            "run",
            workflow = %wf.name,
            run_id = %run_id,
            trace_id = %trace_id,
            span_id = %run_span,
        );
        RunCtx {
            base: AttemptContext {
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
                recorder: RunRecorder::new(),
                // A new run's; a resumed run's is the journaled one.
                keys: KeySecret::random(),
            },
            log: RunLog {
                journal: self.journal.clone(),
                run_id: run_id.clone(),
                fence: None,
                taken_over: CancellationToken::new(),
                live,
            },
            started_at_ms,
            started: Instant::now(),
            wf,
            run_id,
            inputs,
            incoming,
            trace_id,
            run_span,
            span,
            resumed,
            restarted: None,
            cancel: RunCancel::default(),
        }
    }

    /// Runs a run from `state` to its end: the DAG, the failure path, the
    /// terminal record and the report.
    async fn drive(
        &self,
        run: RunCtx,
        mut state: RunState,
        mut lease: Option<LeaseKeeper>,
        cancel: &CancellationToken,
    ) -> RunReport {
        let lease_lost = lease
            .as_ref()
            .map_or_else(CancellationToken::new, |l| l.lost.clone());
        let stopped = self.execute(&run, &mut state, cancel, &lease_lost).await;
        if stopped == dag::Stopped::Parked {
            // Waiting in the journal: the lease goes (a woken run gets a
            // new one), nothing is undone, no terminal record.
            if let Some(l) = &lease {
                l.finishing.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            drop(lease);
            state.parked = true;
            let ending = saga::Ending {
                undo: Vec::new(),
                released_claims: Vec::new(),
                handed_over: None,
            };
            return self.finish(run, state, None, ending).await;
        }
        let fenced = stopped == dag::Stopped::Fenced;
        let done = saga::Done {
            completed: &state.completed,
            outputs: &state.outputs,
            failure: &mut state.failure,
        };
        let ending = self.wind_down(&run, done, &mut lease, fenced).await;
        self.finish(run, state, lease, ending).await
    }

    /// Ends a run: its outcome, the terminal record (unless the run is
    /// another host's to finish) and the report.
    async fn finish(
        &self,
        run: RunCtx,
        state: RunState,
        lease: Option<LeaseKeeper>,
        ending: Ending,
    ) -> RunReport {
        let RunCtx {
            wf,
            run_id,
            inputs,
            incoming,
            trace_id,
            run_span,
            base,
            span: run_tracing_span,
            started_at_ms,
            started,
            resumed,
            restarted,
            log,
            ..
        } = run;
        let Ending {
            undo,
            released_claims,
            handed_over,
        } = ending;
        let recorder = base.recorder;
        let steps = build_step_reports(&wf, run_span, &state, &recorder, self.executor.as_ref());
        let RunState {
            outputs,
            failure,
            degraded,
            cancelled: state_cancelled,
            aborted: state_aborted,
            suspended,
            parked,
            ..
        } = state;
        let result = outputs.get(&wf.result).cloned();
        let (outcome, error) = match (&failure, &result) {
            _ if handed_over.is_some() => ("aborted", handed_over.map(str::to_string)),
            _ if parked => match suspended {
                Some((step, e)) => ("suspended", Some(format!("step `{step}` failed: {e}"))),
                None => ("waiting", None),
            },
            (Some(f), _) if state_cancelled => ("cancelled", Some(f.clone())),
            (Some(f), _) if state_aborted => ("aborted", Some(f.clone())),
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
        let duration = started.elapsed();
        let (events, http_calls, dropped) = recorder.take();
        let mut report = RunReport {
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
            input: Some(crate::report::bounded(
                Value::Object(inputs).to_string(),
                crate::report::MAX_SHOWN_BYTES,
            )),
            steps,
            events,
            http_calls,
            undo,
            released_claims,
            dropped,
            resumed,
            restarted_from: restarted,
        };
        if let (Some(j), Some(fence)) = (&self.journal, &log.fence)
            && handed_over.is_none()
            && !parked
        {
            // The report goes with the terminal record, in one transaction.
            let stored = self.store_reports.then(|| stored_report(&report)).flatten();
            match j
                .finish(fence, outcome, degraded, report.error.clone(), stored)
                .await
            {
                Ok(true) => {}
                // Taken over while the terminal record waited for the
                // journal: the new owner finishes the run and records it.
                Ok(false) => {
                    tracing::error!(parent: &run_tracing_span, trace_id = %trace_id, "{TAKEN_OVER}");
                    report.outcome = "aborted".into();
                    report.error = Some(TAKEN_OVER.to_string());
                }
                Err(e) => tracing::error!(run_id = %report.run_id, "journal write failed: {e}"),
            }
        }
        // Dropping the keeper stops the renewals (`LeaseKeeper`'s `Drop`).
        drop(lease);
        tracing::info!(
            parent: &run_tracing_span,
            trace_id = %trace_id,
            outcome = %report.outcome,
            degraded,
            duration_ms = report.duration_ms,
            error = report.error.as_deref().unwrap_or(""),
            "run finished"
        );
        report
    }
}
