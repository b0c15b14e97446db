//! Map steps: a step run once per element of a list. The DAG starts a map
//! like any step once its dependencies have succeeded; this room then runs
//! its elements as calls of their own (`STEP.INDEX`: own attempts, retries,
//! spans under the map's span, idempotency keys and journal entries), at
//! most `max_parallel` at once, and ends the step when every element has
//! ended or more have failed than the map tolerates.
//!
//! Each completed element is journaled as it ends, in the run's one
//! completion order (so a run that fails undoes elements like steps, in
//! reverse completion order, and a resumed run reuses the elements done);
//! the map's own completion (`outcome: mapped`) holds the step's output.
//!
//! Must not know wasmtime or how an attempt runs (that is `attempt`).

use super::attempt::run_step;
use super::input::{build_input, source_value};
use super::{AttemptContext, RunCtx, Scheduler, StepExecutor, StepOutcome};
use super::{Completed, RunState};
use crate::journal::JournalEntry;
use crate::report::{ElementReport, EventRecord, MapReport, RunRecorder};
use crate::trace::SpanId;
use crate::workflow::{ArgSource, MapSpec, StepSpec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// Most elements of one map the report describes one by one (the first
/// by index, then failed ones); the rest are only counted.
pub const MAX_REPORTED_ELEMENTS: usize = 100;
/// Most bytes a map step's output (its elements' results together) may
/// hold, as the largest output a definition may allow one step: past it
/// the step fails, so 10,000 elements of 1 MiB cannot fill the host.
pub const MAX_MAP_OUTPUT_BYTES: usize = 64 << 20;

/// How one element stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ElementStatus {
    Waiting,
    Running,
    Succeeded,
    Compensated,
    Failed,
    Cancelled,
    /// Completed before the run was resumed: its journaled output is used.
    Reused,
}

impl ElementStatus {
    fn as_str(self) -> &'static str {
        match self {
            ElementStatus::Waiting => "not-started",
            ElementStatus::Running => "running",
            ElementStatus::Succeeded => "succeeded",
            ElementStatus::Compensated => "compensated",
            ElementStatus::Failed => "failed",
            ElementStatus::Cancelled => "cancelled",
            ElementStatus::Reused => "reused",
        }
    }
}

/// A map step while (and after) it runs.
pub(super) struct MapRun {
    /// What each element call runs: the step without its arguments,
    /// condition or list (shared by every element).
    call: Arc<StepSpec>,
    spec: MapSpec,
    /// The elements not started yet (taken out as each starts).
    items: Vec<Value>,
    /// The step's arguments, which every element's input starts from.
    base_input: serde_json::Map<String, Value>,
    /// The arguments taken from each element: name, JSON pointer.
    parts: Vec<(String, Option<String>)>,
    next: usize,
    in_flight: usize,
    results: Vec<Option<Value>>,
    status: Vec<ElementStatus>,
    errors: BTreeMap<usize, String>,
    failed: usize,
    tolerated: usize,
    /// Bytes of the results so far (bounded by [`MAX_MAP_OUTPUT_BYTES`]).
    output_bytes: usize,
    /// The map step's span: every element attempt is its child.
    pub(super) span: SpanId,
    /// Its own parent: the run's span, or its compose step's.
    parent_span: SpanId,
    ended: bool,
}

impl MapRun {
    /// Element `index`'s input: the step's arguments, the arguments taken
    /// from the element (`element = "/pointer"`), and the whole element in
    /// `as`.
    fn element_input(&self, item: Value, index: usize) -> Result<String, String> {
        let mut input = self.base_input.clone();
        for (arg, pointer) in &self.parts {
            let value = match pointer {
                None => item.clone(),
                Some(p) => item.pointer(p).cloned().ok_or_else(|| {
                    format!("argument `{arg}`: pointer `{p}` matches nothing in element {index}")
                })?,
            };
            input.insert(arg.clone(), value);
        }
        if let Some(arg) = &self.spec.element_arg {
            input.insert(arg.clone(), item);
        }
        Ok(Value::Object(input).to_string())
    }

    /// How many elements stand at `status`.
    fn count(&self, status: ElementStatus) -> usize {
        self.status.iter().filter(|s| **s == status).count()
    }

    fn done(&self) -> bool {
        self.next >= self.items.len() && self.in_flight == 0
    }

    /// The step's output: the results in input order; with a failure
    /// budget, each wrapped as `{"ok": true, "output": ...}` or
    /// `{"ok": false, "error": "..."}`.
    fn output(&mut self) -> Value {
        let results = std::mem::take(&mut self.results);
        if self.spec.tolerance.is_none() {
            return Value::Array(results.into_iter().map(Option::unwrap_or_default).collect());
        }
        let wrapped = results.into_iter().enumerate().map(|(i, r)| match r {
            Some(v) => serde_json::json!({ "ok": true, "output": v }),
            None => serde_json::json!({
                "ok": false,
                "error": self.errors.get(&i).cloned().unwrap_or_default(),
            }),
        });
        Value::Array(wrapped.collect())
    }

