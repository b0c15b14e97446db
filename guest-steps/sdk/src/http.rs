//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host decides where a step may connect (its allowlist) and stamps every
//! request with the run's `traceparent`; this client only builds requests and
//! reads responses.

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

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
    /// The URL could not be understood.
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
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
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

/// Sends one request and reads the whole response.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, HttpError> {
    let (scheme, authority, path) = split_url(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| HttpError::InvalidUrl(format!("header `{name}`: {e:?}")))?;
    }
    if let Some(body) = body {
        fields
            .append("content-length", body.len().to_string().as_bytes())
            .map_err(|e| HttpError::InvalidUrl(format!("content-length: {e:?}")))?;
    }
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_string()),
    };
    let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} rejected for {url}"));
    request.set_method(&method).map_err(|_| invalid("method"))?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|_| invalid("scheme"))?;
    request
        .set_authority(Some(authority))
        .map_err(|_| invalid("authority"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| invalid("path"))?;
    let outgoing_body = request.body().map_err(|_| invalid("body"))?;

    let pending = outgoing_handler::handle(request, None).map_err(transport)?;

    // If sending the body fails, the response future usually says why (a
    // denied request closes the body stream): prefer that error.
    let sent = write_body(outgoing_body, body);

    let response = loop {
        match pending.get() {
            Some(result) => break result,
            None => pending.subscribe().block(),
        }
    };
    let response = response
        .map_err(|_| HttpError::Transport("response already taken".into()))?
        .map_err(transport)?;
    sent?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|_| HttpError::Transport("response body unavailable".into()))?;
    let body = read_all(&incoming)?;
    drop(incoming);
    Ok(Response { status, body })
}

fn write_body(outgoing_body: OutgoingBody, body: Option<&[u8]>) -> Result<(), HttpError> {
    if let Some(bytes) = body {
        let stream = outgoing_body
            .write()
            .map_err(|_| HttpError::Transport("request body stream unavailable".into()))?;
        // `blocking-write-and-flush` takes at most 4096 bytes a call.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| HttpError::Transport(format!("writing request body: {e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing_body, None).map_err(transport)
}

fn read_all(body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = body
        .stream()
        .map_err(|_| HttpError::Transport("response body stream unavailable".into()))?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(HttpError::Transport(format!(
                    "reading response body: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(out)
}

fn transport(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied("HttpRequestDenied".into()),
        other => HttpError::Transport(format!("{other:?}")),
    }
}

/// Splits `http://host:port/path?query` into its parts.
fn split_url(url: &str) -> Result<(Scheme, &str, &str), HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "`{url}` is not an http(s) URL"
        )));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("`{url}` has no host")));
    }
    Ok((scheme, authority, path))
}
