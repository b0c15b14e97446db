//! Step `fetch_permissions`: reads the user's roles and grants at
//! `GET {api_base}/users/{user_id}/permissions` with the bearer token.
//!
//! Input: `{ "api_base", "user_id", "token" }`.
//! Output: `{ "roles": [...], "grants": [{ "resource", "actions" }], "api_ms" }`.

use braid_step::{StepError, TraceContext, str_field};

struct FetchPermissions;

impl braid_step::Step for FetchPermissions {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let api_base = str_field(&input, "api_base")?;
        let user_id = str_field(&input, "user_id")?;
        let url = format!("{api_base}/users/{user_id}/permissions");
        let (mut permissions, api_ms) =
            braid_step::get_json_with_token("permissions fetch", &url, str_field(&input, "token")?)?;
        let grants = permissions.get("grants").and_then(|g| g.as_array()).map_or(0, Vec::len);
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

braid_step::export!(FetchPermissions with_types_in braid_step::bindings);
