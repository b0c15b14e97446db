//! Step `__NAME__`: greets `name`, and POSTs the greeting to `url` if given.
//!
//! Input: `{ "name": "...", "url": "http://..." or "" }`. Output: `{ "greeting":
//! "hello, ...", "trace_id": "...", "posted": { "status": 200, "answer": ... } }`
//! (`posted` only with a `url`). Outbound HTTP goes through `wstd` (the
//! Bytecode Alliance's `wasi:http` client); the host adds the run's
//! `traceparent`, and the step's `allowed_hosts` in workflow.toml says where
//! it may go.
//! A missing `name` is a fatal error (retrying cannot help); return
//! `StepError::Retryable` for failures worth another attempt.

wit_bindgen::generate!({
    path: "wit",
    world: "braid:workflow/step-component",
    generate_all,
});

use braid::workflow::telemetry::{self, Level};
use braid::workflow::types::{StepError, TraceContext};
use serde_json::{Value, json};
use wstd::http::error::ErrorCode;
use wstd::http::{Body, Client, Request};

struct Component;

impl exports::braid::workflow::step::Guest for Component {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input: Value = serde_json::from_str(&input)
            .map_err(|e| StepError::Fatal(format!("input is not JSON: {e}")))?;
        let name = input
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::Fatal("input field `name` is missing or not a string".into()))?;
        // Every host call takes the attempt's own trace context, unchanged.
        telemetry::log(&ctx, Level::Info, &format!("greeting {name}"))
            .map_err(|e| StepError::Fatal(format!("log refused: {e:?}")))?;
        telemetry::event(&ctx, "__NAME__.greeted", &[("name_chars".into(), name.chars().count() as f64)], &[])
            .map_err(|e| StepError::Fatal(format!("event refused: {e:?}")))?;
        let greeting = format!("hello, {name}");
        let mut output = json!({ "greeting": greeting, "trace_id": ctx.trace_id });
        if let Some(url) = input.get("url").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            // `run` is synchronous; `block_on` drives wstd's async client to the end.
            output["posted"] = wstd::runtime::block_on(post_json(url, &json!({ "greeting": greeting })))?;
        }
        Ok(output.to_string())
    }
}

/// POSTs `body` to `url`; answers `{ "status": ..., "answer": <the JSON answer> }`.
async fn post_json(url: &str, body: &Value) -> Result<Value, StepError> {
    // A URL needs its scheme: "http://127.0.0.1:8080/x", not "127.0.0.1:8080/x"
    // (without one, wasi:http sends HTTPS).
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(StepError::Fatal(format!("URL needs its scheme, http:// or https://: {url}")));
    }
    let request = Request::post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| StepError::Fatal(format!("POST {url}: {e}")))?;
    // The host's refusal (a host off the step's allowlist) will not pass on
    // a retry; a transport failure (refused, reset, timed out) may.
    let mut response = Client::new().send(request).await.map_err(|e| {
        match e.downcast_ref::<ErrorCode>() {
            Some(ErrorCode::HttpRequestDenied) => StepError::Fatal(format!(
                "POST {url}: refused by the host: {} is not in this step's allowed_hosts \
                 (the workflow's allowed_hosts decides where a step may connect)",
                host_of(url)
            )),
            _ => StepError::Retryable(format!("POST {url}: {e:#}")),
        }
    })?;
    let status = response.status().as_u16();
    let answer: Value = response
        .body_mut()
        .json()
        .await
        .map_err(|e| StepError::Fatal(format!("POST {url}: answer {status} is not JSON: {e:#}")))?;
    Ok(json!({ "status": status, "answer": answer }))
}

/// The `host[:port]` of an http(s) URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?', '#']).next().unwrap_or(rest)
}

export!(Component);
