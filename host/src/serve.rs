//! `braid serve`: the HTTP front door (axum).
//!
//! Owns: the HTTP API (see docs/serving.md), `Idempotency-Key` handling,
//! stored run reports, metrics, and graceful shutdown. Runs go through the
//! same [`Scheduler`] as `braid run`, journaled, with the caller's
//! `traceparent`/`tracestate` continued per W3C Trace Context (parsed by
//! braid's strict parser; an invalid or absent header starts a new trace).
//!
//! Shutdown: on [`Server::shutdown`] (SIGTERM or ctrl-c in the CLI) the
//! server stops accepting connections and new runs get 503; runs in flight
//! have `grace` to finish, then are aborted through the normal failure path
//! (steps cancelled, completed steps undone, claims released, journaled).

use crate::journal::{ReportSummary, RunJournal};
use crate::metrics::Metrics;
use crate::registry::{Live, Served, SwapError, component_name};
use crate::report::RunReport;
use crate::sandbox::Sandbox;
use crate::scheduler::{RunError, RunRequest, new_run_id};
use crate::trace::IncomingTrace;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
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
}

/// An answer kept for an `Idempotency-Key`: (HTTP status, body).
type StoredAnswer = (u16, Value);
/// (workflow, `Idempotency-Key`).
type IdempotencyKey = (String, String);

struct Inner {
    live: Arc<Live>,
    journal: Arc<dyn RunJournal>,
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
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    stop_accepting: CancellationToken,
    grace: Duration,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

/// A JSON error body.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
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
        let live = Arc::new(Live::new(
            config.sandbox,
            config.workflows,
            &config.state_dir,
        ));
        let inner = Arc::new(Inner {
            live: Arc::clone(&live),
            journal: config.journal,
            max_body_bytes: config.max_body_bytes,
            max_component_bytes: config.max_component_bytes,
            admin_token: config.admin_token,
            otel: config.otel,
            metrics: Metrics::new(),
            pending: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            abort: CancellationToken::new(),
            runs: TaskTracker::new(),
        });
        let router = Router::new()
            .route("/v1/workflows", get(list_workflows))
            .route("/v1/workflows/{name}/runs", post(start_run))
            .route("/v1/runs", get(list_runs))
            .route("/v1/runs/{id}", get(get_run))
            .route("/v1/components", get(list_components))
            .route("/v1/components/{name}", put(upload_component))
            .route("/v1/components/{name}/rollback", post(rollback_component))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "no such endpoint; see docs/serving.md",
                )
            })
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| ServeError::Listen(listen, e))?;
        let addr = listener.local_addr()?;
        let stop_accepting = CancellationToken::new();
        if let Some(interval) = config.watch {
            live.watch(interval, stop_accepting.clone());
        }
        let stop = stop_accepting.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Ok(Server {
            addr,
            inner,
            stop_accepting,
            grace: config.grace,
            task,
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
                "steps": wf.steps.iter().map(|step| {
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

/// Checks `Authorization: Bearer <admin token>`.
/// The refusal, if the caller is not the admin.
fn refuse_unless_admin(app: &Inner, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &app.admin_token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "component changes over HTTP are disabled: start braid serve with --admin-token (or BRAID_ADMIN_TOKEN)",
        ));
    };
    let given = header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    // Compare without an early exit on the first differing byte.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (Authorization: Bearer ...)",
        ))
    }
}

