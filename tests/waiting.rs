//! Runs that do not hold a connection (issue 28): `Prefer: respond-async`
//! answers `202` with `Location`, `GET /v1/runs/ID` answers for running
//! runs and long-polls with `?wait=`, and `POST /v1/runs/ID/cancel` stops
//! a run on whichever host owns it (undoing what it did; `cancelled`).

use crate::serve::Served;
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub(crate) const TOKEN: &str = "s3cret-admin";
pub(crate) const ASYNC: (&str, &str) = ("prefer", "respond-async");
pub(crate) const ADMIN: (&str, &str) = ("authorization", "Bearer s3cret-admin");

/// A server of the reference workflow with roomy step timeouts (a step
/// made slow by the sample API waits rather than times out) and the admin
/// token; the directory holds its workflow.
fn serve(extra: &[&str]) -> (Served, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = crate::serve::private_registry(dir.path());
    let mut args = vec!["--admin-token", TOKEN];
    args.extend_from_slice(extra);
    (Served::spawn(&workflow, &args, &[]), dir)
}

fn body(api: &SampleApi, item: &str) -> Value {
    serde_json::from_str(&reference_input(api, "u-100", item)).expect("input")
}

/// Waits (polling the sample API) until the run of `trace_id` has called `path`.
fn wait_for_call(api: &SampleApi, trace_id: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !api
        .requests(Some(trace_id))
        .iter()
        .any(|r| r["path"] == path)
    {
        assert!(Instant::now() < deadline, "the run never called {path}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `GET /v1/runs/ID` says `step` is running.
fn wait_for_step(served: &Served, run_id: &str, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = served.get(&format!("/v1/runs/{run_id}")).json();
        if now["running_steps"][step].is_number() {
            return;
        }
        assert!(Instant::now() < deadline, "{step} never ran: {now}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cancel(addr: &str, run_id: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/v1/runs/{run_id}/cancel"),
        headers,
        body,
    )
}

pub(crate) fn calls(api: &SampleApi, trace_id: &str, path: &str) -> usize {
    api.requests(Some(trace_id))
        .iter()
        .filter(|r| r["path"] == path)
        .count()
}

#[test]
fn a_run_started_with_respond_async_answers_202_and_is_long_polled_to_its_end() {
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 1500 }));
    let (served, _dir) = serve(&[]);
    let (traceparent, trace_id) = new_trace();
    let started = Instant::now();
    let r = served.post_run(
        &body(&api, "async-1"),
        &[ASYNC, ("traceparent", traceparent.as_str())],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered before the 1.5 s step ended"
    );
    let accepted = r.json();
    let run_id = str_of(&accepted, "/run_id").to_string();
    let location = format!("/v1/runs/{run_id}");
    assert_eq!(r.header("location"), Some(location.as_str()));
    assert_eq!(r.header("preference-applied"), Some("respond-async"));
    assert_eq!(accepted["status"], "running");
    assert_eq!(
        accepted["trace_id"],
        trace_id.as_str(),
        "the caller's trace"
    );
    assert_eq!(accepted["location"], location.as_str());

    let now = served.get(&location);
    assert_eq!(now.status, 200, "{}", now.body);
    let now = now.json();
    assert_eq!(now["status"], "running", "{now}");
    assert_eq!(now["outcome"], Value::Null);
    assert_eq!(now["trace_id"], trace_id.as_str());
    assert!(now["running_steps"].is_object(), "{now}");

    let done = served.get(&format!("{location}?wait=60s"));
    assert_eq!(done.status, 200, "{}", done.body);
    let done = done.json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["outcome"], "succeeded");
    assert_eq!(done["run_id"], run_id.as_str());
    assert!(done["steps"].is_array(), "the full report: {done}");
    // A short wait on a finished run answers at once, the same.
    let again = served.get(&format!("{location}?wait=500ms")).json();
    assert_eq!(again["status"], "succeeded");

    // Bad requests name what is wrong and change nothing.
    let long = served.get(&format!("{location}?wait=10m"));
    assert_eq!(long.status, 400);
    assert_eq!(
        long.json()["error"],
        "wait `10m` is longer than the longest wait, 120 s"
    );
    let bad = served.get(&format!("{location}?wait=soon"));
    assert_eq!(bad.status, 400);
    assert!(str_of(&bad.json(), "/error").starts_with("wait `soon` is not a duration"));
    let unknown = served.get("/v1/runs/run-0000000000000000?wait=1s");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "no run `run-0000000000000000`");
}

