//! The run viewer: read-only HTML pages on `braid serve`'s listener, built
//! into the binary (no external assets, no JavaScript framework).
//!
//! - `/ui/runs`: the runs in flight here with their current steps (kept
//!   current over server-sent events, `/ui/events`, from [`live`]), and the
//!   finished runs, newest first, filtered by workflow, outcome and trace id,
//!   a page at a time;
//! - `/ui/runs/{id}`: one run as a waterfall on one time axis ([`waterfall`]),
//!   or, while it runs, its current steps;
//! - `/ui/traces/{trace-id}`: the runs of a trace;
//! - `/ui/workflows`: each served workflow's DAG ([`dag`]), inputs, steps
//!   with their components, and each component's versions (hot swaps and
//!   rollbacks, the live one last).
//!
//! Pages read what the JSON API reads (the journal's stored reports and the
//! live components); they change nothing.

use super::live::{self, InFlight};
use super::{Inner, RunsQuery};
use super::{dag, waterfall};
use crate::journal::{ReportQuery, RunRecord};
use crate::registry::component_name;
use crate::trace::TraceId;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::sync::Arc;

/// The page frame: title, the viewer's stylesheet, a header with links.
pub(super) fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " - braid" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/ui/runs" { "braid" } " "
                    a.muted href="/ui/runs" { "runs" } " "
                    a.muted href="/ui/workflows" { "workflows" }
                }
                main { (body) }
            }
        }
    }
}

/// A page answering `status` with a message (unknown run, journal down).
fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! { h1 { (title) } p.error { (text) } p { a href="/ui/runs" { "All runs" } } };
    (status, page(title, body)).into_response()
}

