//! The run viewer (`/ui/...` on `braid serve`), loaded in headless Chromium
//! (Debian's `chromium`, installed by `make test`): the DOM it renders shows
//! every step and attempt on one time axis, the parallel fetches
//! overlapping, undo in reverse completion order, the trace id and each
//! outbound call's `traceparent`; an unknown run is a 404 page. Screenshots
//! of the three run pages go to `target/screenshots/` (not committed).

use crate::serve::Served;
use crate::support::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The DOM Chromium renders for `url` (`--dump-dom`), and a screenshot of
/// the page to `screenshot` if given.
fn chromium(url: &str, screenshot: Option<&Path>) -> String {
    let binary = Path::new("/usr/bin/chromium");
    assert!(
        binary.exists(),
        "{} missing: run `make test` (it installs Debian's chromium)",
        binary.display()
    );
    let profile = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[String]| {
        Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .output()
            .expect("chromium runs")
    };
    if let Some(file) = screenshot {
        let shot = run(&[format!("--screenshot={}", file.display())]);
        assert!(file.exists(), "no screenshot: {}", stderr(&shot));
    }
    let out = run(&["--dump-dom".to_string()]);
    assert!(out.status.success(), "chromium: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn screenshots() -> PathBuf {
    let dir = root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// The value of attribute `name` in the first element at or after `from`.
fn attr_after<'a>(dom: &'a str, from: usize, name: &str) -> &'a str {
    let key = format!("{name}=\"");
    let at = dom[from..].find(&key).expect(name) + from + key.len();
    let end = dom[at..].find('"').expect("closing quote") + at;
    &dom[at..end]
}

/// `(start, duration)` in ms of the bar in the row that starts with `row`.
fn bar_of(dom: &str, row: &str) -> (f64, f64) {
    let at = dom
        .find(row)
        .unwrap_or_else(|| panic!("no {row} in the page"));
    let num = |name| attr_after(dom, at, name).parse::<f64>().expect(name);
    (num("data-start-ms"), num("data-duration-ms"))
}

/// The steps named by rows of `kind`, in page order.
fn rows_of<'a>(dom: &'a str, kind: &str) -> Vec<&'a str> {
    let key = format!("data-kind=\"{kind}\" data-step=\"");
    dom.match_indices(&key)
        .map(|(i, _)| {
            let at = i + key.len();
            &dom[at..at + dom[at..].find('"').expect("quote")]
        })
        .collect()
}