#[test]
fn a_long_poll_answers_running_when_its_wait_is_up() {
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 5000 }));
    let (served, _dir) = serve(&[]);
    let r = served.post_run(&body(&api, "async-2"), &[ASYNC]);
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("location").to_string();
    let asked = Instant::now();
    let polled = served.get(&format!("{location}?wait=1s"));
    let waited = asked.elapsed();
    assert_eq!(polled.json()["status"], "running");
    assert!(
        waited >= Duration::from_millis(900),
        "it waited for its wait: {waited:?}"
    );
}

#[test]
fn an_idempotency_key_with_respond_async_names_the_same_run_each_time() {
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 1000 }));
    let (served, _dir) = serve(&[]);
    let input = body(&api, "async-key");
    let key = ("idempotency-key", "order-77");
    let first = served.post_run(&input, &[ASYNC, key]);
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.header("idempotent-replayed"), None);
    let run_id = str_of(&first.json(), "/run_id").to_string();
    let repeat = served.post_run(&input, &[ASYNC, key]);
    assert_eq!(repeat.status, 202, "{}", repeat.body);
    assert_eq!(repeat.header("idempotent-replayed"), Some("true"));
    assert_eq!(repeat.json()["run_id"], run_id.as_str());
    // A caller that waits gets the same run's answer.
    let waited = served.post_run(&input, &[key]);
    assert_eq!(waited.status, 200, "{}", waited.body);
    assert_eq!(waited.json()["run_id"], run_id.as_str());
    assert_eq!(waited.header("idempotent-replayed"), Some("true"));
    let other = served.post_run(&body(&api, "another-item"), &[ASYNC, key]);
    assert_eq!(other.status, 422, "a different body: {}", other.body);
    let runs = list("runs", served.state_dir());
    assert_eq!(runs.len(), 1, "one run for the key: {runs:?}");
}

#[test]
fn a_cancelled_run_stops_undoes_what_it_did_and_ends_cancelled() {
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 30000 }));
    let (served, _dir) = serve(&[]);
    let (traceparent, trace_id) = new_trace();
    let r = served.post_run(
        &body(&api, "cancel-1"),
        &[ASYNC, ("traceparent", traceparent.as_str())],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let run_id = str_of(&r.json(), "/run_id").to_string();
    wait_for_step(&served, &run_id, "fetch_profile");

    // Only the admin may cancel; a bad request changes nothing.
    let anyone = cancel(&served.addr, &run_id, &[], "");
    assert_eq!(anyone.status, 401, "{}", anyone.body);
    let not_text = cancel(&served.addr, &run_id, &[ADMIN], r#"{"reason": 7}"#);
    assert_eq!(not_text.status, 400);
    assert_eq!(not_text.json()["error"], "`reason` must be a string");
    let huge = format!(r#"{{"reason": "{}"}}"#, "x".repeat(20_000));
    let too_big = cancel(&served.addr, &run_id, &[ADMIN], &huge);
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    let still = served.get(&format!("/v1/runs/{run_id}")).json();
    assert_eq!(still["status"], "running", "{still}");

    let asked = Instant::now();
    let c = cancel(
        &served.addr,
        &run_id,
        &[ADMIN],
        r#"{"reason": "customer withdrew the order"}"#,
    );
    assert_eq!(c.status, 202, "{}", c.body);
    let c = c.json();
    assert_eq!(c["status"], "cancelling");
    assert_eq!(c["on_this_host"], true);
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the 30 s call was stopped, not awaited"
    );
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"], "run cancelled: customer withdrew the order");
    assert_eq!(done["trace_id"], trace_id.as_str());
    assert_eq!(step(&done, "fetch_profile")["outcome"], "cancelled");
    let undone: Vec<&str> = done["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .map(|u| u["step"].as_str().unwrap_or_default())
        .collect();
    assert!(undone.contains(&"authenticate"), "{done}");
    assert_eq!(calls(&api, &trace_id, "/oauth/revoke"), 1, "undone once");
    let journaled = journal_run(served.state_dir(), &run_id);
    assert_eq!(journaled["status"], "cancelled", "{journaled}");

    // Again: the same answer, nothing more undone.
    let again = cancel(&served.addr, &run_id, &[ADMIN], "");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["status"], "cancelled");
    assert_eq!(calls(&api, &trace_id, "/oauth/revoke"), 1);
    let unknown = cancel(&served.addr, "run-0000000000000000", &[ADMIN], "");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "no run `run-0000000000000000`");
}