    /// What the report says of the map.
    pub(super) fn report(&self, name: &str, recorder: &RunRecorder) -> MapReport {
        let count = |s| self.count(s);
        let first = (0..self.status.len()).take(MAX_REPORTED_ELEMENTS);
        let failed = self
            .errors
            .keys()
            .copied()
            .filter(|i| *i >= MAX_REPORTED_ELEMENTS)
            .take(MAX_REPORTED_ELEMENTS);
        let elements: Vec<ElementReport> = first
            .chain(failed)
            .map(|i| ElementReport {
                index: i,
                outcome: self.status[i].as_str().to_string(),
                error: self.errors.get(&i).cloned(),
                attempts: recorder
                    .timeline(&format!("{name}.{i}"))
                    .attempts
                    .into_iter()
                    .map(|(a, _)| a)
                    .collect(),
            })
            .collect();
        MapReport {
            span_id: self.span.to_string(),
            parent_span_id: self.parent_span.to_string(),
            elements: self.status.len(),
            succeeded: count(ElementStatus::Succeeded),
            compensated: count(ElementStatus::Compensated),
            failed: count(ElementStatus::Failed),
            cancelled: count(ElementStatus::Cancelled),
            reused: count(ElementStatus::Reused),
            not_started: count(ElementStatus::Waiting),
            tolerated_failures: self.tolerated,
            max_parallel: self.spec.max_parallel,
            not_shown: self.status.len() - elements.len(),
            shown: elements,
        }
    }
}

/// The list a map runs over, checked against its bound.
fn list_of(
    map: &MapSpec,
    run: &RunCtx,
    state: &RunState,
    name: &str,
) -> Result<Vec<Value>, String> {
    let list = source_value(&map.over, "map.over", run, &state.outputs)?;
    let Value::Array(items) = list else {
        return Err(format!(
            "map.over: expected an array, got {}",
            crate::workflow::json_kind(&list)
        ));
    };
    if items.len() > map.max_elements as usize {
        return Err(format!(
            "map.over: {} elements, more than step `{name}` allows (`map.max_elements` = {})",
            items.len(),
            map.max_elements
        ));
    }
    Ok(items)
}

impl<E: StepExecutor> Scheduler<E> {
    /// Starts map step `step` (its dependencies have succeeded): takes its
    /// list, reuses elements a resumed run had completed, starts the first
    /// elements. `Err`: the step cannot start (its list or input is bad).
    pub(super) async fn start_map(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        step: &StepSpec,
    ) -> Result<(), String> {
        let Some(map) = &step.map else {
            return Err("not a map step".into());
        };
        let items = list_of(map, run, state, &step.name)?;
        let Value::Object(base_input) = build_input(step, run, &state.outputs)? else {
            return Err("the step's input is not an object".into());
        };
        let len = items.len();
        let mut m = MapRun {
            call: Arc::new(StepSpec {
                args: BTreeMap::new(),
                when: None,
                map: None,
                ..step.clone()
            }),
            spec: map.clone(),
            items,
            base_input,
            parts: step
                .args
                .iter()
                .filter_map(|(arg, source)| match source {
                    ArgSource::Element { pointer } => Some((arg.clone(), pointer.clone())),
                    _ => None,
                })
                .collect(),
            next: 0,
            in_flight: 0,
            results: vec![None; len],
            status: vec![ElementStatus::Waiting; len],
            errors: BTreeMap::new(),
            failed: 0,
            tolerated: map.tolerated_failures(len),
            output_bytes: 0,
            span: SpanId::random(),
            parent_span: super::compose::parent_span(run, &step.name),
            ended: false,
        };
        for i in 0..len {
            if let Some(v) = state.reused_elements.remove(&format!("{}.{i}", step.name)) {
                m.results[i] = Some(v);
                m.status[i] = ElementStatus::Reused;
            }
        }
        state.maps.insert(step.name.clone(), m);
        self.go_on_with_map(run, state, &step.name).await;
        Ok(())
    }

    /// Starts elements while the map has room, or ends the map when every
    /// element has ended.
    async fn go_on_with_map(&self, run: &RunCtx, state: &mut RunState, name: &str) {
        let Some(m) = state.maps.get_mut(name) else {
            return;
        };
        while m.in_flight < m.spec.max_parallel as usize && m.next < m.items.len() {
            let i = m.next;
            m.next += 1;
            if m.status[i] == ElementStatus::Reused {
                continue;
            }
            let call = format!("{name}.{i}");
            run.base.recorder.step_started(&call, Instant::now());
            let item = std::mem::take(&mut m.items[i]);
            let input = match m.element_input(item, i) {
                Ok(input) => input,
                Err(e) => {
                    // Ends as a failed element, through the same path.
                    let handle = state.tasks.spawn(async move { StepOutcome::Failed(e) });
                    state.task_steps.insert(handle.id(), call);
                    m.in_flight += 1;
                    m.status[i] = ElementStatus::Running;
                    continue;
                }
            };
            state.inputs_of.insert(call.clone(), input.clone());
            let mut base = AttemptContext {
                step: call.clone(),
                ..run.base.clone()
            };
            base.trace.parent_span_id = m.span;
            let span = tracing::info_span!(parent: &run.span, "element", step = %call, trace_id = %run.trace_id);
            let task = run_step(
                Arc::clone(&self.executor),
                Arc::clone(&self.permits),
                Arc::clone(&m.call),
                input,
                base,
                run.log.clone(),
                state.stop.clone(),
            );
            let handle = state.tasks.spawn(task.instrument(span));
            state.task_steps.insert(handle.id(), call);
            m.in_flight += 1;
            m.status[i] = ElementStatus::Running;
        }
        if m.done() && !m.ended {
            self.end_map(run, state, name).await;
        }
    }

