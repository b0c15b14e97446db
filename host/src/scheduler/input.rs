//! A step's input: the object its arguments build from the run's inputs,
//! other steps' outputs, constants and wait tokens. Shared by the DAG, map
//! steps and wait steps.
//!
//! Must not know wasmtime.

use super::RunCtx;
use crate::workflow::{ArgSource, StepSpec};
use serde_json::Value;
use std::collections::HashMap;

/// Builds a step's input object from its argument sources.
pub(super) fn build_input(
    step: &StepSpec,
    run: &RunCtx,
    outputs: &HashMap<String, Value>,
) -> Result<Value, String> {
    let mut obj = serde_json::Map::new();
    for (name, source) in &step.args {
        if let ArgSource::Element { .. } = source {
            // Filled in for each element (`map`).
            continue;
        }
        let value = source_value(source, &format!("argument `{name}`"), run, outputs)?;
        obj.insert(name.clone(), value);
    }
    Ok(Value::Object(obj))
}

/// The value `source` names (`what` names it in errors): an input, a
/// constant, or a step's output (`null` for an optional one of a step
/// that was skipped).
pub(super) fn source_value(
    source: &ArgSource,
    what: &str,
    run: &RunCtx,
    outputs: &HashMap<String, Value>,
) -> Result<Value, String> {
    Ok(match source {
        ArgSource::Input(input) => run.inputs.get(input).cloned().unwrap_or(Value::Null),
        ArgSource::WaitToken { step } => Value::String(run.wait_token(step)),
        ArgSource::Value(v) => v.clone(),
        ArgSource::Element { .. } => {
            return Err(format!("{what}: `element` only applies to a map step"));
        }
        ArgSource::Step {
            step: dep,
            pointer,
            optional,
        } => {
            let Some(output) = outputs.get(dep) else {
                if *optional {
                    return Ok(Value::Null);
                }
                return Err(format!("{what}: step `{dep}` has no output"));
            };
            match pointer {
                None => output.clone(),
                Some(p) => output.pointer(p).cloned().ok_or_else(|| {
                    format!("{what}: pointer `{p}` matches nothing in the output of step `{dep}`")
                })?,
            }
        }
    })
}