#[test]
fn a_run_that_ended_cannot_be_cancelled_and_a_waiting_caller_hears_cancelled() {
    let api = SampleApi::start(None);
    let (served, _dir) = serve(&[]);
    let ok = served.post_run(&body(&api, "done-1"), &[]);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let run_id = str_of(&ok.json(), "/run_id").to_string();
    let late = cancel(&served.addr, &run_id, &[ADMIN], "");
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(
        late.json()["error"],
        format!("run `{run_id}` has already ended `succeeded`: there is nothing to cancel")
    );
    assert_eq!(
        served.get(&format!("/v1/runs/{run_id}")).json()["status"],
        "succeeded"
    );

    // A caller waiting on its request is answered when the run is cancelled.
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 30000 }));
    let (traceparent, trace_id) = new_trace();
    let addr = served.addr.clone();
    let input = body(&api, "sync-1").to_string();
    let waiting = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/workflows/api-orchestration/runs",
            &[("traceparent", traceparent.as_str())],
            &input,
        )
    });
    wait_for_call(&api, &trace_id, "/oauth/token");
    let runs = list("runs", served.state_dir());
    let run_id = runs
        .iter()
        .find(|r| r["trace_id"] == trace_id.as_str())
        .map(|r| str_of(r, "/run_id").to_string())
        .expect("the run is journaled");
    let c = cancel(&served.addr, &run_id, &[ADMIN], "");
    assert_eq!(c.status, 202, "{}", c.body);
    let answer = waiting.join().expect("caller");
    assert_eq!(answer.status, 422, "{}", answer.body);
    let answer = answer.json();
    assert_eq!(answer["outcome"], "cancelled");
    assert_eq!(answer["error"], "run cancelled: cancelled by the operator");
}

#[test]
fn a_run_is_cancelled_through_another_host_of_a_shared_postgresql_journal() {
    let url = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fresh_database());
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 30000 }));
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = crate::serve::private_registry(dir.path());
    let host = |name: &str| {
        Served::spawn(
            &workflow,
            &["--store", url.as_str(), "--admin-token", TOKEN],
            &[("HOSTNAME", name)],
        )
    };
    let (owner, other) = (host("host-0"), host("host-1"));
    let (traceparent, trace_id) = new_trace();
    let r = owner.post_run(
        &body(&api, "pg-cancel"),
        &[ASYNC, ("traceparent", traceparent.as_str())],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let run_id = str_of(&r.json(), "/run_id").to_string();
    wait_for_step(&owner, &run_id, "fetch_profile");
    // The other host knows the run from the journal, not what runs now.
    let seen = other.get(&format!("/v1/runs/{run_id}")).json();
    assert_eq!(seen["status"], "running", "{seen}");
    assert_eq!(
        seen["owner"].as_str().map(|o| o.starts_with("host-0")),
        Some(true)
    );
    assert_eq!(seen["running_steps"], Value::Null);

    let c = cancel(
        &other.addr,
        &run_id,
        &[ADMIN],
        r#"{"reason": "from host-1"}"#,
    );
    assert_eq!(c.status, 202, "{}", c.body);
    assert_eq!(c.json()["on_this_host"], false);
    let done = other.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"], "run cancelled: from host-1");
    assert_eq!(calls(&api, &trace_id, "/oauth/revoke"), 1, "undone once");
    let mine = owner.get(&format!("/v1/runs/{run_id}")).json();
    assert_eq!(
        mine["status"], "cancelled",
        "the owner's answer is the same"
    );
}

