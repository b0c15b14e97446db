//! Starting runs over HTTP: `POST /v1/workflows/NAME/runs`, with the
//! caller's trace context continued, `Idempotency-Key` (one run per key,
//! across hosts), the answer a run gets, and its stored report.
//!
//! Rooms: `ask` reads and checks a run request; `answer` what a run's
//! caller gets (also from a stored report); `control` a run's state,
//! long-polls and cancels; `signal` signals to waiting runs; `suspended`
//! resuming and aborting suspended runs; `restart` restarting an ended
//! run from a step.
//!
//! Must not know wasmtime.

mod answer;
mod ask;
mod control;
mod restart;
mod signal;
mod suspended;

pub(super) use control::{cancel_run, get_run, pass_on_cancels};
pub(super) use restart::restart_run;
pub(super) use signal::send_signal;
pub(super) use suspended::{abort_run, resume_run};

use super::{Inner, error};
use crate::registry::Served;
use crate::report::RunReport;
use crate::scheduler::{Prior, RunError, RunRequest, new_run_id};
use crate::trace::IncomingTrace;
use crate::workflow::OnCrash;
use answer::{accepted, answer_of, respond, run_response};
use ask::RunAsk;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// `POST /v1/workflows/NAME/runs`: runs the workflow and answers when
/// the run ends, or with `Prefer: respond-async` once it has started
/// (`202`, `Location`); under an `Idempotency-Key`, once per key.
pub(in crate::serve) async fn start_run(State(app): State<Arc<Inner>>, ask: RunAsk) -> Response {
    match (ask.key.clone(), ask.respond_async) {
        (None, false) => match execute(&app, &ask.served, ask.input, ask.trace, new_run_id()).await
        {
            Ok((status, body)) => respond(status, &body, false),
            Err(resp) => resp,
        },
        (None, true) => {
            let started =
                execute_detached(&app, &ask.served, ask.input, ask.trace, new_run_id(), None);
            started.await.unwrap_or_else(|refused| refused)
        }
        (Some(key), false) => start_idempotent(&app, ask, key).await,
        (Some(key), true) => start_idempotent_detached(&app, ask, key).await,
    }
}

/// The key binds the body's JSON value, not its bytes: the same input
/// reformatted (white space, key order) is the same request. A key
/// reserved by an older braid holds the sha256 of the raw bytes; both
/// count as the same body. (sha256 of the value, of the bytes.)
fn body_shas(ask: &RunAsk) -> (String, String) {
    (
        hex::encode(Sha256::digest(ask.input.to_string().as_bytes())),
        hex::encode(Sha256::digest(&ask.bytes)),
    )
}

