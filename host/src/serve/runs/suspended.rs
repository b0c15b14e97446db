//! A suspended run's controls over HTTP: `POST /v1/runs/ID/resume` (the
//! failed step runs again, on the components live then) and `POST
//! /v1/runs/ID/abort` (undone, ending `aborted`). Both are kept on the
//! run's row in the journal, where whichever host's wake loop looks first
//! takes them up (see `scheduler::suspend`).

use super::super::{Inner, error, origin, read_body};
use crate::journal::{Unsuspend, UnsuspendAsked};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

/// `POST /v1/runs/ID/resume` (admin token, no body or `{}`).
pub(in crate::serve) async fn resume_run(
    State(app): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = super::super::admin::refuse_unless_admin(&app, &headers) {
        return refused;
    }
    if let Err(refused) = empty_body(&headers, body).await {
        return *refused;
    }
    ask(&app, &id, Unsuspend::Resume).await
}

/// `POST /v1/runs/ID/abort` (admin token; body `{"reason": "..."}`, optional).
pub(in crate::serve) async fn abort_run(
    State(app): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = super::super::admin::refuse_unless_admin(&app, &headers) {
        return refused;
    }
    let reason = match super::control::reason_of(&headers, body, "").await {
        Ok(reason) => (!reason.is_empty()).then_some(reason),
        Err(refused) => return *refused,
    };
    ask(&app, &id, Unsuspend::Abort { reason }).await
}

/// A resume takes no parameters: an empty body or `{}`.
async fn empty_body(headers: &HeaderMap, body: Body) -> Result<(), Box<Response>> {
    let bytes = read_body(body, 1024, "resume request body").await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    origin::require_json(headers)?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(fields)) if fields.is_empty() => Ok(()),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "a resume takes no parameters: send no body, or {}",
        ))),
    }
}

/// Keeps the request on the run's row and answers: `202` + `Location`
/// (the run goes on, or is undone, within a wake interval), `409` when it
/// is not suspended or was asked otherwise first, `404` for no such run.
async fn ask(app: &Inner, id: &str, what: Unsuspend) -> Response {
    let asked = match app.journal.request_unsuspend(id, &what).await {
        Ok(asked) => asked,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let status = match &asked {
        UnsuspendAsked::Asked => {
            let body = json!({
                "run_id": id,
                "status": what.doing(),
                "location": format!("/v1/runs/{id}"),
            });
            return super::answer::respond(202, &body, false);
        }
        UnsuspendAsked::Unknown => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    error(status, asked.refusal(id, &what).unwrap_or_default())
}