#[test]
fn braid_runs_shows_waits_for_and_cancels_a_run_through_the_server_or_the_journal() {
    let api = SampleApi::start(None);
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 30000 }));
    let (served, _dir) = serve(&[]);
    let server = format!("http://{}", served.addr);
    let state = served.state_dir().to_string_lossy().into_owned();
    let r = served.post_run(&body(&api, "cli-1"), &[ASYNC]);
    assert_eq!(r.status, 202, "{}", r.body);
    let run_id = str_of(&r.json(), "/run_id").to_string();
    wait_for_step(&served, &run_id, "fetch_profile");

    let shown = braid(&["runs", "show", &run_id, "--server", &server, "--json"]);
    let shown = json_stdout(&shown);
    assert_eq!(shown["status"], "running", "{shown}");
    let short = braid(&[
        "runs",
        "wait",
        &run_id,
        "--server",
        &server,
        "--timeout",
        "1s",
    ]);
    assert_eq!(short.status.code(), Some(3), "{}", stderr(&short));
    assert!(String::from_utf8_lossy(&short.stdout).contains("running"));

    // Cancelled in the journal (no server asked): the server finds it.
    let asked = braid(&[
        "runs",
        "cancel",
        &run_id,
        "--state-dir",
        &state,
        "--reason",
        "from the CLI",
    ]);
    assert_eq!(asked.status.code(), Some(0), "{}", stderr(&asked));
    assert!(String::from_utf8_lossy(&asked.stdout).contains("cancelling"));
    let waited = braid(&[
        "runs",
        "wait",
        &run_id,
        "--server",
        &server,
        "--timeout",
        "60s",
        "--json",
    ]);
    assert_eq!(
        waited.status.code(),
        Some(1),
        "ended, not succeeded: {}",
        stderr(&waited)
    );
    let waited = json_stdout(&waited);
    assert_eq!(waited["status"], "cancelled");
    assert_eq!(waited["error"], "run cancelled: from the CLI");
    let from_journal = braid(&["runs", "show", &run_id, "--state-dir", &state, "--json"]);
    assert_eq!(json_stdout(&from_journal)["status"], "cancelled");

    // Through the server, the admin token is needed; errors say why.
    let late = braid(&[
        "runs",
        "cancel",
        &run_id,
        "--server",
        &server,
        "--admin-token",
        TOKEN,
    ]);
    assert_eq!(
        late.status.code(),
        Some(0),
        "already cancelled: {}",
        stderr(&late)
    );
    let no_token = braid(&["runs", "cancel", &run_id, "--server", &server]);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(
        stderr(&no_token).contains("HTTP 401"),
        "{}",
        stderr(&no_token)
    );
    let unknown = braid(&["runs", "show", "run-0000000000000000", "--server", &server]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("no run `run-0000000000000000`"));
    let https = braid(&["runs", "show", &run_id, "--server", "https://x"]);
    assert_eq!(https.status.code(), Some(2), "{}", stderr(&https));
    assert!(
        stderr(&https).contains("plain http://"),
        "{}",
        stderr(&https)
    );
}

/// A workflow of the real components: authenticate, then `middle` (TOML
/// of wait steps, and what comes before them), then `after` notifies
/// with the output of step `about`.
pub(crate) fn waiting_workflow(
    dir: &std::path::Path,
    name: &str,
    middle: &str,
    about: &str,
) -> std::path::PathBuf {
    let body = format!(
        r#"
name = "{name}"
result = "after"
[inputs.api_base]
[inputs.user_id]
[defaults]
timeout_ms = 20000
max_retries = 1
allowed_hosts = ["127.0.0.1", "localhost"]

[[steps]]
name = "authenticate"
component = "authenticate"
idempotency_key = true
args.api_base = {{ input = "api_base" }}
args.user_id = {{ input = "user_id" }}

{middle}

[[steps]]
name = "after"
component = "notify"
idempotency_key = true
args.api_base = {{ input = "api_base" }}
args.token = {{ step = "authenticate", pointer = "/access_token" }}
args.to = {{ value = "requester@example.com" }}
args.subject = {{ value = "decided" }}
args.about = {{ step = "{about}" }}
"#
    );
    write_workflow(dir, &format!("{name}.toml"), &body)
}

/// `ask` sends the approver the wait's token; `approval` waits for it.
pub(crate) fn approval_steps(timeout: &str, on_timeout: &str) -> String {
    format!(
        r#"
[[steps]]
name = "ask"
component = "notify"
idempotency_key = true
args.api_base = {{ input = "api_base" }}
args.token = {{ step = "authenticate", pointer = "/access_token" }}
args.to = {{ value = "approver@example.com" }}
args.subject = {{ value = "approval needed" }}
args.about = {{ wait_token = "approval" }}

[[steps]]
name = "approval"
wait_for = ["ask"]
[steps.signal]
timeout = "{timeout}"
{on_timeout}
"#
    )
}

pub(crate) fn spawn_waiting(workflow: &std::path::Path, extra: &[&str]) -> Served {
    let mut args = vec!["--admin-token", TOKEN];
    args.extend_from_slice(extra);
    Served::spawn(workflow, &args, &[])
}

