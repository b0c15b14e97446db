//! The run viewer (`/ui/...` on `braid serve`), loaded in headless Chromium
//! (Debian's `chromium`, installed by `make test`): the DOM it renders shows
//! every step and attempt on one time axis, the parallel fetches
//! overlapping, undo in reverse completion order, the trace id and each
//! outbound call's `traceparent`; an unknown run is a 404 page; runs started
//! while a page is open appear on it. Screenshots of the three run pages go
//! to `target/screenshots/` (not committed).

use crate::serve::Served;
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What every headless Chromium here runs with: no sandbox (containers),
/// nothing fetched from the network but the page.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
];

fn chromium_binary() -> &'static Path {
    let binary = Path::new("/usr/bin/chromium");
    assert!(
        binary.exists(),
        "{} missing: run `make test` (it installs Debian's chromium)",
        binary.display()
    );
    binary
}

/// The DOM Chromium renders for `url` (`--dump-dom`), and a screenshot of
/// the page to `screenshot` if given.
fn chromium(url: &str, screenshot: Option<&Path>) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let run = |extra: &[String]| {
        Command::new(chromium_binary())
            .args(CHROMIUM_FLAGS)
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

/// Headless Chromium driven over the DevTools protocol: its pages stay
/// open, so a test can watch one change after it loaded (which
/// `--dump-dom`, one look at the loaded page, cannot).
pub(crate) struct Browser {
    child: std::process::Child,
    /// `127.0.0.1:PORT` and the browser's own WebSocket path.
    devtools: (String, String),
    _profile: tempfile::TempDir,
}

type DevTools =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Calls DevTools `method` as call number `id`; its result, or its error.
async fn devtools_call(
    ws: &mut DevTools,
    id: u64,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let call = json!({ "id": id, "method": method, "params": params });
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        call.to_string(),
    ))
    .await
    .expect("DevTools send");
    // Answers come by id; anything else (an event) is skipped.
    while let Some(message) = ws.next().await {
        let message = message.expect("DevTools message");
        let Ok(text) = message.to_text() else {
            continue;
        };
        let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        if answer["id"] != id {
            continue;
        }
        return match answer.get("error") {
            Some(error) => Err(error.to_string()),
            None => Ok(answer["result"].clone()),
        };
    }
    panic!("the DevTools connection closed")
}

