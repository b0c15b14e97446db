//! Policy `__NAME__`: allows `read`, denies everything else.
//!
//! Input: a JSON object of facts, here `{ "action": "...", "resource": "..." }`.
//! An `Err` means the policy could not decide (malformed input); the host
//! treats it as a deny.

wit_bindgen::generate!({
    path: "wit",
    world: "braid:workflow/policy-component",
    generate_all,
});

use braid::workflow::telemetry::{self, Level};
use braid::workflow::types::TraceContext;
use exports::braid::workflow::policy::Decision;
use serde_json::Value;

struct Component;

impl exports::braid::workflow::policy::Guest for Component {
    fn evaluate(ctx: TraceContext, input: String) -> Result<Decision, String> {
        let facts: Value =
            serde_json::from_str(&input).map_err(|e| format!("input is not JSON: {e}"))?;
        let text = |field: &str| facts.get(field).and_then(Value::as_str).unwrap_or("");
        let (action, resource) = (text("action"), text("resource"));
        if action.is_empty() {
            return Err("input needs `action`".into());
        }
        let allow = action == "read";
        // Telemetry is best effort here: a policy decides even if logging fails.
        let _ = telemetry::log(&ctx, Level::Debug, &format!("{action} {resource}: allow={allow}"));
        Ok(Decision {
            allow,
            reasons: vec![if allow {
                format!("`read` is allowed on `{resource}`")
            } else {
                format!("only `read` is allowed, not `{action}`")
            }],
            obligations: Vec::new(),
        })
    }
}

export!(Component);
