//! `braid:workflow/telemetry`: a step's logs and events, tagged with its
//! trace id, span id, run id and step name, into `tracing` and the run report.

use super::Caller;
use crate::bindings::step::braid::workflow::telemetry::{Host, Level, TelemetryError};
use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::report::EventRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest log message or event name/value a step may send.
const MAX_TEXT: usize = 8 * 1024;
/// Most measurements or metadata entries in one event.
const MAX_ENTRIES: usize = 64;

/// Per-attempt state of the telemetry interface.
pub struct TelemetryCtx {
    pub caller: Arc<Caller>,
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl TelemetryCtx {
    /// Writes a guest's log line (also used for its stdout and stderr) to
    /// the host's log and the run report, each within the attempt's budget.
    pub fn guest_log(&self, level: &str, source: &str, message: &str) {
        let c = &self.caller;
        if c.budget.host_line() {
            Self::trace_line(c, level, source, message);
        }
        c.record(c.event("log", source, level, message));
    }

    fn trace_line(c: &Caller, level: &str, source: &str, message: &str) {
        let (trace_id, span_id) = (c.trace.trace_id, c.trace.span_id);
        match level {
            "error" => {
                tracing::error!(target: "braid::guest", %trace_id, %span_id, run_id = %c.run_id, step = %c.step, source, "{message}")
            }
            "warn" => {
                tracing::warn!(target: "braid::guest", %trace_id, %span_id, run_id = %c.run_id, step = %c.step, source, "{message}")
            }
            "info" => {
                tracing::info!(target: "braid::guest", %trace_id, %span_id, run_id = %c.run_id, step = %c.step, source, "{message}")
            }
            _ => {
                tracing::debug!(target: "braid::guest", %trace_id, %span_id, run_id = %c.run_id, step = %c.step, source, "{message}")
            }
        }
    }
}

/// `types` declares no functions; the generated trait only needs an impl.
impl crate::bindings::step::braid::workflow::types::Host for TelemetryCtx {}

impl Host for TelemetryCtx {
    async fn log(
        &mut self,
        ctx: TraceContext,
        level: Level,
        message: String,
    ) -> wasmtime::Result<Result<(), TelemetryError>> {
        self.caller.within_refusals()?;
        if let Err(why) = self.caller.verify("telemetry.log", &ctx) {
            return Ok(Err(TelemetryError::InvalidContext(why)));
        }
        if message.len() > MAX_TEXT {
            let why = format!("message longer than {MAX_TEXT} bytes");
            self.caller.budget.refused(&format!("telemetry.log: {why}"));
            return Ok(Err(TelemetryError::InvalidArgument(why)));
        }
        self.guest_log(level_name(level), "log", &message);
        Ok(Ok(()))
    }

    async fn event(
        &mut self,
        ctx: TraceContext,
        name: String,
        measurements: Vec<(String, f64)>,
        metadata: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), TelemetryError>> {
        self.caller.within_refusals()?;
        if let Err(why) = self.caller.verify("telemetry.event", &ctx) {
            return Ok(Err(TelemetryError::InvalidContext(why)));
        }
        let too_long = |s: &String| s.len() > MAX_TEXT;
        if name.is_empty()
            || too_long(&name)
            || measurements.len() > MAX_ENTRIES
            || metadata.len() > MAX_ENTRIES
            || metadata.iter().any(|(k, v)| too_long(k) || too_long(v))
            || measurements.iter().any(|(k, _)| too_long(k))
        {
            let why = format!(
                "an event needs a name; names and values are at most {MAX_TEXT} bytes, at most {MAX_ENTRIES} entries each"
            );
            self.caller
                .budget
                .refused(&format!("telemetry.event: {why}"));
            return Ok(Err(TelemetryError::InvalidArgument(why)));
        }
        let c = &self.caller;
        let measurements: BTreeMap<String, f64> = measurements.into_iter().collect();
        let metadata: BTreeMap<String, String> = metadata.into_iter().collect();
        if c.budget.host_line() {
            tracing::info!(
                target: "braid::event",
                trace_id = %c.trace.trace_id,
                span_id = %c.trace.span_id,
                run_id = %c.run_id,
                step = %c.step,
                event = %name,
                measurements = ?measurements,
                metadata = ?metadata,
                "guest event"
            );
        }
        c.record(EventRecord {
            measurements,
            metadata,
            ..c.event("event", &name, "info", "")
        });
        Ok(Ok(()))
    }
}
