//! The connection loop of `braid serve`: accepts TCP connections and serves
//! each with hyper's HTTP/1.1 server, closing a connection that sends no
//! complete request head for `idle_timeout` (idle between keep-alive
//! requests, or a client dribbling its headers), so connections nobody uses
//! do not hold the server's memory for ever. `axum::serve` has no such
//! timeout; this is the same loop with hyper's own `header_read_timeout`,
//! which (in the hyper this builds with, 1.12) also runs while a keep-alive
//! connection waits for its next request: the test
//! `idle_and_slow_connections_are_closed_after_the_idle_timeout` holds it
//! to that.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `router` on `listener` until `stop`; then stops accepting, lets
/// each open connection finish the request it is in, and returns once all
/// are closed.
pub(super) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    idle_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .keep_alive(true);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: wait, do not spin.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = router
            .clone()
            .map_request(|req: http::Request<Incoming>| req.map(Body::new));
        let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
