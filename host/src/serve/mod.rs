//! `braid serve`: the HTTP front door (axum).
//!
//! Owns: the HTTP API (see docs/serving.md), `Idempotency-Key` handling,
//! stored run reports, metrics, and graceful shutdown. Runs go through the
//! same [`Scheduler`](crate::scheduler::Scheduler) as `braid run`, journaled, with the caller's
//! `traceparent`/`tracestate` continued per W3C Trace Context (parsed by
//! braid's strict parser; an invalid or absent header starts a new trace).
//!
//! Shutdown: on [`Server::shutdown`] (SIGTERM or ctrl-c in the CLI) the
//! server stops accepting connections and new runs get 503; runs in flight
//! have `grace` to finish, then are aborted through the normal failure path
//! (steps cancelled, completed steps undone, claims released, journaled).//!
//! Rooms: this file holds the [`Server`] (routes, start, shutdown) and the
//! read-only endpoints; `runs` starting runs (`Idempotency-Key`, answers,
//! stored reports); `admin` the component upload and rollback endpoints.
//!
//! Must not know wasmtime (runs go through the scheduler, components
//! through the registry).

mod admin;
mod admission;
mod conns;
mod dag;
mod listen;
pub mod live;
mod origin;
mod pages;
mod runs;
mod waterfall;

use crate::journal::{LocalRuns, ReportCursor, ReportQuery, ReportSummary, RunJournal};
use crate::metrics::Metrics;
use crate::registry::{Live, Served, component_name};
use crate::sandbox::Sandbox;
use crate::trace::TraceId;
use admin::{rollback_component, upload_component};
pub use admission::{
    Admission, DEFAULT_ADMISSION_WAIT, DEFAULT_MAX_RUNS_IN_FLIGHT, DEFAULT_MAX_RUNS_WAITING,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
pub use origin::Audience;
use runs::start_run;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("two workflows are named `{0}` ({1} and {2})")]
    DuplicateWorkflow(String, PathBuf, PathBuf),
    #[error("no workflows to serve")]
    NoWorkflows,
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What the server needs.
pub struct ServeConfig {
    pub workflows: Vec<Served>,
    pub journal: Arc<dyn RunJournal>,
    /// The runs executing on this host (its schedulers' and recovery's):
    /// how a cancel reaches a run here.
    pub local: LocalRuns,
    pub sandbox: Arc<Sandbox>,
    /// Where component versions are kept (`<state-dir>/component-history`).
    pub state_dir: PathBuf,
    /// Bearer token for `PUT /v1/components/..` and rollback; `None`
    /// disables both.
    pub admin_token: Option<String>,
    /// Poll the component files this often and install changed ones.
    pub watch: Option<Duration>,
    /// Largest accepted component upload.
    pub max_component_bytes: usize,
    /// Where finished runs are exported as OTLP spans, if anywhere.
    pub otel: Option<crate::otel::OtlpExport>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long runs in flight may take to finish after shutdown begins.
    pub grace: Duration,
    /// Most runs in flight at once on this server, and per workflow: a run
    /// past either is refused at once (`503`, `Retry-After`), not queued.
    pub admission: Admission,
    /// A connection that sends no complete request head for this long (idle
    /// between keep-alive requests, or dribbling its headers) is closed.
    pub idle_timeout: Duration,
    /// A new connection whose first request head is not complete this long
    /// after it opened is closed (at most `idle_timeout`).
    pub first_request_timeout: Duration,
    /// Most connections open at once, and from one address: past either,
    /// a new connection takes the place of the longest-idle one.
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    /// Where the run viewer links a trace to in the user's tracing backend.
    pub trace_url: Option<TraceUrl>,
    /// The names the server answers to and the origins it serves.
    pub audience: Audience,
}

/// A trace's page in the user's tracing backend (Jaeger, Tempo, Phoenix,
/// ...): an `http(s)` URL with `{trace_id}` where the trace id goes, e.g.
/// `http://localhost:16686/trace/{trace_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceUrl(String);