/// `/ui/runs`: the runs in flight here (updated live, with their current
/// steps) and the finished runs, newest first, filtered by workflow, outcome
/// and trace id, a page at a time (`after`, `limit`: 100, at most 1,000).
pub(super) async fn runs_page(
    State(app): State<Arc<Inner>>,
    Query(q): Query<RunsQuery>,
) -> Response {
    let query = match q.to_report_query() {
        Ok(query) => query,
        Err(why) => return message(StatusCode::BAD_REQUEST, "Bad filter", &why),
    };
    let runs = match app.journal.recent_reports(query.clone()).await {
        Ok(runs) => runs,
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Journal unavailable",
                &e.to_string(),
            );
        }
    };
    let next = RunsQuery::next_page(&query, &runs);
    // Runs in flight are listed (and followed live) on the first page.
    let first_page = query.after.is_none();
    let in_flight: Vec<InFlight> = if first_page {
        app.in_flight
            .list()
            .into_iter()
            .filter(|r| wanted(&query, &r.workflow, &r.trace_id))
            .collect()
    } else {
        Vec::new()
    };
    // Runs the journal says are running that this server is not following:
    // other hosts' on a shared database, or resumed here after a crash.
    let elsewhere = if first_page {
        app.journal
            .running_runs(ELSEWHERE_LISTED)
            .await
            .map(|runs| {
                runs.into_iter()
                    .filter(|r| app.in_flight.get(&r.run_id).is_none())
                    .filter(|r| wanted(&query, &r.workflow, &r.trace_id))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    } else {
        Ok(Vec::new())
    };
    // Runs parked in the journal, waiting for a time or a signal.
    let waiting = if first_page {
        app.journal
            .waiting_runs(ELSEWHERE_LISTED)
            .await
            .map(|runs| {
                runs.into_iter()
                    .filter(|r| wanted(&query, &r.workflow, &r.trace_id))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.to_string())
    } else {
        Ok(Vec::new())
    };
    let names = app.live.names();
    let workflow = query.workflow.as_deref();
    let status = query.outcome.as_deref();
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/ui/runs" {
            label { "workflow " select name="workflow" {
                option value="" { "any" }
                @for name in &names {
                    option value=(name) selected[workflow == Some(name.as_str())] { (name) }
                }
            } }
            label { " outcome " select name="status" {
                option value="" { "any" }
                @for s in ["succeeded", "failed", "cancelled", "aborted"] {
                    option value=(s) selected[status == Some(s)] { (s) }
                }
            } }
            label { " trace id " input type="text" name="trace_id" size="34" maxlength="64"
                placeholder="32 hex digits" value=[query.trace_id.as_deref()]; }
            " " button type="submit" { "Filter" }
        }
        @if first_page {
            h2 { "In flight here" }
            table.runs #in-flight {
                thead { tr { th { "run" } th { "workflow" } th { "current steps" } th { "started (UTC)" } th { "trace id" } } }
                tbody {
                    @for r in &in_flight {
                        tr data-run=(r.run_id) data-live="running" {
                            td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                            td { (r.workflow) }
                            td.current { (current_steps(r)) }
                            td { (waterfall::utc(r.started_at_ms)) }
                            td { code { (r.trace_id) } }
                        }
                    }
                }
            }
            p.muted #none-in-flight hidden[!in_flight.is_empty()] { "None." }
            @match &elsewhere {
                Ok(runs) if runs.is_empty() => {},
                Ok(runs) => {
                    h2 { "Running elsewhere" }
                    p.muted { "Runs the journal has running that this server is not running: on other hosts sharing its database, or resumed here after a crash (as of this page's load)." }
                    table.runs #elsewhere {
                        thead { tr { th { "run" } th { "workflow" } th { "host" } th { "started (UTC)" } th.num { "journal entries" } th { "trace id" } } }
                        tbody {
                            @for r in runs {
                                tr data-run=(r.run_id) {
                                    td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                                    td { (r.workflow) }
                                    td { code { (r.owner) } }
                                    td { (waterfall::utc(r.started_at_ms)) }
                                    td.num { (r.entries) }
                                    td { a href={ "/ui/traces/" (r.trace_id) } { code { (r.trace_id) } } }
                                }
                            }
                        }
                    }
                },
                Err(e) => { p.error { "Runs running elsewhere: " (e) } },
            }
            (waiting_table(&waiting))
        }
        h2 { "Finished" }
        table.runs #finished {
            thead { tr { th { "run" } th { "workflow" } th { "outcome" } th { "started (UTC)" } th.num { "duration" } th { "trace id" } } }
            tbody {
                @for r in &runs {
                    tr data-run=(r.run_id) {
                        td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                        td { (r.workflow) }
                        td {
                            span class={ "outcome " (r.outcome) } { (r.outcome) }
                            @if r.degraded { " " span.outcome.degraded { "degraded" } }
                        }
                        td { (waterfall::utc(r.started_at_ms)) }
                        td.num { (waterfall::ms(r.duration_ms)) }
                        td { a href={ "/ui/traces/" (r.trace_id) } { code { (r.trace_id) } } }
                    }
                }
            }
        }
        @if runs.is_empty() { p.muted #none-finished { "No finished runs match." } }
        @if let Some(next) = &next {
            p { a.next href={ "/ui/runs?" (next) } { "Older runs" } }
        }
        @if first_page {
            div #live hidden data-workflow=[workflow] data-status=[status]
                data-trace=[query.trace_id.as_deref()] {}
            script { (PreEscaped(RUNS_SCRIPT)) }
        }
    };
    page("Runs", body).into_response()
}

/// Whether a running run of `workflow` on `trace_id` passes the page's
/// filters (its outcome is not known yet).
fn wanted(query: &ReportQuery, workflow: &str, trace_id: &str) -> bool {
    query.workflow.as_deref().is_none_or(|w| w == workflow)
        && query.trace_id.as_deref().is_none_or(|t| t == trace_id)
}

/// Most runs listed as running elsewhere.
const ELSEWHERE_LISTED: usize = 100;

