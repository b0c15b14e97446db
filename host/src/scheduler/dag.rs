//! The run's DAG: which steps may start (every step they depend on has
//! succeeded), each step's input (built from the run's inputs and other
//! steps' outputs), what the run knows as its steps end, and the step
//! reports in the order the steps started.
//!
//! Must not know wasmtime or how a step is attempted (that is `attempt`).

use super::attempt::run_step;
use super::lease::TAKEN_OVER;
use super::{ABORTED, AttemptContext, RunCtx, Scheduler, StepExecutor, StepOutcome};
use crate::journal::JournalEntry;
use crate::report::{RunRecorder, StepReport};
use crate::workflow::{ArgSource, StepSpec, Workflow};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What a run knows about its steps while they run.
#[derive(Default)]
pub(super) struct RunState {
    pub(super) outputs: HashMap<String, Value>,
    pub(super) outcomes: HashMap<String, String>,
    pub(super) errors: HashMap<String, String>,
    /// Steps that completed (not compensated), in completion order, with their input.
    pub(super) completed: Vec<(String, String)>,
    pub(super) inputs_of: HashMap<String, String>,
    /// Steps in the order they started.
    pub(super) order: Vec<String>,
    /// Why the run failed, once it has.
    pub(super) failure: Option<String>,
    /// A step continued with a substitute output.
    pub(super) degraded: bool,
    /// Whether the run's failure is in the journal (`run-failed`), so a
    /// host that takes the run over winds it down instead of going on.
    pub(super) failure_journaled: bool,
    /// Fired when the run fails: every step still running stops.
    stop: CancellationToken,
    tasks: JoinSet<StepOutcome>,
    task_steps: HashMap<tokio::task::Id, String>,
}

impl RunState {
    /// Stops the run because its lease was lost or its journal refused a
    /// write: the failure stands until the lease check after the DAG says
    /// what happened (taken back, or handed over to another host).
    fn stop_fenced(&mut self) {
        self.failure = Some(TAKEN_OVER.to_string());
        self.stop.cancel();
    }
}

impl<E: StepExecutor> Scheduler<E> {
    /// Runs the DAG until every started step has ended: starts steps as
    /// their dependencies succeed and, once the run fails (a step failed,
    /// `cancel` fired, or the lease was lost), cancels the steps still
    /// running. Returns whether the run was stopped by losing its lease.
    pub(super) async fn execute(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        cancel: &CancellationToken,
        lease_lost: &CancellationToken,
    ) -> bool {
        let trace_id = run.trace_id;
        // Set when the lease is lost: the run stops at once (see
        // `LEASE_FENCE`); what then happens is up to `after_fence`.
        let mut fenced = false;
        loop {
            if state.failure.is_none() {
                self.start_ready(run, state);
                if state.failure.is_some() {
                    // Stop whatever is still running: the run has failed.
                    state.stop.cancel();
                }
            }
            let joined = if state.failure.is_none() {
                tokio::select! {
                    joined = state.tasks.join_next_with_id() => joined,
                    () = cancel.cancelled() => {
                        tracing::warn!(parent: &run.span, trace_id = %trace_id, "run aborted: the host is shutting down");
                        state.failure = Some(ABORTED.to_string());
                        state.stop.cancel();
                        continue;
                    }
                    () = lease_lost.cancelled() => {
                        tracing::error!(parent: &run.span, trace_id = %trace_id, "run stopped: its lease was lost");
                        state.stop_fenced();
                        fenced = true;
                        continue;
                    }
                }
            } else {
                state.tasks.join_next_with_id().await
            };
            let Some(joined) = joined else {
                break;
            };
            let (name, outcome) = match joined {
                Ok((id, outcome)) => (state.task_steps.remove(&id).unwrap_or_default(), outcome),
                Err(e) => {
                    let name = state.task_steps.remove(&e.id()).unwrap_or_default();
                    if e.is_cancelled() {
                        (name, StepOutcome::Cancelled)
                    } else {
                        let why = format!("step task ended abnormally: {e}");
                        (name, StepOutcome::Failed(why))
                    }
                }
            };
            run.base.recorder.step_finished(&name, Instant::now());
            self.journal_step_end(run, state, &name, &outcome).await;
            state.step_ended(run, name, outcome);
            // The journal refused a write: another host owns the run now.
            // Nothing more starts here (not even a step this end made ready).
            if run.log.taken_over.is_cancelled() && !fenced {
                tracing::error!(parent: &run.span, trace_id = %trace_id, "run stopped: another host took it over");
                state.stop_fenced();
                fenced = true;
            }
            // The run's failure goes to the journal once, as soon as it is
            // known (not a lost lease: that run is another host's to go on
            // with).
            if let Some(failure) = &state.failure
                && !fenced
                && !state.failure_journaled
            {
                state.failure_journaled = true;
                run.log.append(JournalEntry::run_failed(failure)).await;
            }
        }
        fenced
    }

