//! Which runs `braid serve` admits: at most `max_runs` in flight on the
//! server and `max_runs_per_workflow` of one workflow. A run past a bound
//! waits for a place, in arrival order, for at most `wait`, if fewer than
//! `max_waiting` wait already; otherwise it is refused (`503` with
//! `Retry-After`). The short wait is what keeps a server's goodput when its
//! clients resend at once on every `503` (a retry storm): a waiting client
//! sends nothing, where a refused one may come straight back.
//!
//! Must not know the routes or the scheduler.

use super::error;
use crate::metrics::Metrics;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounds on runs in flight a server admits, and on runs waiting.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub max_runs: usize,
    pub max_runs_per_workflow: usize,
    /// How long a run past a bound may wait for a place (zero: refused at once).
    pub wait: Duration,
    /// Most runs waiting at once; one more is refused at once.
    pub max_waiting: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_runs: DEFAULT_MAX_RUNS_IN_FLIGHT,
            max_runs_per_workflow: DEFAULT_MAX_RUNS_IN_FLIGHT,
            wait: DEFAULT_ADMISSION_WAIT,
            max_waiting: DEFAULT_MAX_RUNS_WAITING,
        }
    }
}

/// Default bound on runs in flight per server (and per workflow), from
/// `braid bench --mode serve` on the 2-core reference machine
/// (docs/PERFORMANCE.md): throughput does not grow past ~100 runs in
/// flight, so more only adds latency and memory. A run's latency under
/// overload is about the bound over the throughput: at twice the load it
/// can take, 128 answered every request within 0.7 s (runs or 503s) where
/// 256 let some wait 1.25 s on a slower day and 1,024 let runs wait 2 s,
/// with the same runs/s (also with the seed API latencies). Size it as
/// runs/s at capacity x run duration at capacity.
pub const DEFAULT_MAX_RUNS_IN_FLIGHT: usize = 128;

/// Default [`Admission::wait`]: as long as a refused run is told to wait
/// (`Retry-After`), so a client that resends at once costs the server one
/// refusal a second, not thousands.
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_secs(RETRY_AFTER_S);

/// Default [`Admission::max_waiting`]: the 1,000 clients of `braid bench
/// --mode serve --retry-storm` all fit; a waiting run holds its request
/// (a few KB) and no task of the scheduler.
pub const DEFAULT_MAX_RUNS_WAITING: usize = 1024;

/// What a refused run is told to wait before trying again.
const RETRY_AFTER_S: u64 = 1;

/// The places runs take, server-wide and per workflow.
pub(super) struct Gate {
    admission: Admission,
    server: Arc<Semaphore>,
    per_workflow: HashMap<String, Arc<Semaphore>>,
    waiting: AtomicUsize,
}

/// A run's place among the runs in flight; given back when dropped.
pub(super) struct Admitted {
    _server: OwnedSemaphorePermit,
    _workflow: Option<OwnedSemaphorePermit>,
}

/// One run counted among those waiting (and in `braid_runs_waiting`)
/// while it lives.
struct Waiting<'a>(&'a AtomicUsize, &'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.run_waiting(false);
    }
}

impl Gate {
    /// The gate of a server with `admission`'s bounds for `workflows`.
    pub(super) fn new<'a>(
        admission: Admission,
        workflows: impl Iterator<Item = &'a String>,
    ) -> Gate {
        let bound = admission.max_runs_per_workflow.max(1);
        Gate {
            admission,
            server: Arc::new(Semaphore::new(admission.max_runs.max(1))),
            per_workflow: workflows
                .map(|name| (name.clone(), Arc::new(Semaphore::new(bound))))
                .collect(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Admits one more run of `workflow` (at once, or once a place is free
    /// within [`Admission::wait`]), or says why not: a `503` with
    /// `Retry-After`, counted in `metrics`. The permits are held until the
    /// run ends.
    pub(super) async fn admit(
        &self,
        workflow: &str,
        metrics: &Metrics,
    ) -> Result<Admitted, Box<Response>> {
        let mine = self.per_workflow.get(workflow);
        // The common case: a place free on both bounds, nothing to wait for.
        if let Ok(server) = Arc::clone(&self.server).try_acquire_owned() {
            match mine.map(|m| Arc::clone(m).try_acquire_owned()) {
                None => return Ok(admitted(server, None)),
                Some(Ok(w)) => return Ok(admitted(server, Some(w))),
                Some(Err(_)) => drop(server),
            }
        }
        let refused = |what: String| {
            metrics.run_refused(workflow);
            Box::new(refusal(what))
        };
        let at_capacity = |of_workflow: bool| {
            if of_workflow {
                format!(
                    "workflow `{workflow}` at capacity: {} runs in flight (--max-runs-in-flight-per-workflow)",
                    self.admission.max_runs_per_workflow
                )
            } else {
                format!(
                    "server at capacity: {} runs in flight (--max-runs-in-flight)",
                    self.admission.max_runs
                )
            }
        };
        let Some(_waiting) = self.wait_in_line(metrics) else {
            let of_workflow = self.server.available_permits() > 0;
            return Err(refused(at_capacity(of_workflow)));
        };
        let deadline = tokio::time::Instant::now() + self.admission.wait;
        // Per workflow first: a run of a workflow at its bound does not
        // hold a server-wide place while it waits for its own.
        let workflow_place = match mine {
            Some(m) => match tokio::time::timeout_at(deadline, Arc::clone(m).acquire_owned()).await
            {
                Ok(Ok(p)) => Some(p),
                _ => return Err(refused(waited(at_capacity(true), self.admission.wait))),
            },
            None => None,
        };
        match tokio::time::timeout_at(deadline, Arc::clone(&self.server).acquire_owned()).await {
            Ok(Ok(server)) => Ok(admitted(server, workflow_place)),
            _ => Err(refused(waited(at_capacity(false), self.admission.wait))),
        }
    }

    /// A place among the runs waiting, if waiting is on and one is free.
    fn wait_in_line<'a>(&'a self, metrics: &'a Metrics) -> Option<Waiting<'a>> {
        if self.admission.wait.is_zero() {
            return None;
        }
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.admission.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        metrics.run_waiting(true);
        Some(Waiting(&self.waiting, metrics))
    }
}

fn admitted(server: OwnedSemaphorePermit, workflow: Option<OwnedSemaphorePermit>) -> Admitted {
    Admitted {
        _server: server,
        _workflow: workflow,
    }
}

fn waited(what: String, wait: Duration) -> String {
    format!(
        "{what}, and no place came free within {} ms",
        wait.as_millis()
    )
}

/// A `503` saying `what`, with `Retry-After`.
fn refusal(what: String) -> Response {
    let mut answer = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what}; try again later (Retry-After: {RETRY_AFTER_S} s)"),
    );
    answer.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(RETRY_AFTER_S),
    );
    answer
}
