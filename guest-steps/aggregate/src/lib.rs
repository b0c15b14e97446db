//! Step `aggregate`: compiles the workflow's final result from the other
//! steps' outputs.
//!
//! Input: `{ "auth", "profile", "permissions", "decision", "claim" }` (each a
//! step's output; `decision` is the access policy's) and `resource`, `action`. Output: the trace id, the claim, a profile summary, the
//! access decision and the API timings each step measured.

use braid_step::{StepError, TraceContext};
use serde_json::{Value, json};

struct Aggregate;

impl braid_step::Step for Aggregate {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let field = |name: &str| input.get(name).cloned().unwrap_or(Value::Null);
        let (profile, decision, claim) = (field("profile"), field("decision"), field("claim"));
        let timing = |name: &str| {
            input
                .pointer(&format!("/{name}/api_ms"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let result = json!({
            "trace_id": ctx.trace_id,
            "user": {
                "id": profile.get("id"),
                "name": profile.get("name"),
                "email": profile.get("email"),
                "department": profile.get("department"),
            },
            "roles": input.pointer("/permissions/roles"),
            "decision": {
                "allowed": decision.get("allowed"),
                "resource": input.get("resource"),
                "action": input.get("action"),
                "reasons": decision.get("reasons"),
                "obligations": decision.get("obligations"),
            },
            "claim": {
                "claim_id": claim.get("claim_id"),
                "work_item": claim.get("work_item"),
                "trace_id": claim.get("trace_id"),
                "expires_at_ms": claim.get("expires_at_ms"),
            },
            "api_ms": {
                "authenticate": timing("auth"),
                "fetch_profile": timing("profile"),
                "fetch_permissions": timing("permissions"),
            },
        });
        braid_step::event(&ctx, "workflow.aggregated", &[], &[]);
        Ok(result.to_string())
    }
}

braid_step::export!(Aggregate with_types_in braid_step::bindings);
