//! Resuming a run whose host died (`on_crash = "resume"`): the run's state
//! is rebuilt from its journal, and the run goes on as its first host would
//! have taken it on. Completed steps are not run again (their journaled
//! outputs are used); steps that were in flight run again, under the run's
//! trace and span and with the same idempotency keys; a run that had
//! already failed is only wound down (its completed steps undone).
//!
//! Must not know wasmtime or where the components come from: the caller
//! (recovery) hands over an executor with the versions the run started with.

use super::{Completed, RunState};
use super::{Scheduler, StepExecutor};
use crate::journal::{AbandonedRun, JournalEntry};
use crate::report::{ComponentChange, Resumed, RunReport};
use crate::trace::{IncomingTrace, SpanId, TraceFlags, TraceId, TraceParent, TraceState};
use crate::workflow::Workflow;
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why a run cannot be resumed (recovery then undoes and aborts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("its journal has no trace context to go on under: {0}")]
    Trace(String),
    #[error("its journaled input is not a JSON object")]
    Input,
    #[error("the journaled output of step `{0}` is not JSON: {1}")]
    Output(String, String),
}

impl<E: StepExecutor> Scheduler<E> {
    /// Carries on `run`, which this host has taken over (it holds the run's
    /// lease, from `take_over_abandoned`), with `wf` as the run started it
    /// (its journaled definition) and an executor holding the component
    /// versions the run started with. Ends like any run: one terminal
    /// record, with the report when reports are kept.
    pub async fn resume(
        &self,
        wf: Arc<Workflow>,
        run: &AbandonedRun,
        cancel: &CancellationToken,
    ) -> Result<RunReport, ResumeError> {
        let start = &run.start;
        let bad_trace = |e: &dyn std::fmt::Display| ResumeError::Trace(e.to_string());
        let trace_id = TraceId::parse(&start.trace_id).map_err(|e| bad_trace(&e))?;
        let run_span = SpanId::parse(&start.span_id).map_err(|e| bad_trace(&e))?;
        let caller_span = match &start.parent_span_id {
            Some(p) => Some(SpanId::parse(p).map_err(|e| bad_trace(&e))?),
            None => None,
        };
        let incoming = IncomingTrace {
            parent: TraceParent {
                trace_id,
                parent_id: caller_span.unwrap_or(run_span),
                flags: TraceFlags::from_bits(start.trace_flags),
            },
            state: TraceState::parse(&start.tracestate).unwrap_or_default(),
            continued: caller_span.is_some(),
            rejected: None,
        };
        let Value::Object(inputs) = start.input.clone() else {
            return Err(ResumeError::Input);
        };
        let mut state = state_from_journal(&wf, run)?;
        let component_changes = start
            .components
            .iter()
            .filter_map(|(step, _, from)| {
                let (_, to) = self.executor.component_of(step);
                (!to.is_empty() && to != *from).then(|| ComponentChange {
                    step: step.clone(),
                    from_sha256: from.clone(),
                    to_sha256: to,
                })
            })
            .collect();
        let resumed = Resumed {
            previous_owner: run.previous_owner.clone(),
            owner: self.owner.clone(),
            reused_steps: (state.order.iter())
                .filter(|s| !state.waiting.contains(*s))
                .cloned()
                .collect(),
            failed_before: state.failure.clone(),
            unsuspended: None,
            component_changes,
        };
        let mut ctx = self.run_ctx(
            wf,
            start.run_id.clone(),
            run_span,
            inputs,
            incoming,
            Some(resumed),
        );
        if run.woken {
            tracing::info!(parent: &ctx.span, trace_id = %ctx.trace_id, waits = state.waiting.len(),
                "carrying on a run woken from its wait");
        } else {
            tracing::warn!(parent: &ctx.span, trace_id = %ctx.trace_id, previous_owner = %run.previous_owner,
                reused = state.order.len(), failed_before = state.failure.is_some(),
                "resuming a run whose host died");
        }
        // Until this run returns, this host's recovery leaves it alone.
        for wait in &state.waiting {
            ctx.base
                .recorder
                .step_started(wait, std::time::Instant::now());
        }
        let here = self.local.enter(&ctx.run_id);
        ctx.cancel = here.cancel.clone();
        // Woken to be cancelled (or asked while no host held it).
        if let Some(reason) = &run.cancel_reason {
            ctx.cancel.request(reason);
        }
        ctx.log.fence = Some(run.fence.clone());
        // The keys the run's first host made: a step sent again is the same request.
        ctx.base.keys = crate::scheduler::KeySecret::from_hex(&start.idempotency_secret);
        let lease = self.keep_lease_of(run.fence.clone(), ctx.log.taken_over.clone());
        ctx.log
            .append(JournalEntry {
                kind: if run.woken { "woken" } else { "resumed" }.into(),
                outcome: run.previous_owner.clone(),
                ..Default::default()
            })
            .await;
        let unsuspended = self.end_suspension(&ctx, &mut state, run).await;
        if let Some(r) = ctx.resumed.as_mut() {
            r.unsuspended = unsuspended.map(str::to_string);
        }
        Ok(self.drive(ctx, state, lease, cancel).await)
    }
}