impl TraceUrl {
    /// The URL of trace `trace_id`.
    pub fn of(&self, trace_id: &str) -> String {
        self.0.replace("{trace_id}", trace_id)
    }
}

impl std::str::FromStr for TraceUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !(s.starts_with("http://") || s.starts_with("https://")) {
            return Err(format!(
                "`{s}` is not an http:// or https:// URL (e.g. http://localhost:16686/trace/{{trace_id}})"
            ));
        }
        if !s.contains("{trace_id}") {
            return Err(format!(
                "`{s}` has no `{{trace_id}}` where the trace id goes (e.g. http://localhost:16686/trace/{{trace_id}})"
            ));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
        {
            return Err(format!("`{s}` has spaces, quotes or control characters"));
        }
        Ok(TraceUrl(s.to_string()))
    }
}

/// Default [`ServeConfig::idle_timeout`]: the time a connection has to send
/// a complete request head (its first, or its next on keep-alive). Short,
/// so silent sockets go soon; behind a load balancer that keeps idle
/// connections to its backends longer, raise it above the balancer's
/// (docs/serving.md).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`ServeConfig::first_request_timeout`]: a client that opened a
/// connection to send a request sends its head at once; 3 s leaves room
/// for a slow network, and closes a silent socket in a third of the time
/// a keep-alive one is kept.
pub const DEFAULT_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Default [`ServeConfig::max_connections`]: well above the 1,000 clients
/// `braid bench --mode serve` keeps connected, well below the usual
/// 20,000-descriptor limit; an idle HTTP/1.1 connection holds a few KB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default [`ServeConfig::max_connections_per_peer`]: above the 1,000
/// clients of `braid bench --mode serve` (all from one address), a quarter
/// of [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 1024;

/// An answer kept for an `Idempotency-Key`: (HTTP status, body).
type StoredAnswer = (u16, Value);
/// (workflow, `Idempotency-Key`).
type IdempotencyKey = (String, String);

struct Inner {
    live: Arc<Live>,
    journal: Arc<dyn RunJournal>,
    local: LocalRuns,
    max_body_bytes: usize,
    max_component_bytes: usize,
    admin_token: Option<String>,
    otel: Option<crate::otel::OtlpExport>,
    metrics: Metrics,
    /// Runs started under an `Idempotency-Key` and not yet remembered in the
    /// journal: a repeat waits for the first run instead of starting another.
    pending: Mutex<HashMap<IdempotencyKey, Arc<OnceCell<StoredAnswer>>>>,
    draining: AtomicBool,
    /// Fires when the grace period is over: runs still going are aborted.
    abort: CancellationToken,
    runs: TaskTracker,
    /// Runs in flight: one place each, server-wide and per workflow.
    gate: admission::Gate,
    /// Runs in flight here, with their current steps (the viewer's).
    in_flight: Arc<live::RunsInFlight>,
    /// Uploads being received at once (`admin::MAX_UPLOADS_AT_ONCE`).
    uploads: tokio::sync::Semaphore,
    /// Fires when shutdown begins: pages' event streams end.
    closing: CancellationToken,
    trace_url: Option<TraceUrl>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    /// Passes cancel requests made on other hosts to runs here.
    cancels: tokio::task::JoinHandle<()>,
    stop_accepting: CancellationToken,
    grace: Duration,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

/// A JSON error body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// A `405` gets the JSON error body every other bad request gets (the
/// router then adds its `Allow` header, the methods the endpoint takes).
async fn json_method_not_allowed(response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint (its Allow header lists the ones it takes); see docs/serving.md",
    )
}

