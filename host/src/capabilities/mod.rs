//! Host capabilities: one module per interface a step imports.
//!
//! - [`coordination`]: `braid:workflow/coordination` (claims, over a [`crate::store::ClaimStore`]);
//! - [`telemetry`]: `braid:workflow/telemetry` (logs and events);
//! - [`http`]: the policy behind `wasi:http/outgoing-handler` (allowlist, `traceparent`),
//!   over [`http_client`], the pooled connections every step's requests share.
//!
//! Each module has a context type holding what its calls need and the
//! generated `Host` impl. None knows the scheduler: a call learns who is
//! calling from the [`Caller`] the sandbox built for the attempt. Every braid
//! import first checks that the trace context passed is the caller's own.

pub mod coordination;
pub mod http;
pub mod http_client;
pub mod telemetry;

use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::report::{EventRecord, RunRecorder};
use crate::trace::AttemptTrace;
use std::collections::BTreeMap;

/// The step attempt a store belongs to: whom every host call acts for.
pub struct Caller {
    pub run_id: String,
    pub step: String,
    pub attempt: u32,
    pub trace: AttemptTrace,
    /// The host process, recorded as a claim's owner.
    pub host_id: String,
    pub recorder: RunRecorder,
}

impl Caller {
    /// The context the guest receives, and must hand back on every import.
    pub fn trace_context(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace.trace_id.to_string(),
            span_id: self.trace.span_id.to_string(),
            parent_span_id: self.trace.parent_span_id.to_string(),
            trace_flags: self.trace.flags.bits(),
            trace_state: self.trace.state.to_string(),
        }
    }

    /// Refuses (and logs) a call made under any context but the caller's own.
    pub fn verify(&self, interface: &str, ctx: &TraceContext) -> Result<(), String> {
        let own = self.trace_context();
        let mismatch = if ctx.trace_id != own.trace_id {
            Some(format!("trace id `{}` is not this run's", ctx.trace_id))
        } else if ctx.span_id != own.span_id {
            Some(format!(
                "span id `{}` is not this step attempt's",
                ctx.span_id
            ))
        } else if ctx.parent_span_id != own.parent_span_id {
            Some(format!(
                "parent span id `{}` is not this run's",
                ctx.parent_span_id
            ))
        } else if ctx.trace_flags != own.trace_flags || ctx.trace_state != own.trace_state {
            Some("trace flags or tracestate differ from the ones given to the step".to_string())
        } else {
            None
        };
        let Some(reason) = mismatch else {
            return Ok(());
        };
        let reason = format!("{interface}: trace context refused: {reason}");
        tracing::warn!(
            trace_id = %own.trace_id,
            span_id = %own.span_id,
            run_id = %self.run_id,
            step = %self.step,
            forged_trace_id = %ctx.trace_id,
            "{reason}"
        );
        self.host_event("context.refused", "warn", &reason, BTreeMap::new());
        Err(reason)
    }

    /// Records a host-side event about this attempt in the run report.
    pub fn host_event(
        &self,
        name: &str,
        level: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        self.recorder.event(EventRecord {
            kind: "host".into(),
            name: name.into(),
            level: level.into(),
            message: message.into(),
            trace_id: self.trace.trace_id.to_string(),
            span_id: self.trace.span_id.to_string(),
            step: self.step.clone(),
            at_ms: 0.0,
            measurements: BTreeMap::new(),
            metadata,
        });
    }
}