    /// Journals how a step ended, from the DAG alone (never from the step's
    /// own task, which the run may stop): so the journal's completions are
    /// in the order the run took them in, the order undo follows.
    async fn journal_step_end(
        &self,
        run: &RunCtx,
        state: &RunState,
        name: &str,
        outcome: &StepOutcome,
    ) {
        let (output, how) = match outcome {
            StepOutcome::Succeeded(v) => (v, "succeeded"),
            StepOutcome::Compensated(v) => (v, "compensated"),
            StepOutcome::Cancelled => {
                let entry = JournalEntry {
                    kind: "cancelled".into(),
                    step: name.to_string(),
                    outcome: "cancelled".into(),
                    ..Default::default()
                };
                return run.log.append(entry).await;
            }
            StepOutcome::Failed(_) => return,
        };
        let Some(step) = run.wf.step(name) else {
            return;
        };
        let (component, sha) = self.executor.component_of(name);
        // The attempt that succeeded (none for a compensated step).
        let (attempt, span_id) = run
            .base
            .recorder
            .succeeded_attempt(name)
            .unwrap_or_default();
        run.log
            .append(JournalEntry {
                kind: "completed".into(),
                step: name.to_string(),
                span_id,
                attempt,
                outcome: how.into(),
                input: state.inputs_of.get(name).cloned(),
                output: Some(output.to_string()),
                component: Some(component),
                component_sha256: Some(sha),
                timeout_ms: Some(step.timeout.as_millis() as u64),
                allowed_hosts: Some(step.allowed_hosts.clone()),
                ..Default::default()
            })
            .await;
    }

    /// Starts every step not started yet whose dependencies have all
    /// succeeded. A step whose input cannot be built fails the run.
    fn start_ready(&self, run: &RunCtx, state: &mut RunState) {
        let recorder = &run.base.recorder;
        for step in &run.wf.steps {
            if state.order.contains(&step.name)
                || !step
                    .dependencies()
                    .iter()
                    .all(|d| state.outputs.contains_key(*d))
            {
                continue;
            }
            state.order.push(step.name.clone());
            recorder.step_started(&step.name, Instant::now());
            let input = match build_input(step, &run.inputs, &state.outputs) {
                Ok(v) => v.to_string(),
                Err(e) => {
                    recorder.step_finished(&step.name, Instant::now());
                    state.outcomes.insert(step.name.clone(), "failed".into());
                    state.errors.insert(step.name.clone(), e.clone());
                    state.failure = Some(format!("step `{}`: {e}", step.name));
                    break;
                }
            };
            state.inputs_of.insert(step.name.clone(), input.clone());
            let span = tracing::info_span!(parent: &run.span, "step", step = %step.name, trace_id = %run.trace_id);
            let handle = state.tasks.spawn(
                run_step(
                    Arc::clone(&self.executor),
                    Arc::clone(&self.permits),
                    step.clone(),
                    input,
                    AttemptContext {
                        step: step.name.clone(),
                        ..run.base.clone()
                    },
                    run.log.clone(),
                    state.stop.clone(),
                )
                .instrument(span),
            );
            state.task_steps.insert(handle.id(), step.name.clone());
        }
    }
}

impl RunState {
    /// Takes in how step `name` ended.
    fn step_ended(&mut self, run: &RunCtx, name: String, outcome: StepOutcome) {
        match outcome {
            StepOutcome::Succeeded(v) => {
                self.outputs.insert(name.clone(), v);
                self.outcomes.insert(name.clone(), "succeeded".into());
                self.completed.push((
                    name.clone(),
                    self.inputs_of.get(&name).cloned().unwrap_or_default(),
                ));
            }
            StepOutcome::Compensated(v) => {
                self.outputs.insert(name.clone(), v);
                self.outcomes.insert(name.clone(), "compensated".into());
                self.degraded = true;
            }
            StepOutcome::Failed(e) => {
                self.outcomes.insert(name.clone(), "failed".into());
                self.errors.insert(name.clone(), e.clone());
                if self.failure.is_none() {
                    self.failure = Some(format!("step `{name}` failed: {e}"));
                    self.stop.cancel();
                }
            }
            StepOutcome::Cancelled => {
                self.outcomes.insert(name.clone(), "cancelled".into());
                tracing::warn!(parent: &run.span, step = %name, trace_id = %run.trace_id, "step cancelled: the run failed");
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

/// One report per step: those that started, in the order they started,
/// then those that never did (`skipped`).
pub(super) fn build_step_reports<E: StepExecutor>(
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
