//! A run request as `POST /v1/workflows/NAME/runs` takes it, read and
//! checked before anything runs or is remembered: the workflow live now,
//! the JSON body bound to its inputs, the caller's trace context and its
//! `Idempotency-Key`. Every refusal is the 4xx/503 the caller gets.

use super::super::{Inner, error, header_fields, read_body};
use crate::registry::Served;
use crate::trace::IncomingTrace;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A checked run request.
pub(in crate::serve) struct RunAsk {
    /// The workflow's name, as in the path.
    pub name: String,
    /// The versions live now serve this run to its end, whatever is swapped meanwhile.
    pub served: Arc<Served>,
    /// The run's input (a JSON object; `{}` for no body).
    pub input: Value,
    /// The body as sent (what an older braid's idempotency record hashed).
    pub bytes: Bytes,
    pub trace: IncomingTrace,
    /// The `Idempotency-Key`, if one was sent.
    pub key: Option<String>,
    /// `Prefer: respond-async`: answer `202` once the run has started.
    pub respond_async: bool,
}

impl FromRequest<Arc<Inner>> for RunAsk {
    type Rejection = Response;

    async fn from_request(req: Request, app: &Arc<Inner>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        if app.draining.load(Ordering::SeqCst) {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting down: not starting new runs",
            ));
        }
        let Path(name) = Path::<String>::from_request_parts(&mut parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(served) = app.live.workflow(&name) else {
            let known = app.live.names();
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("unknown workflow `{name}`; this server runs: {known:?}"),
            ));
        };
        let headers = &parts.headers;
        // A body must say it is JSON (what a page's form or `fetch` cannot
        // send cross-origin without a preflight); no body needs no type.
        let typed = headers.contains_key(header::CONTENT_TYPE);
        if typed {
            super::super::origin::require_json(headers).map_err(|r| *r)?;
        }
        let bytes = read_body(body, app.max_body_bytes, "request body")
            .await
            .map_err(|r| *r)?;
        if !typed && !bytes.is_empty() {
            super::super::origin::require_json(headers).map_err(|r| *r)?;
        }
        let bad = |why: String| error(StatusCode::BAD_REQUEST, why);
        let input = input_of(&bytes).map_err(bad)?;
        // Inputs are checked before anything runs or is remembered.
        if let Err(e) = served.workflow.bind_inputs(&input) {
            return Err(error(StatusCode::BAD_REQUEST, e.to_string()));
        }
        let trace = IncomingTrace::from_fields(
            &header_fields(headers, "traceparent"),
            &header_fields(headers, "tracestate"),
        );
        let key = idempotency_key(headers).map_err(bad)?;
        let respond_async = prefers(headers, "respond-async");
        Ok(RunAsk {
            respond_async,
            name,
            served,
            input,
            bytes,
            trace,
            key,
        })
    }
}

/// The run's input: the body's JSON object, `{}` for no body.
fn input_of(bytes: &[u8]) -> Result<Value, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    match serde_json::from_slice(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => Err(format!(
            "the body must be a JSON object of run inputs, not {}",
            crate::workflow::json_kind(&other)
        )),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

/// The `Idempotency-Key`: refused, never ignored, when it is not one
/// usable key (a key that was ignored would run twice).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    if headers.get_all("idempotency-key").iter().count() > 1 {
        return Err("Idempotency-Key sent more than once: send one key".into());
    }
    let Some(raw_key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_string())),
        _ => Err("Idempotency-Key must be 1 to 255 visible ASCII characters (letters, digits, punctuation, spaces)".into()),
    }
}

/// Whether a `Prefer` header (RFC 7240: preferences separated by commas,
/// each `token[=value][; parameters]`, tokens case-insensitive) asks for
/// `preference`.
fn prefers(headers: &HeaderMap, preference: &str) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.split([';', '=']).next().unwrap_or_default().trim())
        .any(|token| token.eq_ignore_ascii_case(preference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respond_async_is_found_among_other_preferences() {
        let with = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append("prefer", v.parse().expect("header value"));
            }
            prefers(&headers, "respond-async")
        };
        assert!(with(&["respond-async"]));
        assert!(with(&["wait=10, Respond-Async"]));
        assert!(with(&["return=minimal", "respond-async; x=1"]));
        assert!(!with(&["return=minimal"]));
        assert!(!with(&["respond-asynchronously"]));
        assert!(!with(&[]));
    }
}
