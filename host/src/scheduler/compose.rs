//! Compose steps in a run: a composed workflow's steps are steps of the
//! run (`STEP/SUB_STEP`, see `workflow::compose`), so the DAG runs,
//! journals, undoes and resumes them like any other. This room holds what
//! is particular to the two nodes that stand for the compose step, which
//! run nothing and journal nothing (a resumed run settles them again from
//! the journaled steps): `STEP/` opens the sub-workflow, `STEP` takes its
//! result; and the compose step's span, every sub-step's parent.
//!
//! Must not know wasmtime or how an attempt runs.

use super::{RunCtx, RunState};
use crate::trace::SpanId;
use crate::workflow::{StepKind, StepSpec};
use serde_json::Value;
use sha2::Digest;
use std::time::Instant;

/// The span of compose step `compose` in the run whose span is `run_span`:
/// derived from both, so a resumed run (on any host) puts the rest of the
/// sub-workflow under the same span.
pub(super) fn compose_span(run_span: SpanId, compose: &str) -> SpanId {
    let digest = sha2::Sha256::new()
        .chain_update(run_span.to_bytes())
        .chain_update(compose.as_bytes())
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    SpanId::parse(&hex::encode(bytes)).unwrap_or(run_span)
}

/// The span a step's attempts are children of: its innermost compose
/// step's, or the run's.
pub(super) fn parent_span(run: &RunCtx, step: &str) -> SpanId {
    match step.rsplit_once('/') {
        Some((compose, _)) => compose_span(run.run_span, compose),
        None => run.run_span,
    }
}

impl RunState {
    /// Settles a node that runs nothing (`STEP/` or `STEP`); `false` for
    /// a step that runs.
    pub(super) fn settle_node(&mut self, run: &RunCtx, step: &StepSpec) -> bool {
        match &step.kind {
            StepKind::Call | StepKind::Sleep(_) | StepKind::Signal(_) => false,
            StepKind::SubflowStart => {
                let compose = step.name.trim_end_matches('/');
                run.base.recorder.step_started(compose, Instant::now());
                self.outputs.insert(step.name.clone(), Value::Null);
                true
            }
            StepKind::Compose { of, .. } => {
                let result = self.outputs.get(of).cloned().unwrap_or_default();
                run.base.recorder.step_finished(&step.name, Instant::now());
                self.order.push(step.name.clone());
                self.outputs.insert(step.name.clone(), result);
                self.outcomes.insert(step.name.clone(), "succeeded".into());
                true
            }
        }
    }

    /// Why a compose step is skipped when its sub-workflow never opened:
    /// the reason its start (`STEP/`) was skipped.
    pub(super) fn compose_skipped(&self, step: &StepSpec) -> Option<String> {
        match step.kind {
            StepKind::Compose { .. } => self.skipped.get(&format!("{}/", step.name)).cloned(),
            _ => None,
        }
    }
}