/// A run under an `Idempotency-Key` that answers `202` once started: a
/// repeat gets `202` for the run the key started, whether it still runs.
async fn start_idempotent_detached(app: &Arc<Inner>, ask: RunAsk, key: String) -> Response {
    let (body_sha, raw_sha) = body_shas(&ask);
    let run_id = new_run_id();
    let taken = match app
        .journal
        .reserve_idempotent(&ask.name, &key, &body_sha, &run_id)
        .await
    {
        Ok(taken) => taken,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if let Some((sha, other)) = taken {
        if sha != body_sha && sha != raw_sha {
            return different_body();
        }
        let trace_id = match app.journal.run(&other).await {
            Ok(run) => run.map(|r| r.trace_id).unwrap_or_default(),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
        return accepted(&other, &ask.name, &trace_id, None, true);
    }
    let RunAsk {
        name,
        served,
        input,
        trace,
        ..
    } = ask;
    match execute_detached(app, &served, input, trace, run_id.clone(), None).await {
        Ok(answer) => answer,
        Err(refused) => {
            // Not started (503: its start could not be journaled, or no
            // place): the key is given up again so a retry runs.
            if refused.status() == StatusCode::SERVICE_UNAVAILABLE
                && let Err(e) = app.journal.release_idempotent(&name, &key, &run_id).await
            {
                tracing::warn!(%run_id, "idempotency key `{key}` kept: {e}");
            }
            refused
        }
    }
}

/// A run under an `Idempotency-Key`: the run the key started answers.
async fn start_idempotent(app: &Arc<Inner>, ask: RunAsk, key: String) -> Response {
    let (body_sha, raw_sha) = body_shas(&ask);
    let same_body = |sha: &str| sha == body_sha || sha == raw_sha;
    let RunAsk {
        name,
        served,
        input,
        trace,
        ..
    } = ask;
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

/// A run launched on its own task: told when its start is journaled
/// (with its `traceparent`), and when it ends.
struct Launched {
    run_id: String,
    started: tokio::sync::oneshot::Receiver<String>,
    ended: tokio::sync::oneshot::Receiver<Result<RunReport, RunError>>,
}

/// Admits a run and starts it on its own task, tracked for shutdown: if
/// the client goes away, the run still finishes (and is stored).
async fn launch(
    app: &Arc<Inner>,
    served: &Served,
    input: Value,
    trace: IncomingTrace,
    run_id: String,
    prior: Option<Prior>,
) -> Result<Launched, Response> {
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
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    let abort = app.abort.clone();
    let scheduler = served.scheduler.clone();
    let inner = Arc::clone(app);
    let in_flight = app.in_flight.started(
        &run_id,
        &served.workflow.name,
        &request.trace.parent.trace_id.to_string(),
    );
    let id = run_id.clone();
    app.runs.spawn(async move {
        let _admitted = admitted;
        let on_start = move |traceparent| {
            let _ = started_tx.send(traceparent);
        };
        let result = scheduler
            .run_restarted(request, id, prior, &abort, on_start)
            .await;
        match &result {
            Ok(report) => in_flight.ended(&report.outcome, report.degraded, report.duration_ms),
            Err(_) => in_flight.refused(),
        }
        match &result {
            // A run that waits is counted and exported once it has ended,
            // by the host that ends it.
            Ok(report) if crate::journal::is_parked(&report.outcome) => {
                inner.metrics.run_parked(&report.workflow)
            }
            Ok(report) => {
                inner.metrics.run_finished(report);
                // Its report was stored with its terminal record.
                if let Some(otel) = &inner.otel {
                    otel.export(report);
                }
            }
            Err(_) => {}
        }
        let _ = ended_tx.send(result);
    });
    Ok(Launched {
        run_id,
        started,
        ended,
    })
}

/// Runs one workflow run to the end and answers with its outcome.
async fn execute(
    app: &Arc<Inner>,
    served: &Served,
    input: Value,
    trace: IncomingTrace,
    run_id: String,
) -> Result<(u16, Value), Response> {
    let launched = launch(app, served, input, trace, run_id, None).await?;
    match launched.ended.await {
        // This host lost the run's lease and another took the run over to
        // carry it on (`on_crash = "resume"`): the run's answer is the one
        // that host ends it with.
        Ok(Ok(report))
            if report.outcome == "aborted" && served.workflow.on_crash == OnCrash::Resume =>
        {
            answer_of(app, &report.run_id).await
        }
        Ok(Ok(report)) => Ok(run_response(&report)),
        Ok(Err(e)) => Err(refusal(e)),
        Err(_) => Err(task_died()),
    }
}

/// Starts a run (a restart of an ended run, with `prior`) and answers
/// `202 Accepted` once its start is journaled (`Prefer: respond-async`),
/// without waiting for it to end.
async fn execute_detached(
    app: &Arc<Inner>,
    served: &Served,
    input: Value,
    trace: IncomingTrace,
    run_id: String,
    prior: Option<Prior>,
) -> Result<Response, Response> {
    let launched = launch(app, served, input, trace, run_id, prior).await?;
    match launched.started.await {
        Ok(traceparent) => {
            let trace_id = traceparent
                .split('-')
                .nth(1)
                .unwrap_or_default()
                .to_string();
            Ok(accepted(
                &launched.run_id,
                &served.workflow.name,
                &trace_id,
                Some(&traceparent),
                false,
            ))
        }
        // Refused before it started: the end says why.
        Err(_) => Err(match launched.ended.await {
            Ok(Err(e)) => refusal(e),
            _ => task_died(),
        }),
    }
}

/// Why a run was refused, as its caller is told.
fn refusal(e: RunError) -> Response {
    match e {
        RunError::Input(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        RunError::JournalUnavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        RunError::Restart(_) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

fn task_died() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "the run's task ended abnormally",
    )
}
