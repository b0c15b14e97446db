//! One run as a waterfall: every span of its report on one time axis - the
//! run, each step, each attempt (retries with their backoff gaps), each
//! compensation, each undo in its order, and under each attempt its
//! outbound calls (with the `traceparent` sent), claims and events.
//!
//! Renders the stored report (JSON) as it is; long lists are collapsed
//! (`<details>`), and events are shown at most [`EVENTS_SHOWN`] per attempt,
//! so a report at its size limits stays a page a browser draws at once.

use maud::{Markup, html};
use serde_json::Value;

/// Events listed under one attempt; the rest are counted.
pub const EVENTS_SHOWN: usize = 50;

/// `ms` milliseconds for people: `850 ms`, `2.31 s`.
pub fn ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// A Unix time in milliseconds as an HTTP date (UTC).
pub fn utc(unix_ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
}

/// The time axis: positions as percentages of the run's span.
struct Axis {
    total_ms: f64,
}

impl Axis {
    /// The run's duration, stretched to the last thing that ended (an undo
    /// can end after the run's own clock stopped).
    fn of(report: &Value) -> Axis {
        let mut end = num(report, "duration_ms");
        let mut see = |start: f64, duration: f64| end = end.max(start + duration);
        for step in list(report, "steps") {
            for a in list(step, "attempts") {
                see(num(a, "start_ms"), num(a, "duration_ms"));
            }
        }
        for u in list(report, "undo") {
            for a in list(u, "attempts") {
                see(num(a, "start_ms"), num(a, "duration_ms"));
            }
        }
        for c in list(report, "http_calls") {
            see(num(c, "start_ms"), num(c, "duration_ms"));
        }
        Axis {
            total_ms: end.max(0.001),
        }
    }

    /// A bar from `start` lasting `duration` (ms since the run started).
    fn bar(&self, class: &str, start: f64, duration: f64) -> Markup {
        let left = (start / self.total_ms * 100.0).clamp(0.0, 100.0);
        let width = (duration / self.total_ms * 100.0).clamp(0.0, 100.0 - left);
        html! {
            span class={ "bar " (class) }
                style={ "left:" (format!("{left:.3}")) "%;width:" (format!("{width:.3}")) "%" }
                data-start-ms=(format!("{start:.3}")) data-duration-ms=(format!("{duration:.3}"))
                title={ (ms(start)) " + " (ms(duration)) } {}
        }
    }
}

/// One row: a label on the left, a lane with `bar` on the right.
fn row(kind: &str, attrs: &[(&str, &str)], label: Markup, bar: Markup) -> Markup {
    // maud has no dynamic attribute names; the few data attributes a row
    // carries are named here.
    let get = |k: &str| attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    html! {
        div class={ "row " (kind) } data-kind=(kind) data-step=[get("step")]
            data-span-id=[get("span")] data-outcome=[get("outcome")] {
            div.label { (label) }
            div.lane { (bar) }
        }
    }
}

/// A span id or trace id, with a button that copies it.
fn copyable(id: &str) -> Markup {
    html! {
        code { (id) }
        button.copy type="button" data-copy=(id)
            onclick="navigator.clipboard && navigator.clipboard.writeText(this.dataset.copy)" { "copy" }
    }
}

/// A trace id, copyable, with links to its runs and (if configured) to
/// `backend`, its page in the user's tracing backend.
pub fn trace_id_links(trace_id: &str, backend: Option<&str>) -> Markup {
    html! {
        (copyable(trace_id)) " "
        a href={ "/ui/traces/" (trace_id) } { "runs of this trace" }
        @if let Some(url) = backend {
            " " a href=(url) target="_blank" rel="noopener" data-trace-url { "open in tracing backend" }
        }
    }
}