pub(crate) fn start_async(
    served: &Served,
    workflow: &str,
    api: &SampleApi,
    traceparent: &str,
) -> String {
    let input = json!({ "api_base": api.base(), "user_id": "u-100" });
    let r = http(
        &served.addr,
        "POST",
        &format!("/v1/workflows/{workflow}/runs"),
        &[ASYNC, ("traceparent", traceparent)],
        &input.to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    str_of(&r.json(), "/run_id").to_string()
}

/// Waits until `GET /v1/runs/ID` says `status`; returns what it said.
pub(crate) fn wait_for_status(served: &Served, run_id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = served.get(&format!("/v1/runs/{run_id}")).json();
        if now["status"] == status {
            return now;
        }
        assert!(Instant::now() < deadline, "never {status}: {now}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The notifications the sample API got for trace `trace_id`.
pub(crate) fn notifications(api: &SampleApi, subject: &str) -> Vec<Value> {
    let all = http(
        api.base().trim_start_matches("http://"),
        "GET",
        "/_notifications",
        &[],
        "",
    );
    all.json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["subject"] == subject)
        .collect()
}

pub(crate) fn signal(
    addr: &str,
    run_id: &str,
    name: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/v1/runs/{run_id}/signals/{name}"),
        headers,
        body,
    )
}

#[test]
fn a_sleeping_run_leaves_memory_and_its_timer_fires_once_after_a_kill_9() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let middle = r#"
[[steps]]
name = "nap"
wait_for = ["authenticate"]
[steps.sleep]
for = "4s"
"#;
    let workflow = waiting_workflow(dir.path(), "napping", middle, "nap");
    let mut served = spawn_waiting(&workflow, &[]);
    let (traceparent, trace_id) = new_trace();
    let started = Instant::now();
    let run_id = start_async(&served, "napping", &api, &traceparent);
    let waiting = wait_for_status(&served, &run_id, "waiting");
    let listed = served
        .get("/v1/runs?status=waiting&workflow=napping")
        .json();
    assert_eq!(listed[0]["run_id"], run_id.as_str(), "{listed}");
    assert_eq!(
        served.get("/v1/runs?status=waiting&workflow=other").json(),
        json!([])
    );
    let what = str_of(&waiting, "/waiting_for");
    assert!(what.starts_with("step `nap`: sleep until "), "{waiting}");
    assert!(waiting["wake_at_ms"].as_u64().is_some(), "{waiting}");
    // It left the host: no longer in flight here, counted as parked.
    let metrics = served.get("/metrics").body;
    assert!(metrics.contains("braid_runs_in_flight 0"), "{metrics}");
    assert!(
        metrics.contains("braid_runs_parked_total{workflow=\"napping\"} 1"),
        "{metrics}"
    );
    // Parked: the host holds no task for it; kill -9 it and start again.
    served.kill();
    served.restart();
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it slept its 4 s"
    );
    let nap = step(&done, "nap");
    assert_eq!(nap["outcome"], "succeeded");
    assert_eq!(nap["wait"]["kind"], "sleep");
    let until = nap["wait"]["until_ms"].as_u64().expect("until");
    assert_eq!(step(&done, "after")["outcome"], "succeeded");
    assert_eq!(done["trace_id"], trace_id.as_str(), "one trace throughout");
    // Once each: the token before the sleep, the notification after it.
    assert_eq!(calls(&api, &trace_id, "/oauth/token"), 1);
    let sent = notifications(&api, "decided");
    assert_eq!(sent.len(), 1, "the timer fired once: {sent:?}");
    assert_eq!(sent[0]["about"]["slept_until_ms"], until);
}

