//! `braid-policy`: what a Rust policy needs. A policy implements [`Policy`]
//! and exports it with [`export!`]; it may log through [`log`] and nothing
//! else: no network, no claims.
//!
//! ```ignore
//! struct AllowAll;
//! impl braid_policy::Policy for AllowAll {
//!     fn evaluate(ctx: braid_policy::TraceContext, input: String) -> Result<braid_policy::Decision, String> {
//!         Ok(braid_policy::allow(vec!["everything is allowed".into()], vec![]))
//!     }
//! }
//! braid_policy::export!(AllowAll with_types_in braid_policy::bindings);
//! ```

extern crate self as braid_policy;
pub use wit_bindgen;

pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "braid:workflow/policy-component",
        generate_all,
        pub_export_macro: true,
        runtime_path: "braid_policy::wit_bindgen::rt",
        default_bindings_module: "braid_policy::bindings",
    });
}

pub use bindings::braid::workflow::telemetry::Level;
pub use bindings::braid::workflow::types::TraceContext;
pub use bindings::export;
pub use bindings::exports::braid::workflow::policy::{Decision, Guest as Policy};

/// Writes a log line through the host (best effort).
pub fn log(ctx: &TraceContext, level: Level, message: &str) {
    let _ = bindings::braid::workflow::telemetry::log(ctx, level, message);
}

pub fn allow(reasons: Vec<String>, obligations: Vec<(String, String)>) -> Decision {
    Decision {
        allow: true,
        reasons,
        obligations,
    }
}

pub fn deny(reasons: Vec<String>) -> Decision {
    Decision {
        allow: false,
        reasons,
        obligations: Vec::new(),
    }
}

/// Parses the policy input, which must be a JSON object.
pub fn parse_input(input: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(input) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err("input must be a JSON object".into()),
        Err(e) => Err(format!("input is not JSON: {e}")),
    }
}

/// Whether resource pattern `pattern` (`*`, `exact`, or `prefix/*`) covers `resource`.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*"
        || pattern == resource
        || pattern.strip_suffix("/*").is_some_and(|prefix| {
            resource
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
        })
}
