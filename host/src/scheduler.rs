//! The scheduler: runs a workflow's DAG on tokio.
//!
//! Owns: when a step starts (as soon as every step it depends on has
//! succeeded, bounded by a concurrency limit), each step's input (built from
//! workflow inputs and other steps' outputs), retries with backoff, the trace
//! context of every attempt, and the run report.
//!
//! Must not know wasmtime: a step attempt is executed by a [`StepExecutor`]
//! (the sandbox in production; anything else in tests and baselines).

use crate::report::{AttemptReport, EventRecord, RunRecorder, RunReport, StepReport};
use crate::trace::{AttemptTrace, IncomingTrace, SpanId};
use crate::workflow::{ArgSource, InputError, StepSpec, Workflow};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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

/// Why a step attempt failed.
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
    /// The host could not run the step at all (e.g. instantiation failed).
    #[error("host error: {0}")]
    Host(String),
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
            StepFailure::Host(_) => "host-error",
        }
    }
}

/// Runs one attempt of a step. Implementations must enforce `step.timeout`.
pub trait StepExecutor: Send + Sync + 'static {
    /// The component that runs `step`, and its sha256, for the report.
    fn component_of(&self, step: &str) -> (String, String);

    /// Runs one attempt and returns the step's output text (the scheduler
    /// checks that it is JSON).
    fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> impl Future<Output = Result<String, StepFailure>> + Send;
}

/// A request to run a workflow once.
pub struct RunRequest {
    pub workflow: Arc<Workflow>,
    pub input: Value,
    pub trace: IncomingTrace,
}

/// Runs workflows with one executor and a shared concurrency bound.
pub struct Scheduler<E> {
    executor: Arc<E>,
    /// Bounds step attempts in flight across every run of this scheduler.
    permits: Arc<Semaphore>,
}

/// First retry waits about this long; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// No retry waits longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Exponential backoff with jitter: a random wait between half and all of
/// `base * 2^(retry-1)`, capped.
fn backoff(retry: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
    let ceiling = exp.min(BACKOFF_CAP);
    let jitter = rand::random::<f64>() * 0.5 + 0.5;
    ceiling.mul_f64(jitter)
}