/// The page body for `report`. `live_sha` gives a step's live component
/// sha256, to say which steps were hot-swapped since the run; `trace_link`
/// is the trace's page in the user's tracing backend, if configured.
pub fn render(
    report: &Value,
    live_sha: &dyn Fn(&str) -> Option<String>,
    trace_link: Option<&str>,
) -> Markup {
    let axis = Axis::of(report);
    let outcome = text(report, "outcome");
    let degraded = report["degraded"].as_bool() == Some(true);
    let calls = list(report, "http_calls");
    let events = list(report, "events");
    html! {
        h1 {
            "Run " code { (text(report, "run_id")) } " "
            span class={ "outcome " (outcome) } data-run-outcome=(outcome) { (outcome) }
            @if degraded { " " span.outcome.degraded { "degraded" } }
        }
        @if let Some(error) = report["error"].as_str() {
            p.error data-run-error { (error) }
        }
        @let result = (!report["result"].is_null()).then(|| report["result"].to_string());
        (io("input and result", "run", report["input"].as_str(), result.as_deref()))
        dl.meta {
            dt { "workflow" } dd { (text(report, "workflow")) }
            dt { "trace id" } dd data-trace-id=(text(report, "trace_id")) {
                (trace_id_links(text(report, "trace_id"), trace_link))
            }
            dt { "run span" } dd { (copyable(text(report, "span_id"))) }
            dt { "started" } dd { (utc(report["started_at_ms"].as_u64().unwrap_or(0))) }
            dt { "duration" } dd { (ms(num(report, "duration_ms"))) }
            (lineage(report))
        }
        div.waterfall {
            (row("run", &[("span", text(report, "span_id")), ("outcome", outcome)],
                html! { "run " (text(report, "workflow")) },
                axis.bar(outcome, 0.0, num(report, "duration_ms"))))
            @for step in list(report, "steps") {
                (step_rows(&axis, step, calls, events, live_sha))
            }
            @if !list(report, "undo").is_empty() {
                @for (i, u) in list(report, "undo").iter().enumerate() {
                    @for a in list(u, "attempts") {
                        (row("undo", &[("step", text(u, "step")), ("span", text(a, "span_id")), ("outcome", text(a, "outcome"))],
                            html! { "undo " (i + 1) ": " (text(u, "step")) " #" (a["attempt"]) " " span.muted { (text(a, "outcome")) } },
                            axis.bar(text(a, "outcome"), num(a, "start_ms"), num(a, "duration_ms"))))
                        @if let Some(e) = a["error"].as_str() { p.error { (e) } }
                        (children(&axis, text(a, "span_id"), calls, events))
                    }
                }
            }
        }
    }
}

/// Where the run came from, when it did not simply start: the run it
/// restarts (and from which step), or how it was resumed (a host's crash,
/// a suspension ended, components changed since it started).
fn lineage(report: &Value) -> Markup {
    let restarted = &report["restarted_from"];
    let resumed = &report["resumed"];
    html! {
        @if restarted.is_object() {
            dt { "restarts" } dd data-restarted-from=(text(restarted, "run_id")) {
                a href={ "/ui/runs/" (text(restarted, "run_id")) } { code { (text(restarted, "run_id")) } }
                " from step " code { (text(restarted, "step")) } ", reusing "
                @let reused: Vec<&str> = list(restarted, "reused_steps").iter().filter_map(Value::as_str).collect();
                @if reused.is_empty() { "nothing" } @else { (reused.join(", ")) }
            }
        }
        @if let Some(how) = resumed["unsuspended"].as_str() {
            dt { "suspension" } dd data-unsuspended=(how) { "ended by " (how) }
        }
        @for c in list(resumed, "component_changes") {
            dt { "new version" } dd {
                code { (text(c, "step")) } " "
                span.muted { (text(c, "from_sha256").get(..12).unwrap_or("")) " → " (text(c, "to_sha256").get(..12).unwrap_or("")) }
            }
        }
    }
}

/// A run's or step's input and output (bounded JSON text), folded.
fn io(label: &str, of: &str, input: Option<&str>, output: Option<&str>) -> Markup {
    html! {
        @if input.is_some() || output.is_some() {
            details.io data-io=(of) {
                summary.muted { (label) }
                @if let Some(i) = input { pre.input { (i) } }
                @if let Some(o) = output { pre.output { (o) } }
            }
        }
    }
}

