//! Step `notify`: sends a notification at `POST {api_base}/notifications`
//! with the bearer token, e.g. to tell a security team that a request was
//! denied. Opt the step into idempotency keys (`idempotency_key = true`) and
//! the API sends one notification per run, however often the step runs.
//!
//! Input: `{ "api_base", "token", "to", "subject", "about": <any JSON> }`.
//! Output: `{ "id": "ntf-...", "to": "..." }` as the API answered.
//! A 4xx is fatal; a 5xx or a transport error is retryable.

use braid_step::{StepError, TraceContext, http, str_field};
use serde_json::json;

struct Notify;

impl braid_step::Step for Notify {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let api_base = str_field(&input, "api_base")?;
        let token = str_field(&input, "token")?;
        let to = str_field(&input, "to")?;
        let subject = str_field(&input, "subject")?;
        let auth = format!("Bearer {token}");
        let body = json!({
            "to": to,
            "subject": subject,
            "about": input.get("about").cloned().unwrap_or_default(),
        });
        let response = http::post_json(
            &format!("{api_base}/notifications"),
            &[("authorization", auth.as_str())],
            &body,
        )
        .map_err(|e| e.into_step_error("notification"))?;
        if response.status != 202 {
            return Err(braid_step::status_error(
                "notification refused",
                response.status,
                &response.text(),
            ));
        }
        let answer = response.json().map_err(StepError::Fatal)?;
        braid_step::event(&ctx, "notification.sent", &[], &[("to", to)]);
        Ok(answer.to_string())
    }
}

braid_step::export!(Notify with_types_in braid_step::bindings);
