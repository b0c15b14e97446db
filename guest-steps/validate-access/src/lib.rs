//! Policy `validate_access` (attribute-based): decides from the profile, the
//! permissions and the request whether `action` on `resource` is allowed.
//!
//! Input: `{ "profile": {...}, "permissions": {...}, "resource": "reports/q3", "action": "read" }`.
//!
//! Rules, all of which must hold:
//! 1. the profile is `active`;
//! 2. a grant matches: its `resource` is the resource, `*`, or a `prefix/*`
//!    covering it, and its `actions` contain the action or `*`;
//! 3. `delete` needs the `admin` role on top of a grant.
//!
//! Obligations: contractors get `("mask", "email")`; degraded permissions
//! (a compensated fetch) get `("audit", "degraded-permissions")`.

use braid_policy::{Decision, TraceContext, allow, deny, resource_matches};
use serde_json::Value;

struct ValidateAccess;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

impl braid_policy::Policy for ValidateAccess {
    fn evaluate(ctx: TraceContext, input: String) -> Result<Decision, String> {
        let input = braid_policy::parse_input(&input)?;
        let (resource, action) = (text(&input, "/resource"), text(&input, "/action"));
        if resource.is_empty() || action.is_empty() {
            return Err("input needs `resource` and `action`".into());
        }
        let user = text(&input, "/profile/id");
        let user = if user.is_empty() { "unknown" } else { user };
        if input.pointer("/profile/active").and_then(Value::as_bool) != Some(true) {
            return Ok(deny(vec![format!("user `{user}` is not active")]));
        }
        let grants = input
            .pointer("/permissions/grants")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let grant = grants.iter().find(|g| {
            let actions = g.get("actions").and_then(Value::as_array);
            resource_matches(text(g, "/resource"), resource)
                && actions.is_some_and(|a| a.iter().any(|x| x == action || x == "*"))
        });
        let Some(grant) = grant else {
            return Ok(deny(vec![format!(
                "user `{user}` has no grant to `{action}` `{resource}`"
            )]));
        };
        let roles = input
            .pointer("/permissions/roles")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if action == "delete" && !roles.iter().any(|r| r == "admin") {
            return Ok(deny(vec![format!(
                "`delete` needs the admin role; user `{user}` has roles {}",
                Value::Array(roles)
            )]));
        }
        let mut obligations = Vec::new();
        if text(&input, "/profile/department") == "contractors" {
            obligations.push(("mask".to_string(), "email".to_string()));
        }
        if input
            .pointer("/permissions/degraded")
            .and_then(Value::as_bool)
            == Some(true)
        {
            obligations.push(("audit".to_string(), "degraded-permissions".to_string()));
        }
        braid_policy::log(
            &ctx,
            braid_policy::Level::Debug,
            &format!("allow {action} {resource} for {user}"),
        );
        Ok(allow(
            vec![format!(
                "grant on `{}` allows `{action}` for active user `{user}`",
                text(grant, "/resource")
            )],
            obligations,
        ))
    }
}

braid_policy::export!(ValidateAccess with_types_in braid_policy::bindings);