fn step_rows(
    axis: &Axis,
    step: &Value,
    calls: &[Value],
    events: &[Value],
    live_sha: &dyn Fn(&str) -> Option<String>,
) -> Markup {
    let name = text(step, "name");
    let sha = text(step, "component_sha256");
    let swapped = live_sha(name).is_some_and(|live| live != sha);
    html! {
        (row("step", &[("step", name), ("outcome", text(step, "outcome"))],
            html! {
                strong { (name) } " " span.muted { (text(step, "outcome")) }
            },
            axis.bar(text(step, "outcome"), num(step, "start_ms"), num(step, "duration_ms"))))
        @let path = text(step, "component");
        @let file = std::path::Path::new(path).file_stem().map(|f| f.to_string_lossy().into_owned());
        div.component.muted data-step=(name) {
            "component " code title=(path) { (file.as_deref().unwrap_or(path)) }
            " sha256 " code title=(sha) { (sha.get(..12).unwrap_or(sha)) }
            @if swapped { " " strong data-swapped { "(hot-swapped since)" } }
        }
        (io("input and output", name, step["input"].as_str(), step["output"].as_str()))
        @if let Some(e) = step["error"].as_str() { p.error data-step-error=(name) { (e) } }
        @if let Some(why) = step["skipped_because"].as_str() {
            p.muted.skipped data-skipped=(name) { "skipped: " (why) }
        }
        @if step["map"].is_object() { (map_rows(axis, name, &step["map"], calls, events)) }
        @for a in list(step, "attempts") {
            (row("attempt", &[("step", name), ("span", text(a, "span_id")), ("outcome", text(a, "outcome"))],
                html! { "attempt " (a["attempt"]) " " span.muted { (text(a, "outcome")) " " (ms(num(a, "duration_ms"))) } },
                axis.bar(text(a, "outcome"), num(a, "start_ms"), num(a, "duration_ms"))))
            @if let Some(e) = a["error"].as_str() { p.error { (e) } }
            (children(axis, text(a, "span_id"), calls, events))
        }
        @for c in list(step, "compensations") {
            (row("compensation", &[("step", name), ("span", text(c, "span_id")), ("outcome", text(c, "decision"))],
                html! { "compensate " span.muted { (text(c, "decision")) } },
                axis.bar(text(c, "decision"), num(c, "start_ms"), num(c, "duration_ms"))))
        }
    }
}

/// A map step's elements: how many ended how, then the elements the report
/// shows, each with its attempts and what they did.
fn map_rows(axis: &Axis, name: &str, map: &Value, calls: &[Value], events: &[Value]) -> Markup {
    let count = |k: &str| map[k].as_u64().unwrap_or(0);
    html! {
        p.muted data-map=(name) data-map-elements=(count("elements")) {
            "map over " (count("elements")) " elements: " (count("succeeded")) " succeeded, "
            (count("failed")) " failed (" (count("tolerated_failures")) " tolerated), "
            (count("reused")) " reused, at most " (count("max_parallel")) " at once"
            @if count("not_shown") > 0 { "; " (count("not_shown")) " not listed" }
        }
        @for e in list(map, "shown") {
            @let element = format!("{name}.{}", e["index"]);
            (row("element", &[("step", &element), ("outcome", text(e, "outcome"))],
                html! { "element " (e["index"]) " " span.muted { (text(e, "outcome")) } },
                html! {}))
            @if let Some(err) = e["error"].as_str() { p.error { (err) } }
            @for a in list(e, "attempts") {
                (row("attempt", &[("step", &element), ("span", text(a, "span_id")), ("outcome", text(a, "outcome"))],
                    html! { "attempt " (a["attempt"]) " " span.muted { (text(a, "outcome")) " " (ms(num(a, "duration_ms"))) } },
                    axis.bar(text(a, "outcome"), num(a, "start_ms"), num(a, "duration_ms"))))
                (children(axis, text(a, "span_id"), calls, events))
            }
        }
    }
}