impl Server {
    /// Binds `listen` and starts serving.
    pub async fn start(listen: SocketAddr, config: ServeConfig) -> Result<Server, ServeError> {
        let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
        for served in &config.workflows {
            let name = served.workflow.name.clone();
            if let Some(other) = sources.get(&name) {
                return Err(ServeError::DuplicateWorkflow(
                    name,
                    other.clone(),
                    served.workflow.source.clone(),
                ));
            }
            sources.insert(name, served.workflow.source.clone());
        }
        if sources.is_empty() {
            return Err(ServeError::NoWorkflows);
        }
        let gate = admission::Gate::new(config.admission, sources.keys());
        // Every run's steps are shown as they start and end (a swapped
        // version keeps its scheduler's sinks).
        let in_flight = Arc::new(live::RunsInFlight::default());
        let mut workflows = config.workflows;
        for served in &mut workflows {
            let sink: Arc<dyn crate::report::AttemptSink> = in_flight.clone();
            served.scheduler = served.scheduler.clone().with_attempt_sink(sink);
        }
        let live = Arc::new(Live::new(config.sandbox, workflows, &config.state_dir));
        let stop_accepting = CancellationToken::new();
        let inner = Arc::new(Inner {
            live: Arc::clone(&live),
            journal: config.journal,
            local: config.local,
            max_body_bytes: config.max_body_bytes,
            max_component_bytes: config.max_component_bytes,
            admin_token: config.admin_token,
            otel: config.otel,
            metrics: Metrics::new(),
            pending: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            abort: CancellationToken::new(),
            runs: TaskTracker::new(),
            gate,
            in_flight,
            uploads: tokio::sync::Semaphore::new(admin::MAX_UPLOADS_AT_ONCE),
            closing: stop_accepting.clone(),
            trace_url: config.trace_url,
        });
        let router = Router::new()
            .route("/v1/workflows", get(list_workflows))
            .route("/v1/workflows/{name}/runs", post(start_run))
            .route("/v1/runs", get(list_runs))
            .route("/v1/runs/{id}", get(runs::get_run))
            .route("/v1/runs/{id}/cancel", post(runs::cancel_run))
            .route("/v1/runs/{id}/resume", post(runs::resume_run))
            .route("/v1/runs/{id}/abort", post(runs::abort_run))
            .route("/v1/runs/{id}/restart", post(runs::restart_run))
            .route("/v1/runs/{id}/signals/{name}", post(runs::send_signal))
            .route("/v1/components", get(list_components))
            .route("/v1/components/{name}", put(upload_component))
            .route("/v1/components/{name}/rollback", post(rollback_component))
            .route(
                "/ui",
                get(|| async { axum::response::Redirect::to("/ui/runs") }),
            )
            .route("/ui/runs", get(pages::runs_page))
            .route("/ui/runs/{id}", get(pages::run_page))
            .route("/ui/traces/{trace_id}", get(pages::trace_page))
            .route("/ui/events", get(pages::events))
            .route("/ui/workflows", get(pages::workflows_page))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "no such endpoint; see docs/serving.md",
                )
            })
            .layer(axum::middleware::map_response(json_method_not_allowed))
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(config.audience),
                origin::guard,
            ))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| ServeError::Listen(listen, e))?;
        let addr = listener.local_addr()?;
        if let Some(interval) = config.watch {
            live.watch(interval, stop_accepting.clone());
        }
        let cancels = tokio::spawn(runs::pass_on_cancels(Arc::clone(&inner)));
        let stop = stop_accepting.clone();
        let task = tokio::spawn(listen::serve_connections(
            listener,
            router,
            listen::Timeouts {
                idle: config.idle_timeout,
                first_request: config.first_request_timeout,
            },
            conns::Conns::new(config.max_connections, config.max_connections_per_peer),
            stop,
        ));
        Ok(Server {
            addr,
            inner,
            cancels,
            stop_accepting,
            grace: config.grace,
            task,
        })
    }

    /// The components each served workflow runs now (hot swaps included):
    /// what a suspended run an operator resumes goes on with.
    pub fn live_components(&self) -> crate::recovery::LiveComponents {
        let inner = Arc::clone(&self.inner);
        Arc::new(move |workflow| {
            let served = inner.live.workflow(workflow)?;
            Some(Arc::clone(served.scheduler.executor()))
        })
    }

    /// What the server does with a run recovery resumed here (it ran
    /// outside any request): counts it in `/metrics` and exports its spans,
    /// as for the server's own runs. Its report is already stored.
    pub fn resumed_hook(&self) -> crate::recovery::ResumedHook {
        let inner = Arc::clone(&self.inner);
        Arc::new(move |report| {
            inner.metrics.run_started();
            if crate::journal::is_parked(&report.outcome) {
                inner.metrics.run_parked(&report.workflow);
                return;
            }
            inner.metrics.run_finished(report);
            if let Some(otel) = &inner.otel {
                otel.export(report);
            }
        })
    }

    /// Stops accepting, gives runs in flight the grace period, aborts the
    /// rest through the failure path, and returns once every response is out.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.stop_accepting.cancel();
        self.inner.runs.close();
        let in_flight = self.inner.runs.len();
        tracing::warn!(
            in_flight,
            grace_ms = self.grace.as_millis() as u64,
            "shutting down: no new runs; waiting for runs in flight"
        );
        if tokio::time::timeout(self.grace, self.inner.runs.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.inner.runs.len(),
                "grace period over: aborting the runs still going"
            );
            self.inner.abort.cancel();
            self.inner.runs.wait().await;
        }
        self.cancels.abort();
        let served = self
            .task
            .await
            .map_err(|e| ServeError::Io(std::io::Error::other(e)))?;
        if let Some(otel) = &self.inner.otel {
            otel.shutdown(Duration::from_secs(10)).await;
        }
        served?;
        Ok(())
    }
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Ready unless shutting down or the run journal does not answer (runs
/// could not start: a load balancer should send them elsewhere).
async fn ready(State(app): State<Arc<Inner>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    match app.journal.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn metrics(State(app): State<Arc<Inner>>) -> Response {
    match app.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")),
    }
}

async fn list_workflows(State(app): State<Arc<Inner>>) -> Response {
    let list: Vec<Value> = app
        .live
        .workflows()
        .iter()
        .map(|s| {
            let wf = &s.workflow;
            json!({
                "name": wf.name,
                "description": wf.description,
                "source": wf.source,
                "inputs": wf.inputs.iter().map(|(name, spec)| json!({
                    "name": name,
                    "description": spec.description,
                    "required": spec.default.is_none(),
                    "default": spec.default,
                })).collect::<Vec<_>>(),
                "result": wf.result,
                "composes": wf.composed.keys().collect::<Vec<_>>(),
                "steps": wf.steps.iter().filter(|s| s.kind == crate::workflow::StepKind::Call).map(|step| {
                    let info = s.components.get(&step.name);
                    json!({
                        "name": step.name,
                        "component": component_name(&step.component),
                        "component_sha256": info.map(|i| i.sha256.as_str()),
                        "world": info.map(|i| i.world),
                    })
                }).collect::<Vec<_>>(),
                "runs": format!("/v1/workflows/{}/runs", wf.name),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

async fn list_components(State(app): State<Arc<Inner>>) -> Response {
    // One entry per component, with the steps using it and every version
    // (oldest first; the last is live).
    let mut by_name: BTreeMap<String, (PathBuf, String, &'static str, Vec<String>)> =
        BTreeMap::new();
    for served in app.live.workflows() {
        for (step, info) in &served.components {
            by_name
                .entry(info.name.clone())
                .or_insert_with(|| {
                    (
                        info.path.clone(),
                        info.sha256.clone(),
                        info.world,
                        Vec::new(),
                    )
                })
                .3
                .push(format!("{}/{step}", served.workflow.name));
        }
    }
    let versions = app.live.versions();
    let list: Vec<Value> = by_name
        .into_iter()
        .map(|(name, (path, sha256, world, used_by))| {
            json!({
                "name": name,
                "path": path,
                "sha256": sha256,
                "world": world,
                "used_by": used_by,
                "versions": versions.get(&name),
            })
        })
        .collect();
    axum::Json(list).into_response()
}

/// The filters of `GET /v1/runs` and the viewer's run list.
#[derive(serde::Deserialize, serde::Serialize, Default)]
pub(super) struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    trace_id: Option<String>,
    /// The page after this cursor (`<started_at_ms>-<run_id>`).
    after: Option<String>,
    limit: Option<usize>,
}

/// Most reports one listing returns (`limit`), and its default.
const MAX_RUNS_LISTED: usize = 1000;
const DEFAULT_RUNS_LISTED: usize = 100;

impl RunsQuery {
    /// The journal query, or a message naming the bad parameter. Empty
    /// parameters (an HTML form's "any") are no filter; a trace id may
    /// come in upper case or with spaces around it, as copied.
    pub(super) fn to_report_query(&self) -> Result<ReportQuery, String> {
        let given = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let trace_id = match given(&self.trace_id) {
            Some(t) => {
                let t = t.to_ascii_lowercase();
                TraceId::parse(&t).map_err(|e| format!("trace_id `{t}`: {e}"))?;
                Some(t)
            }
            None => None,
        };
        let after = match given(&self.after) {
            Some(a) => Some(
                a.parse::<ReportCursor>()
                    .map_err(|e| format!("after: {e}"))?,
            ),
            None => None,
        };
        Ok(ReportQuery {
            workflow: given(&self.workflow),
            outcome: given(&self.status),
            trace_id,
            after,
            limit: self
                .limit
                .unwrap_or(DEFAULT_RUNS_LISTED)
                .clamp(1, MAX_RUNS_LISTED),
        })
    }

    /// The URL query of the page after `page` (`None` past the end: a page
    /// shorter than its limit is the last).
    pub(super) fn next_page(query: &ReportQuery, page: &[ReportSummary]) -> Option<String> {
        let last = page.last().filter(|_| page.len() >= query.limit)?;
        let next = RunsQuery {
            workflow: query.workflow.clone(),
            status: query.outcome.clone(),
            trace_id: query.trace_id.clone(),
            after: Some(ReportCursor::after(last).to_string()),
            limit: Some(query.limit).filter(|l| *l != DEFAULT_RUNS_LISTED),
        };
        serde_urlencoded::to_string(&next).ok()
    }
}

/// `GET /v1/runs`: stored reports' summaries, newest first; a full page
/// has a `Link: <...>; rel="next"` header to the next one.
async fn list_runs(State(app): State<Arc<Inner>>, Query(q): Query<RunsQuery>) -> Response {
    let query = match q.to_report_query() {
        Ok(query) => query,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    // Runs without a report yet: from the journal's records.
    let unfinished = match query.outcome.as_deref() {
        // Both are parked: one listing, filtered by status below.
        Some("waiting" | "suspended") => Some(app.journal.waiting_runs(query.limit).await),
        Some("running") => Some(app.journal.running_runs(query.limit).await),
        _ => None,
    };
    if let Some(found) = unfinished {
        return match found {
            Ok(runs) => {
                let runs: Vec<_> = runs
                    .into_iter()
                    .filter(|r| query.workflow.as_ref().is_none_or(|w| *w == r.workflow))
                    .filter(|r| query.trace_id.as_ref().is_none_or(|t| *t == r.trace_id))
                    .filter(|r| query.outcome.as_ref().is_none_or(|s| *s == r.status))
                    .collect();
                axum::Json(runs).into_response()
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
    }
    match app.journal.recent_reports(query.clone()).await {
        Ok(list) => {
            let next = RunsQuery::next_page(&query, &list);
            let mut response = axum::Json(list).into_response();
            if let Some(params) = next
                && let Ok(link) =
                    header::HeaderValue::from_str(&format!("</v1/runs?{params}>; rel=\"next\""))
            {
                response.headers_mut().insert(header::LINK, link);
            }
            response
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Reads a body of at most `limit` bytes, or answers 413 naming `what`.
pub(super) async fn read_body(
    body: Body,
    limit: usize,
    what: &str,
) -> Result<axum::body::Bytes, Box<Response>> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} larger than {limit} bytes"),
        ))
    })
}

pub(super) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Every field of header `name`, in the order received (a value that is not
/// visible ASCII kept as text, so it fails the check it is for instead of
/// vanishing).
pub(super) fn header_fields(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(run_id: &str, started_at_ms: u64) -> ReportSummary {
        ReportSummary {
            run_id: run_id.into(),
            workflow: "wf".into(),
            trace_id: String::new(),
            outcome: "succeeded".into(),
            degraded: false,
            started_at_ms,
            duration_ms: 1.0,
        }
    }

    #[test]
    fn a_runs_query_names_its_bad_parameter_and_a_full_page_links_the_next() {
        let q = |trace_id: &str, after: &str, limit: Option<usize>| RunsQuery {
            workflow: Some("wf a".into()),
            status: Some(String::new()),
            trace_id: Some(trace_id.into()),
            after: Some(after.into()),
            limit,
        };
        let query = q(" 4BF92F3577B34DA6A3CE929D0E0E4736 ", "", Some(2))
            .to_report_query()
            .expect("valid");
        assert_eq!(
            query.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            "copied in capitals, with spaces"
        );
        assert_eq!(query.outcome, None, "an empty filter is none");
        assert_eq!(query.after, None);
        let err = q("xyz", "", None).to_report_query().err();
        assert_eq!(
            err.as_deref(),
            Some("trace_id `xyz`: trace-id is not 32 lowercase hex digits")
        );
        let err = q("", "run-1", None).to_report_query().err();
        assert!(err.is_some_and(|e| e.starts_with("after: `run-1` is not a page cursor")));
        assert_eq!(q("", "", Some(0)).to_report_query().map(|q| q.limit), Ok(1));
        assert_eq!(
            q("", "", Some(5000)).to_report_query().map(|q| q.limit),
            Ok(MAX_RUNS_LISTED)
        );

        let page = [summary("run-b", 20), summary("run-a", 10)];
        assert_eq!(
            RunsQuery::next_page(&query, &page).as_deref(),
            Some("workflow=wf+a&trace_id=4bf92f3577b34da6a3ce929d0e0e4736&after=10-run-a&limit=2")
        );
        let next: RunsQuery =
            serde_urlencoded::from_str(&RunsQuery::next_page(&query, &page).expect("a next page"))
                .expect("parses back");
        let cursor = next.to_report_query().expect("valid").after;
        assert_eq!(cursor, Some("10-run-a".parse().expect("cursor")));
        assert_eq!(
            RunsQuery::next_page(&query, &page[..1]),
            None,
            "a short page is the last"
        );
    }

    #[test]
    fn a_trace_url_needs_http_and_the_trace_id_placeholder() {
        let url: TraceUrl = "http://localhost:16686/trace/{trace_id}"
            .parse()
            .expect("valid");
        assert_eq!(url.of("abc"), "http://localhost:16686/trace/abc");
        let no_scheme = "localhost:16686/trace/{trace_id}".parse::<TraceUrl>();
        assert!(no_scheme.is_err_and(|e| e.contains("not an http:// or https:// URL")));
        let no_slot = "http://localhost:16686/trace/".parse::<TraceUrl>();
        assert!(no_slot.is_err_and(|e| e.contains("has no `{trace_id}`")));
        let quoted = "http://x/{trace_id}\"><script>".parse::<TraceUrl>();
        assert!(quoted.is_err());
    }
}