impl Browser {
    pub(crate) fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("tempdir");
        let child = Command::new(chromium_binary())
            .args(CHROMIUM_FLAGS)
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        // Chromium names its DevTools port and path in this file once it listens.
        let file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let devtools = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                break (format!("127.0.0.1:{port}"), path.to_string());
            }
            assert!(Instant::now() < deadline, "chromium did not open DevTools");
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            devtools,
            _profile: profile,
        }
    }

    /// A new tab loading `url`.
    pub(crate) async fn open(&self, url: &str) -> Page {
        let (addr, path) = &self.devtools;
        let (mut browser, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .expect("DevTools connection");
        let target = devtools_call(
            &mut browser,
            1,
            "Target.createTarget",
            json!({ "url": url }),
        )
        .await
        .expect("a new tab");
        let page = format!("ws://{addr}/devtools/page/{}", str_of(&target, "/targetId"));
        let (ws, _) = tokio_tungstenite::connect_async(page)
            .await
            .expect("DevTools connection to the tab");
        Page { ws, calls: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
pub(crate) struct Page {
    ws: DevTools,
    calls: u64,
}

impl Page {
    /// The value of `expression` (a promise awaited) in the page, or why
    /// there is none (an exception; the page between two documents).
    pub(crate) async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        self.calls += 1;
        let params =
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true });
        let result = devtools_call(&mut self.ws, self.calls, "Runtime.evaluate", params).await?;
        if let Some(thrown) = result.get("exceptionDetails") {
            return Err(thrown.to_string());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Writes a PNG of the page as it is now to `file`.
    pub(crate) async fn screenshot(&mut self, file: &Path) {
        use base64::Engine;
        self.calls += 1;
        let shot = devtools_call(
            &mut self.ws,
            self.calls,
            "Page.captureScreenshot",
            json!({}),
        )
        .await
        .expect("a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(str_of(&shot, "/data"))
            .expect("base64 PNG");
        std::fs::write(file, png).expect("write the screenshot");
    }

    /// Waits (at most a minute: a deadline, not a measure) until
    /// `expression` is truthy in the page; its value.
    pub(crate) async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let last = tokio::time::timeout(Duration::from_secs(30), self.eval(expression))
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer from the page in 30 s"));
            if let Ok(v) = &last
                && !matches!(v, Value::Null | Value::Bool(false))
                && v != ""
                && v != 0
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 60 s (last: {last:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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
    let row_of = |r: &Value| {
        let at = dom
            .find(&format!("<tr data-run=\"{}\"", str_of(r, "/run_id")))
            .expect("row");
        &dom[at..at + dom[at..].find("</tr>").expect("row end")]
    };
    assert!(
        row_of(&degraded).contains(">degraded<"),
        "{}",
        row_of(&degraded)
    );
    assert!(!row_of(&ok).contains(">degraded<"), "{}", row_of(&ok));

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

/// The reference workflow, its profile fetch given the time to wait for an
/// answer the sample API delays (a fault of one trace): a run that stays on
/// `fetch_profile` as long as a test needs.
fn slow_profile_workflow(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(reference_workflow()).expect("workflow");
    let text = text
        .replacen("components_dir = \"../target/components\"\n", "", 1)
        .replacen("timeout_ms = 1000\n", "timeout_ms = 60000\n", 1);
    assert!(
        text.contains("timeout_ms = 60000"),
        "fetch_profile's timeout"
    );
    write_workflow(dir, "slow-profile.toml", &text)
}

/// A run the journal has running that this server is not running (here a
/// `braid run` on the server's state directory, as another host's run on a
/// shared database) is listed under "Running elsewhere" with its host
/// (`hostname:pid`), and its page says where it runs.
#[test]
fn a_run_going_on_elsewhere_is_listed_with_its_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = slow_profile_workflow(dir.path());
    let api = SampleApi::start(Some(0));
    let served = Served::spawn(&workflow, &[], &[]);
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 8000, "trace_id": trace }));
    let mut other = Command::new(env!("CARGO_BIN_EXE_braid"))
        .arg("run")
        .arg(&workflow)
        .arg("--state-dir")
        .arg(served.state_dir())
        .args(["--traceparent", &traceparent, "--json"])
        .args([
            "--input",
            &reference_input(&api, "u-100", "viewer-elsewhere"),
        ])
        .env("BRAID_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("braid run");
    let owned_by = format!(":{}</code>", other.id());
    // Listed once the run has journaled its start.
    let deadline = Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = served.get(&format!("/ui/runs?trace_id={trace}"));
        if page.body.contains("id=\"elsewhere\"") {
            break page.body;
        }
        assert!(Instant::now() < deadline, "not listed: {}", page.body);
        std::thread::sleep(Duration::from_millis(100));
    };
    let at = page.find("id=\"elsewhere\"").expect("section");
    let section = &page[at..at + page[at..].find("</table>").expect("table end")];
    assert!(section.contains(&trace), "{section}");
    assert!(section.contains(&owned_by), "{owned_by} in {section}");
    let run_id = attr_after(section, 0, "data-run").to_string();
    let run_page = served.get(&format!("/ui/runs/{run_id}"));
    assert_eq!(run_page.status, 200);
    assert!(
        run_page.body.contains("data-run-outcome=\"running\""),
        "{}",
        run_page.body
    );
    assert!(run_page.body.contains(&owned_by), "{}", run_page.body);
    let _ = other.kill();
    let _ = other.wait();
}

/// Pages follow runs live: a run started while the runs page is open
/// appears under "In flight here" with its current step and moves to the
/// top of "Finished" when it ends, without a reload; a running run's page
/// shows its current step and turns into the waterfall when the run ends.
/// The trace id finds the run, and links to the tracing backend.
#[test]
fn a_run_started_while_the_pages_are_open_appears_and_ends_on_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = slow_profile_workflow(dir.path());
    let api = SampleApi::start(Some(0));
    let served = Served::spawn(
        &workflow,
        &["--trace-url", "http://jaeger.test:16686/trace/{trace_id}"],
        &[],
    );
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 8000, "trace_id": trace }));
    let input = reference_input(&api, "u-100", "viewer-live");
    let addr = served.addr.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let run_id = runtime.block_on(async {
        let browser = Browser::launch();
        let mut list = browser.open(&format!("http://{addr}/ui/runs")).await;
        list.wait_for(
            "the runs page",
            // (The tab starts as about:blank.)
            "location.pathname === '/ui/runs' && document.readyState === 'complete' && (window.notReloaded = true)",
        )
            .await;
        let post = {
            let addr = addr.clone();
            let input = input.clone();
            let head = format!("traceparent: {traceparent}\r\ncontent-type: application/json\r\n");
            tokio::spawn(async move {
                crate::serve::request_async(&addr, "POST", "/v1/workflows/api-orchestration/runs", &head, input.as_bytes())
                    .await
            })
        };
        // It appears while it waits on its profile fetch.
        let run_id = list
            .wait_for(
                "the run in flight, on fetch_profile",
                &format!(
                    "(() => {{ const tr = [...document.querySelectorAll('#in-flight tr[data-run]')]
                         .find(tr => tr.textContent.includes('{trace}'));
                       return tr && tr.querySelector('.current').textContent.includes('fetch_profile #1') && tr.dataset.run; }})()"
                ),
            )
            .await;
        let run_id = run_id.as_str().expect("run id").to_string();
        list.screenshot(&screenshots().join("runs-in-flight.png")).await;

        // Its page, opened meanwhile, says it runs, and on which step.
        let mut page = browser.open(&format!("http://{addr}/ui/runs/{run_id}")).await;
        let state = page
            .wait_for(
                "the run's page",
                "document.readyState === 'complete' && document.querySelector('[data-run-outcome]').dataset.runOutcome",
            )
            .await;
        assert_eq!(state, "running", "opened while the profile answer is delayed 8 s");
        let current = page.eval("document.getElementById('current').textContent").await;
        assert!(
            current.as_ref().is_ok_and(|c| c.as_str().is_some_and(|c| c.contains("fetch_profile #1"))),
            "{current:?}"
        );
        // At least `authenticate` has ended, and nothing has failed.
        let attempts = page.eval("document.getElementById('attempts').textContent").await;
        let attempts = attempts.as_ref().ok().and_then(Value::as_str).unwrap_or("");
        let (ended, failed) = attempts.split_once(" (").expect("`N (M failed)`");
        assert!(ended.parse::<u32>().is_ok_and(|n| n >= 1), "{attempts}");
        assert_eq!(failed, "0 failed)", "{attempts}");
        let backend = page.eval("document.querySelector('[data-trace-url]').href").await;
        assert_eq!(backend, Ok(json!(format!("http://jaeger.test:16686/trace/{trace}"))));

        // It ends: the run's page reloads into its waterfall, and the runs
        // page (not reloaded) lists it first under "Finished".
        let (status, body) = post.await.expect("request task");
        assert_eq!(status, 200, "{body}");
        let outcome = page
            .wait_for(
                "the run's waterfall",
                "document.querySelector('.waterfall') && document.querySelector('[data-run-outcome]').dataset.runOutcome",
            )
            .await;
        assert_eq!(outcome, "succeeded");
        let row = list
            .wait_for(
                "the run first under Finished",
                &format!(
                    "(() => {{ const tr = document.querySelector('#finished tbody tr');
                       return tr && tr.dataset.run === '{run_id}' && tr.textContent; }})()"
                ),
            )
            .await;
        let row = row.as_str().expect("row text");
        assert!(row.contains("succeeded") && row.contains(&trace), "{row}");
        let left = list.eval("[document.querySelectorAll('#in-flight tr[data-run]').length, window.notReloaded === true]").await;
        assert_eq!(left, Ok(json!([0, true])), "no longer in flight, and the page was not reloaded");

        // The trace id leads to the run, on the pages and in the API.
        let mut traced = browser.open(&format!("http://{addr}/ui/traces/{}", trace.to_uppercase())).await;
        let landed = traced
            .wait_for(
                "the trace's run",
                "document.readyState === 'complete' && document.querySelector('[data-run-outcome]') && location.pathname",
            )
            .await;
        assert_eq!(landed, json!(format!("/ui/runs/{run_id}")));
        run_id
    });
    let listed = served.get(&format!("/v1/runs?trace_id={trace}")).json();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|r| str_of(r, "/run_id"))
        .collect();
    assert_eq!(ids, [run_id.as_str()]);
    let unknown = served.get("/ui/traces/0af7651916cd43dd8448eb211c80319c");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("Trace not found"), "{}", unknown.body);
    let bad = served.get("/ui/traces/not-a-trace");
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("not 32 lowercase hex digits"),
        "{}",
        bad.body
    );
}

