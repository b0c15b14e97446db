//! Step `fetch_profile`: reads the user's profile at
//! `GET {api_base}/users/{user_id}/profile` with the bearer token.
//!
//! Input: `{ "api_base", "user_id", "token" }`. Output: the profile JSON plus `api_ms`.
//!
//! Reversible only to compensate: without a profile access cannot be decided,
//! so `compensate` reports the outage and gives up; `undo` has nothing to
//! revert (a read).

use braid_step::{StepError, TraceContext, str_field};
use braid_step_reversible::Compensation;

struct FetchProfile;

impl braid_step_reversible::Step for FetchProfile {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let api_base = str_field(&input, "api_base")?;
        let user_id = str_field(&input, "user_id")?;
        let url = format!("{api_base}/users/{user_id}/profile");
        let (mut profile, api_ms) =
            braid_step::get_json_with_token("profile fetch", &url, str_field(&input, "token")?)?;
        if let Some(obj) = profile.as_object_mut() {
            obj.insert("api_ms".into(), api_ms.into());
        }
        braid_step::event(
            &ctx,
            "api.profile.fetched",
            &[("api_ms", api_ms)],
            &[("user_id", user_id)],
        );
        Ok(profile.to_string())
    }
}

impl braid_step_reversible::Reversible for FetchProfile {
    fn compensate(ctx: TraceContext, _input: String, error: StepError) -> Compensation {
        let reason = format!("{error:?}");
        braid_step::event(&ctx, "api.profile.unavailable", &[], &[("reason", &reason)]);
        Compensation::GiveUp
    }

    fn undo(_ctx: TraceContext, _input: String, _output: String) -> Result<(), StepError> {
        Ok(())
    }
}

braid_step_reversible::export!(FetchProfile with_types_in braid_step_reversible::bindings);
