//! `POST /v1/runs/ID/restart {"from": "STEP"}`: a new run of an ended
//! run's workflow (as served now) with the old run's input, reusing the
//! journaled outputs of the old run's steps before STEP (see
//! `scheduler::restart`); answered `202` + `Location` once it has started.

use super::super::{Inner, error, header_fields, origin, read_body};
use super::execute_detached;
use crate::scheduler::{Prior, new_run_id};
use crate::trace::IncomingTrace;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::sync::Arc;

/// The largest restart request body.
const MAX_RESTART_BODY: usize = 8 * 1024;

pub(in crate::serve) async fn restart_run(
    State(app): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = super::super::admin::refuse_unless_admin(&app, &headers) {
        return refused;
    }
    let from = match from_step(&headers, body).await {
        Ok(from) => from,
        Err(refused) => return *refused,
    };
    let unavailable =
        |e: crate::journal::JournalError| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let run = match app.journal.run(&id).await {
        Ok(Some(run)) => run,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
        Err(e) => return unavailable(e),
    };
    if !crate::journal::has_ended(&run.status) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "run `{id}` is {}: only a run that has ended can be restarted (cancel it first)",
                run.status
            ),
        );
    }
    let Some(served) = app.live.workflow(&run.workflow) else {
        return error(
            StatusCode::CONFLICT,
            format!(
                "run `{id}`'s workflow `{}` is not served here",
                run.workflow
            ),
        );
    };
    let (start, entries) = match (
        app.journal.run_start(&id).await,
        app.journal.entries(&id).await,
    ) {
        (Ok(Some(start)), Ok(entries)) => (start, entries),
        (Ok(None), _) => return error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let prior = match Prior::of(&served.workflow, &id, &run.trace_id, &from, &entries) {
        Ok(prior) => prior,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // A new trace, continuing the caller's if it sent one; the report
    // links the old run and its trace.
    let trace = IncomingTrace::from_fields(
        &header_fields(&headers, "traceparent"),
        &header_fields(&headers, "tracestate"),
    );
    let started = execute_detached(&app, &served, start.input, trace, new_run_id(), Some(prior));
    started.await.unwrap_or_else(|refused| refused)
}

/// The step to restart from: `{"from": "STEP"}`.
async fn from_step(headers: &HeaderMap, body: Body) -> Result<String, Box<Response>> {
    let bytes = read_body(body, MAX_RESTART_BODY, "restart request body").await?;
    origin::require_json(headers)?;
    let bad = |why: &str| Box::new(error(StatusCode::BAD_REQUEST, why.to_string()));
    let asked: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(&format!("the body is not JSON: {e}")))?;
    match asked.get("from") {
        Some(Value::String(step)) if !step.is_empty() => Ok(step.clone()),
        _ => Err(bad(
            "the body must be a JSON object naming the step to restart from, like {\"from\": \"STEP\"}",
        )),
    }
}