/// What `make bench` reports of the viewer (`scripts/bench.sh viewer`; not
/// a test: `--ignored`): how long headless Chromium takes to show the page
/// of a run with 50 attempts and 1,000 events (ten `flood` steps, each
/// emitting 20 events per attempt, failing 5 times and compensating with
/// `continue-with`: a degraded run), beside the page of a
/// one-step run, loaded the same way in the same browser. Medians of 7 loads.
#[test]
#[ignore = "a benchmark: scripts/bench.sh viewer"]
fn bench_run_page_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut big = String::from(
        "name = \"api-orchestration\"\nresult = \"flood_0\"\n[defaults]\nmax_retries = 4\nallowed_hosts = []\n",
    );
    for i in 0..10 {
        big.push_str(&format!(
            "[[steps]]\nname = \"flood_{i}\"\ncomponent = \"flood\"\nargs.mode = {{ value = \"events-then-retry\" }}\nargs.count = {{ value = 20 }}\nargs.continue_bytes = {{ value = 8 }}\n"
        ));
    }
    let small = "name = \"api-orchestration\"\nresult = \"only\"\n[[steps]]\nname = \"only\"\ncomponent = \"noop\"\nargs.x = { value = 1 }\n";
    let mut pages = Vec::new();
    for (name, text) in [("big", big.as_str()), ("small", small)] {
        let workflow = write_workflow(dir.path(), &format!("{name}.toml"), text);
        let served = Served::spawn(&workflow, &[], &[]);
        let answer = served.post_run(&json!({}), &[]).json();
        let id = str_of(&answer, "/run_id").to_string();
        let report = served.get(&format!("/v1/runs/{id}")).json();
        let attempts: usize = report["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| s["attempts"].as_array().map_or(0, Vec::len))
            .sum();
        let events = report["events"].as_array().map_or(0, Vec::len);
        if name == "big" {
            assert_eq!(attempts, 50, "{report}");
            assert!(events >= 1000, "{events} events");
        }
        pages.push((name, attempts, events, served, id));
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let browser = Browser::launch();
    println!(
        "| run page | attempts | events | HTML | response end | DOM ready | first paint | load end |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut rows = Vec::new();
    for (name, attempts, events, served, id) in &pages {
        let url = format!("http://{}/ui/runs/{id}", served.addr);
        let mut samples: Vec<[f64; 5]> = Vec::new();
        runtime.block_on(async {
            for _ in 0..8 {
                let mut page = browser.open(&url).await;
                let t = page
                    .wait_for(
                        "the run page loaded",
                        "(() => { const n = performance.getEntriesByType('navigation')[0];
                           const p = performance.getEntriesByName('first-contentful-paint')[0];
                           return n && n.name.includes('/ui/runs/') && n.loadEventEnd > 0 && p &&
                             [n.transferSize || n.encodedBodySize, n.responseEnd, n.domContentLoadedEventEnd, p.startTime, n.loadEventEnd]; })()",
                    )
                    .await;
                let t: Vec<f64> = t.as_array().expect("timings").iter().filter_map(Value::as_f64).collect();
                samples.push([t[0], t[1], t[2], t[3], t[4]]);
            }
        });
        samples.remove(0); // the browser's first page warms it up
        let median = |k: usize| {
            let mut v: Vec<f64> = samples.iter().map(|s| s[k]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let row = [median(0), median(1), median(2), median(3), median(4)];
        println!(
            "| {name} | {attempts} | {events} | {:.0} KB | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            row[0] / 1024.0,
            row[1],
            row[2],
            row[3],
            row[4]
        );
        rows.push(row);
    }
    println!(
        "\nbig / small, load end: {:.2}x; first paint: {:.2}x",
        rows[0][4] / rows[1][4],
        rows[0][3] / rows[1][3]
    );
}
