//! A run's state and its control over HTTP: `GET /v1/runs/ID` (for a
//! running run too; `?wait=30s` long-polls until it ends), `POST
//! /v1/runs/ID/cancel`, and the passing on of cancels asked on other hosts
//! to the runs executing here.

use super::super::{Inner, error, origin, read_body};
use crate::journal::CancelAsked;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The longest `?wait=` a request may ask for (a long-poll holds one
/// connection, itself bounded by the server's connection bound).
pub(in crate::serve) const MAX_WAIT: Duration = Duration::from_secs(120);
/// How often this host looks for cancels asked elsewhere of its runs.
pub(in crate::serve) const CANCEL_POLL: Duration = Duration::from_secs(1);
/// How often a wait for a run that is not executing here reads the journal.
const JOURNAL_POLL: Duration = Duration::from_millis(500);
/// The longest reason a cancel may give (characters).
pub(in crate::serve) const MAX_REASON_CHARS: usize = 500;
/// The largest cancel request body.
const MAX_CANCEL_BODY: usize = 8 * 1024;

/// `GET /v1/runs/ID`'s parameters.
#[derive(serde::Deserialize)]
pub(in crate::serve) struct RunQuery {
    /// How long to wait for the run to end (`30s`, `500ms`, `2m`, or seconds).
    wait: Option<String>,
}

/// `wait`'s value, or why it is refused.
fn parse_wait(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let wait = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("wait `{text}` is not a duration like 30s, 500ms or 2m: {e}"))?,
    };
    if wait > MAX_WAIT {
        return Err(format!(
            "wait `{text}` is longer than the longest wait, {} s",
            MAX_WAIT.as_secs()
        ));
    }
    Ok(wait)
}