/// Asserts the run page shows what `report` holds.
fn assert_run_page(dom: &str, report: &Value) {
    assert!(
        dom.contains(&format!(
            "data-trace-id=\"{}\"",
            str_of(report, "/trace_id")
        )),
        "the trace id is shown"
    );
    assert!(dom.contains(&format!(
        "data-run-outcome=\"{}\"",
        str_of(report, "/outcome")
    )));
    let steps = report["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().map(|s| str_of(s, "/name")).collect();
    assert_eq!(
        rows_of(dom, "step"),
        names,
        "every step, in the report's order"
    );
    let attempts: Vec<&str> = steps
        .iter()
        .flat_map(|s| {
            let n = s["attempts"].as_array().map_or(0, Vec::len);
            std::iter::repeat_n(str_of(s, "/name"), n)
        })
        .collect();
    assert_eq!(rows_of(dom, "attempt"), attempts, "every attempt");
    for a in steps
        .iter()
        .flat_map(|s| s["attempts"].as_array().expect("attempts"))
    {
        let (start, duration) = bar_of(dom, &format!("data-span-id=\"{}\"", str_of(a, "/span_id")));
        assert!((start - a["start_ms"].as_f64().expect("start")).abs() < 0.01);
        assert!((duration - a["duration_ms"].as_f64().expect("duration")).abs() < 0.01);
    }
    for call in report["http_calls"].as_array().expect("calls") {
        let sent = str_of(call, "/traceparent");
        assert!(
            dom.contains(&format!("<code data-traceparent=\"\">{sent}</code>")),
            "the traceparent {sent} is shown"
        );
    }
    if let Some(error) = report["error"].as_str() {
        assert!(dom.contains("data-run-error"), "the run's error is shown");
        let escaped = error
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(dom.contains(&escaped), "{error}");
    }
}

#[test]
fn the_run_viewer_shows_succeeded_degraded_and_undone_runs_in_chromium() {
    let api = SampleApi::start(Some(0));
    let served = Served::spawn(&reference_workflow(), &[], &[]);
    let shots = screenshots();
    let run = |user: &str, item: &str, headers: &[(&str, &str)]| -> Value {
        let input: Value =
            serde_json::from_str(&reference_input(&api, user, item)).expect("input is JSON");
        let r = served.post_run(&input, headers);
        let id = str_of(&r.json(), "/run_id").to_string();
        served.get(&format!("/v1/runs/{id}")).json()
    };

    // Succeeded: the two fetches run in parallel, and their bars overlap.
    let ok = run("u-100", "viewer-ok", &[]);
    assert_eq!(ok["outcome"], "succeeded");
    let url = |id: &str| format!("http://{}/ui/runs/{id}", served.addr);
    let dom = chromium(
        &url(str_of(&ok, "/run_id")),
        Some(&shots.join("run-succeeded.png")),
    );
    assert_run_page(&dom, &ok);
    let profile = bar_of(&dom, "data-kind=\"step\" data-step=\"fetch_profile\"");
    let permissions = bar_of(&dom, "data-kind=\"step\" data-step=\"fetch_permissions\"");
    assert!(
        profile.0 < permissions.0 + permissions.1 && permissions.0 < profile.0 + profile.1,
        "the parallel fetches overlap: {profile:?} {permissions:?}"
    );

    // Degraded: permissions answer 503, the step retries, then compensates.
    let (traceparent, trace) = new_trace();
    api.add_fault(
        serde_json::json!({ "endpoint": "permissions", "status": 503, "trace_id": trace }),
    );
    let degraded = run("u-100", "viewer-degraded", &[("traceparent", &traceparent)]);
    assert_eq!(degraded["degraded"], true, "{degraded}");
    let dom = chromium(
        &url(str_of(&degraded, "/run_id")),
        Some(&shots.join("run-degraded.png")),
    );
    assert_run_page(&dom, &degraded);
    assert!(dom.contains("data-kind=\"compensation\" data-step=\"fetch_permissions\""));
    assert!(dom.contains(">degraded<"), "the degraded badge");

    // Failed: access denied; the completed steps are undone in reverse
    // completion order, which the page lists as the report does.
    let failed = run("u-300", "viewer-failed", &[]);
    assert_eq!(failed["outcome"], "failed");
    let dom = chromium(
        &url(str_of(&failed, "/run_id")),
        Some(&shots.join("run-failed.png")),
    );
    assert_run_page(&dom, &failed);
    let undone: Vec<&str> = failed["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .map(|u| str_of(u, "/step"))
        .collect();
    assert_eq!(undone.len(), 3, "{failed}");
    assert_eq!(rows_of(&dom, "undo"), undone, "undo in the report's order");

    // The list has all three, newest first.
    let dom = chromium(&format!("http://{}/ui/runs", served.addr), None);
    let listed: Vec<usize> = [&failed, &degraded, &ok]
        .iter()
        .map(|r| {
            dom.find(&format!("data-run=\"{}\"", str_of(r, "/run_id")))
                .expect("listed")
        })
        .collect();
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "newest first");

    // An unknown run is a 404 page that says so.
    let missing = served.get("/ui/runs/run-0000000000000000");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Run not found"), "{}", missing.body);
}

/// `/ui/workflows` draws the reference workflow's DAG: a node per step, an
/// edge per dependency (as the definition has them), every step right of
/// what it depends on, the parallel fetches in one column; and lists each
/// step's component with its versions: after an upload and a rollback,
/// `aggregate` shows initial, upload, rollback, in that order.
#[test]
fn the_workflows_page_draws_the_dag_and_lists_components() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = crate::serve::private_registry(dir.path());
    let served = Served::spawn(&workflow, &["--admin-token", "s3cret"], &[]);
    let twin = std::fs::read(components().join("aggregate_js.wasm")).expect("twin");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let auth = "authorization: Bearer s3cret\r\n";
    let (status, body) = runtime.block_on(crate::serve::request_async(
        &served.addr,
        "PUT",
        "/v1/components/aggregate",
        auth,
        &twin,
    ));
    assert_eq!(status, 200, "upload: {body}");
    let (status, body) = runtime.block_on(crate::serve::request_async(
        &served.addr,
        "POST",
        "/v1/components/aggregate/rollback",
        auth,
        b"",
    ));
    assert_eq!(status, 200, "rollback: {body}");
    let dom = chromium(
        &format!("http://{}/ui/workflows", served.addr),
        Some(&screenshots().join("workflows.png")),
    );
    let wf = braid::workflow::Workflow::load(&reference_workflow()).expect("workflow");
    // The x of each step's box.
    let x_of = |step: &str| -> f64 {
        let at = dom
            .find(&format!("class=\"node\" data-step=\"{step}\""))
            .unwrap_or_else(|| panic!("no node for {step}"));
        attr_after(&dom, at, "x").parse().expect("x")
    };
    for step in &wf.steps {
        for dep in step.dependencies() {
            assert!(
                dom.contains(&format!("data-from=\"{dep}\" data-to=\"{}\"", step.name)),
                "an edge {dep} -> {}",
                step.name
            );
            assert!(x_of(dep) < x_of(&step.name), "{dep} left of {}", step.name);
        }
    }
    let edges = dom.matches("class=\"edge\"").count();
    let expected: usize = wf.steps.iter().map(|s| s.dependencies().len()).sum();
    assert_eq!(edges, expected, "one edge per dependency");
    assert_eq!(
        x_of("fetch_profile"),
        x_of("fetch_permissions"),
        "parallel steps share a column"
    );
    for step in &wf.steps {
        assert!(dom.contains(&format!("<tr data-step=\"{}\">", step.name)));
    }
    assert!(
        dom.matches("data-source=\"initial\"").count() >= wf.steps.len(),
        "each component's first version is listed"
    );
    let row = dom
        .find("<tr data-step=\"aggregate\">")
        .expect("aggregate row");
    let row = &dom[row..row + dom[row..].find("</tr>").expect("row end")];
    let sources: Vec<&str> = row
        .match_indices("data-source=\"")
        .map(|(i, m)| {
            let at = i + m.len();
            &row[at..at + row[at..].find('"').expect("quote")]
        })
        .collect();
    assert_eq!(sources, ["initial", "upload", "rollback"], "{row}");
}