/// A run's running steps, `fetch_profile #2, fetch_permissions #1`.
fn current_steps(run: &InFlight) -> String {
    if run.running.is_empty() {
        return "-".to_string();
    }
    run.running
        .iter()
        .map(|(step, attempt)| format!("{step} #{attempt}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The runs parked in the journal: what each waits for, since when, and
/// when it wakes at the latest.
fn waiting_table(waiting: &Result<Vec<RunRecord>, String>) -> Markup {
    let runs = match waiting {
        Ok(runs) => runs.as_slice(),
        Err(e) => return html! { p.error { "Waiting runs: " (e) } },
    };
    // Always there (hidden while empty): the live script adds a run that
    // parks while the page is open.
    html! {
        section #waiting-runs hidden[runs.is_empty()] {
            h2 { "Waiting" }
            p.muted { "Runs parked in the journal until a time or a signal comes, and suspended runs (a step failed for good) until an operator resumes or aborts them or their deadline passes. No host holds them; any host of the store carries one on." }
            table.runs #waiting {
                thead { tr { th { "run" } th { "workflow" } th { "waiting for" } th { "since (UTC)" } th { "until (UTC)" } th { "trace id" } } }
                tbody {
                    @for r in runs {
                        tr data-run=(r.run_id) {
                            td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                            td { (r.workflow) }
                            td { (r.waiting_for.as_deref().unwrap_or("")) }
                            td { (r.waiting_since_ms.map(waterfall::utc).unwrap_or_default()) }
                            td { (r.wake_at_ms.map(waterfall::utc).unwrap_or_default()) }
                            td { a href={ "/ui/traces/" (r.trace_id) } { code { (r.trace_id) } } }
                        }
                    }
                }
            }
        }
    }
}

/// `/ui/runs/{id}`: one finished run's waterfall; a run still going says
/// so (here: with its current steps, and the page reloads when it ends);
/// `404` for an unknown id.
pub(super) async fn run_page(State(app): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let unavailable = |e: crate::journal::JournalError| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Journal unavailable",
            &e.to_string(),
        )
    };
    let json = match app.journal.report(&id).await {
        Ok(Some(json)) => json,
        Ok(None) => {
            if let Some(run) = app.in_flight.get(&id) {
                return running_here(&app, &run);
            }
            return match app.journal.run(&id).await {
                Ok(Some(run)) if run.status == "running" => running_elsewhere(&app, &run),
                Ok(Some(run)) if run.status == "waiting" => waiting_run(&app, &run),
                Ok(Some(run)) if run.status == "suspended" => suspended_run(&app, &run),
                Ok(_) => message(
                    StatusCode::NOT_FOUND,
                    "Run not found",
                    &format!("No run `{id}` (never started here, or pruned)."),
                ),
                Err(e) => unavailable(e),
            };
        }
        Err(e) => return unavailable(e),
    };
    let report: serde_json::Value = match serde_json::from_str(&json) {
        Ok(r) => r,
        Err(e) => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unreadable report",
                &format!("the stored report of `{id}` is not JSON: {e}"),
            );
        }
    };
    // Which steps' components were swapped since the run.
    let live_sha = |step: &str| -> Option<String> {
        let workflow = report["workflow"].as_str()?;
        let served = app.live.workflow(workflow)?;
        served.components.get(step).map(|c| c.sha256.clone())
    };
    let trace_link = app
        .trace_url
        .as_ref()
        .map(|u| u.of(report["trace_id"].as_str().unwrap_or_default()));
    let title = format!("Run {id}");
    page(
        &title,
        waterfall::render(&report, &live_sha, trace_link.as_deref()),
    )
    .into_response()
}

/// A run going on here: its steps now, followed live; the page reloads
/// (to the waterfall) when it ends.
fn running_here(app: &Inner, run: &InFlight) -> Response {
    let details = html! {
        dt { "current steps" } dd #current { (current_steps(run)) }
        dt { "attempts ended" } dd #attempts { (run.attempts_ended) " (" (run.attempts_failed) " failed)" }
    };
    let after = html! {
        p.muted { "This page follows the run and shows its waterfall when it ends." }
        div #live hidden data-run=(run.run_id) {}
        script { (PreEscaped(RUN_SCRIPT)) }
    };
    running_page(app, Running::from(run), details, after)
}