fn new_run_id() -> String {
    format!("run-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// What one step's task returns to the run loop.
struct StepRun {
    attempts: Vec<AttemptReport>,
    started: Instant,
    finished: Instant,
    result: Result<Value, String>,
}

impl<E: StepExecutor> Scheduler<E> {
    pub fn new(executor: Arc<E>, max_concurrency: usize) -> Self {
        Scheduler {
            executor,
            permits: Arc::new(Semaphore::new(max_concurrency.max(1))),
        }
    }

    pub fn executor(&self) -> &Arc<E> {
        &self.executor
    }

    /// Runs the workflow to completion. An input that does not fit the
    /// workflow is refused before anything runs; every other failure is in
    /// the report (`outcome: failed`).
    pub async fn run(&self, request: RunRequest) -> Result<RunReport, InputError> {
        let wf = request.workflow;
        let inputs = wf.bind_inputs(&request.input)?;
        let incoming = request.trace;
        let run_id = new_run_id();
        let run_span = SpanId::random();
        let trace_id = incoming.parent.trace_id;
        let recorder = RunRecorder::new();
        let started_at_ms = crate::store::now_ms();
        let started = Instant::now();
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

        let mut outputs: HashMap<String, Value> = HashMap::new();
        let mut runs: HashMap<String, StepRun> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut started_steps: HashSet<String> = HashSet::new();
        let mut failure: Option<String> = None;
        let mut tasks: JoinSet<StepRun> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, String> = HashMap::new();

        loop {
            if failure.is_none() {
                for step in &wf.steps {
                    if started_steps.contains(&step.name)
                        || !step.dependencies().iter().all(|d| outputs.contains_key(*d))
                    {
                        continue;
                    }
                    started_steps.insert(step.name.clone());
                    order.push(step.name.clone());
                    let input = match build_input(step, &inputs, &outputs) {
                        Ok(v) => v,
                        Err(e) => {
                            let now = Instant::now();
                            runs.insert(
                                step.name.clone(),
                                StepRun {
                                    attempts: Vec::new(),
                                    started: now,
                                    finished: now,
                                    result: Err(e.clone()),
                                },
                            );
                            failure = Some(format!("step `{}`: {e}", step.name));
                            break;
                        }
                    };
                    let base = AttemptContext {
                        run_id: run_id.clone(),
                        workflow: wf.name.clone(),
                        step: step.name.clone(),
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
                    let span = tracing::info_span!(parent: &run_tracing_span, "step", step = %step.name, trace_id = %trace_id);
                    let handle = tasks.spawn(
                        run_step(
                            Arc::clone(&self.executor),
                            Arc::clone(&self.permits),
                            step.clone(),
                            input.to_string(),
                            base,
                        )
                        .instrument(span),
                    );
                    task_steps.insert(handle.id(), step.name.clone());
                }
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            let (name, run) = match joined {
                Ok((id, run)) => (task_steps.remove(&id).unwrap_or_default(), run),
                Err(e) => {
                    let name = task_steps.remove(&e.id()).unwrap_or_default();
                    let now = Instant::now();
                    let run = StepRun {
                        attempts: Vec::new(),
                        started: now,
                        finished: now,
                        result: Err(format!("step task ended abnormally: {e}")),
                    };
                    (name, run)
                }
            };
            match &run.result {
                Ok(v) => {
                    outputs.insert(name.clone(), v.clone());
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(format!("step `{name}` failed: {e}"));
                    }
                }
            }
            runs.insert(name, run);
        }

        let steps = build_step_reports(&wf, &order, &runs, &recorder, self.executor.as_ref());
        let result = outputs.get(&wf.result).cloned();
        let (outcome, error) = match (&failure, &result) {
            (None, Some(_)) => ("succeeded", None),
            (Some(f), _) => ("failed", Some(f.clone())),
            (None, None) => (
                "failed",
                Some(format!("result step `{}` did not run", wf.result)),
            ),
        };
        let duration = started.elapsed();
        tracing::info!(
            parent: &run_tracing_span,
            trace_id = %trace_id,
            outcome,
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
            error,
            result,
            steps,
            events,
            http_calls,
        })
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

/// Runs a step's attempts until one succeeds, a failure is not retryable, or
/// the retries are spent.
async fn run_step<E: StepExecutor>(
    executor: Arc<E>,
    permits: Arc<Semaphore>,
    step: StepSpec,
    input: String,
    base: AttemptContext,
) -> StepRun {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let recorder = base.recorder.clone();
    let trace_id = base.trace.trace_id;
    let mut attempt = 0u32;
    let result = loop {
        attempt += 1;
        let span_id = SpanId::random();
        let ctx = AttemptContext {
            attempt,
            trace: AttemptTrace {
                span_id,
                ..base.trace.clone()
            },
            ..base.clone()
        };
        let outcome = {
            let _permit = permits.acquire().await;
            let t0 = Instant::now();
            let span = tracing::info_span!("attempt", step = %step.name, attempt, trace_id = %trace_id, span_id = %span_id);
            let out = executor
                .execute(&step, ctx, input.clone())
                .instrument(span)
                .await;
            let parsed = out.and_then(|text| {
                serde_json::from_str::<Value>(&text)
                    .map_err(|e| StepFailure::InvalidOutput(e.to_string()))
            });
            (t0, Instant::now(), parsed)
        };
        let (t0, t1, parsed) = outcome;
        attempts.push(AttemptReport {
            attempt,
            span_id: span_id.to_string(),
            start_ms: recorder.offset_ms(t0),
            duration_ms: (t1 - t0).as_secs_f64() * 1000.0,
            outcome: match &parsed {
                Ok(_) => "succeeded".to_string(),
                Err(f) => f.kind().to_string(),
            },
            error: parsed.as_ref().err().map(ToString::to_string),
        });
        match parsed {
            Ok(v) => break Ok(v),
            Err(f) if f.is_retryable() && attempt <= step.max_retries => {
                let wait = backoff(attempt);
                tracing::warn!(step = %step.name, attempt, trace_id = %trace_id, span_id = %span_id,
                    wait_ms = wait.as_millis() as u64, "attempt failed ({}): {f}; retrying", f.kind());
                tokio::time::sleep(wait).await;
            }
            Err(f) => break Err(format!("{}: {f}", f.kind())),
        }
    };
    let finished = Instant::now();
    let duration_ms = (finished - started).as_secs_f64() * 1000.0;
    let outcome = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    match &result {
        Ok(_) => {
            tracing::info!(step = %step.name, outcome, duration_ms, attempts = attempt, trace_id = %trace_id, "step finished")
        }
        Err(e) => {
            tracing::warn!(step = %step.name, outcome, duration_ms, attempts = attempt, trace_id = %trace_id, error = %e, "step finished")
        }
    }
    let mut measurements = BTreeMap::new();
    measurements.insert("duration_ms".to_string(), duration_ms);
    measurements.insert("attempts".to_string(), f64::from(attempt));
    recorder.event(EventRecord {
        kind: "host".into(),
        name: format!("step.{outcome}"),
        level: if result.is_ok() { "info" } else { "warn" }.into(),
        message: result.as_ref().err().cloned().unwrap_or_default(),
        trace_id: trace_id.to_string(),
        span_id: attempts
            .last()
            .map(|a| a.span_id.clone())
            .unwrap_or_default(),
        step: step.name.clone(),
        at_ms: 0.0,
        measurements,
        metadata: BTreeMap::new(),
    });
    StepRun {
        attempts,
        started,
        finished,
        result,
    }
}

fn build_step_reports<E: StepExecutor>(
    wf: &Workflow,
    order: &[String],
    runs: &HashMap<String, StepRun>,
    recorder: &RunRecorder,
    executor: &E,
) -> Vec<StepReport> {
    let mut reports: Vec<StepReport> = Vec::new();
    let names = order.iter().cloned().chain(
        wf.steps
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| !order.contains(n)),
    );
    for name in names {
        let (component, component_sha256) = executor.component_of(&name);
        let report = match runs.get(&name) {
            Some(run) => StepReport {
                name: name.clone(),
                component,
                component_sha256,
                outcome: if run.result.is_ok() {
                    "succeeded"
                } else {
                    "failed"
                }
                .into(),
                start_ms: recorder.offset_ms(run.started),
                duration_ms: (run.finished - run.started).as_secs_f64() * 1000.0,
                parallel_with: runs
                    .iter()
                    .filter(|(other, o)| {
                        **other != name && o.started < run.finished && run.started < o.finished
                    })
                    .map(|(other, _)| other.clone())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                attempts: run.attempts.clone(),
                error: run.result.as_ref().err().cloned(),
            },
            None => StepReport {
                name: name.clone(),
                component,
                component_sha256,
                outcome: "skipped".into(),
                start_ms: 0.0,
                duration_ms: 0.0,
                parallel_with: Vec::new(),
                attempts: Vec::new(),
                error: None,
            },
        };
        reports.push(report);
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex;

    /// An executor scripted per step: echoes its input, sleeps, or fails a
    /// number of times first.
    #[derive(Default)]
    struct Scripted {
        fail_first: HashMap<String, (u32, StepFailure)>,
        delay: HashMap<String, Duration>,
        calls: Mutex<Vec<(String, u32, String)>>,
    }

    impl StepExecutor for Scripted {
        fn component_of(&self, step: &str) -> (String, String) {
            (format!("{step}.wasm"), "00".repeat(32))
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

    #[test]
    fn backoff_grows_and_is_capped() {
        for retry in 1..20 {
            let b = backoff(retry);
            assert!(b <= BACKOFF_CAP, "{b:?}");
        }
        assert!(backoff(1) <= BACKOFF_BASE && backoff(1) >= BACKOFF_BASE / 2);
        assert!(backoff(3) >= BACKOFF_BASE * 2);
    }
}
