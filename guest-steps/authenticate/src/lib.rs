//! Step `authenticate`: exchanges the user's client credentials for a bearer
//! token at `POST {api_base}/oauth/token`.
//!
//! Input: `{ "api_base": "...", "user_id": "..." }`.
//! Output: `{ "access_token": "...", "expires_in": 3600, "user_id": "...", "api_ms": 33.1 }`.
//! A 401/403 or a denied request is fatal; a 5xx or a transport error is retryable.
//!
//! Reversible: `undo` revokes the token (`POST {api_base}/oauth/revoke`), so a
//! failed run leaves no live credentials behind; `compensate` gives up.

use braid_step::{StepError, TraceContext, http, str_field};
use braid_step_reversible::Compensation;
use serde_json::json;
use std::time::Instant;

struct Authenticate;

impl braid_step_reversible::Step for Authenticate {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let api_base = str_field(&input, "api_base")?;
        let user_id = str_field(&input, "user_id")?;

        let started = Instant::now();
        let response = http::post_json(
            &format!("{api_base}/oauth/token"),
            &[],
            &json!({ "client_id": "braid", "user_id": user_id }),
        )
        .map_err(|e| e.into_step_error("token request"))?;
        let api_ms = started.elapsed().as_secs_f64() * 1000.0;
        if response.status != 200 {
            return Err(braid_step::status_error(
                "authentication failed",
                response.status,
                &response.text(),
            ));
        }
        let body = response.json().map_err(StepError::Fatal)?;
        let token = str_field(&body, "access_token")?;

        braid_step::event(
            &ctx,
            "api.auth.succeeded",
            &[("api_ms", api_ms)],
            &[("user_id", user_id)],
        );
        Ok(json!({
            "access_token": token,
            "expires_in": body.get("expires_in").cloned().unwrap_or(json!(null)),
            "user_id": user_id,
            "api_ms": api_ms,
        })
        .to_string())
    }
}

impl braid_step_reversible::Reversible for Authenticate {
    fn compensate(ctx: TraceContext, _input: String, error: StepError) -> Compensation {
        braid_step::log(
            &ctx,
            braid_step::Level::Warn,
            &format!("authentication failed for good: {error:?}"),
        );
        Compensation::GiveUp
    }

    fn undo(ctx: TraceContext, input: String, output: String) -> Result<(), StepError> {
        let input = braid_step::parse_input(&input)?;
        let output = braid_step::parse_input(&output)?;
        let api_base = str_field(&input, "api_base")?;
        let token = str_field(&output, "access_token")?;
        let response = http::post_json(
            &format!("{api_base}/oauth/revoke"),
            &[],
            &json!({ "token": token }),
        )
        .map_err(|e| e.into_step_error("token revocation"))?;
        // Revoking an unknown (already revoked) token is fine: undo is idempotent.
        if response.status != 200 && response.status != 404 {
            return Err(braid_step::status_error(
                "token revocation",
                response.status,
                &response.text(),
            ));
        }
        braid_step::event(&ctx, "api.auth.revoked", &[], &[]);
        Ok(())
    }
}

braid_step_reversible::export!(Authenticate with_types_in braid_step_reversible::bindings);
