//! Blocking HTTP for steps, on the Bytecode Alliance's [`wstd`] client.
//!
//! `wstd` speaks `wasi:http/outgoing-handler`; this module only runs it to
//! completion inside the (synchronous) step call and sorts its errors into
//! the two a step cares about: the host refused (do not retry) and the
//! transport failed (a retry may pass). The host decides where a step may
//! connect (its allowlist) and stamps every request with the run's
//! `traceparent`; nothing here touches trace headers.
//!
//! A step that wants the async client itself (several requests at once,
//! streaming bodies) uses `wstd` directly, as the `braid new` Rust scaffold
//! does: `wstd::runtime::block_on(async { Client::new().send(req).await })`.

use http_body_util::{BodyExt, LengthLimitError, Limited};
use wstd::http::error::ErrorCode;
use wstd::http::{Body, Client, Method, Request};

/// The most of a response body [`request`] reads; a longer body is an error
/// rather than a step's memory filling up.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// An HTTP response: status and the whole body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
    }
}

/// Why a request did not produce a response.
#[derive(Debug)]
pub enum HttpError {
    /// The URL (or a header, or the method) could not be understood.
    InvalidUrl(String),
    /// The host refused the request: the destination is not on the step's
    /// allowlist (`HttpRequestDenied`). Retrying cannot help.
    Denied(String),
    /// The transport failed (connection refused, reset, timeout, ...).
    Transport(String),
}

impl HttpError {
    /// As a step error: a transport failure may pass, anything else will not.
    pub fn into_step_error(self, what: &str) -> crate::StepError {
        match self {
            HttpError::Transport(_) => crate::StepError::Retryable(format!("{what}: {self}")),
            _ => crate::StepError::Fatal(format!("{what}: {self}")),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::Denied(m) => write!(f, "refused by the host (HttpRequestDenied): {m}"),
            HttpError::Transport(m) => write!(f, "request failed: {m}"),
        }
    }
}

/// `GET url` with the given headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
    request("GET", url, headers, None)
}

/// `POST url` with a JSON body.
pub fn post_json(
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Result<Response, HttpError> {
    let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let bytes = body.to_string().into_bytes();
    request("POST", url, &all, Some(&bytes))
}

/// Sends one request and reads the whole response (at most
/// [`MAX_RESPONSE_BYTES`] of body).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    check_url(url)?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| HttpError::InvalidUrl(format!("method `{method}`: {e}")))?;
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        // A known length, so the request is not sent chunked.
        builder = builder.header("content-length", body.len());
    }
    let request = builder
        .body(Body::from(body.map(<[u8]>::to_vec).unwrap_or_default()))
        .map_err(|e| HttpError::InvalidUrl(format!("{url}: {e}")))?;
    wstd::runtime::block_on(async move {
        let response = Client::new()
            .send(request)
            .await
            .map_err(|e| sort(e, url))?;
        let status = response.status().as_u16();
        let limited = Limited::new(response.into_body().into_boxed_body(), MAX_RESPONSE_BYTES);
        let body = limited.collect().await.map_err(|e| {
            if e.is::<LengthLimitError>() {
                HttpError::Transport(format!(
                    "the response from {url} is longer than {MAX_RESPONSE_BYTES} bytes"
                ))
            } else {
                HttpError::Transport(format!("reading the response body: {}", chain(&*e)))
            }
        })?;
        Ok(Response {
            status,
            body: body.to_bytes().to_vec(),
        })
    })
}

/// An error and its causes, `: `-joined (the host's reason is the last).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// `wstd` reports everything as `anyhow::Error`; the host's refusal is the
/// `wasi:http` error code underneath, and says which host and why.
fn sort(error: wstd::http::Error, url: &str) -> HttpError {
    match error.downcast_ref::<ErrorCode>() {
        Some(ErrorCode::HttpRequestDenied) => {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            HttpError::Denied(format!(
                "{host} is not in this step's allowed_hosts (the workflow's allowed_hosts decides where a step may connect)"
            ))
        }
        _ => HttpError::Transport(format!("{error:#}")),
    }
}

/// A URL needs its scheme and a host: without a scheme `wasi:http` sends
/// HTTPS, which against a plain-HTTP port is a TLS error with no hint.
fn check_url(url: &str) -> Result<(), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            HttpError::InvalidUrl(format!(
                "`{url}` is not an http(s) URL: it needs its scheme, http:// or https://"
            ))
        })?;
    if rest.split(['/', '?']).next().unwrap_or_default().is_empty() {
        return Err(HttpError::InvalidUrl(format!("`{url}` has no host")));
    }
    Ok(())
}
