//! Step `__NAME__`: greets `name`.
//!
//! Input: `{ "name": "..." }`. Output: `{ "greeting": "hello, ...", "trace_id": "..." }`.
//! A missing `name` is a fatal error (retrying cannot help); return
//! `StepError::Retryable` for failures worth another attempt.

wit_bindgen::generate!({
    path: "wit",
    world: "braid:workflow/step-component",
    generate_all,
});

use braid::workflow::telemetry::{self, Level};
use braid::workflow::types::{StepError, TraceContext};
use serde_json::{Value, json};

struct Component;

impl exports::braid::workflow::step::Guest for Component {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| StepError::Fatal(format!("input is not JSON: {e}")))?;
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::Fatal("input field `name` is missing or not a string".into()))?;
        // Every host call takes the attempt's own trace context, unchanged.
        telemetry::log(&ctx, Level::Info, &format!("greeting {name}"))
            .map_err(|e| StepError::Fatal(format!("log refused: {e:?}")))?;
        telemetry::event(&ctx, "__NAME__.greeted", &[("name_chars".into(), name.chars().count() as f64)], &[])
            .map_err(|e| StepError::Fatal(format!("event refused: {e:?}")))?;
        Ok(json!({ "greeting": format!("hello, {name}"), "trace_id": ctx.trace_id }).to_string())
    }
}

export!(Component);
