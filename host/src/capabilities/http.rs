//! Outbound HTTP policy behind `wasi:http/outgoing-handler`.
//!
//! Every request a step sends passes through [`OutboundHttp::send_request`],
//! the one place that (1) refuses destinations not on the step's allowlist
//! (`HttpRequestDenied` to the guest, a warning in the log), (2) gives the
//! request its own span id and sets `traceparent` (and `tracestate`),
//! overwriting whatever the guest set, and (3) records the call in the run
//! report.

use super::Caller;
use super::http_client::HttpClient;
use crate::report::HttpCallRecord;
use crate::trace::SpanId;
use http::header::{HOST, HeaderValue};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Whether `host[:port]` matches one allowlist entry: `host` (any port),
/// `host:port`, or `*.domain` (any subdomain, any port).
pub fn host_allowed(allowed: &[String], host: &str, port: Option<u16>) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        if let Some(domain) = pattern.strip_prefix("*.") {
            return host.ends_with(&format!(".{domain}"));
        }
        match pattern.rsplit_once(':') {
            Some((h, p)) => h == host && p.parse::<u16>().ok() == port,
            None => pattern == host,
        }
    })
}

/// The per-attempt outbound HTTP policy.
pub struct OutboundHttp {
    pub caller: Arc<Caller>,
    pub allowed_hosts: Arc<[String]>,
    /// Requests this attempt may still send (`max_requests`).
    pub requests_left: u32,
    /// Largest response body (`max_response_bytes`); more fails the read.
    pub max_response_bytes: u64,
    /// Refuse allowlisted *names* that resolve to loopback, private or
    /// link-local addresses (an IP literal on the allowlist is still allowed).
    pub deny_private_networks: bool,
    /// The process's pooled connections, shared by every attempt.
    pub client: Arc<HttpClient>,
}

/// Loopback, private (RFC 1918, unique local), link-local or unspecified.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(std::net::IpAddr::V4(v4)))
        }
    }
}

/// For a name (not an IP literal): resolves it and, if any address is
/// private, says which. For plain HTTP the request is pinned to the checked
/// address so a second lookup cannot differ; HTTPS keeps the name for TLS.
async fn private_address_of(
    authority: &http::uri::Authority,
    scheme_is_https: bool,
) -> Result<Option<std::net::SocketAddr>, String> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(None);
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme_is_https { 443 } else { 80 });
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .collect();
    if let Some(private) = addrs.iter().find(|a| is_private(a.ip())) {
        return Err(format!(
            "`{host}` resolves to the private address {}",
            private.ip()
        ));
    }
    Ok(addrs.first().copied().filter(|_| !scheme_is_https))
}

/// The most of a request body the host reads and discards once nobody else
/// will (a refused request, or one whose answer came before its body ended).
const DRAINED_BODY_BYTES: usize = 1024 * 1024;

/// Headers that carry an idempotency key: only the host sets them (a step's
/// own value could be another run's key, to replay its answer).
const GUEST_KEY_HEADERS: &[&str] = &["idempotency-key", "x-idempotency-key"];

/// Reads `body` to its end, discarding it (at most [`DRAINED_BODY_BYTES`]).
/// The guest writes its request body into a stream whose reader is `body`:
/// while it is read, the guest's writes and its `finish` succeed. Dropped
/// early, the guest's next write finds the stream closed, and a client that
/// sends its body before it reads the response (wstd does, even an empty
/// one) reports "connection reset" instead of the answer or the refusal.
async fn drain(mut body: WasiBody) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > DRAINED_BODY_BYTES {
            break;
        }
    }
}

/// Answers a refused request with `error` once the guest's body has ended
/// (see [`drain`]), so the guest sees the refusal.
async fn refuse_after_body<T>(body: WasiBody, error: Error) -> Result<T, Error> {
    drain(body).await;
    Err(error)
}

/// A request body that is read to its end by a task of its own (see
/// [`drain`]) if the transport lets go of it first: a server may answer
/// before it has read the request (hyper then stops sending it).
struct DrainedWhenDropped {
    inner: Option<WasiBody>,
    ended: bool,
}

