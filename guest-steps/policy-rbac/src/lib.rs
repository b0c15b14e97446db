//! Policy `policy_rbac` (role-based): allows `action` on `resource` when one
//! of the user's roles (`permissions.roles`) does, per a fixed role table.
//!
//! Input: `{ "permissions": { "roles": [...] }, "resource": "...", "action": "..." }`.
//!
//! | role | may |
//! | --- | --- |
//! | `admin` | anything |
//! | `engineer` | read and write `projects/*` |
//! | `reports-reader` | read `reports/*` |
//! | `read-only` | read anything |
//! | `guest` | read `public/*` |
//!
//! Writes carry the obligation `("audit", "write")`.

use braid_policy::{Decision, TraceContext, allow, deny, resource_matches};
use serde_json::Value;

struct Rbac;

/// (role, resource pattern, actions)
const ROLES: &[(&str, &str, &[&str])] = &[
    ("admin", "*", &["*"]),
    ("engineer", "projects/*", &["read", "write"]),
    ("reports-reader", "reports/*", &["read"]),
    ("read-only", "*", &["read"]),
    ("guest", "public/*", &["read"]),
];

impl braid_policy::Policy for Rbac {
    fn evaluate(_ctx: TraceContext, input: String) -> Result<Decision, String> {
        let input = braid_policy::parse_input(&input)?;
        let field = |name: &str| input.get(name).and_then(Value::as_str).unwrap_or("");
        let (resource, action) = (field("resource"), field("action"));
        if resource.is_empty() || action.is_empty() {
            return Err("input needs `resource` and `action`".into());
        }
        let roles: Vec<&str> = input
            .pointer("/permissions/roles")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let granting = roles.iter().find(|role| {
            ROLES.iter().any(|(name, pattern, actions)| {
                name == *role
                    && resource_matches(pattern, resource)
                    && actions.iter().any(|a| *a == "*" || *a == action)
            })
        });
        match granting {
            Some(role) => {
                let obligations = if action == "write" {
                    vec![("audit".to_string(), "write".to_string())]
                } else {
                    vec![]
                };
                Ok(allow(
                    vec![format!("role `{role}` may `{action}` `{resource}`")],
                    obligations,
                ))
            }
            None => Ok(deny(vec![format!(
                "none of the roles {} may `{action}` `{resource}`",
                Value::from(roles)
            )])),
        }
    }
}

braid_policy::export!(Rbac with_types_in braid_policy::bindings);
