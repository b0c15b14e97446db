//! The connection loop of `braid serve`: accepts TCP connections and serves
//! each with hyper's HTTP/1.1 server, closing a connection that sends no
//! complete request head for `idle_timeout` (before its first request, or
//! idle between keep-alive requests, or a client dribbling its headers),
//! and a new one that has not sent its first complete head within the
//! shorter `first_request` timeout.
//! `axum::serve` has no such timeout; this is the same loop with hyper's
//! own `header_read_timeout`, which (in the hyper this builds with, 1.12)
//! also runs while a keep-alive connection waits for its next request: the
//! test `idle_and_slow_connections_are_closed_after_the_idle_timeout` holds
//! it to that. The loop never stops accepting: past `max_connections` open
//! (or `max_per_peer` from one address) a new connection takes the place of
//! the longest-idle one ([`super::conns`]), so idle sockets cannot starve
//! the server of connections, memory or file descriptors.

use super::conns::{Conns, Registered};
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a connection may go without a complete request head.
pub(super) struct Timeouts {
    /// Before any head, between keep-alive requests, or dribbling one.
    pub idle: Duration,
    /// From the connection's opening to its first complete head.
    pub first_request: Duration,
}

/// Serves `router` on `listener` until `stop`, within the connection
/// bounds of `conns`; then stops accepting, lets each open connection
/// finish the request it is in, and returns once all are closed.
pub(super) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    timeouts: Timeouts,
    conns: Arc<Conns>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.idle)
        .keep_alive(true);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: wait, do not spin.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let Some(registered) = conns.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: every connection in its way is busy");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let registered = Arc::new(registered);
        let close = registered.close.clone();
        let service = serve_marking_busy(router.clone(), Arc::clone(&registered));
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        let first_request = timeouts.first_request;
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!("connection ended: {e}");
                },
                // Closed to make room: it was idle, no request is lost.
                () = close.cancelled() => {}
                () = silent_for(&registered, first_request) => {
                    tracing::debug!(%peer, "connection closed: no request head within {first_request:?}");
                }
            }
            drop(registered);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Returns once `conn` has gone `timeout` since it opened without a
/// complete request head; never, once it has had one.
async fn silent_for(conn: &Registered, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    if conn.has_had_a_request() {
        std::future::pending::<()>().await;
    }
}

/// `router`, with each request marked in progress on its connection from
/// its head until its answer's body has been sent (or dropped).
fn serve_marking_busy(
    router: Router,
    conn: Arc<Registered>,
) -> impl tower::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |request: http::Request<Incoming>| {
        let busy = conn.busy();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_progress = &busy;
                    frame
                }))
            }))
        }
    })
}