#[test]
fn a_signal_carries_its_body_into_the_run_once_with_the_waits_token() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = waiting_workflow(
        dir.path(),
        "approving",
        &approval_steps("1h", ""),
        "approval",
    );
    let mut served = spawn_waiting(&workflow, &[]);
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&served, "approving", &api, &traceparent);
    let waiting = wait_for_status(&served, &run_id, "waiting");
    assert!(
        str_of(&waiting, "/waiting_for").starts_with("step `approval`: signal `approval` until "),
        "{waiting}"
    );
    // The approver got the wait's token from the run's `ask` step.
    let asked = notifications(&api, "approval needed");
    assert_eq!(asked.len(), 1, "{asked:?}");
    let token = str_of(&asked[0], "/about").to_string();
    assert!(token.starts_with(&format!("{run_id}.approval.")), "{token}");

    // The server goes down and comes back: the signal still reaches the run.
    served.kill();
    served.restart();
    let addr = served.addr.clone();
    let body = r#"{"approved": true, "by": "ada"}"#;
    let anyone = signal(&addr, &run_id, "approval", &[], body);
    assert_eq!(anyone.status, 401, "{}", anyone.body);
    let wrong = signal(
        &addr,
        &run_id,
        "approval",
        &[("authorization", "Bearer nope")],
        body,
    );
    assert_eq!(wrong.status, 401);
    let other_name = signal(&addr, &run_id, "payment", &[ADMIN], body);
    assert_eq!(other_name.status, 404);
    assert_eq!(
        other_name.json()["error"],
        format!(
            "run `{run_id}` (workflow `approving`) waits for no signal `payment`; it waits for: [\"approval\"]"
        )
    );
    let not_json = signal(
        &addr,
        &run_id,
        "approval",
        &[("authorization", &format!("Bearer {token}"))],
        "{nope",
    );
    assert_eq!(not_json.status, 400);
    let big = format!("\"{}\"", "x".repeat(2 << 20));
    let too_big = signal(&addr, &run_id, "approval", &[ADMIN], &big);
    assert_eq!(too_big.status, 413);
    let unknown = signal(&addr, "run-0000000000000000", "approval", &[ADMIN], body);
    assert_eq!(unknown.status, 404);

    let (sender, sender_trace) = new_trace();
    let sent = signal(
        &addr,
        &run_id,
        "approval",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("traceparent", sender.as_str()),
        ],
        body,
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    assert_eq!(sent.json()["status"], "delivered");
    let again = signal(
        &addr,
        &run_id,
        "approval",
        &[ADMIN],
        r#"{"approved": false}"#,
    );
    assert_eq!(again.status, 409, "taken once: {}", again.body);
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    let approval = step(&done, "approval");
    assert_eq!(approval["wait"]["signal"], "approval");
    assert_eq!(
        approval["wait"]["signal_traceparent"],
        sender.as_str(),
        "the sender's trace"
    );
    assert!(sender_trace.len() == 32);
    let decided = notifications(&api, "decided");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        decided[0]["about"],
        json!({"approved": true, "by": "ada"}),
        "the body is the output"
    );
    assert_eq!(
        calls(&api, &trace_id, "/oauth/token"),
        1,
        "nothing before the wait ran again"
    );
    let late = signal(&addr, &run_id, "approval", &[ADMIN], body);
    assert_eq!(late.status, 409);
    assert_eq!(
        late.json()["error"],
        format!("run `{run_id}` has ended `succeeded`: it takes no more signals")
    );
}

#[test]
fn a_signal_sent_before_the_run_waits_is_kept_and_delivered() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let middle = format!(
        r#"
[[steps]]
name = "nap"
wait_for = ["authenticate"]
[steps.sleep]
for = "3s"
{}"#,
        approval_steps("1h", "").replace("wait_for = [\"ask\"]", "wait_for = [\"ask\", \"nap\"]")
    );
    let workflow = waiting_workflow(dir.path(), "early", &middle, "approval");
    let served = spawn_waiting(&workflow, &[]);
    let (traceparent, _) = new_trace();
    let run_id = start_async(&served, "early", &api, &traceparent);
    // Through `braid runs signal`, before the run reaches its wait.
    let server = format!("http://{}", served.addr);
    let sent = braid(&[
        "runs",
        "signal",
        &run_id,
        "approval",
        "--data",
        r#"{"early": true}"#,
        "--server",
        &server,
        "--admin-token",
        TOKEN,
    ]);
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert!(String::from_utf8_lossy(&sent.stdout).contains("signal approval delivered"));
    let twice = braid(&[
        "runs",
        "signal",
        &run_id,
        "approval",
        "--server",
        &server,
        "--admin-token",
        TOKEN,
    ]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(stderr(&twice).contains("HTTP 409"), "{}", stderr(&twice));
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        notifications(&api, "decided")[0]["about"],
        json!({"early": true})
    );
}

#[test]
fn a_signal_that_does_not_come_times_out_to_its_default_or_fails_the_run() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let lenient = waiting_workflow(
        dir.path(),
        "lenient",
        &approval_steps(
            "3s",
            "on_timeout = \"continue\"\ndefault = { approved = false, by = \"timeout\" }",
        ),
        "approval",
    );
    let strict = waiting_workflow(dir.path(), "strict", &approval_steps("3s", ""), "approval");
    let served = Served::spawn(
        &lenient,
        &["--admin-token", TOKEN, strict.to_str().expect("path")],
        &[],
    );
    let (tp1, _) = new_trace();
    let (tp2, trace2) = new_trace();
    let goes_on = start_async(&served, "lenient", &api, &tp1);
    let fails = start_async(&served, "strict", &api, &tp2);
    let done = served.get(&format!("/v1/runs/{goes_on}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        notifications(&api, "decided")[0]["about"],
        json!({"approved": false, "by": "timeout"})
    );
    let failed = served.get(&format!("/v1/runs/{fails}?wait=60s")).json();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error"],
        "step `approval` failed: timeout: signal `approval` did not come within 3s"
    );
    assert_eq!(
        calls(&api, &trace2, "/oauth/revoke"),
        1,
        "authenticate undone"
    );
}

