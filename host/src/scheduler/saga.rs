//! The failure path of a run, as a saga: a failed step's compensation
//! decision, undoing completed steps in reverse completion order (each with
//! retries and its own span), and releasing a failed run's claims. Every
//! decision and undo is journaled.
//!
//! Must not know wasmtime or the DAG's state (it gets what it needs).

use super::Completed;
use super::lease::{LEASE_UNRENEWED, LeaseKeeper};
use super::{
    AttemptContext, Compensation, RunCtx, RunLog, Scheduler, StepExecutor, StepFailure,
    StepOutcome, backoff, unless_stopped,
};
use crate::journal::{JournalEntry, RunFence, RunJournal};
use crate::report::{AttemptReport, CompensationReport, EventRecord, UndoReport};
use crate::trace::{AttemptTrace, SpanId};
use crate::workflow::StepSpec;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// `compensate` may ask for a retry at most this many times per step.
pub const MAX_COMPENSATION_RETRIES: u32 = 3;
/// A failed undo is tried again at most this many times.
pub const UNDO_RETRIES: u32 = 3;

/// Asks a reversible step that failed for good what to do about it
/// (`compensate`), and records and journals the answer. `None`: try the step
/// once more (a retry it asked for, while [`MAX_COMPENSATION_RETRIES`] last).
#[allow(clippy::too_many_arguments)]
pub(super) async fn compensate<E: StepExecutor>(
    executor: &E,
    permits: &Semaphore,
    step: &StepSpec,
    base: &AttemptContext,
    attempt: u32,
    input: &str,
    failure: StepFailure,
    compensation_retries: &mut u32,
    log: &RunLog,
    stop: &CancellationToken,
) -> Option<StepOutcome> {
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
    let asked = async {
        let _permit = permits.acquire().await;
        executor
            .compensate(step, ctx, input.to_string(), failure.clone())
            .await
    };
    // Stopped before it answered: the step failed anyway, the run is failing.
    let Some(answer) = unless_stopped(stop, asked).await else {
        return Some(StepOutcome::Cancelled);
    };
    let mut report = CompensationReport {
        span_id: span_id.to_string(),
        start_ms: base.recorder.offset_ms(t0),
        duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
        failure: format!("{}: {failure}", failure.kind()),
        decision: String::new(),
        error: None,
    };
    let next = match answer {
        Ok(Compensation::Retry) if *compensation_retries < MAX_COMPENSATION_RETRIES => {
            *compensation_retries += 1;
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
    tracing::info!(step = %base.step, trace_id = %base.trace.trace_id, span_id = %span_id, decision = %report.decision, "compensated");
    log.append(JournalEntry {
        kind: "compensation".into(),
        step: base.step.clone(),
        span_id: span_id.to_string(),
        attempt,
        outcome: report.decision.clone(),
        error: report.error.clone(),
        ..Default::default()
    })
    .await;
    base.recorder.compensation(&base.step, report);
    next
}

/// What the failure path needs of a run whose DAG has stopped.
pub(super) struct Done<'a> {
    /// Steps (and map elements) that completed, in completion order.
    pub(super) completed: &'a [Completed],
    pub(super) outputs: &'a HashMap<String, Value>,
    /// Why the run failed, if it did (the lease check may set it).
    pub(super) failure: &'a mut Option<String>,
}

/// How a run's failure path ended.
pub(super) struct Ending {
    pub(super) undo: Vec<UndoReport>,
    pub(super) released_claims: Vec<String>,
    /// Why the run is another host's to finish, if it is.
    pub(super) handed_over: Option<&'static str>,
}

impl<E: StepExecutor> Scheduler<E> {
    /// After the DAG has stopped: if the run failed, undoes its completed
    /// steps in reverse completion order and releases its claims. Each move
    /// is made only while the lease is held: a run that lost it and cannot
    /// take it back is left to the host that takes it over (or to
    /// recovery), which undoes the rest and records it `aborted`.
    pub(super) async fn wind_down(
        &self,
        run: &RunCtx,
        done: Done<'_>,
        lease: &mut Option<LeaseKeeper>,
        fenced: bool,
    ) -> Ending {
        let Done {
            completed,
            outputs,
            failure,
        } = done;
        let run_id = &run.run_id;
        let mut handed_over: Option<&'static str> = None;
        match self.hold_lease(lease, run_id).await {
            Ok(retaken) if fenced && retaken => {
                tracing::warn!(parent: &run.span, trace_id = %run.trace_id, "run lease taken back: undoing the run here");
                *failure = Some(LEASE_UNRENEWED.to_string());
                run.log
                    .append(JournalEntry::run_failed(LEASE_UNRENEWED))
                    .await;
            }
            Ok(_) => {}
            Err(why) => handed_over = Some(why),
        }

        let mut undo = Vec::new();
        let mut released_claims = Vec::new();
        if failure.is_some() && handed_over.is_none() {
            for done in completed.iter().rev() {
                let Some((step, _)) = run.wf.step_of_call(&done.call) else {
                    continue;
                };
                if !self.executor.is_reversible(&step.name) {
                    continue;
                }
                if let Err(why) = self.hold_lease(lease, run_id).await {
                    handed_over = Some(why);
                    break;
                }
                // A step's output is the run's; an element's is its own.
                let output = done.output.clone().unwrap_or_else(|| {
                    outputs
                        .get(&done.call)
                        .map(Value::to_string)
                        .unwrap_or_default()
                });
                let report = undo_step(
                    self.executor.as_ref(),
                    step,
                    AttemptContext {
                        step: done.call.clone(),
                        ..run.base.clone()
                    },
                    done.input.clone(),
                    output,
                    &run.log,
                )
                .instrument(run.span.clone())
                .await;
                undo.push(report);
            }
            if handed_over.is_none() {
                match self.hold_lease(lease, run_id).await {
                    Ok(_) => released_claims = self.release_claims(run_id, &run.log).await,
                    Err(why) => handed_over = Some(why),
                }
            }
        }
        if handed_over.is_none()
            && let Err(why) = self.hold_lease(lease, run_id).await
        {
            handed_over = Some(why);
        }
        Ending {
            undo,
            released_claims,
            handed_over,
        }
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
            // An undo call takes no place among the attempts in flight.
            queued_ms: 0.0,
            outcome: result
                .as_ref()
                .map_or_else(|f| f.kind(), |_| "undone")
                .to_string(),
            error: result.as_ref().err().map(ToString::to_string),
            parent_span_id: None,
        });
        match result {
            Ok(()) => {
                error = None;
                tracing::info!(step = %base.step, trace_id = %base.trace.trace_id, span_id = %span_id, "step undone");
                break;
            }
            Err(f) => {
                tracing::warn!(step = %base.step, trace_id = %base.trace.trace_id, span_id = %span_id, attempt, "undo failed: {f}");
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
        step: base.step.clone(),
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
        step: base.step.clone(),
        at_ms: 0.0,
        measurements: BTreeMap::new(),
        metadata: BTreeMap::new(),
    });
    UndoReport {
        step: base.step.clone(),
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

/// Journals into `journal` under `fence` (for recovery, outside a `Scheduler`).
pub struct JournalUndoLog {
    pub journal: Arc<dyn RunJournal>,
    pub fence: RunFence,
}

impl UndoLog for JournalUndoLog {
    async fn undo_entry(&self, entry: JournalEntry) {
        if let Err(e) = self.journal.append(&self.fence, entry).await {
            tracing::error!(run_id = %self.fence.run_id, "journal write failed: {e}");
        }
    }
}