    /// Takes in how element `index` of map step `name` ended: journals it,
    /// and goes on with the map (or fails it, past its failure budget).
    pub(super) async fn element_ended(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        (call, name, index): (String, &str, usize),
        outcome: StepOutcome,
    ) {
        let name = name.to_string();
        // Its end is in the journal already (the DAG writes the ends it
        // takes in together).
        let input = state.inputs_of.remove(&call).unwrap_or_default();
        let Some(m) = state.maps.get_mut(&name) else {
            return;
        };
        m.in_flight -= 1;
        let mut failed = None;
        match outcome {
            StepOutcome::Succeeded(v) => {
                let text = v.to_string();
                m.output_bytes += text.len();
                state.completed.push(Completed {
                    output: Some(text),
                    call,
                    input,
                });
                m.results[index] = Some(v);
                m.status[index] = ElementStatus::Succeeded;
            }
            StepOutcome::Compensated(v) => {
                m.output_bytes += v.to_string().len();
                m.results[index] = Some(v);
                m.status[index] = ElementStatus::Compensated;
                state.degraded = true;
            }
            StepOutcome::Failed(e) => {
                m.status[index] = ElementStatus::Failed;
                m.failed += 1;
                if m.failed > m.tolerated && !m.ended {
                    m.ended = true;
                    failed = Some(format!(
                        "element {index} failed: {e} ({} failed, {} tolerated)",
                        m.failed, m.tolerated
                    ));
                }
                m.errors.insert(index, e);
            }
            StepOutcome::Cancelled => m.status[index] = ElementStatus::Cancelled,
        }
        if m.output_bytes > MAX_MAP_OUTPUT_BYTES && !m.ended && failed.is_none() {
            m.ended = true;
            failed = Some(format!(
                "the elements' results hold more than {MAX_MAP_OUTPUT_BYTES} bytes (a map's output is at most that)"
            ));
        }
        if let Some(why) = failed {
            run.base.recorder.step_finished(&name, Instant::now());
            map_event(run, &name, m, "step.failed", &why);
            state.step_ended(run, name, StepOutcome::Failed(why));
        } else if state.failure.is_none() && state.suspended.is_none() {
            self.go_on_with_map(run, state, &name).await;
        }
    }

    /// Every element has ended within the failure budget: the step's
    /// output is journaled (`mapped`) and the step has succeeded.
    async fn end_map(&self, run: &RunCtx, state: &mut RunState, name: &str) {
        let Some(m) = state.maps.get_mut(name) else {
            return;
        };
        m.ended = true;
        let output = m.output();
        run.base.recorder.step_finished(name, Instant::now());
        map_event(run, name, m, "step.succeeded", "");
        if let Some(step) = run.wf.step(name) {
            let (component, sha) = self.executor.component_of(name);
            run.log
                .append(JournalEntry {
                    kind: "completed".into(),
                    step: name.to_string(),
                    outcome: "mapped".into(),
                    output: Some(output.to_string()),
                    component: Some(component),
                    component_sha256: Some(sha),
                    timeout_ms: Some(step.timeout.as_millis() as u64),
                    allowed_hosts: Some(step.allowed_hosts.clone()),
                    ..Default::default()
                })
                .await;
        }
        state.map_ended(name, output);
    }
}

/// The map step's one event: how its elements ended.
fn map_event(run: &RunCtx, name: &str, m: &MapRun, event: &str, message: &str) {
    let count = |s| m.count(s) as f64;
    let mut measurements = BTreeMap::new();
    measurements.insert("elements".to_string(), m.status.len() as f64);
    measurements.insert("succeeded".to_string(), count(ElementStatus::Succeeded));
    measurements.insert("failed".to_string(), count(ElementStatus::Failed));
    measurements.insert("reused".to_string(), count(ElementStatus::Reused));
    run.base.recorder.event(EventRecord {
        kind: "host".into(),
        name: event.into(),
        level: if message.is_empty() { "info" } else { "warn" }.into(),
        message: message.to_string(),
        trace_id: run.trace_id.to_string(),
        span_id: m.span.to_string(),
        step: name.to_string(),
        at_ms: 0.0,
        measurements,
        metadata: BTreeMap::new(),
    });
}
