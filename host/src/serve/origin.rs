//! Whom the server answers: a request must name the server by a name it
//! answers to (`Host`: a DNS-rebinding page reaches the server under the
//! attacker's name), a browser request from another origin is refused
//! unless that origin is allowed (`Origin`: a hostile page open in the
//! operator's browser can send requests that need no preflight), and a run's
//! body must say it is JSON (`Content-Type`: a page's `text/plain` form or
//! `fetch` is sent without a preflight).
//!
//! Must not know runs or workflows: it looks at the request head only.

use super::error;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The names the server answers to and the browser origins it serves
/// besides its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// Host names (no port), lower case; `None`: any (the server listens on
    /// a non-loopback address and no `--public-name` was given).
    names: Option<Vec<String>>,
    /// Origins (`scheme://host[:port]`, lower case) allowed cross-origin;
    /// `*`: any.
    origins: Vec<String>,
}

/// The names a server listening on loopback answers to by default.
const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Endpoints answered whatever the `Host` (probes of load balancers and
/// orchestrators call them by address; they tell nothing about runs).
const PROBES: &[&str] = &["/healthz", "/readyz"];

impl Audience {
    /// The audience of a server on `listen`: `public_names` (host names,
    /// with or without a port) if given, else the loopback names when it
    /// listens on loopback, else any name; `allow_origins` besides its own.
    pub fn new(
        listen: SocketAddr,
        public_names: &[String],
        allow_origins: &[String],
    ) -> Result<Audience, String> {
        let names = if !public_names.is_empty() {
            let mut names = Vec::new();
            for n in public_names {
                let name = host_name(n.trim());
                if name.is_empty() || name.contains(['/', ' ', '@']) {
                    return Err(format!("--public-name `{n}` is not a host name"));
                }
                names.push(name);
            }
            Some(names)
        } else if listen.ip().is_loopback() {
            Some(LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect())
        } else {
            None
        };
        let mut origins = Vec::new();
        for o in allow_origins {
            let origin = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let well_formed = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.split_once("://").is_some_and(|(_, rest)| {
                        rest.is_empty() || rest.contains(['/', ' ', '?', '#'])
                    }));
            if !well_formed {
                return Err(format!(
                    "--allow-origin `{o}` is not an origin (scheme://host[:port], or *)"
                ));
            }
            origins.push(origin);
        }
        Ok(Audience { names, origins })
    }

    /// Whether this server answers to `host` (a `Host` header's value).
    fn answers_to(&self, host: &str) -> bool {
        match &self.names {
            None => true,
            Some(names) => names.contains(&host_name(host)),
        }
    }

    /// Whether `origin` may make requests: the server's own (the `Host` it
    /// was reached by), or one allowed. The opaque origin `null` never is.
    fn admits(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        origin == format!("http://{host}")
            || origin == format!("https://{host}")
            || self.cross_origin_allowed(&origin)
    }

    fn cross_origin_allowed(&self, origin: &str) -> bool {
        origin != "null" && self.origins.iter().any(|o| o == "*" || o == origin)
    }
}

/// The host name of a `Host` value or name given with a port, lower case,
/// without brackets around an IPv6 address.
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        // One colon: `name:port`. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_string()
        }
        _ => host,
    }
}

/// The `Host` a request names (HTTP/1.1 `Host`, or an absolute URI's authority).
fn host_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
}

/// The middleware: refuses what the audience does not cover, answers CORS
/// preflights of allowed origins, and marks their answers readable.
pub async fn guard(
    State(audience): State<Arc<Audience>>,
    request: Request,
    next: Next,
) -> Response {
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(host) = host_of(&request) else {
        return error(StatusCode::BAD_REQUEST, "the request names no Host");
    };
    if !audience.answers_to(&host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this server does not answer to the name `{}` (braid serve --public-name)",
                host_name(&host)
            ),
        );
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if let Some(origin) = &origin
        && !audience.admits(origin, &host)
    {
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request from `{origin}` refused (braid serve --allow-origin admits an origin)"
            ),
        );
    }
    let cross = origin.filter(|o| audience.cross_origin_allowed(&o.to_ascii_lowercase()));
    if request.method() == Method::OPTIONS
        && let Some(origin) = &cross
    {
        return preflight(origin);
    }
    let mut response = next.run(request).await;
    if let Some(origin) = cross {
        allow(response.headers_mut(), &origin);
    }
    response
}

/// The answer to a CORS preflight from an allowed origin.
fn preflight(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "authorization, content-type, idempotency-key, prefer, traceparent, tracestate",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    response
}

/// Lets `origin` read the answer.
fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("location, link, retry-after, traceparent, tracestate"),
    );
}

/// Refuses a body that does not say it is JSON (`application/json`, or a
/// `+json` type), with `415`.
pub(super) fn require_json(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = given
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        return Ok(());
    }
    let shown = if given.is_empty() { "none" } else { given };
    Err(Box::new(error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("the body must be JSON: send Content-Type: application/json (got {shown})"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Audience {
        Audience::new("127.0.0.1:8080".parse().expect("addr"), &[], &[]).expect("audience")
    }

    #[test]
    fn a_loopback_server_answers_to_localhost_names_only() {
        let a = loopback();
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "LOCALHOST",
            "127.0.0.1",
        ] {
            assert!(a.answers_to(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.2:8080",
            "localhost.evil.example",
        ] {
            assert!(!a.answers_to(refused), "{refused}");
        }
        let any = Audience::new("0.0.0.0:8080".parse().expect("addr"), &[], &[]).expect("audience");
        assert!(any.answers_to("braid.internal:8080"));
        let named = Audience::new(
            "0.0.0.0:8080".parse().expect("addr"),
            &["braid.example.com".into()],
            &[],
        )
        .expect("audience");
        assert!(named.answers_to("braid.example.com:443"));
        assert!(!named.answers_to("localhost:8080"));
    }

    #[test]
    fn only_the_servers_own_origin_and_allowed_ones_are_admitted() {
        let a = loopback();
        assert!(a.admits("http://localhost:8080", "localhost:8080"));
        assert!(!a.admits("http://evil.example", "localhost:8080"));
        assert!(!a.admits("null", "localhost:8080"));
        // Same host, another port: another origin.
        assert!(!a.admits("http://localhost:3000", "localhost:8080"));
        let allowed = Audience::new(
            "127.0.0.1:8080".parse().expect("addr"),
            &[],
            &["https://dash.example.com/".into()],
        )
        .expect("audience");
        assert!(allowed.admits("https://dash.example.com", "localhost:8080"));
        assert!(!allowed.admits("http://dash.example.com", "localhost:8080"));
        for bad in ["dash.example.com", "https://", "https://x/y", "ftp://x"] {
            let e = Audience::new("127.0.0.1:1".parse().expect("addr"), &[], &[bad.into()]);
            assert!(e.is_err(), "{bad}");
        }
    }

    #[test]
    fn a_body_must_say_it_is_json() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(ct).expect("value"),
            );
            require_json(&h).is_ok()
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
