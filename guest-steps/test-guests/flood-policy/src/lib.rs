//! Test guest `flood_policy`: a policy whose answer is larger or stranger
//! than the host keeps. Input: `{ "reasons_bytes": N }` (allows, with one
//! reason of N bytes), `{ "error_bytes": N }` (cannot decide, with an error
//! of N bytes), `{ "duplicate": true }` (allows with the obligation `mask`
//! twice); otherwise it allows with one short reason. The fields may also
//! sit under `facts`, as a workflow step's argument.

use braid_policy::{Decision, Policy, TraceContext, allow};
use serde_json::Value;

struct FloodPolicy;

impl Policy for FloodPolicy {
    fn evaluate(_: TraceContext, input: String) -> Result<Decision, String> {
        let input = braid_policy::parse_input(&input)?;
        // As a workflow step, the facts come as the step's `facts` argument.
        let input = input.get("facts").cloned().unwrap_or(input);
        let number = |field: &str| input.get(field).and_then(Value::as_u64);
        if let Some(n) = number("error_bytes") {
            return Err("e".repeat(n as usize));
        }
        if let Some(n) = number("reasons_bytes") {
            return Ok(allow(vec!["r".repeat(n as usize)], Vec::new()));
        }
        if input.get("duplicate").and_then(Value::as_bool) == Some(true) {
            let mask = |v: &str| ("mask".to_string(), v.to_string());
            return Ok(allow(vec!["masked".into()], vec![mask("a"), mask("b")]));
        }
        Ok(allow(vec!["fine".into()], Vec::new()))
    }
}

braid_policy::export!(FloodPolicy with_types_in braid_policy::bindings);