#[test]
fn a_waiting_run_is_cancelled_and_undone() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = waiting_workflow(
        dir.path(),
        "approving",
        &approval_steps("1h", ""),
        "approval",
    );
    let served = spawn_waiting(&workflow, &[]);
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&served, "approving", &api, &traceparent);
    wait_for_status(&served, &run_id, "waiting");
    let c = cancel(
        &served.addr,
        &run_id,
        &[ADMIN],
        r#"{"reason": "request withdrawn"}"#,
    );
    assert_eq!(c.status, 202, "{}", c.body);
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"], "run cancelled: request withdrawn");
    assert_eq!(step(&done, "approval")["outcome"], "cancelled");
    assert_eq!(
        calls(&api, &trace_id, "/oauth/revoke"),
        1,
        "authenticate undone"
    );
    let late = signal(&served.addr, &run_id, "approval", &[ADMIN], "{}");
    assert_eq!(late.status, 409);
}

#[test]
fn a_signal_sent_through_another_host_of_a_shared_postgresql_journal_wakes_the_run_once() {
    let url = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fresh_database());
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = waiting_workflow(
        dir.path(),
        "approving",
        &approval_steps("1h", ""),
        "approval",
    );
    let host = |name: &str| {
        Served::spawn(
            &workflow,
            &["--store", url.as_str(), "--admin-token", TOKEN],
            &[("HOSTNAME", name)],
        )
    };
    let (first, second) = (host("host-0"), host("host-1"));
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&first, "approving", &api, &traceparent);
    let waiting = wait_for_status(&second, &run_id, "waiting");
    assert!(
        str_of(&waiting, "/owner").starts_with("host-0"),
        "{waiting}"
    );
    let sent = signal(
        &second.addr,
        &run_id,
        "approval",
        &[ADMIN],
        r#"{"approved": true}"#,
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let done = first.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    // Either host may have woken it; one did, once.
    let decided = notifications(&api, "decided");
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(calls(&api, &trace_id, "/oauth/token"), 1);
    assert_eq!(
        calls(&api, &trace_id, "/notifications"),
        2,
        "ask and after, once each"
    );
}

