//! One step of a run: its attempts, each a new span and a fresh call, retried
//! with backoff while the failure is retryable and attempts are left, then
//! handed to compensation ([`super::saga`]). Journals each attempt; the
//! step's completion is journaled by the DAG (`dag`), in the run's one order.
//!
//! A step is stopped (the run failed) only while it waits or a guest call
//! runs: once a call has returned, its outcome is always handed back, so a
//! step whose call succeeded is never lost as `cancelled` (and is undone).
//!
//! Must not know wasmtime, the lease, or what other steps do.

use super::saga::compensate;
use super::{
    AttemptContext, RunLog, StepExecutor, StepFailure, StepOutcome, backoff, unless_stopped,
};
use crate::journal::JournalEntry;
use crate::report::EventRecord;
use crate::trace::{AttemptTrace, SpanId};
use crate::workflow::StepSpec;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// One attempt of `run`: a new span, the call, the JSON check, the record.
/// `None`: `stop` fired before the call returned (nothing is recorded).
#[allow(clippy::too_many_arguments)]
async fn attempt_once<E: StepExecutor>(
    executor: &E,
    permits: &Semaphore,
    step: &StepSpec,
    base: &AttemptContext,
    attempt: u32,
    input: &str,
    log: &RunLog,
    stop: &CancellationToken,
) -> Option<Result<Value, StepFailure>> {
    let recorder = &base.recorder;
    // The call's name: the step's, or `STEP.INDEX` for a map's element.
    let call = base.step.as_str();
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
        let waiting = Instant::now();
        let _permit = unless_stopped(stop, permits.acquire()).await?;
        let now = Instant::now();
        // A map element's attempt is a child of its map's span, a composed
        // workflow's step of its compose step's: the report says so.
        let parent = (base.trace.parent_span_id != base.trace.span_id)
            .then(|| base.trace.parent_span_id.to_string());
        let span = (span_id.to_string(), parent);
        let index = recorder.attempt_started(call, attempt, span, now, now - waiting);
        log.attempt_started(call, attempt);
        let span = tracing::info_span!("attempt", step = %call, attempt, trace_id = %base.trace.trace_id, span_id = %span_id);
        let call_fut = executor
            .execute(step, ctx, input.to_string())
            .instrument(span);
        let Some(out) = unless_stopped(stop, call_fut).await else {
            recorder.attempt_finished(call, index, "cancelled", None);
            log.attempt_ended(recorder, call, index, || executor.component_of(&step.name));
            return None;
        };
        let parsed = out.and_then(|text| {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| StepFailure::InvalidOutput(format!("output is not valid JSON: {e}")))
        });
        let outcome = parsed.as_ref().map_or_else(|f| f.kind(), |_| "succeeded");
        recorder.attempt_finished(
            call,
            index,
            outcome,
            parsed.as_ref().err().map(ToString::to_string),
        );
        log.attempt_ended(recorder, call, index, || executor.component_of(&step.name));
        parsed
    };
    // A failed attempt is journaled as it ends; a successful one goes into
    // its step's `completed` entry (one durable write per completed step).
    if let Err(failure) = &parsed {
        log.append(JournalEntry {
            kind: "attempt".into(),
            step: call.to_string(),
            span_id: span_id.to_string(),
            attempt,
            outcome: failure.kind().to_string(),
            error: Some(failure.to_string()),
            ..Default::default()
        })
        .await;
    }
    Some(parsed)
}

/// Runs a step until it succeeds, is compensated, fails for good, or is
/// stopped: retries retryable failures with backoff, then asks a reversible
/// step to compensate. `stop` ends it between calls or during one (the
/// call is dropped); a call that has returned is always taken in.
pub(super) async fn run_step<E: StepExecutor>(
    executor: Arc<E>,
    permits: Arc<Semaphore>,
    step: Arc<StepSpec>,
    input: String,
    base: AttemptContext,
    log: RunLog,
    stop: CancellationToken,
) -> StepOutcome {
    let started = Instant::now();
    let recorder = base.recorder.clone();
    let trace_id = base.trace.trace_id;
    let call = base.step.clone();
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
            &stop,
        )
        .await
        {
            Some(Ok(v)) => break StepOutcome::Succeeded(v),
            Some(Err(f)) => f,
            None => break StepOutcome::Cancelled,
        };
        if failure.is_retryable() && budget > 0 {
            let wait = backoff(attempt);
            tracing::warn!(step = %call, attempt, trace_id = %trace_id,
                wait_ms = wait.as_millis() as u64, "attempt failed ({}): {failure}; retrying", failure.kind());
            if unless_stopped(&stop, tokio::time::sleep(wait))
                .await
                .is_none()
            {
                break StepOutcome::Cancelled;
            }
            continue;
        }
        if !executor.is_reversible(&step.name) {
            break StepOutcome::Failed(format!("{}: {failure}", failure.kind()));
        }
        match compensate(
            executor.as_ref(),
            &permits,
            &step,
            &base,
            attempt,
            &input,
            failure,
            &mut compensation_retries,
            &log,
            &stop,
        )
        .await
        {
            Some(outcome) => break outcome,
            // `compensate` said retry: one more attempt.
            None => budget = 1,
        }
    };

    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (name, level, message) = match &outcome {
        StepOutcome::Succeeded(_) => ("step.succeeded", "info", String::new()),
        StepOutcome::Compensated(_) => (
            "step.compensated",
            "warn",
            "continued with a substitute output".to_string(),
        ),
        StepOutcome::Failed(e) => ("step.failed", "warn", e.clone()),
        StepOutcome::Cancelled => ("step.cancelled", "warn", "the run failed".to_string()),
    };
    tracing::info!(step = %call, outcome = name, duration_ms, attempts = attempt, trace_id = %trace_id, "step finished {message}");
    // A map's elements are summed up in their step's one event instead
    // (a map of 10,000 elements must not add 10,000 events to the report).
    if call != step.name {
        return outcome;
    }
    let mut measurements = BTreeMap::new();
    measurements.insert("duration_ms".to_string(), duration_ms);
    measurements.insert("attempts".to_string(), f64::from(attempt));
    let last_span = recorder
        .timeline(&call)
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
