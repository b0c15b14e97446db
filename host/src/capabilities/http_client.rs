//! The transport under every outbound request: one HTTP/1.1 client per
//! process that keeps connections open and reuses them.
//!
//! wasmtime-wasi-http's default sender opens (and, for HTTPS, handshakes) a
//! new connection for every request and closes it after. [`HttpClient`] keeps
//! idle connections per `(scheme, host:port)` instead: a request takes an idle
//! one if there is one, else connects; once the response body has been read
//! to its end, the connection goes back to the idle list. A connection is
//! dropped when the server closes it, when it has been idle longer than
//! [`IDLE_TIMEOUT`] (a task closes those every 10 s, also while nothing is
//! sent), when the list for its host is full, or when a response is
//! not read to its end (the guest dropped the body, the attempt timed out).
//! If a server closes an idle connection just as a request is taken out, a
//! request not yet written goes out on another connection; one already
//! written fails like any broken connection (the step's retry policy decides).
//!
//! Connections carry no per-step state: the policy in [`super::http`]
//! (allowlist, `traceparent`, limits) has already been applied to each request
//! before it gets here, so sharing them across steps and runs is safe.
//!
//! The guest's `request-options` are honoured: the connect timeout bounds
//! connecting (TCP and TLS) and the handshake, the first-byte timeout bounds the wait for the
//! response head, the between-bytes timeout each wait for more of its body.

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// An idle connection older than this is closed instead of reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most idle connections kept per `(scheme, host:port)`.
pub const MAX_IDLE_PER_HOST: usize = 256;
/// Timeouts when the guest sets none (wasmtime-wasi-http's defaults).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    https: bool,
    /// `host:port`, the port always present.
    authority: String,
}

struct Idle {
    sender: SendRequest<WasiBody>,
    since: Instant,
}

impl Idle {
    /// Closed by the server, or idle past [`IDLE_TIMEOUT`]: not to be reused.
    fn expired(&self) -> bool {
        self.sender.is_closed() || self.since.elapsed() >= IDLE_TIMEOUT
    }
}

/// A pooled HTTP/1.1 (and HTTPS) client; cheap to share behind an `Arc`.
pub struct HttpClient {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    /// Whether the task that closes expired idle connections runs.
    reaping: std::sync::atomic::AtomicBool,
    tls: tokio_rustls::TlsConnector,
    opened: AtomicU64,
    reused: AtomicU64,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("opened", &self.connections_opened())
            .field("reused", &self.requests_reused())
            .finish()
    }
}

/// A response whose body ends with the connection going back to the pool.
pub type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl HttpClient {
    /// A client trusting the Mozilla root certificates (webpki-roots), as
    /// wasmtime-wasi-http's own sender does.
    pub fn new() -> Result<Self, String> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = crate::tls::client_config(roots)?;
        Ok(HttpClient {
            idle: Mutex::new(HashMap::new()),
            reaping: std::sync::atomic::AtomicBool::new(false),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            opened: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        })
    }

    /// Connections opened since the client was made.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Requests sent on a connection an earlier request had opened.
    pub fn requests_reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Sends `request` (an absolute URI; a `Host` header already set) on an
    /// idle connection to its host, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<Sent, Error> {
        let uri = request.uri();
        let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let key = PoolKey {
            https,
            authority: match authority.port() {
                Some(_) => authority.to_string(),
                None => format!("{authority}:{}", if https { 443 } else { 80 }),
            },
        };
        let option = |pick: fn(&RequestOptions) -> Option<Duration>| {
            options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
        };
        let connect_timeout = option(|o| o.connect_timeout);
        let first_byte_timeout = option(|o| o.first_byte_timeout);
        let between_bytes_timeout = option(|o| o.between_bytes_timeout).max(Duration::new(0, 1));
        // On the wire the request line carries only the path (no proxy here).
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;

        let response = loop {
            let (mut sender, reused) = match self.take_idle(&key) {
                Some(sender) => (sender, true),
                None => (self.connect(&key, connect_timeout).await?, false),
            };
            let sent = tokio::time::timeout(first_byte_timeout, sender.try_send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => {
                    if reused {
                        self.reused.fetch_add(1, Ordering::Relaxed);
                    }
                    self.release_when_ready(key, sender);
                    break response;
                }
                // An idle connection the server had just closed: the request
                // was not sent, so it can go out on another one.
                Err(mut e) if reused && e.message().is_some() => match e.take_message() {
                    Some(r) => request = r,
                    None => return Err(e.into_error().into()),
                },
                Err(e) => {
                    let e = e.into_error();
                    return Err(if e.is_timeout() {
                        Error::HttpResponseTimeout
                    } else {
                        e.into()
                    });
                }
            }
        };
        let response = response.map(|incoming| {
            TimedBody {
                incoming,
                between_bytes: between_bytes_timeout,
                timer: Box::pin(tokio::time::sleep(between_bytes_timeout)),
            }
            .boxed_unsync()
        });
        Ok((response, Box::new(async { Ok(()) })))
    }

    /// An idle, open, recent connection to `key`, if any; stale ones are dropped.
    fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<WasiBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(c) = list.pop() {
            if !c.expired() && c.sender.is_ready() {
                return Some(c.sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        key: &PoolKey,
        timeout: Duration,
    ) -> Result<SendRequest<WasiBody>, Error> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&key.authority)
                .await
                .map_err(Error::Connect)?;
            let _ = tcp.set_nodelay(true);
            if key.https {
                let host = key
                    .authority
                    .rsplit_once(':')
                    .map_or(key.authority.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(Error::InvalidDnsNameError)?;
                let tls = self.tls.connect(name, tcp).await.map_err(Error::Tls)?;
                handshake(tls).await
            } else {
                handshake(tcp).await
            }
        };
        let sender = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// Puts the connection back once it can take another request (its
    /// response body read to the end); a connection that closes first, or
    /// whose body is dropped unread, is simply gone.
    fn release_when_ready(self: &Arc<Self>, key: PoolKey, mut sender: SendRequest<WasiBody>) {
        self.reap_expired();
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(key).or_default();
            list.retain(|c| !c.expired());
            if list.len() < MAX_IDLE_PER_HOST {
                list.push(Idle {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    /// Starts (once) the task that closes idle connections past
    /// [`IDLE_TIMEOUT`] every third of it, so a host that goes quiet after
    /// a burst lets them go (and the memory they hold) instead of keeping
    /// them until the next request to their host. Ends with the client.
    fn reap_expired(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 3).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
                for list in idle.values_mut() {
                    list.retain(|c| !c.expired());
                    list.shrink_to_fit();
                }
                idle.retain(|_, list| !list.is_empty());
            }
        });
    }
}