/// What the run had done, from its journal: each completed step's output
/// (a compensated step's substitute too), the completions still to undo in
/// their order, and the run's failure if it had failed.
fn state_from_journal(wf: &Workflow, run: &AbandonedRun) -> Result<RunState, ResumeError> {
    let mut state = state_from_entries(wf, &run.entries)?;
    state.failure = run.failure();
    state.failure_journaled = state.failure.is_some();
    state.cancelled = run.cancelled();
    state.aborted = run.aborted();
    Ok(state)
}

/// What a run's journal `entries` say it did: each completed step's
/// output and input, the completions still to undo in their order, the
/// waits started and not ended.
pub(super) fn state_from_entries(
    wf: &Workflow,
    entries: &[JournalEntry],
) -> Result<RunState, ResumeError> {
    let mut state = RunState::default();
    // When each wait step started ends at the latest, as first journaled.
    for e in entries.iter().filter(|e| e.kind == "wait") {
        if let Ok(due) = e.outcome.parse::<u64>() {
            state.wait_due.entry(e.step.clone()).or_insert(due);
        }
    }
    for e in entries {
        if e.kind != "completed" || state.outputs.contains_key(&e.step) {
            continue;
        }
        let Some((_, element)) = wf.step_of_call(&e.step) else {
            continue;
        };
        let text = e.output.as_deref().unwrap_or_default();
        let output: Value = serde_json::from_str(text)
            .map_err(|err| ResumeError::Output(e.step.clone(), err.to_string()))?;
        state.degraded |= e.outcome == "compensated";
        if element.is_some() {
            // Reused when its map starts again (unless the map had ended).
            state.reused_elements.insert(e.step.clone(), output);
            continue;
        }
        state.outputs.insert(e.step.clone(), output);
        if let (Some(c), Some(sha)) = (&e.component, &e.component_sha256) {
            state
                .ran_with
                .insert(e.step.clone(), (c.clone(), sha.clone()));
        }
        // `succeeded` or `compensated`, as the journal says (a map's own
        // completion, `mapped`, is its step's success).
        let outcome = if e.outcome == "mapped" {
            "succeeded"
        } else {
            &e.outcome
        };
        state.outcomes.insert(e.step.clone(), outcome.to_string());
        state.order.push(e.step.clone());
        state
            .inputs_of
            .insert(e.step.clone(), e.input.clone().unwrap_or_default());
    }
    state.reused_elements.retain(|call, _| {
        !call
            .split_once('.')
            .is_some_and(|(s, _)| state.outputs.contains_key(s))
    });
    state.completed = crate::journal::completed_steps(entries)
        .into_iter()
        .filter_map(|c| {
            let (_, element) = wf.step_of_call(&c.step)?;
            Some(Completed {
                output: element.map(|_| c.output),
                call: c.step,
                input: c.input,
            })
        })
        .collect();
    // Waits that had started and not ended go on waiting, from when they
    // were journaled (not started again).
    for e in entries.iter().filter(|e| e.kind == "wait") {
        if !state.outputs.contains_key(&e.step) && state.waiting.insert(e.step.clone()) {
            state.order.push(e.step.clone());
            state
                .inputs_of
                .insert(e.step.clone(), e.input.clone().unwrap_or_default());
        }
    }
    Ok(state)
}