fn swap_answer(result: Result<crate::registry::SwapOutcome, SwapError>) -> Response {
    match result {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(e) => {
            let status = match &e {
                SwapError::Unknown(..) => StatusCode::NOT_FOUND,
                SwapError::Ambiguous(..) | SwapError::NoPrevious(_) => StatusCode::CONFLICT,
                SwapError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        }
    }
}

async fn upload_component(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(denied) = refuse_unless_admin(&app, &headers) {
        return denied;
    }
    let bytes = match read_body(body, app.max_component_bytes, "component").await {
        Ok(b) => b.to_vec(),
        Err(too_large) => return *too_large,
    };
    swap_answer(app.live.install(&name, bytes, "upload", true).await)
}

async fn rollback_component(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = refuse_unless_admin(&app, &headers) {
        return denied;
    }
    swap_answer(app.live.rollback(&name).await)
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(State(app): State<Arc<Inner>>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    match app
        .journal
        .recent_reports(q.workflow, q.status, limit)
        .await
    {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn get_run(State(app): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    match app.journal.report(&id).await {
        Ok(Some(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no finished run `{id}`")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// What a run request answers (also what an idempotent repeat gets).
fn run_response(report: &RunReport) -> (u16, Value) {
    // `aborted`: this host lost the run's lease (its journal was out of
    // reach); the run is undone elsewhere and can be sent again.
    let status = match report.outcome.as_str() {
        "succeeded" => 200,
        "aborted" => 503,
        _ => 422,
    };
    let body = json!({
        "run_id": report.run_id,
        "workflow": report.workflow,
        "trace_id": report.trace_id,
        "traceparent": report.traceparent,
        "tracestate": report.tracestate,
        "outcome": report.outcome,
        "degraded": report.degraded,
        "result": report.result,
        "error": report.error,
        "duration_ms": report.duration_ms,
        "report": format!("/v1/runs/{}", report.run_id),
    });
    (status, body)
}

fn respond(status: u16, body: &Value, replayed: bool) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    let headers = response.headers_mut();
    for (name, field) in [
        ("traceparent", "traceparent"),
        ("tracestate", "tracestate"),
        ("braid-run-id", "run_id"),
    ] {
        if let Some(v) = body[field].as_str().filter(|v| !v.is_empty())
            && let Ok(v) = HeaderValue::from_str(v)
        {
            headers.insert(name, v);
        }
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Reads a body of at most `limit` bytes, or answers 413 naming `what`.
async fn read_body(
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

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn start_run(
    State(app): State<Arc<Inner>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down: not starting new runs",
        );
    }
    // The versions live now serve this run to its end, whatever is swapped meanwhile.
    let Some(served) = app.live.workflow(&name) else {
        let known = app.live.names();
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown workflow `{name}`; this server runs: {known:?}"),
        );
    };
    let bytes = match read_body(body, app.max_body_bytes, "request body").await {
        Ok(b) => b,
        Err(too_large) => return *too_large,
    };
    let input: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body must be a JSON object of run inputs, not {}",
                        kind_of(&other)
                    ),
                );
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON: {e}"),
                );
            }
        }
    };
    // Inputs are checked before anything runs or is remembered.
    if let Err(e) = served.workflow.bind_inputs(&input) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let trace = IncomingTrace::from_headers(
        header_str(&headers, "traceparent"),
        header_str(&headers, "tracestate"),
    );

    let Some(key) = header_str(&headers, "idempotency-key").map(str::to_string) else {
        return match execute(&app, &served, input, trace, new_run_id()).await {
            Ok((status, body)) => respond(status, &body, false),
            Err(resp) => resp,
        };
    };
    if key.is_empty() || key.len() > 255 {
        return error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 characters",
        );
    }
    let body_sha = hex::encode(Sha256::digest(&bytes));
    // A repeat of a key still running here shares its first request's
    // answer; otherwise the journal says who has the key (below).
    let cell = {
        let Ok(mut pending) = app.pending.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "idempotency table poisoned",
            );
        };
        Arc::clone(
            pending
                .entry((name.clone(), key.clone()))
                .or_insert_with(|| Arc::new(OnceCell::new())),
        )
    };
    let mut first = false;
    let outcome = cell
        .get_or_try_init(|| {
            first = true;
            async {
                // The key is reserved before the run starts, so a duplicate
                // reaching any host sharing the journal (at the same moment,
                // or later, also after a restart) waits for this run and
                // replays its answer instead of starting its own.
                let run_id = new_run_id();
                let taken = app
                    .journal
                    .reserve_idempotent(&name, &key, &body_sha, &run_id)
                    .await
                    .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
                if let Some((sha, other)) = taken {
                    if sha != body_sha {
                        return Err(different_body());
                    }
                    let (status, body) = answer_of(&app, &other).await?;
                    return Ok::<_, Response>((
                        status,
                        json!({ "body_sha256": sha, "response": body, "replayed": true }),
                    ));
                }
                let (status, body) = match execute(&app, &served, input, trace, run_id.clone())
                    .await
                {
                    Ok(answer) => answer,
                    // 503 from `execute`: the run was not started (its start
                    // could not be journaled). The key is given up again so
                    // the client's retry runs, if the journal answers now.
                    Err(refused) if refused.status() == StatusCode::SERVICE_UNAVAILABLE => {
                        match app.journal.release_idempotent(&name, &key, &run_id).await {
                            Ok(_) => {}
                            Err(e) => tracing::warn!(%run_id, "idempotency key `{key}` kept: {e}"),
                        }
                        return Err(refused);
                    }
                    Err(other) => return Err(other),
                };
                Ok::<_, Response>((status, json!({ "body_sha256": body_sha, "response": body })))
            }
        })
        .await;
    if first && let Ok(mut pending) = app.pending.lock() {
        pending.remove(&(name.clone(), key.clone()));
    }
    match outcome {
        Ok((status, stored)) => {
            if stored["body_sha256"] != body_sha.as_str() {
                return different_body();
            }
            respond(
                *status,
                &stored["response"],
                !first || stored["replayed"] == true,
            )
        }
        Err(resp) => resp,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn different_body() -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "this Idempotency-Key was used with a different body",
    )
}

/// How long a repeat of an `Idempotency-Key` waits for the first run's
/// answer (the run may be going on another host).
const IDEMPOTENT_WAIT: Duration = Duration::from_secs(600);
/// A reserved key whose run the journal still does not know after this
/// long: the host that reserved it stopped before starting the run.
const NEVER_STARTED: Duration = Duration::from_secs(30);
/// A finished run's report is stored just after its terminal record.
const REPORT_LAG: Duration = Duration::from_secs(5);

