//! Step `validate_access`: decides from the profile and the permissions whether
//! the user may perform `action` on `resource`.
//!
//! Input: `{ "profile": {...}, "permissions": {...}, "resource": "reports/q3", "action": "read" }`.
//! Output: `{ "allowed": true, "resource", "action", "matched_grant", "reason" }`.
//!
//! Rules: the profile must be `active`; a grant matches when its `resource` is
//! the resource itself, `*`, or a `prefix/*` covering it, and its `actions`
//! contain the action or `*`. No matching grant is a fatal `access denied`
//! (a business error: retrying cannot change the answer).

use braid_step::{StepError, TraceContext, str_field};
use serde_json::{Value, json};

struct ValidateAccess;

fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*"
        || pattern == resource
        || pattern
            .strip_suffix("/*")
            .is_some_and(|prefix| resource.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/')))
}

fn find_grant<'a>(permissions: &'a Value, resource: &str, action: &str) -> Option<&'a Value> {
    permissions.get("grants")?.as_array()?.iter().find(|grant| {
        let pattern = grant.get("resource").and_then(Value::as_str).unwrap_or("");
        let allows_action = grant
            .get("actions")
            .and_then(Value::as_array)
            .is_some_and(|actions| actions.iter().any(|a| a == action || a == "*"));
        resource_matches(pattern, resource) && allows_action
    })
}

impl braid_step::Step for ValidateAccess {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let resource = str_field(&input, "resource")?;
        let action = str_field(&input, "action")?;
        let profile = input.get("profile").cloned().unwrap_or(Value::Null);
        let permissions = input.get("permissions").cloned().unwrap_or(Value::Null);
        let user = profile.get("id").and_then(Value::as_str).unwrap_or("unknown");

        let active = profile.get("active").and_then(Value::as_bool).unwrap_or(false);
        let grant = find_grant(&permissions, resource, action);
        let denial = if !active {
            Some(format!("access denied: user `{user}` is not active"))
        } else if grant.is_none() {
            Some(format!("access denied: user `{user}` has no grant to `{action}` `{resource}`"))
        } else {
            None
        };
        let outcome = if denial.is_some() { "deny" } else { "allow" };
        braid_step::event(
            &ctx,
            "access.decided",
            &[],
            &[("user_id", user), ("resource", resource), ("action", action), ("decision", outcome)],
        );
        if let Some(reason) = denial {
            return Err(StepError::Fatal(reason));
        }
        Ok(json!({
            "allowed": true,
            "user_id": user,
            "resource": resource,
            "action": action,
            "matched_grant": grant,
            "reason": format!("grant on `{}` allows `{action}`", grant.and_then(|g| g.get("resource")).and_then(Value::as_str).unwrap_or("?")),
        })
        .to_string())
    }
}

braid_step::export!(ValidateAccess with_types_in braid_step::bindings);
