//! `POST /v1/runs/ID/signals/NAME`: a signal for a run's signal step
//! (its JSON body becomes the step's output), kept in the journal for
//! whichever host carries the run on, also when it comes before the run
//! reaches its wait.

use super::super::admin::same_secret;
use super::super::{Inner, error, header_fields, header_str, origin, read_body};
use crate::journal::SignalSent;
use crate::trace::IncomingTrace;
use crate::workflow::Workflow;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;

/// The largest signal body (the waiting step's output).
pub(in crate::serve) const MAX_SIGNAL_BYTES: usize = 1 << 20;

/// `?token=`: the wait's token, for senders that cannot set a header (a
/// webhook URL).
#[derive(serde::Deserialize)]
pub(in crate::serve) struct SignalQuery {
    token: Option<String>,
}

pub(in crate::serve) async fn send_signal(
    State(app): State<Arc<Inner>>,
    Path((id, name)): Path<(String, String)>,
    Query(q): Query<SignalQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let unavailable =
        |e: crate::journal::JournalError| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let start = match app.journal.run_start(&id).await {
        Ok(Some(start)) => start,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
        Err(e) => return unavailable(e),
    };
    let wf = match Workflow::from_toml(
        &start.definition,
        std::path::Path::new(&start.workflow_path),
    ) {
        Ok(wf) => wf,
        Err(e) => {
            return error(
                StatusCode::CONFLICT,
                format!("run `{id}` takes no signals: its journaled definition does not load: {e}"),
            );
        }
    };
    let Some(step) = wf.signal_step(&name) else {
        let known: Vec<&str> = wf
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                crate::workflow::StepKind::Signal(sig) => Some(sig.name.as_str()),
                _ => None,
            })
            .collect();
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "run `{id}` (workflow `{}`) waits for no signal `{name}`; it waits for: {known:?}",
                wf.name
            ),
        );
    };
    let token = crate::scheduler::wait_token_of(&start.idempotency_secret, &id, &step.name);
    if let Some(refused) = authorize(&app, &headers, q.token.as_deref(), &token) {
        return refused;
    }
    let payload = match payload(&headers, body).await {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    // The sender's trace: the step's report names it, linking the traces.
    let trace = IncomingTrace::from_fields(
        &header_fields(&headers, "traceparent"),
        &header_fields(&headers, "tracestate"),
    );
    let sender = match trace.continued {
        true => trace.parent.to_string(),
        false => String::new(),
    };
    match app.journal.send_signal(&id, &name, &payload, &sender).await {
        Ok(SignalSent::Delivered) => {
            let body = json!({
                "run_id": id,
                "signal": name,
                "step": step.name,
                "status": "delivered",
                "location": format!("/v1/runs/{id}"),
            });
            super::answer::respond(202, &body, false)
        }
        Ok(SignalSent::AlreadySent) => error(
            StatusCode::CONFLICT,
            format!("run `{id}` was sent signal `{name}` already; a signal is taken once"),
        ),
        Ok(SignalSent::Ended { status }) => error(
            StatusCode::CONFLICT,
            format!("run `{id}` has ended `{status}`: it takes no more signals"),
        ),
        Ok(SignalSent::Unknown) => error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
        Err(e) => unavailable(e),
    }
}

/// Who may send the signal: whoever holds the wait's token (header
/// `Authorization: Bearer TOKEN`, or `?token=`), or the admin token.
fn authorize(
    app: &Inner,
    headers: &HeaderMap,
    query: Option<&str>,
    token: &str,
) -> Option<Response> {
    let bearer = header_str(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
    let given = [bearer, query];
    if given.iter().flatten().any(|g| same_secret(g, token)) {
        return None;
    }
    if let Some(admin) = &app.admin_token
        && bearer.is_some_and(|g| same_secret(g, admin))
    {
        return None;
    }
    Some(error(
        StatusCode::UNAUTHORIZED,
        "a signal needs the wait's token (Authorization: Bearer TOKEN, or ?token=) or the admin token",
    ))
}

/// The signal's body as JSON text (`null` for none), at most
/// [`MAX_SIGNAL_BYTES`], sent as JSON.
async fn payload(headers: &HeaderMap, body: Body) -> Result<String, Box<Response>> {
    let bytes = read_body(body, MAX_SIGNAL_BYTES, "signal body").await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".into());
    }
    origin::require_json(headers)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("the signal body is not JSON: {e}"),
        ))
    })?;
    Ok(value.to_string())
}
