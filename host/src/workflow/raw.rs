//! The definition file's format as serde reads it: every field optional
//! where the TOML may leave it out, unknown fields refused. [`super::validate`]
//! turns it into a [`super::Workflow`].
//!
//! Must not hold rules (those are `validate`'s) or do IO.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) name: String,
    pub(super) description: Option<String>,
    /// Directory of `<component>.wasm` files, relative to the definition file.
    pub(super) components_dir: Option<String>,
    pub(super) result: String,
    /// `resume` (the default) or `undo`.
    pub(super) on_crash: Option<String>,
    /// `undo` (the default) or `suspend`: what a step that failed for good
    /// does to the run (a step's own `on_failure` wins).
    pub(super) on_failure: Option<String>,
    /// How long a suspended run waits for an operator (`24h` by default).
    pub(super) suspend_for: Option<String>,
    #[serde(default)]
    pub(super) inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    pub(super) defaults: RawLimits,
    #[serde(default)]
    pub(super) steps: Vec<RawStep>,
    /// The workflows this one composes, name -> definition text, as a run
    /// pinned them (written by braid into the journaled definition).
    #[serde(default)]
    pub(super) compose_pinned: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInput {
    pub(super) description: Option<String>,
    pub(super) default: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) timeout_ms: Option<u64>,
    pub(super) max_retries: Option<u32>,
    pub(super) allowed_hosts: Option<Vec<String>>,
    pub(super) memory_limit_mb: Option<u64>,
    pub(super) max_output_bytes: Option<u64>,
    pub(super) max_requests: Option<u32>,
    pub(super) max_claims: Option<u32>,
    pub(super) max_response_bytes: Option<u64>,
    pub(super) fuel: Option<u64>,
    pub(super) max_log_records: Option<u32>,
    pub(super) max_log_bytes: Option<u64>,
    pub(super) max_refusals: Option<u32>,
    pub(super) idempotency_key: Option<bool>,
    pub(super) idempotency_header: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: String,
    pub(super) component: Option<String>,
    /// Another workflow, by name, run as this step.
    pub(super) compose: Option<String>,
    #[serde(default)]
    pub(super) args: BTreeMap<String, RawArg>,
    #[serde(default)]
    pub(super) wait_for: Vec<String>,
    /// Runs the step only when this holds (see `condition`).
    pub(super) when: Option<RawCondition>,
    /// Runs the step once per element of a list (see `map`).
    pub(super) map: Option<RawMap>,
    /// A policy step's deny: `fail` the step (the default) or `continue`
    /// with `{"allowed": false, ...}` as its output.
    pub(super) on_deny: Option<String>,
    /// `undo` or `suspend`: overrides the workflow's `on_failure`.
    pub(super) on_failure: Option<String>,
    /// Waits for a time instead of running a component (see `wait`).
    pub(super) sleep: Option<RawSleep>,
    /// Waits for a signal instead of running a component (see `wait`).
    pub(super) signal: Option<RawSignal>,
    #[serde(flatten)]
    pub(super) limits: RawLimits,
}

/// `when = { ... }`: a source and one test, or `not`/`all`/`any`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCondition {
    pub(super) input: Option<String>,
    pub(super) step: Option<String>,
    pub(super) pointer: Option<String>,
    pub(super) exists: Option<bool>,
    pub(super) equals: Option<serde_json::Value>,
    pub(super) one_of: Option<Vec<serde_json::Value>>,
    pub(super) greater_than: Option<f64>,
    pub(super) less_than: Option<f64>,
    pub(super) not: Option<Box<RawCondition>>,
    pub(super) all: Option<Vec<RawCondition>>,
    pub(super) any: Option<Vec<RawCondition>>,
}

impl RawCondition {
    pub(super) fn has_test(&self) -> bool {
        self.exists.is_some()
            || self.equals.is_some()
            || self.one_of.is_some()
            || self.greater_than.is_some()
            || self.less_than.is_some()
    }
}

/// `[steps.map]`: the list, the argument each element goes in, and how
/// many run at once and may fail.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMap {
    pub(super) over: RawArg,
    #[serde(rename = "as")]
    pub(super) element: Option<String>,
    pub(super) max_parallel: Option<u32>,
    pub(super) max_elements: Option<u32>,
    pub(super) tolerated_failure_count: Option<u32>,
    pub(super) tolerated_failure_percent: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArg {
    pub(super) input: Option<String>,
    pub(super) step: Option<String>,
    pub(super) pointer: Option<String>,
    pub(super) value: Option<serde_json::Value>,
    /// In a map step: the element, narrowed by this JSON pointer (`""`:
    /// all of it).
    pub(super) element: Option<String>,
    /// A `step` argument that is `null` when the step was skipped (instead
    /// of skipping this step too).
    pub(super) optional: Option<bool>,
    /// The token that may send the signal signal step `wait_token` waits for.
    pub(super) wait_token: Option<String>,
}

/// `[steps.sleep]`: `for = "10m"`, or `until` a time an argument gives.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSleep {
    #[serde(rename = "for")]
    pub(super) duration: Option<String>,
    pub(super) until: Option<RawArg>,
}

/// `[steps.signal]`: the signal's name, how long to wait, and what then.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignal {
    pub(super) name: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) on_timeout: Option<String>,
    pub(super) default: Option<serde_json::Value>,
}