/// HTTP/1.1 handshake on `io`; the connection is driven by a task of its own
/// that ends when the connection closes.
async fn handshake<T>(io: T) -> Result<SendRequest<WasiBody>, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("outbound connection ended: {e}");
        }
    });
    Ok(sender)
}

/// A response body that fails with `ConnectionReadTimeout` when more than the
/// between-bytes timeout passes without a frame.
struct TimedBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                e.into()
            }))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive HTTP/1.1 server on 127.0.0.1 that counts the connections
    /// it accepts and answers every request with `body`; with `close`, it
    /// closes each connection after one answer.
    async fn server(close: bool, body: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf
                            .windows(4)
                            .position(|w| w == b"\r\n\r\n")
                            .map_or(0, |p| p + 4);
                        buf.drain(..end);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{body}",
                            body.len(),
                            if close { "connection: close\r\n" } else { "" }
                        );
                        if conn.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: std::net::SocketAddr) -> http::Request<WasiBody> {
        http::Request::get(format!("http://{addr}/x"))
            .header(http::header::HOST, addr.to_string())
            .body(
                http_body_util::Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .expect("request")
    }

    async fn read_body(sent: Sent) -> (u16, String) {
        let (response, _) = sent;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until the released connection is back in the idle list.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_is_read() {
        let (addr, accepted) = server(false, "ok").await;
        let client = Arc::new(HttpClient::new().expect("client"));
        for _ in 0..5 {
            let sent = client.send(get(addr), None).await.expect("send");
            assert_eq!(read_body(sent).await, (200, "ok".to_string()));
            settle().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(client.connections_opened(), 1);
        assert_eq!(client.requests_reused(), 4);
    }

    #[tokio::test]
    async fn an_unread_response_is_not_reused_and_a_closed_connection_is_replaced() {
        static BIG: std::sync::LazyLock<&'static str> =
            std::sync::LazyLock::new(|| "x".repeat(4 << 20).leak());
        let (addr, accepted) = server(false, *BIG).await;
        let client = Arc::new(HttpClient::new().expect("client"));
        // A 4 MiB body dropped unread: that connection must not serve again.
        drop(client.send(get(addr), None).await.expect("send"));
        settle().await;
        let sent = client.send(get(addr), None).await.expect("send");
        let (status, body) = read_body(sent).await;
        assert_eq!((status, body.len()), (200, 4 << 20));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(client.requests_reused(), 0);

        // A server that closes after each answer: every request still succeeds.
        let (addr, accepted) = server(true, "ok").await;
        for _ in 0..3 {
            let sent = client.send(get(addr), None).await.expect("send");
            assert_eq!(read_body(sent).await, (200, "ok".to_string()));
            settle().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_slow_first_byte_times_out_with_a_typed_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts, reads, never answers.
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let client = Arc::new(HttpClient::new().expect("client"));
        let options = RequestOptions {
            first_byte_timeout: Some(Duration::from_millis(100)),
            ..RequestOptions::default()
        };
        let err = client
            .send(get(addr), Some(options))
            .await
            .err()
            .expect("a timeout");
        assert!(matches!(err, Error::ConnectionReadTimeout), "{err:?}");
    }
}
