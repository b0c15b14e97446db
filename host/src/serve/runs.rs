//! Starting runs over HTTP: `POST /v1/workflows/NAME/runs`, with the
//! caller's trace context continued, `Idempotency-Key` (one run per key,
//! across hosts), the answer a run gets, and its stored report.
//!
//! Must not know wasmtime.

use super::{Inner, error, header_fields, read_body};
use crate::registry::Served;
use crate::report::RunReport;
use crate::scheduler::{RunError, RunRequest, new_run_id};
use crate::trace::IncomingTrace;
use crate::workflow::OnCrash;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::OnceCell;

/// What a run request answers (also what an idempotent repeat gets).
fn run_response(report: &RunReport) -> (u16, Value) {
    // `aborted`: this host lost the run's lease (its journal was out of
    // reach) and the workflow says `on_crash = "undo"`; the run is undone
    // elsewhere and can be sent again.
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

pub(super) async fn start_run(
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
    // A body must say it is JSON (what a page's form or `fetch` cannot
    // send cross-origin without a preflight); no body needs no type.
    let typed = headers.contains_key(header::CONTENT_TYPE);
    if typed && let Err(refused) = super::origin::require_json(&headers) {
        return *refused;
    }
    let bytes = match read_body(body, app.max_body_bytes, "request body").await {
        Ok(b) => b,
        Err(too_large) => return *too_large,
    };
    if !typed
        && !bytes.is_empty()
        && let Err(refused) = super::origin::require_json(&headers)
    {
        return *refused;
    }
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
    let trace = IncomingTrace::from_fields(
        &header_fields(&headers, "traceparent"),
        &header_fields(&headers, "tracestate"),
    );

    if headers.get_all("idempotency-key").iter().count() > 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key sent more than once: send one key",
        );
    }
    let Some(raw_key) = headers.get("idempotency-key") else {
        return match execute(&app, &served, input, trace, new_run_id()).await {
            Ok((status, body)) => respond(status, &body, false),
            Err(resp) => resp,
        };
    };
    // Refused, never ignored: a key that was ignored would run twice.
    let key = match raw_key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 => k.to_string(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Idempotency-Key must be 1 to 255 visible ASCII characters (letters, digits, punctuation, spaces)",
            );
        }
    };
    // The key binds the body's JSON value, not its bytes: the same input
    // reformatted (white space, key order) is the same request. A key
    // reserved by an older braid holds the sha256 of the raw bytes; both
    // count as the same body.
    let body_sha = hex::encode(Sha256::digest(input.to_string().as_bytes()));
    let raw_sha = hex::encode(Sha256::digest(&bytes));
    let same_body = |sha: &str| sha == body_sha || sha == raw_sha;
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
                    if !same_body(&sha) {
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
            if !stored["body_sha256"].as_str().is_some_and(same_body) {
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
/// A finished run's report is stored with its terminal record. An ended run
/// without one was journaled by an older braid, which stored the report
/// just after; it may take this long to appear.
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
                // Its report says so since recovery stores one; the key
                // cannot run again, and a 503 would invite a retry with it.
                Ok(view) if view.outcome == "aborted" => Err(conflict(format!(
                    "run `{run_id}` of this Idempotency-Key was aborted: {}",
                    view.error.unwrap_or_default()
                ))),
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
            dropped: crate::report::Dropped::default(),
            resumed: None,
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
    // Past the bounds on runs in flight: a short wait, then refused (503,
    // Retry-After; see `admission`);
    // a key reserved for this run is given up again by the caller.
    let admitted = app
        .gate
        .admit(&served.workflow.name, &app.metrics)
        .await
        .map_err(|refused| *refused)?;
    app.metrics.run_started();
    // The run is tracked so shutdown can wait for it; if the client goes
    // away, the run still finishes (and is stored) on its own task.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let abort = app.abort.clone();
    let scheduler = served.scheduler.clone();
    let inner = Arc::clone(app);
    let in_flight = app.in_flight.started(
        &run_id,
        &served.workflow.name,
        &request.trace.parent.trace_id.to_string(),
    );
    app.runs.spawn(async move {
        let _admitted = admitted;
        let result = scheduler.run_as(request, run_id, &abort).await;
        match &result {
            Ok(report) => in_flight.ended(&report.outcome, report.degraded, report.duration_ms),
            Err(_) => in_flight.refused(),
        }
        if let Ok(report) = &result {
            inner.metrics.run_finished(report);
            // Its report was stored with its terminal record.
            if let Some(otel) = &inner.otel {
                otel.export(report);
            }
        }
        let _ = tx.send(result);
    });
    match rx.await {
        // This host lost the run's lease and another took the run over to
        // carry it on (`on_crash = "resume"`): the run's answer is the one
        // that host ends it with.
        Ok(Ok(report))
            if report.outcome == "aborted" && served.workflow.on_crash == OnCrash::Resume =>
        {
            answer_of(app, &report.run_id).await
        }
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
