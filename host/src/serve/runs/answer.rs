//! What a run request answers: the answer of a run that ended (also what
//! an idempotent repeat gets, from the run's stored report), with its
//! trace and run id headers.

use super::super::{Inner, error};
use crate::report::RunReport;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::Duration;

/// What a run request answers (also what an idempotent repeat gets).
pub(super) fn run_response(report: &RunReport) -> (u16, Value) {
    // `aborted`: this host lost the run's lease (its journal was out of
    // reach) and the workflow says `on_crash = "undo"`; the run is undone
    // elsewhere and can be sent again.
    let status = match report.outcome.as_str() {
        "succeeded" => 200,
        // Parked in the journal, waiting for a time or a signal, or
        // suspended until an operator resumes or aborts it: the answer
        // comes from `Location` (`GET /v1/runs/ID?wait=`).
        parked if crate::journal::is_parked(parked) => 202,
        "aborted" => 503,
        _ => 422,
    };
    let mut body = json!({
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
    if status == 202 {
        body["status"] = json!(report.outcome);
        body["location"] = json!(format!("/v1/runs/{}", report.run_id));
    }
    (status, body)
}

pub(super) fn respond(status: u16, body: &Value, replayed: bool) -> Response {
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
    if let Some(location) = body["location"].as_str()
        && let Ok(v) = HeaderValue::from_str(location)
    {
        headers.insert(axum::http::header::LOCATION, v);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
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
pub(super) async fn answer_of(app: &Inner, run_id: &str) -> Result<(u16, Value), Response> {
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
            // Waiting for a time or a signal, or suspended: where its
            // answer will be.
            Some(run) if crate::journal::is_parked(&run.status) => {
                let location = format!("/v1/runs/{run_id}");
                return Ok((
                    202,
                    json!({ "run_id": run_id, "workflow": run.workflow, "trace_id": run.trace_id,
                            "status": run.status, "location": location }),
                ));
            }
            Some(run) if crate::journal::has_ended(&run.status) => {
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
            input: None,
            steps: Vec::new(),
            events: Vec::new(),
            http_calls: Vec::new(),
            undo: Vec::new(),
            released_claims: Vec::new(),
            dropped: crate::report::Dropped::default(),
            resumed: None,
            restarted_from: None,
        }
    }
}

/// `202 Accepted` for a run started without waiting for it (`Prefer:
/// respond-async`): where its state is (`Location`), its run and trace ids.
pub(super) fn accepted(
    run_id: &str,
    workflow: &str,
    trace_id: &str,
    traceparent: Option<&str>,
    replayed: bool,
) -> Response {
    let location = format!("/v1/runs/{run_id}");
    let body = json!({
        "run_id": run_id,
        "workflow": workflow,
        "status": "running",
        "trace_id": trace_id,
        "traceparent": traceparent,
        "location": location,
    });
    let mut response = respond(StatusCode::ACCEPTED.as_u16(), &body, replayed);
    response.headers_mut().insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    response
}