impl http_body::Body for DrainedWhenDropped {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let polled = std::pin::Pin::new(inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for DrainedWhenDropped {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let (Some(body), Ok(runtime)) =
            (self.inner.take(), tokio::runtime::Handle::try_current())
            && !http_body::Body::is_end_stream(&body)
        {
            runtime.spawn(drain(body));
        }
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> ResponseFuture {
        let caller = Arc::clone(&self.caller);
        let span = SpanId::random();
        let method = request.method().to_string();
        let url = request.uri().to_string();
        let authority = request.uri().authority().cloned();
        let started = Instant::now();
        let mut record = HttpCallRecord {
            step: caller.step.clone(),
            attempt_span_id: caller.trace.span_id.to_string(),
            span_id: span.to_string(),
            method,
            url,
            traceparent: None,
            idempotency_key: None,
            status: None,
            error: None,
            start_ms: caller.recorder.offset_ms(started),
            duration_ms: 0.0,
        };

        let allowed = authority
            .as_ref()
            .is_some_and(|a| host_allowed(&self.allowed_hosts, a.host(), a.port_u16()));
        if !allowed {
            let reason = format!(
                "outbound request to `{}` denied: not in the step's allowed_hosts [{}]",
                authority.as_ref().map_or("(no host)".to_string(), |a| {
                    crate::report::bounded(a.to_string(), 256)
                }),
                self.allowed_hosts.join(", ")
            );
            caller.refuse(
                "http.denied",
                &reason,
                [(
                    "url".to_string(),
                    crate::report::bounded(record.url.clone(), crate::report::MAX_URL_BYTES),
                )]
                .into(),
            );
            let _ = caller.denied.set(reason.clone());
            record.error = Some(reason);
            caller.recorder.http_call(record);
            return Box::new(refuse_after_body(
                request.into_body(),
                Error::HttpRequestDenied,
            ));
        }

        if self.requests_left == 0 {
            let reason =
                "outbound request refused: the step's max_requests for this attempt is used up"
                    .to_string();
            caller.refuse("limit.requests", &reason, BTreeMap::new());
            record.error = Some(reason);
            caller.recorder.http_call(record);
            return Box::new(refuse_after_body(
                request.into_body(),
                Error::ConnectionLimitReached,
            ));
        }
        self.requests_left -= 1;
        let traceparent = caller.trace.traceparent_for(span).to_string();
        let headers = request.headers_mut();
        // `insert` replaces anything the guest set: the host owns the trace.
        if let Ok(v) = HeaderValue::from_str(&traceparent) {
            headers.insert("traceparent", v);
        }
        headers.remove("tracestate");
        if !caller.trace.state.is_empty()
            && let Ok(v) = HeaderValue::from_str(&caller.trace.state.to_string())
        {
            headers.insert("tracestate", v);
        }
        if let Some(a) = &authority
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            headers.insert(HOST, v);
        }
        // Like the trace, the key is the host's, for every step: a key the
        // guest set itself (under the usual names or the one its workflow
        // configures) is removed, and a step that opted in gets the host's.
        for name in GUEST_KEY_HEADERS {
            headers.remove(*name);
        }
        if let Some(name) = &caller.idempotency_header
            && let Ok(name) = http::header::HeaderName::from_bytes(name.as_bytes())
        {
            // `insert` replaces whatever the guest sent under that name.
            match HeaderValue::from_str(&caller.idempotency_key) {
                Ok(v) => {
                    headers.insert(name, v);
                    record.idempotency_key = Some(caller.idempotency_key.clone());
                }
                Err(_) => {
                    headers.remove(name);
                }
            }
        }
        record.traceparent = Some(traceparent);
        // Recorded now, so a request cut short by the attempt's timeout still shows.
        record.error = Some("no response: the attempt ended first".into());
        tracing::debug!(trace_id = %caller.trace.trace_id, span_id = %span, url = %record.url, "outbound request");
        let index = caller.recorder.http_call(record);
        let limit = usize::try_from(self.max_response_bytes).unwrap_or(usize::MAX);

        let deny_private = self.deny_private_networks;
        let client = Arc::clone(&self.client);
        Box::new(async move {
            use http_body_util::BodyExt;
            if deny_private && let Some(a) = &authority {
                let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
                match private_address_of(a, https).await {
                    Ok(Some(pinned)) => {
                        let mut parts = request.uri().clone().into_parts();
                        parts.authority = pinned.to_string().parse().ok();
                        if let Ok(uri) = http::Uri::from_parts(parts) {
                            *request.uri_mut() = uri;
                        }
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        let reason =
                            format!("outbound request denied: {reason} (deny_private_networks)");
                        caller.refuse("http.denied", &reason, BTreeMap::new());
                        caller
                            .recorder
                            .http_call_done(index, None, Some(reason), 0.0);
                        return refuse_after_body(request.into_body(), Error::HttpRequestDenied)
                            .await;
                    }
                }
            }
            let request = request.map(|body| {
                use http_body_util::BodyExt;
                DrainedWhenDropped {
                    inner: Some(body),
                    ended: false,
                }
                .boxed_unsync()
            });
            let result = client.send(request, options).await;
            let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
            match &result {
                Ok((response, _)) => caller.recorder.http_call_done(
                    index,
                    Some(response.status().as_u16()),
                    None,
                    duration_ms,
                ),
                Err(e) => {
                    caller
                        .recorder
                        .http_call_done(index, None, Some(e.to_string()), duration_ms)
                }
            }
            let (response, io) = result?;
            // Bodies larger than the step's limit fail mid-read with a typed error.
            let limited = response.map(move |body| {
                http_body_util::Limited::new(body, limit)
                    .map_err(move |e| match e.downcast::<Error>() {
                        Ok(inner) => *inner,
                        Err(_) => Error::HttpResponseBodySize(Some(limit as u64)),
                    })
                    .boxed_unsync()
            });
            Ok((limited, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DRAINED_BODY_BYTES, DrainedWhenDropped, host_allowed};
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// The guest's side of a request body: what it writes arrives here.
    struct FromGuest(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for FromGuest {
        type Data = Bytes;
        type Error = wasmtime_wasi_http::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
        }
    }

    /// A server may answer before it has read the request; the transport
    /// then drops the request body. The guest must still be able to write
    /// the rest (its client would report a reset instead of the answer),
    /// up to the drain limit, after which its writes fail.
    #[tokio::test]
    async fn a_request_body_let_go_of_early_is_still_read_up_to_the_limit() {
        let (guest, rx) = tokio::sync::mpsc::channel(1);
        let body = DrainedWhenDropped {
            inner: Some(FromGuest(rx).boxed_unsync()),
            ended: false,
        };
        drop(body);
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut accepted = 0usize;
        // With room for one chunk, every further send waits for a reader.
        while guest.send(chunk.clone()).await.is_ok() {
            accepted += chunk.len();
            assert!(accepted < 4 * DRAINED_BODY_BYTES, "drained without end");
        }
        assert!(
            accepted > DRAINED_BODY_BYTES,
            "the body was read past its drop: {accepted} bytes"
        );
    }

    #[test]
    fn allowlist_matching() {
        let allowed = vec![
            "127.0.0.1".to_string(),
            "api.example.com:8443".to_string(),
            "*.svc.local".to_string(),
        ];
        assert!(host_allowed(&allowed, "127.0.0.1", Some(8080)));
        assert!(host_allowed(&allowed, "127.0.0.1", None));
        assert!(host_allowed(&allowed, "api.example.com", Some(8443)));
        assert!(!host_allowed(&allowed, "api.example.com", Some(443)));
        assert!(host_allowed(&allowed, "users.svc.local", Some(80)));
        assert!(!host_allowed(&allowed, "svc.local", Some(80)));
        assert!(!host_allowed(&allowed, "127.0.0.2", Some(80)));
        assert!(!host_allowed(&allowed, "evil.com", None));
        assert!(!host_allowed(&[], "127.0.0.1", None));
    }

    #[test]
    fn private_addresses() {
        use super::is_private;
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }
}
