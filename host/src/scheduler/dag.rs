//! The run's DAG: which steps may start (every step they depend on has
//! succeeded), each step's input (built from the run's inputs and other
//! steps' outputs), what the run knows as its steps end, and the step
//! reports in the order the steps started.
//!
//! Must not know wasmtime or how a step is attempted (that is `attempt`).

use super::attempt::run_step;
use super::compose::{compose_span, parent_span};
use super::lease::TAKEN_OVER;
use super::{
    ABORTED, AttemptContext, CANCELLED, Completed, RunCtx, RunState, Scheduler, StepExecutor,
    StepOutcome,
};
use crate::journal::JournalEntry;
use crate::report::{ComposeReport, EventRecord, RunRecorder, StepReport};
use crate::workflow::{StepKind, StepSpec, ValueRef, Workflow};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl RunState {
    /// Stops the run because its lease was lost or its journal refused a
    /// write: the failure stands until the lease check after the DAG says
    /// what happened (taken back, or handed over to another host).
    fn stop_fenced(&mut self) {
        self.failure = Some(TAKEN_OVER.to_string());
        self.stop.cancel();
    }

    /// Fails the run as cancelled (`POST /v1/runs/ID/cancel`): the steps
    /// in flight stop and what completed is undone, as for any failure.
    fn stop_cancelled(&mut self, run: &RunCtx) {
        let reason = run.cancel.reason().unwrap_or("no reason given");
        tracing::warn!(parent: &run.span, trace_id = %run.trace_id, "run cancelled: {reason}");
        self.failure = Some(format!("{CANCELLED}: {reason}"));
        self.cancelled = true;
        self.stop.cancel();
    }
}

/// How the DAG loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stopped {
    /// Every started step has ended (the run succeeded or failed).
    Ended,
    /// The lease was lost or the journal refused a write: another host
    /// may own the run.
    Fenced,
    /// The run has nothing to do but wait, and waits in the journal.
    Parked,
}

/// What the DAG loop woke up for.
enum Woke {
    /// A call ended (`None`: none is in flight).
    Joined(Option<Result<(tokio::task::Id, StepOutcome), tokio::task::JoinError>>),
    /// The host is shutting down.
    Shutdown,
    /// The run was asked to cancel.
    Cancel,
    LeaseLost,
    /// Time to look at the run's waits.
    Look,
}