/// A run the journal says is going on another host (sharing its database).
fn running_elsewhere(app: &Inner, run: &RunRecord) -> Response {
    let details = html! {
        dt { "host" } dd { code { (run.owner) } }
        dt { "journal entries" } dd { (run.entries) }
    };
    let after = html! {
        p.muted { "Running on another host; reload to see its waterfall once it ends." }
    };
    running_page(app, Running::from(run), details, after)
}

/// A run parked in the journal: what it waits for, and how an operator
/// answers or cancels it.
fn waiting_run(app: &Inner, run: &RunRecord) -> Response {
    let details = html! {
        dt { "waiting for" } dd #waiting-for { (run.waiting_for.as_deref().unwrap_or("")) }
        dt { "waiting since" } dd { (run.waiting_since_ms.map(waterfall::utc).unwrap_or_default()) }
        dt { "wakes at the latest" } dd { (run.wake_at_ms.map(waterfall::utc).unwrap_or_default()) }
        dt { "parked by" } dd { code { (run.owner) } }
    };
    // The signal it waits for, as `waiting_for` names it (the first).
    let signal = run
        .waiting_for
        .as_deref()
        .and_then(|w| w.split_once("signal `"))
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_default();
    let after = html! {
        p.muted { "Waiting in the journal: no host holds it. Send its signal (with the wait's token or the admin token), or cancel it (admin token):" }
        form.control #signal-form {
            label { "signal " input name="name" value=(signal) size="16"; }
            label { " body (JSON) " textarea name="body" rows="2" cols="40" { "{\"approved\": true}" } }
            label { " token " input type="password" name="token" autocomplete="off" size="24"; }
            " " button type="submit" { "Send signal" }
        }
        form.control #cancel-form {
            label { "reason " input name="reason" size="30"; }
            label { " admin token " input type="password" name="token" autocomplete="off" size="24"; }
            " " button type="submit" { "Cancel run" }
        }
        p.muted #control-answer {}
        script { (PreEscaped(CONTROL_SCRIPT)) }
    };
    running_page(app, Running::from(run), details, after)
}

/// A suspended run (a step failed for good, `on_failure = "suspend"`):
/// why, its deadline, and how an operator resumes, aborts or cancels it.
fn suspended_run(app: &Inner, run: &RunRecord) -> Response {
    let details = html! {
        dt { "suspended" } dd #waiting-for { (run.waiting_for.as_deref().unwrap_or("")) }
        dt { "since" } dd { (run.waiting_since_ms.map(waterfall::utc).unwrap_or_default()) }
        dt { "aborted at" } dd { (run.wake_at_ms.map(waterfall::utc).unwrap_or_default()) " unless resumed" }
        dt { "suspended by" } dd { code { (run.owner) } }
    };
    let after = html! {
        p.muted { "Suspended in the journal, nothing undone. Resume it (its failed step runs again, on the component live now: upload a fix first), or abort it (what it did is undone). Admin token:" }
        form.control #resume-form {
            label { "admin token " input type="password" name="token" autocomplete="off" size="24"; }
            " " button type="submit" { "Resume run" }
        }
        form.control #abort-form {
            label { "reason " input name="reason" size="30"; }
            label { " admin token " input type="password" name="token" autocomplete="off" size="24"; }
            " " button type="submit" { "Abort run" }
        }
        p.muted #control-answer {}
        script { (PreEscaped(CONTROL_SCRIPT)) }
    };
    running_page(app, Running::from(run), details, after)
}

/// What every running run's page shows.
struct Running<'a> {
    /// `running`, `waiting` (parked) or `suspended`.
    status: &'a str,
    run_id: &'a str,
    workflow: &'a str,
    trace_id: &'a str,
    started_at_ms: u64,
}

impl<'a> From<&'a RunRecord> for Running<'a> {
    fn from(run: &'a RunRecord) -> Self {
        Running {
            status: &run.status,
            run_id: &run.run_id,
            workflow: &run.workflow,
            trace_id: &run.trace_id,
            started_at_ms: run.started_at_ms,
        }
    }
}

