//! The run viewer: read-only HTML pages on `braid serve`'s listener, built
//! into the binary (no external assets, no JavaScript framework).
//!
//! - `/ui/runs`: recent runs, newest first, filtered by workflow and outcome;
//! - `/ui/runs/{id}`: one run as a waterfall on one time axis ([`waterfall`]);
//! - `/ui/workflows`: each served workflow's DAG ([`dag`]), inputs, steps
//!   with their components, and each component's versions (hot swaps and
//!   rollbacks, the live one last).
//!
//! Pages read what the JSON API reads (the journal's stored reports and the
//! live components); they change nothing.

use super::Inner;
use super::{dag, waterfall};
use crate::registry::component_name;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
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

#[derive(Deserialize)]
pub(super) struct RunsPageQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// `/ui/runs`: the newest runs, at most `limit` (default 100, at most 1,000).
pub(super) async fn runs_page(
    State(app): State<Arc<Inner>>,
    Query(q): Query<RunsPageQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let workflow = q.workflow.filter(|w| !w.is_empty());
    let status = q.status.filter(|s| !s.is_empty());
    let runs = match app
        .journal
        .recent_reports(workflow.clone(), status.clone(), limit)
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
    let names = app.live.names();
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/ui/runs" {
            label { "workflow " select name="workflow" {
                option value="" { "any" }
                @for name in &names {
                    option value=(name) selected[workflow.as_deref() == Some(name.as_str())] { (name) }
                }
            } }
            label { " outcome " select name="status" {
                option value="" { "any" }
                @for s in ["succeeded", "failed", "aborted"] {
                    option value=(s) selected[status.as_deref() == Some(s)] { (s) }
                }
            } }
            " " button type="submit" { "Filter" }
        }
        table.runs {
            thead { tr { th { "run" } th { "workflow" } th { "outcome" } th { "started (UTC)" } th.num { "duration" } th { "trace id" } } }
            tbody {
                @for r in &runs {
                    tr data-run=(r.run_id) {
                        td { a href={ "/ui/runs/" (r.run_id) } { code { (r.run_id) } } }
                        td { (r.workflow) }
                        td { span class={ "outcome " (r.outcome) } { (r.outcome) } }
                        td { (waterfall::utc(r.started_at_ms)) }
                        td.num { (waterfall::ms(r.duration_ms)) }
                        td { code { (r.trace_id) } }
                    }
                }
            }
        }
        @if runs.is_empty() { p.muted { "No finished runs match." } }
    };
    page("Runs", body).into_response()
}

/// `/ui/runs/{id}`: one finished run's waterfall; `404` for an unknown id.
pub(super) async fn run_page(State(app): State<Arc<Inner>>, Path(id): Path<String>) -> Response {
    let json = match app.journal.report(&id).await {
        Ok(Some(json)) => json,
        Ok(None) => {
            return message(
                StatusCode::NOT_FOUND,
                "Run not found",
                &format!("No finished run `{id}` (it may still be running, or pruned)."),
            );
        }
        Err(e) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Journal unavailable",
                &e.to_string(),
            );
        }
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
    let title = format!("Run {id}");
    page(&title, waterfall::render(&report, &live_sha)).into_response()
}

/// `/ui/workflows`: every served workflow, its DAG and its components.
pub(super) async fn workflows_page(State(app): State<Arc<Inner>>) -> Response {
    let versions = app.live.versions();
    let body = html! {
        h1 { "Workflows" }
        @for served in app.live.workflows() {
            @let wf = &served.workflow;
            section.workflow data-workflow=(wf.name) {
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
                        @for step in &wf.steps {
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
        p.muted { "Rollback is an admin API call: POST /v1/components/NAME/rollback (docs/serving.md)." }
    };
    page("Workflows", body).into_response()
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2430; background: #fff; }
header { padding: 8px 16px; border-bottom: 1px solid #d8dde6; font-weight: 600; }
header a { color: inherit; text-decoration: none; margin-right: 8px; }
h2 { font-size: 16px; margin: 16px 0 4px; }
h3 { font-size: 14px; margin: 12px 0 4px; }
svg.dag { display: block; margin: 8px 0; }
main { padding: 12px 16px; }
h1 { font-size: 18px; margin: 8px 0; }
code { font: 12px ui-monospace, monospace; }
.muted { color: #6a7383; font-weight: normal; }
.error { color: #a4161a; white-space: pre-wrap; }
table.runs { border-collapse: collapse; width: 100%; }
table.runs th, table.runs td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef0f4; }
.num { text-align: right; }
.outcome { padding: 1px 6px; border-radius: 3px; background: #e8ebf0; }
.outcome.succeeded, .bar.succeeded, .bar.undone { background: #cfe8d5; }
.outcome.failed, .bar.failed, .bar.fatal, .bar.retryable, .bar.trap, .bar.timeout,
.bar.invalid-output, .bar.error { background: #f6c9c9; }
.outcome.aborted, .bar.cancelled, .bar.skipped { background: #e5e1f0; }
.outcome.degraded, .bar.compensated, .bar.continue-with { background: #fbe7b5; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0 16px; }
dl.meta dt { color: #6a7383; }
dl.meta dd { margin: 0; }
.waterfall { border-top: 1px solid #d8dde6; }
.row { display: grid; grid-template-columns: 320px 1fr; border-bottom: 1px solid #f1f3f6; min-height: 22px; align-items: center; }
.label { padding: 2px 6px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row.attempt .label { padding-left: 18px; }
.row.call .label, .row.claim .label { padding-left: 30px; color: #38404d; }
.row.call .label { white-space: normal; word-break: break-all; }
.lane { position: relative; height: 18px; }
.bar { position: absolute; top: 3px; height: 12px; min-width: 2px; border-radius: 2px; background: #c9d6ea; }
.row.call .bar { background: #bcd3f2; }
.row.claim .bar { background: #d9cbee; }
details.more { margin: 0 0 4px 30px; }
details.more summary { cursor: pointer; color: #6a7383; }
ul.events { margin: 2px 0; padding-left: 18px; font: 12px ui-monospace, monospace; }
button.copy { font-size: 11px; margin-left: 6px; }
"#;