/// What an attempt (or undo attempt) did under its span: outbound calls,
/// claims, and its events (collapsed, at most [`EVENTS_SHOWN`]).
fn children(axis: &Axis, span: &str, calls: &[Value], events: &[Value]) -> Markup {
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| text(e, "span_id") == span)
        .collect();
    html! {
        @for c in calls.iter().filter(|c| text(c, "attempt_span_id") == span) {
            @let status = c["status"].as_u64().map(|s| s.to_string());
            (row("call", &[("span", text(c, "span_id"))],
                html! {
                    (text(c, "method")) " " (text(c, "url")) " "
                    span.muted { (status.as_deref().unwrap_or("no answer")) " " (ms(num(c, "duration_ms"))) }
                    br;
                    span.muted { "traceparent " } code data-traceparent { (text(c, "traceparent")) }
                },
                axis.bar(if c["error"].is_string() { "error" } else { "" }, num(c, "start_ms"), num(c, "duration_ms"))))
            @if let Some(e) = c["error"].as_str() { p.error { (e) } }
        }
        @for e in mine.iter().filter(|e| text(e, "name").starts_with("claim.")) {
            (row("claim", &[("span", span)],
                html! {
                    (text(e, "name")) " " code { (e["metadata"]["work_item"].as_str().unwrap_or("")) }
                    @if let Some(id) = e["metadata"]["claim_id"].as_str() { " " span.muted { (id) } }
                },
                axis.bar("", num(e, "at_ms"), 0.0)))
        }
        @if !mine.is_empty() {
            details.more data-events=(mine.len()) {
                summary { (mine.len()) @if mine.len() == 1 { " event" } @else { " events" } }
                ul.events {
                    @for e in mine.iter().take(EVENTS_SHOWN) {
                        li { (ms(num(e, "at_ms"))) " " (text(e, "kind")) " " (text(e, "name")) " " (text(e, "message")) }
                    }
                }
                @if mine.len() > EVENTS_SHOWN { p.muted { "and " (mine.len() - EVENTS_SHOWN) " more (GET /v1/runs/ID has them all)" } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_shows_its_elements_and_a_skipped_step_why_escaped() {
        let report = serde_json::json!({
            "run_id": "run-1", "outcome": "succeeded", "duration_ms": 10.0, "span_id": "s",
            "steps": [
                { "name": "each", "outcome": "succeeded", "component": "e.wasm",
                  "component_sha256": "00", "start_ms": 0.0, "duration_ms": 5.0, "attempts": [],
                  "map": { "span_id": "m", "parent_span_id": "s", "elements": 3, "succeeded": 2, "failed": 1,
                    "tolerated_failures": 1, "reused": 0, "max_parallel": 2, "not_shown": 0,
                    "shown": [
                      { "index": 0, "outcome": "succeeded", "error": null,
                        "attempts": [{ "attempt": 1, "span_id": "a0", "start_ms": 0.0,
                          "duration_ms": 1.0, "outcome": "succeeded" }] },
                      { "index": 1, "outcome": "failed", "error": "<script>alert(1)</script>",
                        "attempts": [] }
                    ] } },
                { "name": "notify", "outcome": "skipped", "component": "n.wasm",
                  "component_sha256": "00", "start_ms": 0.0, "duration_ms": 0.0, "attempts": [],
                  "skipped_because": "condition false: step `p/ok` equals \"<b>\"" }
            ]
        });
        let html = render(&report, &|_| None, None).into_string();
        assert!(
            html.contains(r#"data-map="each" data-map-elements="3""#),
            "{html}"
        );
        assert!(html.contains("map over 3 elements: 2 succeeded, 1 failed (1 tolerated)"));
        assert!(
            html.contains(r#"data-step="each.1" data-outcome="failed""#),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>alert"));
        assert!(html.contains(r#"data-skipped="notify""#));
        assert!(
            html.contains("skipped: condition false: step `p/ok` equals &quot;&lt;b&gt;&quot;"),
            "{html}"
        );
    }
}