impl<'a> From<&'a InFlight> for Running<'a> {
    fn from(run: &'a InFlight) -> Self {
        Running {
            status: "running",
            run_id: &run.run_id,
            workflow: &run.workflow,
            trace_id: &run.trace_id,
            started_at_ms: run.started_at_ms,
        }
    }
}

/// A running run's page: its heading and facts, then `details` (more
/// facts) and `after` (below them).
fn running_page(app: &Inner, run: Running<'_>, details: Markup, after: Markup) -> Response {
    let body = html! {
        h1 { "Run " code { (run.run_id) } " " span.outcome.running data-run-outcome=(run.status) { (run.status) } }
        dl.meta {
            dt { "workflow" } dd { (run.workflow) }
            dt { "trace id" } dd data-trace-id=(run.trace_id) { (trace_ids(app, run.trace_id)) }
            dt { "started" } dd { (waterfall::utc(run.started_at_ms)) }
            (details)
        }
        (after)
    };
    page(&format!("Run {}", run.run_id), body).into_response()
}

/// A trace id, copyable, with links to its runs here and to the tracing
/// backend (if `--trace-url` is set).
fn trace_ids(app: &Inner, trace_id: &str) -> Markup {
    let backend = app.trace_url.as_ref().map(|u| u.of(trace_id));
    waterfall::trace_id_links(trace_id, backend.as_deref())
}

/// Most runs a trace page lists.
const TRACE_RUNS_LISTED: usize = 100;

/// `/ui/traces/{trace-id}`: the runs of a trace (running or ended, on any
/// host sharing the journal); one run goes straight to its page.
pub(super) async fn trace_page(
    State(app): State<Arc<Inner>>,
    Path(trace_id): Path<String>,
) -> Response {
    let trace_id = trace_id.trim().to_ascii_lowercase();
    if let Err(e) = TraceId::parse(&trace_id) {
        return message(
            StatusCode::BAD_REQUEST,
            "Not a trace id",
            &format!("`{trace_id}`: {e}"),
        );
    }
    let runs = match app
        .journal
        .runs_of_trace(&trace_id, TRACE_RUNS_LISTED)
        .await
    {
        Ok(runs) => runs,
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Journal unavailable",
                &e.to_string(),
            );
        }
    };
    match runs.as_slice() {
        [] => message(
            StatusCode::NOT_FOUND,
            "Trace not found",
            &format!(
                "No run of trace `{trace_id}` in this journal (another journal's, or pruned)."
            ),
        ),
        [one] => Redirect::to(&format!("/ui/runs/{}", one.run_id)).into_response(),
        many => {
            let body = html! {
                h1 { "Trace " code { (trace_id) } }
                p { (trace_ids(&app, &trace_id)) }
                table.runs #trace-runs {
                    thead { tr { th { "run" } th { "workflow" } th { "status" } th { "started (UTC)" } th { "host" } } }
                    tbody {
                        @for r in many {
                            tr data-run=(r.run_id) {
                                td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                                td { (r.workflow) }
                                td { span class={ "outcome " (r.status) } { (r.status) } @if r.degraded { " " span.outcome.degraded { "degraded" } } }
                                td { (waterfall::utc(r.started_at_ms)) }
                                td { code { (r.owner) } }
                            }
                        }
                    }
                }
                @if many.len() >= TRACE_RUNS_LISTED { p.muted { "The first " (TRACE_RUNS_LISTED) " runs." } }
            };
            page(&format!("Trace {trace_id}"), body).into_response()
        }
    }
}

/// `/ui/events`: runs in flight here and their changes, as server-sent
/// events (what the runs and run pages follow); `503` past
/// [`live::MAX_EVENT_STREAMS`] listening pages.
pub(super) async fn events(State(app): State<Arc<Inner>>) -> Response {
    match app.in_flight.events(app.closing.clone()) {
        Some(stream) => stream.into_response(),
        None => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many pages listening",
            &format!(
                "{} pages already follow this server's runs; close one, or reload later",
                live::MAX_EVENT_STREAMS
            ),
        ),
    }
}