impl<E: StepExecutor> Scheduler<E> {
    /// Runs the DAG until every started step has ended: starts steps as
    /// their dependencies succeed and, once the run fails (a step failed,
    /// `cancel` fired, the run was cancelled, or the lease was lost),
    /// cancels the steps still running. A run left with nothing but waits
    /// is parked (see `wait`).
    pub(super) async fn execute(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        cancel: &CancellationToken,
        lease_lost: &CancellationToken,
    ) -> Stopped {
        let trace_id = run.trace_id;
        // Set when the lease is lost: the run stops at once (see
        // `LEASE_FENCE`); what then happens is up to `after_fence`.
        let mut fenced = false;
        loop {
            if state.failure.is_none() && run.cancel.reason().is_some() {
                state.stop_cancelled(run);
            }
            if state.failure.is_none() && state.suspended.is_none() {
                self.start_ready(run, state).await;
            }
            if state.failure.is_some() {
                // Stop whatever is still running: the run has failed.
                state.stop.cancel();
                state.stop_waits(run);
            } else if state.suspended.is_some() {
                // Nothing more starts; once the steps in flight have ended,
                // the run is suspended in the journal.
                if state.tasks.is_empty() {
                    match self.suspend(run, state).await {
                        super::wait::Parking::Parked => return Stopped::Parked,
                        super::wait::Parking::Fenced => {
                            state.stop_fenced();
                            fenced = true;
                        }
                        super::wait::Parking::NotNow => state.cannot_suspend(run).await,
                    }
                    continue;
                }
            } else if state.tasks.is_empty() && self.parks(run, state) {
                // What came meanwhile (a resumed run's signal) ends first.
                let waits = state.waiting.len();
                self.settle_waits(run, state).await;
                if state.waiting.len() != waits || state.failure.is_some() {
                    continue;
                }
                match self.park(run, state).await {
                    super::wait::Parking::Parked => return Stopped::Parked,
                    super::wait::Parking::Fenced => {
                        state.stop_fenced();
                        fenced = true;
                        continue;
                    }
                    super::wait::Parking::NotNow => {}
                }
            }
            let joined = match self.next_wake(run, state, cancel, lease_lost).await {
                Woke::Joined(Some(joined)) => joined,
                Woke::Joined(None) => break,
                Woke::Shutdown => {
                    tracing::warn!(parent: &run.span, trace_id = %trace_id, "run aborted: the host is shutting down");
                    state.failure = Some(ABORTED.to_string());
                    continue;
                }
                Woke::Cancel => {
                    state.stop_cancelled(run);
                    continue;
                }
                Woke::LeaseLost => {
                    tracing::error!(parent: &run.span, trace_id = %trace_id, "run stopped: its lease was lost");
                    state.stop_fenced();
                    fenced = true;
                    continue;
                }
                Woke::Look => {
                    self.settle_waits(run, state).await;
                    continue;
                }
            };
            self.take_ends(run, state, joined).await;
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
                let entry = if state.cancelled {
                    JournalEntry::run_cancelled(failure)
                } else {
                    JournalEntry::run_failed(failure)
                };
                run.log.append(entry).await;
            }
        }
        if fenced {
            Stopped::Fenced
        } else {
            Stopped::Ended
        }
    }

    /// Waits for the next thing the DAG loop acts on: a call's end; while
    /// the run goes on, also a shutdown, a cancel, a lost lease, or the
    /// time to look at its waits.
    async fn next_wake(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        cancel: &CancellationToken,
        lease_lost: &CancellationToken,
    ) -> Woke {
        if state.failure.is_some() {
            return Woke::Joined(state.tasks.join_next_with_id().await);
        }
        let look = super::wait::next_look(run, state);
        if state.tasks.is_empty() && look.is_none() {
            return Woke::Joined(None);
        }
        let busy = !state.tasks.is_empty();
        tokio::select! {
            joined = state.tasks.join_next_with_id(), if busy => Woke::Joined(joined),
            () = cancel.cancelled() => Woke::Shutdown,
            () = run.cancel.requested() => Woke::Cancel,
            () = lease_lost.cancelled() => Woke::LeaseLost,
            () = sleep_until_some(look) => Woke::Look,
        }
    }

    /// Takes in `joined` and every other call that has ended meanwhile:
    /// their ends go to the journal in one write (a map's elements end
    /// many at a time), before anything they made ready starts.
    async fn take_ends(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        joined: Result<(tokio::task::Id, StepOutcome), tokio::task::JoinError>,
    ) {
        let mut ended = vec![state.call_ended(joined)];
        while let Some(more) = state.tasks.try_join_next_with_id() {
            ended.push(state.call_ended(more));
        }
        let entries = ended
            .iter()
            .filter_map(|(call, outcome)| self.step_end_entry(run, state, call, outcome))
            .collect();
        run.log.append_all(entries).await;
        for (call, outcome) in ended {
            run.base.recorder.step_finished(&call, Instant::now());
            match run.wf.step_of_call(&call) {
                Some((step, Some(index))) => {
                    let element = (call, step.name.as_str(), index);
                    self.element_ended(run, state, element, outcome).await;
                }
                _ => state.step_ended(run, call, outcome),
            }
        }
    }

    /// Journals how a step (or a map's element, `name` = `STEP.INDEX`)
    /// ended, from the DAG alone (never from the step's own task, which the
    /// run may stop): so the journal's completions are in the order the run
    /// took them in, the order undo follows.
    fn step_end_entry(
        &self,
        run: &RunCtx,
        state: &RunState,
        name: &str,
        outcome: &StepOutcome,
    ) -> Option<JournalEntry> {
        let (output, how) = match outcome {
            StepOutcome::Succeeded(v) => (v, "succeeded"),
            StepOutcome::Compensated(v) => (v, "compensated"),
            StepOutcome::Cancelled => {
                return Some(JournalEntry {
                    kind: "cancelled".into(),
                    step: name.to_string(),
                    outcome: "cancelled".into(),
                    ..Default::default()
                });
            }
            StepOutcome::Failed(_) => return None,
        };
        let (step, _) = run.wf.step_of_call(name)?;
        let (component, sha) = self.executor.component_of(&step.name);
        // The attempt that succeeded (none for a compensated step).
        let (attempt, span_id) = run
            .base
            .recorder
            .succeeded_attempt(name)
            .unwrap_or_default();
        Some(JournalEntry {
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
    }

    /// Settles every step not settled yet whose dependencies have: skips
    /// it (a condition is false, or a step it needs was skipped), or starts
    /// it (a map step starts its elements). Repeats while a skip lets
    /// another step settle. A step that cannot start fails the run.
    async fn start_ready(&self, run: &RunCtx, state: &mut RunState) {
        loop {
            let mut settled = false;
            for step in &run.wf.steps {
                if state.order.contains(&step.name)
                    || state.skipped.contains_key(&step.name)
                    || state.outputs.contains_key(&step.name)
                    || !step
                        .dependencies()
                        .iter()
                        .all(|d| state.outputs.contains_key(*d) || state.skipped.contains_key(*d))
                {
                    continue;
                }
                settled = true;
                if let Some(why) = state.skip_reason(run, step) {
                    state.skip(run, step, why);
                    continue;
                }
                if state.settle_node(run, step) {
                    continue;
                }
                state.order.push(step.name.clone());
                run.base.recorder.step_started(&step.name, Instant::now());
                let started = match (&step.map, &step.kind) {
                    (Some(_), _) => self.start_map(run, state, step).await,
                    (None, StepKind::Sleep(_) | StepKind::Signal(_)) => {
                        self.start_wait(run, state, step).await
                    }
                    (None, _) => self.start_call(run, state, step),
                };
                if let Err(e) = started {
                    run.base.recorder.step_finished(&step.name, Instant::now());
                    state.outcomes.insert(step.name.clone(), "failed".into());
                    state.errors.insert(step.name.clone(), e.clone());
                    state.failure = Some(format!("step `{}`: {e}", step.name));
                }
                if state.failure.is_some() {
                    return;
                }
            }
            if !settled {
                return;
            }
        }
    }

    /// Starts a step's one call. `Err`: its input cannot be built.
    fn start_call(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        step: &StepSpec,
    ) -> Result<(), String> {
        let input = super::input::build_input(step, run, &state.outputs)?.to_string();
        state.inputs_of.insert(step.name.clone(), input.clone());
        let mut base = AttemptContext {
            step: step.name.clone(),
            ..run.base.clone()
        };
        // A composed workflow's step is a child of its compose step's span.
        base.trace.parent_span_id = parent_span(run, &step.name);
        let span = tracing::info_span!(parent: &run.span, "step", step = %step.name, trace_id = %run.trace_id);
        let handle = state.tasks.spawn(
            run_step(
                Arc::clone(&self.executor),
                Arc::clone(&self.permits),
                Arc::new(step.clone()),
                input,
                base,
                run.log.clone(),
                state.stop.clone(),
            )
            .instrument(span),
        );
        state.task_steps.insert(handle.id(), step.name.clone());
        Ok(())
    }
}

impl RunState {
    /// The call a joined task ran and how it ended (a task that panicked
    /// or was aborted ended as failed or cancelled).
    fn call_ended(
        &mut self,
        joined: Result<(tokio::task::Id, StepOutcome), tokio::task::JoinError>,
    ) -> (String, StepOutcome) {
        match joined {
            Ok((id, outcome)) => (self.task_steps.remove(&id).unwrap_or_default(), outcome),
            Err(e) => {
                let name = self.task_steps.remove(&e.id()).unwrap_or_default();
                if e.is_cancelled() {
                    (name, StepOutcome::Cancelled)
                } else {
                    let why = format!("step task ended abnormally: {e}");
                    (name, StepOutcome::Failed(why))
                }
            }
        }
    }

    /// Why `step`, whose dependencies have settled, is not to run, if it
    /// is not: a step it needs was skipped, or its condition is false.
    fn skip_reason(&self, run: &RunCtx, step: &StepSpec) -> Option<String> {
        if let Some(why) = self.compose_skipped(step) {
            return Some(why);
        }
        if let Some(dep) = step
            .required_dependencies()
            .into_iter()
            .find(|d| self.skipped.contains_key(*d))
        {
            // `STEP/` is where compose step `STEP` opens its workflow.
            let dep = dep.trim_end_matches('/');
            return Some(format!("step `{dep}` was skipped"));
        }
        let when = step.when.as_ref()?;
        let value = |r: &ValueRef| match r {
            ValueRef::Input { input, pointer } => {
                at_pointer(run.inputs.get(input)?, pointer.as_deref())
            }
            ValueRef::Step { step, pointer } => {
                at_pointer(self.outputs.get(step)?, pointer.as_deref())
            }
            // Read by `holds` itself.
            ValueRef::Const(_) => None,
        };
        (!when.holds(&value)).then(|| format!("condition false: {when}"))
    }

    /// Records `step` as skipped, with why.
    fn skip(&mut self, run: &RunCtx, step: &StepSpec, why: String) {
        tracing::info!(parent: &run.span, step = %step.name, trace_id = %run.trace_id, "step skipped: {why}");
        run.base.recorder.event(EventRecord {
            kind: "host".into(),
            name: "step.skipped".into(),
            level: "info".into(),
            message: why.clone(),
            trace_id: run.trace_id.to_string(),
            span_id: run.run_span.to_string(),
            step: step.name.clone(),
            at_ms: 0.0,
            measurements: BTreeMap::new(),
            metadata: BTreeMap::new(),
        });
        self.outcomes.insert(step.name.clone(), "skipped".into());
        self.skipped.insert(step.name.clone(), why);
    }

    /// A map step has ended within its failure budget with `output`.
    pub(super) fn map_ended(&mut self, name: &str, output: Value) {
        self.outputs.insert(name.to_string(), output);
        self.outcomes.insert(name.to_string(), "succeeded".into());
    }
}

/// A step's input as its report shows it: a wait token hidden (whoever
/// reads the report must not be able to send the signal), cut past
/// [`crate::report::MAX_SHOWN_BYTES`].
fn shown_input(step: Option<&StepSpec>, input: &str) -> String {
    let tokens: Vec<&String> = step
        .map(|s| {
            s.args
                .iter()
                .filter(|(_, a)| matches!(a, crate::workflow::ArgSource::WaitToken { .. }))
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default();
    if tokens.is_empty() {
        return crate::report::bounded(input.to_string(), crate::report::MAX_SHOWN_BYTES);
    }
    let text = match serde_json::from_str::<Value>(input) {
        Ok(Value::Object(mut obj)) => {
            for name in tokens {
                if obj.contains_key(name) {
                    obj.insert(name.clone(), Value::String("(wait token: hidden)".into()));
                }
            }
            Value::Object(obj).to_string()
        }
        _ => input.to_string(),
    };
    crate::report::bounded(text, crate::report::MAX_SHOWN_BYTES)
}

/// Resolves at `at`, or never (`None`).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `value` at `pointer` (all of it without one).
fn at_pointer<'v>(value: &'v Value, pointer: Option<&str>) -> Option<&'v Value> {
    match pointer {
        None => Some(value),
        Some(p) => value.pointer(p),
    }
}

impl RunState {
    /// Takes in how step `name` ended.
    pub(super) fn step_ended(&mut self, run: &RunCtx, name: String, outcome: StepOutcome) {
        match outcome {
            StepOutcome::Succeeded(v) => {
                self.outputs.insert(name.clone(), v);
                self.outcomes.insert(name.clone(), "succeeded".into());
                self.completed.push(Completed {
                    input: self.inputs_of.get(&name).cloned().unwrap_or_default(),
                    call: name.clone(),
                    output: None,
                });
            }
            StepOutcome::Compensated(v) => {
                self.outputs.insert(name.clone(), v);
                self.outcomes.insert(name.clone(), "compensated".into());
                self.degraded = true;
            }
            StepOutcome::Failed(e) => {
                self.outcomes.insert(name.clone(), "failed".into());
                self.errors.insert(name.clone(), e.clone());
                if self.suspends_on(run, &name, &e) {
                    return;
                }
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

/// One report per step: those that started, in the order they started,
/// then those that never did (`skipped`, with why).
pub(super) fn build_step_reports<E: StepExecutor>(
    wf: &Workflow,
    run_span: crate::trace::SpanId,
    state: &RunState,
    recorder: &RunRecorder,
    executor: &E,
) -> Vec<StepReport> {
    let order = &state.order;
    let timelines: HashMap<String, _> = wf
        .steps
        .iter()
        .map(|s| (s.name.clone(), recorder.timeline(&s.name)))
        .collect();
    let interval = |name: &str| {
        let t = timelines.get(name)?;
        Some((t.started?, t.finished?))
    };
    // A compose step's start is not a step of its own in the report.
    let shown = |n: &String| !n.ends_with('/');
    let names = order.iter().cloned().chain(
        wf.steps
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| !order.contains(n) && shown(n)),
    );
    let mut names: Vec<String> = names.collect();
    // A compose step is listed before its workflow's steps.
    for compose in wf
        .steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Compose { .. }))
    {
        let prefix = format!("{}/", compose.name);
        let at = names.iter().position(|n| *n == compose.name);
        let first = names.iter().position(|n| n.starts_with(&prefix));
        if let (Some(at), Some(first)) = (at, first)
            && first < at
        {
            let name = names.remove(at);
            names.insert(first, name);
        }
    }
    let mut reports = Vec::new();
    for name in names {
        let (component, component_sha256) = match state.ran_with.get(&name) {
            Some(journaled) => journaled.clone(),
            None => executor.component_of(&name),
        };
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
        let skipped_because = match state.skipped.get(&name) {
            Some(why) => Some(why.clone()),
            None if !order.contains(&name) => {
                Some("not started: the run had failed or stopped".to_string())
            }
            None => None,
        };
        reports.push(StepReport {
            outcome: state
                .outcomes
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "skipped".into()),
            error: state.errors.get(&name).cloned(),
            skipped_because,
            map: state.maps.get(&name).map(|m| m.report(&name, recorder)),
            compose: wf.step(&name).and_then(|s| match &s.kind {
                StepKind::Compose { workflow, .. } => Some(ComposeReport {
                    workflow: workflow.clone(),
                    span_id: compose_span(run_span, &name).to_string(),
                    parent_span_id: match name.rsplit_once('/') {
                        Some((outer, _)) => compose_span(run_span, outer),
                        None => run_span,
                    }
                    .to_string(),
                }),
                _ => None,
            }),
            wait: wf.step(&name).and_then(|s| state.wait_report(s, run_span)),
            input: state
                .inputs_of
                .get(&name)
                .map(|i| shown_input(wf.step(&name), i)),
            output: (state.outputs.get(&name))
                .map(|o| crate::report::bounded(o.to_string(), crate::report::MAX_SHOWN_BYTES)),
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