/// `GET /v1/runs/ID`: the report of a run that ended (with `status`, its
/// outcome), or what a running run is doing (`status: running`); with
/// `?wait=`, answers as soon as the run ends, or when the wait is up.
pub(in crate::serve) async fn get_run(
    State(app): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Response {
    let wait = match q.wait.as_deref().map(parse_wait).transpose() {
        Ok(wait) => wait.unwrap_or(Duration::ZERO),
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let deadline = Instant::now() + wait;
    loop {
        // Told when a run here ends: enabled before the journal is read,
        // so an end between the two is not missed.
        let ending = app.in_flight.ending(&id);
        let notified = ending.as_ref().map(|n| n.notified());
        let mut notified = std::pin::pin!(notified);
        if let Some(n) = notified.as_mut().as_pin_mut() {
            n.enable();
        }
        let answer = match run_state(&app, &id).await {
            Ok(answer) => answer,
            Err(refused) => return refused,
        };
        let now = Instant::now();
        if answer.ended || now >= deadline || app.closing.is_cancelled() {
            return answer.response;
        }
        let look_again = deadline.min(now + JOURNAL_POLL);
        let told = async {
            match notified.as_pin_mut() {
                Some(n) => n.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = told => {}
            () = tokio::time::sleep_until(look_again), if ending.is_none() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = app.closing.cancelled() => {}
        }
    }
}

/// A run's state as `GET /v1/runs/ID` answers it.
struct RunState {
    ended: bool,
    response: Response,
}

/// The run's stored report (it ended), or its journal record (running).
async fn run_state(app: &Inner, id: &str) -> Result<RunState, Response> {
    let unavailable =
        |e: crate::journal::JournalError| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    if let Some(json) = app.journal.report(id).await.map_err(unavailable)? {
        return Ok(RunState {
            ended: true,
            response: (
                [(header::CONTENT_TYPE, "application/json")],
                with_status(json),
            )
                .into_response(),
        });
    }
    let Some(run) = app.journal.run(id).await.map_err(unavailable)? else {
        return Err(error(StatusCode::NOT_FOUND, format!("no run `{id}`")));
    };
    let here = app.in_flight.get(id);
    let body = json!({
        "run_id": run.run_id,
        "workflow": run.workflow,
        "trace_id": run.trace_id,
        "status": run.status,
        "outcome": Value::Null,
        "error": run.error,
        "owner": run.owner,
        "started_at_ms": run.started_at_ms,
        "journal_entries": run.entries,
        // A waiting run: what for, since when, until when at the latest
        // (a suspended one: why, since when, its deadline).
        "waiting_for": run.waiting_for,
        "waiting_since_ms": run.waiting_since_ms,
        "wake_at_ms": run.wake_at_ms,
        // What runs now, when the run executes on this host.
        "running_steps": here.as_ref().map(|r| &r.running),
        "attempts_ended": here.as_ref().map(|r| r.attempts_ended),
    });
    Ok(RunState {
        // Ended without a stored report (journaled by an older braid).
        ended: crate::journal::has_ended(&run.status),
        response: axum::Json(body).into_response(),
    })
}

/// A stored report with `status` (its outcome) first, as a running run
/// has it: one field says where any run stands.
fn with_status(report: String) -> String {
    let outcome = serde_json::from_str::<OutcomeOnly>(&report)
        .map(|o| o.outcome)
        .unwrap_or_default();
    match report.strip_prefix('{') {
        Some(rest) if !outcome.is_empty() => {
            let status = Value::String(outcome).to_string();
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!("{{\"status\":{status}{sep}{rest}")
        }
        _ => report,
    }
}

#[derive(serde::Deserialize)]
struct OutcomeOnly {
    #[serde(default)]
    outcome: String,
}

/// `POST /v1/runs/ID/cancel` (admin token; body `{"reason": "..."}`,
/// optional): the run's steps in flight stop, what it completed is undone
/// newest first, and it ends `cancelled`, on whichever host owns it.
/// Repeats are answered alike; a run that has ended is not changed.
pub(in crate::serve) async fn cancel_run(
    State(app): State<Arc<Inner>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = super::super::admin::refuse_unless_admin(&app, &headers) {
        return refused;
    }
    let reason = match reason_of(&headers, body, "cancelled by the operator").await {
        Ok(reason) => reason,
        Err(refused) => return *refused,
    };
    let asked = match app.journal.request_cancel(&id, &reason).await {
        Ok(asked) => asked,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match asked {
        CancelAsked::Asked { reason } => {
            // At once if the run executes here; else its owner finds the
            // request within `CANCEL_POLL`.
            let here = app.local.cancel(&id, &reason);
            let body = json!({
                "run_id": id,
                "status": "cancelling",
                "reason": reason,
                "on_this_host": here,
                "location": format!("/v1/runs/{id}"),
            });
            super::answer::respond(202, &body, false)
        }
        CancelAsked::Ended { status } if status == "cancelled" => (
            StatusCode::OK,
            axum::Json(json!({ "run_id": id, "status": status })),
        )
            .into_response(),
        CancelAsked::Ended { status } => error(
            StatusCode::CONFLICT,
            format!("run `{id}` has already ended `{status}`: there is nothing to cancel"),
        ),
        CancelAsked::Unknown => error(StatusCode::NOT_FOUND, format!("no run `{id}`")),
    }
}

/// The reason a cancel or abort request gives (`{"reason": "..."}`; none:
/// `default`), or its refusal.
pub(super) async fn reason_of(
    headers: &HeaderMap,
    body: Body,
    default: &str,
) -> Result<String, Box<Response>> {
    let bytes = read_body(body, MAX_CANCEL_BODY, "request body").await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(default.into());
    }
    origin::require_json(headers)?;
    let bad = |why: String| Box::new(error(StatusCode::BAD_REQUEST, why));
    let asked: Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let reason = match &asked {
        Value::Object(fields) => match fields.get("reason") {
            None | Some(Value::Null) => default.to_string(),
            Some(Value::String(r)) => r.trim().to_string(),
            Some(_) => return Err(bad("`reason` must be a string".into())),
        },
        _ => {
            return Err(bad(
                "the body must be a JSON object like {\"reason\": \"...\"}".into(),
            ));
        }
    };
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(bad(format!(
            "`reason` is longer than {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(bad("`reason` has control characters".into()));
    }
    Ok(reason)
}

/// Passes cancels asked on other hosts (or before a restart) to the runs
/// executing here, every [`CANCEL_POLL`], until the server stops.
pub(in crate::serve) async fn pass_on_cancels(app: Arc<Inner>) {
    let mut tick = tokio::time::interval(CANCEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let here = app.local.list();
        if here.is_empty() {
            continue;
        }
        match app.journal.cancel_requests(&here).await {
            Ok(asked) => {
                for (run_id, reason) in asked {
                    app.local.cancel(&run_id, &reason);
                }
            }
            Err(e) => tracing::debug!("cannot read cancel requests: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_a_duration_within_the_longest() {
        assert_eq!(parse_wait("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_wait("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("2m"), Ok(Duration::from_secs(120)));
        let long = parse_wait("3m").expect_err("too long");
        assert_eq!(long, "wait `3m` is longer than the longest wait, 120 s");
        let bad = parse_wait("soon").expect_err("not a duration");
        assert!(
            bad.starts_with("wait `soon` is not a duration like 30s"),
            "{bad}"
        );
    }

    #[test]
    fn a_report_gets_its_outcome_as_status_first() {
        let json = with_status(r#"{"run_id":"r","outcome":"cancelled"}"#.into());
        let v: Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(v["status"], "cancelled");
        assert_eq!(v["run_id"], "r");
        assert_eq!(with_status("not json".into()), "not json");
    }
}