/// The runs page's live part: keeps "In flight here" current and adds each
/// run that ends (and matches the page's filters) to the top of "Finished".
const RUNS_SCRIPT: &str = include_str!("assets/runs.js");

/// A running run's page: its current steps follow the run; when it ends
/// the page reloads into the waterfall.
const RUN_SCRIPT: &str = include_str!("assets/run.js");
/// A waiting run's signal and cancel forms.
const CONTROL_SCRIPT: &str = include_str!("assets/control.js");

/// The workflows the served ones compose that are not served themselves:
/// each one's DAG, from the text the composing workflow pinned (so a compose
/// step's link on the page leads somewhere).
fn composed_sections(app: &Inner) -> Markup {
    let served = app.live.workflows();
    let names: std::collections::BTreeSet<&str> =
        served.iter().map(|s| s.workflow.name.as_str()).collect();
    let mut composed: std::collections::BTreeMap<&str, (&str, &crate::workflow::Workflow)> =
        std::collections::BTreeMap::new();
    for s in &served {
        for name in s.workflow.composed.keys() {
            if !names.contains(name.as_str()) {
                composed
                    .entry(name)
                    .or_insert((&s.workflow.name, &s.workflow));
            }
        }
    }
    html! {
        @for (name, (by, wf)) in composed {
            @let file = wf.source.with_file_name(format!("{name}.toml"));
            @let loaded = wf.composed.get(name).map(|text| crate::workflow::Workflow::from_toml(text, &file));
            section.workflow id={ "workflow-" (name) } data-workflow=(name) data-composed-by=(by) {
                h2 { (name) " " span.muted { "composed by " (by) } }
                @match loaded {
                    Some(Ok(sub)) => {
                        @if let Some(d) = &sub.description { p.muted { (d) } }
                        (dag::svg(&sub))
                    },
                    _ => { p.muted { "its definition cannot be drawn here" } },
                }
            }
        }
    }
}

/// `/ui/workflows`: every served workflow, its DAG and its components.
pub(super) async fn workflows_page(State(app): State<Arc<Inner>>) -> Response {
    let versions = app.live.versions();
    let body = html! {
        h1 { "Workflows" }
        @for served in app.live.workflows() {
            @let wf = &served.workflow;
            section.workflow id={ "workflow-" (wf.name) } data-workflow=(wf.name) {
                h2 { (wf.name) }
                @if let Some(d) = &wf.description { p.muted { (d) } }
                (dag::svg(wf))
                h3 { "Inputs" }
                ul {
                    @for (name, spec) in &wf.inputs {
                        li {
                            code { (name) }
                            @match &spec.default {
                                Some(v) => { " " span.muted { "default " code { (v.to_string()) } } },
                                None => { " " span.muted { "required" } },
                            }
                            @if let Some(d) = &spec.description { " - " (d) }
                        }
                    }
                }
                h3 { "Steps" }
                table.runs {
                    thead { tr { th { "step" } th { "component" } th { "world" } th { "versions (oldest first, live last)" } } }
                    tbody {
                        @for step in wf.steps.iter().filter(|s| s.kind == crate::workflow::StepKind::Call) {
                            @let name = component_name(&step.component);
                            @let info = served.components.get(&step.name);
                            tr data-step=(step.name) {
                                td { (step.name) }
                                td { code title=(step.component.display().to_string()) { (name) } }
                                td { (info.map_or("", |i| i.world)) }
                                td {
                                    @for (i, v) in versions.get(&name).map_or(&[][..], Vec::as_slice).iter().enumerate() {
                                        @if i > 0 { " -> " }
                                        code.version data-source=(v.source) title=(waterfall::utc(v.installed_at_ms)) {
                                            (v.sha256.get(..12).unwrap_or(&v.sha256))
                                        }
                                        " " span.muted { (v.source) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (composed_sections(&app))
        p.muted { "Rollback is an admin API call: POST /v1/components/NAME/rollback (docs/serving.md)." }
    };
    page("Workflows", body).into_response()
}

const STYLE: &str = include_str!("assets/viewer.css");
