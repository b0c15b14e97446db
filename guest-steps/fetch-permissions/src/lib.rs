//! Step `fetch_permissions`: reads the user's roles and grants at
//! `GET {api_base}/users/{user_id}/permissions` with the bearer token.
//!
//! Input: `{ "api_base", "user_id", "token" }`.
//! Output: `{ "roles": [...], "grants": [{ "resource", "actions" }], "api_ms" }`.
//!
//! Graceful degradation: when the permissions service stays unavailable
//! (a retryable error after every retry), `compensate` continues with a safe
//! default, read-only access (`"degraded": true`); the run completes degraded.
//! A fatal error (e.g. 401) is not papered over. `undo` has nothing to revert.

use braid_step::{StepError, TraceContext, str_field};
use braid_step_reversible::Compensation;
use serde_json::json;

struct FetchPermissions;

impl braid_step_reversible::Step for FetchPermissions {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let api_base = str_field(&input, "api_base")?;
        let user_id = str_field(&input, "user_id")?;
        let url = format!("{api_base}/users/{user_id}/permissions");
        let (mut permissions, api_ms) = braid_step::get_json_with_token(
            "permissions fetch",
            &url,
            str_field(&input, "token")?,
        )?;
        let grants = permissions
            .get("grants")
            .and_then(|g| g.as_array())
            .map_or(0, Vec::len);
        if let Some(obj) = permissions.as_object_mut() {
            obj.insert("api_ms".into(), api_ms.into());
        }
        braid_step::event(
            &ctx,
            "api.permissions.fetched",
            &[("api_ms", api_ms), ("grants", grants as f64)],
            &[("user_id", user_id)],
        );
        Ok(permissions.to_string())
    }
}

impl braid_step_reversible::Reversible for FetchPermissions {
    fn compensate(ctx: TraceContext, _input: String, error: StepError) -> Compensation {
        match error {
            StepError::Retryable(reason) => {
                braid_step::event(
                    &ctx,
                    "api.permissions.degraded",
                    &[],
                    &[("reason", &reason)],
                );
                Compensation::ContinueWith(
                    json!({
                        "roles": ["read-only"],
                        "grants": [{ "resource": "*", "actions": ["read"] }],
                        "degraded": true,
                        "reason": reason,
                    })
                    .to_string(),
                )
            }
            StepError::Fatal(_) => Compensation::GiveUp,
        }
    }

    fn undo(_ctx: TraceContext, _input: String, _output: String) -> Result<(), StepError> {
        Ok(())
    }
}

braid_step_reversible::export!(FetchPermissions with_types_in braid_step_reversible::bindings);
