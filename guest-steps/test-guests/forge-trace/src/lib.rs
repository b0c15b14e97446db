//! Test guest `forge_trace`: tries every braid import under a trace context
//! that is not its own (another trace id, then another span id) and reports
//! what the host answered. The host must refuse each call.
//!
//! Output: `{ "claim_forged_trace": "...", "claim_forged_span": "...", "log_forged": "...", "event_forged": "...", "key_forged": "..." }`
//! where each value is `refused: <reason>` or `accepted`; and `own_key`, the
//! idempotency key the host gives the step under its own context.

use braid_step::bindings::braid::workflow::{invocation, telemetry};
use braid_step::{ClaimError, Level, StepError, TraceContext, coordination};
use serde_json::json;

struct ForgeTrace;

fn other_trace(ctx: &TraceContext) -> TraceContext {
    let mut forged = ctx.clone();
    forged.trace_id = if ctx.trace_id.starts_with('a') {
        "b"
    } else {
        "a"
    }
    .repeat(32);
    forged
}

fn other_span(ctx: &TraceContext) -> TraceContext {
    let mut forged = ctx.clone();
    forged.span_id = if ctx.span_id.starts_with('c') {
        "d"
    } else {
        "c"
    }
    .repeat(16);
    forged
}

fn describe_claim(result: Result<braid_step::WorkClaim, ClaimError>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(ClaimError::InvalidContext(reason)) => format!("refused: {reason}"),
        Err(other) => format!("other error: {other:?}"),
    }
}

fn describe_telemetry(result: Result<(), telemetry::TelemetryError>) -> String {
    match result {
        Ok(()) => "accepted".into(),
        Err(telemetry::TelemetryError::InvalidContext(reason)) => format!("refused: {reason}"),
        Err(other) => format!("other error: {other:?}"),
    }
}

impl braid_step::Step for ForgeTrace {
    fn run(ctx: TraceContext, _input: String) -> Result<String, StepError> {
        let forged_trace = other_trace(&ctx);
        let forged_span = other_span(&ctx);
        let report = json!({
            "claim_forged_trace": describe_claim(coordination::claim(&forged_trace, "forged-item", 1000, "{}")),
            "claim_forged_span": describe_claim(coordination::claim(&forged_span, "forged-item", 1000, "{}")),
            "log_forged": describe_telemetry(telemetry::log(&forged_trace, Level::Info, "forged")),
            "event_forged": describe_telemetry(telemetry::event(&forged_span, "forged", &[], &[])),
            "own_log": describe_telemetry(telemetry::log(&ctx, Level::Info, "my own context")),
            "key_forged": match invocation::idempotency_key(&forged_span) {
                Ok(key) => format!("accepted: {key}"),
                Err(reason) => format!("refused: {reason}"),
            },
            "own_key": invocation::idempotency_key(&ctx).unwrap_or_else(|e| format!("refused: {e}")),
        });
        Ok(report.to_string())
    }
}

braid_step::export!(ForgeTrace with_types_in braid_step::bindings);
