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

pub mod budget;
pub mod coordination;
pub mod http;
pub mod http_client;
pub mod invocation;
pub mod telemetry;

use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::report::{EventRecord, RunRecorder};
use crate::trace::AttemptTrace;
use std::collections::BTreeMap;

/// The step attempt a store belongs to: whom every host call acts for.
pub struct Caller {
    pub run_id: String,
    /// The run's workflow (a claim records it; see `coordination`).
    pub workflow: String,
    pub step: String,
    pub attempt: u32,
    pub trace: AttemptTrace,
    /// The host process, recorded as a claim's owner.
    pub host_id: String,
    pub recorder: RunRecorder,
    /// What the host keeps, prints and refuses for this attempt.
    pub budget: budget::AttemptBudget,
    /// This call's idempotency key: the same on every retry and resume of
    /// the step (see `AttemptContext::idempotency_key`).
    pub idempotency_key: String,
    /// The header the key goes in on each outbound request, if the step
    /// opted in (`idempotency_key = true`).
    pub idempotency_header: Option<String>,
    /// Why the first outbound request refused by the allowlist was, if one
    /// was: an attempt that then fails "retryably" is not retried (the
    /// allowlist will refuse it again), see `sandbox::call`.
    pub denied: std::sync::OnceLock<String>,
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
        if self.budget.host_line() {
            tracing::warn!(
                trace_id = %own.trace_id,
                span_id = %own.span_id,
                run_id = %self.run_id,
                step = %self.step,
                forged_trace_id = %crate::report::bounded(ctx.trace_id.clone(), 64),
                "{reason}"
            );
        }
        self.host_event("context.refused", "warn", &reason, BTreeMap::new());
        self.budget.refused(&reason);
        Err(reason)
    }

    /// Ends the attempt (as a trap the sandbox maps to the `refusals` limit)
    /// once it has refused more calls than its budget allows. Braid imports
    /// check this first; calls the sandbox does not see (wasi:http) are
    /// caught at the next epoch tick.
    pub fn within_refusals(&self) -> wasmtime::Result<()> {
        match self.budget.exceeded() {
            Some(refused) => Err(refused.into()),
            None => Ok(()),
        }
    }

    /// Writes a line about this attempt to the host's log at `level`, within
    /// the attempt's budget of host log lines.
    pub fn log_line(&self, level: &str, message: &str) {
        if !self.budget.host_line() {
            return;
        }
        let (trace_id, span_id) = (self.trace.trace_id, self.trace.span_id);
        let (run_id, step) = (&self.run_id, &self.step);
        match level {
            "error" => tracing::error!(%trace_id, %span_id, %run_id, %step, "{message}"),
            "warn" => tracing::warn!(%trace_id, %span_id, %run_id, %step, "{message}"),
            "info" => tracing::info!(%trace_id, %span_id, %run_id, %step, "{message}"),
            _ => tracing::debug!(%trace_id, %span_id, %run_id, %step, "{message}"),
        }
    }

    /// An event of this attempt (its trace id, span id and step), to fill in.
    pub fn event(&self, kind: &str, name: &str, level: &str, message: &str) -> EventRecord {
        EventRecord {
            kind: kind.into(),
            name: name.into(),
            level: level.into(),
            message: message.into(),
            trace_id: self.trace.trace_id.to_string(),
            span_id: self.trace.span_id.to_string(),
            step: self.step.clone(),
            at_ms: 0.0,
            measurements: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Records a host-side event about this attempt in the run report,
    /// within the attempt's record budget.
    pub fn host_event(
        &self,
        name: &str,
        level: &str,
        message: &str,
        metadata: BTreeMap<String, String>,
    ) {
        self.record(EventRecord {
            metadata,
            ..self.event("host", name, level, message)
        });
    }

    /// A call refused for `reason`: a line in the host's log, an `event`
    /// in the report (both within the attempt's budget), and one refusal
    /// counted against `max_refusals`.
    pub fn refuse(&self, event: &str, reason: &str, metadata: BTreeMap<String, String>) {
        self.log_line("warn", reason);
        self.budget.refused(reason);
        self.host_event(event, "warn", reason, metadata);
    }

    /// Records an effect of this attempt on the world (a claim granted,
    /// refused by a holder, or released) in the run report, past the
    /// attempt's record budget: metrics, the step tree and the OTLP export
    /// count on them, and `max_claims` bounds them.
    pub fn effect_event(&self, name: &str, metadata: BTreeMap<String, String>) {
        self.recorder.event(EventRecord {
            metadata,
            ..self.event("host", name, "info", "")
        });
    }

    /// Keeps `event` in the run report if the attempt's budget allows.
    pub fn record(&self, event: EventRecord) {
        if self.budget.keep_record(event.size()) {
            self.recorder.event(event);
        }
    }

    /// At the attempt's end: one event (and one log line) saying what its
    /// budget dropped or suppressed, and the counts into the run's report.
    pub fn report_dropped(&self) {
        let dropped = self.budget.dropped();
        if dropped.is_empty() {
            return;
        }
        let limits = self.budget.limits();
        let message = format!(
            "over the attempt's budget: {} records ({} bytes) not kept (max_log_records {}, max_log_bytes {}), {} lines not written to the host log (at most {} per attempt)",
            dropped.telemetry_records,
            dropped.telemetry_bytes,
            limits.log_records,
            limits.log_bytes,
            dropped.host_log_lines,
            limits.host_log_lines
        );
        tracing::warn!(trace_id = %self.trace.trace_id, span_id = %self.trace.span_id,
            run_id = %self.run_id, step = %self.step, "{message}");
        let measurements = [
            ("records", dropped.telemetry_records),
            ("bytes", dropped.telemetry_bytes),
            ("host_log_lines", dropped.host_log_lines),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v as f64))
        .collect();
        // Past the attempt's budget by design: it is the one record saying so.
        self.recorder.event(EventRecord {
            measurements,
            ..self.event("host", "telemetry.dropped", "warn", &message)
        });
        self.recorder.dropped(dropped);
    }
}