/// The answer of run `run_id` (of an `Idempotency-Key`), from its stored
/// report; waits while the run goes on, here or on another host.
async fn answer_of(app: &Inner, run_id: &str) -> Result<(u16, Value), Response> {
    let unavailable =
        |e: crate::journal::JournalError| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let conflict = |why: String| error(StatusCode::CONFLICT, why);
    let waiting_since = tokio::time::Instant::now();
    let mut finished_at = None;
    loop {
        if let Some(json) = app.journal.report(run_id).await.map_err(unavailable)? {
            return match serde_json::from_str::<RunReportView>(&json) {
                Ok(view) => Ok(run_response(&view.into_report())),
                Err(e) => Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("stored report of {run_id}: {e}"),
                )),
            };
        }
        let waited = waiting_since.elapsed();
        match app.journal.run(run_id).await.map_err(unavailable)? {
            Some(run) if run.status == "aborted" => {
                return Err(conflict(format!(
                    "run `{run_id}` of this Idempotency-Key was aborted: {}",
                    run.error.unwrap_or_default()
                )));
            }
            Some(run) if run.status != "running" => {
                let at = *finished_at.get_or_insert(waited);
                if waited > at + REPORT_LAG {
                    return Err(conflict(format!(
                        "run `{run_id}` of this Idempotency-Key ended `{}` without a stored report",
                        run.status
                    )));
                }
            }
            None if waited > NEVER_STARTED => {
                return Err(conflict(format!(
                    "run `{run_id}` of this Idempotency-Key never started (the host that took the key stopped)"
                )));
            }
            _ => {}
        }
        if waited > IDEMPOTENT_WAIT {
            return Err(conflict(format!(
                "run `{run_id}` of this Idempotency-Key is still running after {} s",
                IDEMPOTENT_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fields of a stored report that a run response needs.
#[derive(serde::Deserialize)]
struct RunReportView {
    run_id: String,
    workflow: String,
    trace_id: String,
    traceparent: String,
    tracestate: String,
    outcome: String,
    degraded: bool,
    error: Option<String>,
    result: Option<Value>,
    duration_ms: f64,
}

impl RunReportView {
    fn into_report(self) -> RunReport {
        RunReport {
            run_id: self.run_id,
            workflow: self.workflow,
            trace_id: self.trace_id,
            span_id: String::new(),
            parent_span_id: None,
            traceparent: self.traceparent,
            tracestate: self.tracestate,
            continued_trace: false,
            started_at_ms: 0,
            duration_ms: self.duration_ms,
            outcome: self.outcome,
            degraded: self.degraded,
            error: self.error,
            result: self.result,
            steps: Vec::new(),
            events: Vec::new(),
            http_calls: Vec::new(),
            undo: Vec::new(),
            released_claims: Vec::new(),
        }
    }
}

/// Runs one workflow run to the end (tracked for shutdown) and stores its report.
async fn execute(
    app: &Arc<Inner>,
    served: &Served,
    input: Value,
    trace: IncomingTrace,
    run_id: String,
) -> Result<(u16, Value), Response> {
    let request = RunRequest {
        workflow: Arc::clone(&served.workflow),
        input,
        trace,
    };
    app.metrics.run_started();
    // The run is tracked so shutdown can wait for it; if the client goes
    // away, the run still finishes (and is stored) on its own task.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let abort = app.abort.clone();
    let scheduler = served.scheduler.clone();
    let inner = Arc::clone(app);
    app.runs.spawn(async move {
        let result = scheduler.run_as(request, run_id, &abort).await;
        if let Ok(report) = &result {
            inner.metrics.run_finished(report);
            if let Some(otel) = &inner.otel {
                otel.export(report);
            }
            store_report(inner.journal.as_ref(), report).await;
        }
        let _ = tx.send(result);
    });
    match rx.await {
        Ok(Ok(report)) => Ok(run_response(&report)),
        Ok(Err(e @ RunError::Input(_))) => Err(error(StatusCode::BAD_REQUEST, e.to_string())),
        Ok(Err(e @ RunError::JournalUnavailable(_))) => {
            Err(error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Err(_) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run's task ended abnormally",
        )),
    }
}

async fn store_report(journal: &dyn RunJournal, report: &RunReport) {
    let json = match serde_json::to_string(report) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(run_id = %report.run_id, "cannot encode the run report: {e}");
            return;
        }
    };
    let summary = ReportSummary {
        run_id: report.run_id.clone(),
        workflow: report.workflow.clone(),
        trace_id: report.trace_id.clone(),
        outcome: report.outcome.clone(),
        started_at_ms: report.started_at_ms,
        duration_ms: report.duration_ms,
    };
    if let Err(e) = journal.save_report(summary, json).await {
        tracing::error!(run_id = %report.run_id, "cannot store the run report: {e}");
    }
}
