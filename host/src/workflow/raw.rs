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
    #[serde(default)]
    pub(super) inputs: BTreeMap<String, RawInput>,
    #[serde(default)]
    pub(super) defaults: RawLimits,
    #[serde(default)]
    pub(super) steps: Vec<RawStep>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInput {
    pub(super) description: Option<String>,
    pub(super) default: Option<serde_json::Value>,
}

#[derive(Deserialize, Default, Clone)]
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
    pub(super) component: String,
    #[serde(default)]
    pub(super) args: BTreeMap<String, RawArg>,
    #[serde(default)]
    pub(super) wait_for: Vec<String>,
    #[serde(flatten)]
    pub(super) limits: RawLimits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArg {
    pub(super) input: Option<String>,
    pub(super) step: Option<String>,
    pub(super) pointer: Option<String>,
    pub(super) value: Option<serde_json::Value>,
}