/// Reference workflow 3: the policy allows u-200 at once; u-100 needs an
/// approver, who answers with the token the run sent them.
#[test]
fn the_access_approval_reference_workflow_waits_for_the_approver_it_asked() {
    let api = SampleApi::start(None);
    let served = Served::spawn(
        &root().join("workflows/access-approval.toml"),
        &["--admin-token", TOKEN],
        &[],
    );
    let start = |user: &str| {
        let input = json!({ "api_base": api.base(), "user_id": user });
        let r = http(
            &served.addr,
            "POST",
            "/v1/workflows/access-approval/runs",
            &[],
            &input.to_string(),
        );
        (r.status, r.json())
    };
    // Allowed: no wait, an answer at once.
    let (status, admin) = start("u-200");
    assert_eq!(status, 200, "{admin}");
    assert_eq!(admin["result"]["approval"], Value::Null);
    assert!(admin["result"]["granted"].is_object(), "{admin}");

    // Needs approval: the caller that waited on its POST gets 202 when the
    // run parks, with where to find its end.
    let (status, asked) = start("u-100");
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["status"], "waiting");
    let run_id = str_of(&asked, "/run_id").to_string();
    let location = str_of(&asked, "/location").to_string();
    let waiting = wait_for_status(&served, &run_id, "waiting");
    assert!(
        str_of(&waiting, "/waiting_for").contains("signal `approval`"),
        "{waiting}"
    );
    // The viewer lists it as waiting, with what for, and its page says so.
    let list = served.get("/ui/runs");
    assert_eq!(list.status, 200);
    let table = list.body.split("id=\"waiting\"").nth(1).unwrap_or_default();
    assert!(table.contains(&run_id), "{}", list.body);
    assert!(
        table.contains("step `approval`: signal `approval` until "),
        "{table}"
    );
    let page = served.get(&format!("/ui/runs/{run_id}"));
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("data-run-outcome=\"waiting\""),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("signal `approval` until"),
        "{}",
        page.body
    );
    let mail = notifications(&api, "approval needed");
    assert_eq!(mail.len(), 1, "{mail:?}");
    let token = str_of(&mail[0], "/about").to_string();
    assert!(
        !page.body.contains(&token),
        "the viewer never shows a wait's token"
    );
    let bearer = format!("Bearer {token}");
    let sent = signal(
        &served.addr,
        &run_id,
        "approval",
        &[("authorization", bearer.as_str())],
        r#"{"approved": true, "by": "grace@example.com"}"#,
    );
    assert_eq!(sent.status, 202, "{}", sent.body);
    let done = served.get(&format!("{location}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["decision"]["allowed"], false);
    assert_eq!(done["result"]["approval"]["approved"], true);
    assert!(done["result"]["granted"].is_object(), "{done}");
    assert_eq!(done["result"]["denied"], Value::Null);
    assert_eq!(step(&done, "notify_denied")["outcome"], "skipped");
    // The report shows inputs and outputs, never the wait's token.
    assert!(
        str_of(&done, "/input").contains("\"user_id\":\"u-100\""),
        "{done}"
    );
    let asked_input = str_of(step(&done, "ask_approver"), "/input");
    assert!(
        asked_input.contains("\"about\":\"(wait token: hidden)\""),
        "{asked_input}"
    );
    assert!(str_of(step(&done, "approval"), "/output").contains("grace@example.com"));
    let page = served.get(&format!("/ui/runs/{run_id}")).body;
    assert!(page.contains("data-io=\"ask_approver\""), "{page}");
    assert!(page.contains("(wait token: hidden)"), "{page}");
    assert!(
        !page.contains(&token),
        "the waterfall never shows a wait's token"
    );
    assert!(
        !served
            .get(&format!("/v1/runs/{run_id}"))
            .body
            .contains(&token)
    );
    // The token is good for this run's wait only.
    let (status, other) = start("u-100");
    assert_eq!(status, 202, "{other}");
    let other_id = str_of(&other, "/run_id").to_string();
    let reused = signal(
        &served.addr,
        &other_id,
        "approval",
        &[("authorization", bearer.as_str())],
        r#"{"approved": true}"#,
    );
    assert_eq!(reused.status, 401, "{}", reused.body);
}

/// In headless Chromium: a waiting run's page says what it waits for; its
/// signal form refuses a wrong token and, with the wait's token, finishes
/// the run (the page turns into its waterfall).
#[test]
fn a_waiting_runs_page_shows_its_wait_and_its_signal_form_finishes_it_in_chromium() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = waiting_workflow(
        dir.path(),
        "approving",
        &approval_steps("1h", ""),
        "approval",
    );
    let served = spawn_waiting(&workflow, &[]);
    let (traceparent, _) = new_trace();
    let run_id = start_async(&served, "approving", &api, &traceparent);
    wait_for_status(&served, &run_id, "waiting");
    let token = str_of(&notifications(&api, "approval needed")[0], "/about").to_string();
    let addr = served.addr.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let browser = crate::viewer::Browser::launch();
        let mut page = browser.open(&format!("http://{addr}/ui/runs/{run_id}")).await;
        let waits = page
            .wait_for(
                "the waiting run's page",
                "document.readyState === 'complete' && document.querySelector('[data-run-outcome]').dataset.runOutcome === 'waiting' && document.getElementById('waiting-for').textContent",
            )
            .await;
        assert!(
            waits.as_str().is_some_and(|w| w.starts_with("step `approval`: signal `approval` until ")),
            "{waits}"
        );
        let send = |token: &str| {
            format!(
                "(() => {{ const f = document.getElementById('signal-form');
                   f.querySelector('[name=token]').value = '{token}';
                   f.querySelector('[name=body]').value = '{{\"approved\": true, \"by\": \"viewer\"}}';
                   f.querySelector('button').click(); return true; }})()"
            )
        };
        page.eval(&send("not-the-token")).await.expect("submit");
        let refused = page
            .wait_for(
                "the refusal",
                "(() => { const a = document.getElementById('control-answer').textContent; return a.startsWith('401') && a; })()",
            )
            .await;
        assert!(refused.as_str().is_some_and(|a| a.contains("wait's token")), "{refused}");
        page.eval(&send(&token)).await.expect("submit");
        let outcome = page
            .wait_for(
                "the run's waterfall",
                "document.querySelector('.waterfall') && document.querySelector('[data-run-outcome]').dataset.runOutcome",
            )
            .await;
        assert_eq!(outcome, "succeeded");
    });
    let decided = notifications(&api, "decided");
    assert_eq!(
        decided[0]["about"],
        json!({"approved": true, "by": "viewer"})
    );
}
