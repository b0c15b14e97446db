//! The connection loop of `braid serve`: accepts TCP connections and serves
//! each with hyper's HTTP/1.1 server, closing a connection that sends no
//! complete request head for `idle_timeout` (idle between keep-alive
//! requests, or a client dribbling its headers), so connections nobody uses
//! do not hold the server's memory for ever. `axum::serve` has no such
//! timeout; this is the same loop with hyper's own `header_read_timeout`,
//! which (in the hyper this builds with, 1.12) also runs while a keep-alive
//! connection waits for its next request: the test
//! `idle_and_slow_connections_are_closed_after_the_idle_timeout` holds it
//! to that. At most `max_connections` are open at once: past that, the loop
//! stops accepting until one closes (new connections wait in the kernel's
//! accept queue), so connections cannot take the server's memory or file
//! descriptors either.

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `router` on `listener` until `stop`, at most `max_connections`
/// at once; then stops accepting, lets each open connection finish the
/// request it is in, and returns once all are closed.
pub(super) async fn serve_connections(
    listener: TcpListener,
    router: Router,
    idle_timeout: Duration,
    max_connections: usize,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .keep_alive(true);
    loop {
        let place = tokio::select! {
            place = Arc::clone(&open).acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break,
            },
            () = stop.cancelled() => break,
        };
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
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
