//! Starting runs over HTTP: `POST /v1/workflows/NAME/runs`, with the
//! caller's trace context continued, `Idempotency-Key` (one run per key,
//! across hosts), the answer a run gets, and its stored report.
//!
//! Rooms: `ask` reads and checks a run request; `answer` what a run's
//! caller gets (also from a stored report).
//!
//! Must not know wasmtime.

mod answer;
mod ask;

use super::{Inner, error};
use crate::registry::Served;
use crate::scheduler::{RunError, RunRequest, new_run_id};
use crate::trace::IncomingTrace;
use crate::workflow::OnCrash;
use answer::{answer_of, respond, run_response};
use ask::RunAsk;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// `POST /v1/workflows/NAME/runs`: runs the workflow and answers when
/// the run ends; under an `Idempotency-Key`, once per key.
pub(in crate::serve) async fn start_run(State(app): State<Arc<Inner>>, ask: RunAsk) -> Response {
    match ask.key.clone() {
        None => match execute(&app, &ask.served, ask.input, ask.trace, new_run_id()).await {
            Ok((status, body)) => respond(status, &body, false),
            Err(resp) => resp,
        },
        Some(key) => start_idempotent(&app, ask, key).await,
    }
}

/// A run under an `Idempotency-Key`: the run the key started answers.
async fn start_idempotent(app: &Arc<Inner>, ask: RunAsk, key: String) -> Response {
    let RunAsk {
        name,
        served,
        input,
        bytes,
        trace,
        ..
    } = ask;
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
                    let (status, body) = answer_of(app, &other).await?;
                    return Ok::<_, Response>((
                        status,
                        json!({ "body_sha256": sha, "response": body, "replayed": true }),
                    ));
                }
                let (status, body) = match execute(app, &served, input, trace, run_id.clone()).await
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

fn different_body() -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "this Idempotency-Key was used with a different body",
    )
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
