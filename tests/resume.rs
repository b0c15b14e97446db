//! Durable execution: a run whose host died is carried on where it stopped
//! (`on_crash = "resume"`, the default), a step in flight at the crash runs
//! again under the same idempotency key, so the API it calls acts once, and
//! a finished run always has its report.

use crate::serve::{Served, component_bytes, private_registry, request_async, sha};
use crate::support::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// `braid run WORKFLOW` in the background on `state`, on trace `traceparent`
/// (in the repository's root: `wf` may be relative to it).
pub(crate) fn spawn_run(
    wf: &std::path::Path,
    state: &std::path::Path,
    traceparent: &str,
    input: &str,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
        .current_dir(root())
        .args(["run", wf.to_str().expect("utf-8"), "--json"])
        .args(["--traceparent", traceparent, "--state-dir"])
        .arg(state)
        .args(["--input", input])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn braid")
}

/// Waits until the API has seen `n` requests on `trace`.
pub(crate) fn wait_for_requests(api: &SampleApi, trace: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.requests(Some(trace)).len() < n {
        assert!(Instant::now() < deadline, "the run never made {n} calls");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `braid recover --json` on `state`.
pub(crate) fn recover(state: &std::path::Path) -> Value {
    let out = braid(&[
        "recover",
        "--json",
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    json_stdout(&out)
}

/// The stored report of `run_id` in `state`'s journal.
pub(crate) fn stored_report(state: &std::path::Path, run_id: &str) -> Option<Value> {
    use braid::journal::{RunJournal, SqliteJournal};
    let journal = SqliteJournal::open(state).expect("journal");
    let json = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(journal.report(run_id))
        .expect("report read");
    json.map(|j| serde_json::from_str(&j).expect("report JSON"))
}

fn paths(requests: &[Value]) -> Vec<&str> {
    requests.iter().filter_map(|r| r["path"].as_str()).collect()
}

/// A host killed with SIGKILL while a step hangs: `braid recover` carries
/// the run on under its trace; the six steps that had completed are not
/// run again (one token, one profile call), the one in flight is, and the
/// run ends `succeeded` with its report stored.
#[test]
fn a_killed_run_resumes_from_its_journal_under_its_trace() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = audited_workflow(state.path(), "resume");
    let (traceparent, trace) = new_trace();
    // The audit's permissions call (the 2nd on this trace) hangs, once.
    api.add_fault(
        json!({ "endpoint": "permissions", "delay_ms": 60000, "skip": 1,
        "times": 1, "trace_id": trace }),
    );
    let input = reference_input(&api, "u-100", "resume-item");
    let mut child = spawn_run(&wf, state.path(), &traceparent, &input);
    wait_for_requests(&api, &trace, 4);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let running = list("runs", state.path());
    assert_eq!(running[0]["status"], "running", "the dead host left no end");
    let run_id = str_of(&running[0], "/run_id").to_string();

    let recovered = recover(state.path());
    let r = &recovered[0];
    assert_eq!(r["run_id"], run_id.as_str(), "{recovered}");
    assert_eq!(r["action"], "resumed", "{r}");
    assert_eq!(r["outcome"], "succeeded", "{r}");
    assert_eq!(r["trace_id"], trace.as_str());
    assert_eq!(r["undo"], json!([]), "nothing undone");

    let requests = api.requests(Some(&trace));
    let mut seen = paths(&requests);
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "/oauth/token",
            "/users/u-100/permissions",
            "/users/u-100/permissions",
            "/users/u-100/permissions",
            "/users/u-100/profile",
        ],
        "completed steps are not run again; the audit is"
    );
    assert_eq!(tokens_issued(&requests), 1);
    // The audit ran twice under the run's trace, as two attempts (spans).
    let audits: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "/users/u-100/permissions")
        .skip(1)
        .collect();
    assert_ne!(audits[0]["parent_id"], audits[1]["parent_id"]);
    assert_eq!(audits[1]["status"], 200);

    let report = stored_report(state.path(), &run_id).expect("the report is stored");
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["trace_id"], trace.as_str());
    // The resumed audit attempt made the second audit call, as its span.
    let audit = step(&report, "audit");
    assert_eq!(
        audit["attempts"].as_array().map(Vec::len),
        Some(1),
        "{audit}"
    );
    let call = report["http_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .find(|c| c["span_id"] == audits[1]["parent_id"])
        .expect("the second audit call is in the report");
    assert_eq!(call["step"], "audit");
    assert_eq!(call["attempt_span_id"], audit["attempts"][0]["span_id"]);
    // In completion order (the two fetches ran side by side); `aggregate`
    // does not wait for the audit, so it had completed too.
    let mut reused: Vec<&str> = report["resumed"]["reused_steps"]
        .as_array()
        .expect("reused steps")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(reused.first(), Some(&"authenticate"), "{reused:?}");
    assert_eq!(reused.last(), Some(&"aggregate"), "{reused:?}");
    reused.sort_unstable();
    assert_eq!(
        reused,
        [
            "aggregate",
            "authenticate",
            "claim_work",
            "fetch_permissions",
            "fetch_profile",
            "validate_access"
        ]
    );
    assert_eq!(report["result"]["claim"]["work_item"], "resume-item");
    assert_eq!(step(&report, "audit")["outcome"], "succeeded");
    assert_eq!(journal_run(state.path(), &run_id)["status"], "succeeded");
    assert_eq!(recover(state.path()), json!([]), "nothing left");
}

/// The step in flight at the crash is `authenticate`, whose token request
/// hangs: the resumed run sends it again with the same `Idempotency-Key`
/// (`RUN_ID.authenticate`), so the API can tell it is the same request.
#[test]
fn a_step_in_flight_runs_again_with_the_same_idempotency_key() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "token", "delay_ms": 60000, "times": 1,
        "trace_id": trace }));
    let input = reference_input(&api, "u-100", "key-item");
    // Started by its relative path, in the repository's root.
    let wf = std::path::Path::new("workflows/api-orchestration.toml");
    let mut child = spawn_run(wf, state.path(), &traceparent, &input);
    wait_for_requests(&api, &trace, 1);
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let run_id = str_of(&list("runs", state.path())[0], "/run_id").to_string();

    let recovered = recover(state.path());
    assert_eq!(recovered[0]["outcome"], "succeeded", "{recovered}");
    let requests = api.requests(Some(&trace));
    let keys: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "/oauth/token")
        .map(|r| &r["idempotency_key"])
        .collect();
    // RUN_ID.STEP.MAC: the MAC made with the run's journaled secret, so the
    // resuming process makes the same key.
    let want = keys[0].as_str().expect("a key").to_string();
    assert!(
        want.starts_with(&format!("{run_id}.authenticate.")),
        "{want}"
    );
    assert_eq!(want.len(), format!("{run_id}.authenticate.").len() + 32);
    assert_eq!(keys, [want.as_str(), want.as_str()], "{requests:?}");
    assert_eq!(tokens_issued(&requests), 1);
    // The key is only on the step that opted in.
    assert!(
        requests
            .iter()
            .filter(|r| r["path"] != "/oauth/token")
            .all(|r| r["idempotency_key"].is_null()),
        "{requests:?}"
    );
    let report = stored_report(state.path(), &run_id).expect("report");
    let calls = report["http_calls"].as_array().expect("calls");
    assert_eq!(calls[0]["idempotency_key"], want.as_str());
}

/// The sample API honours `Idempotency-Key` on `POST /oauth/token`: a repeat
/// gets the same token (marked replayed), another body under the key 422.
#[test]
fn the_sample_api_issues_one_token_per_idempotency_key() {
    let api = SampleApi::start(Some(0));
    let body = json!({ "client_id": "braid", "user_id": "u-100" }).to_string();
    let post = |key: &str, body: &str| {
        http(
            &api.addr,
            "POST",
            "/oauth/token",
            &[("Idempotency-Key", key)],
            body,
        )
    };
    let first = post("k-1", &body);
    let again = post("k-1", &body);
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(first.json()["access_token"], again.json()["access_token"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = post("k-2", &body);
    assert_ne!(other.json()["access_token"], first.json()["access_token"]);
    let changed = post(
        "k-1",
        &json!({ "client_id": "braid", "user_id": "u-200" }).to_string(),
    );
    assert_eq!(changed.status, 422, "{}", changed.body);
    let log = api.requests(None);
    assert_eq!(tokens_issued(&log), 2);
    assert_eq!(log[1]["replayed"], true);
    assert_eq!(log[1]["idempotency_key"], "k-1");
}

/// A run started on version 1 of a step, whose host is killed after a hot
/// swap to version 2, resumes on version 1 (from the component history).
#[test]
fn a_run_resumes_on_the_component_version_it_started_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = private_registry(dir.path());
    let api = SampleApi::start(Some(0));
    let mut served = Served::spawn(&workflow, &["--admin-token", "s3cret"], &[]);
    let (traceparent, trace) = new_trace();
    // The run hangs in fetch_permissions, before `aggregate` runs.
    api.add_fault(
        json!({ "endpoint": "permissions", "delay_ms": 60000, "times": 1,
        "trace_id": trace }),
    );
    let v1 = sha(&component_bytes("aggregate"));
    let v2_bytes = component_bytes("aggregate_js");
    let input = json!({ "api_base": api.base(), "user_id": "u-100", "work_item": "swap-item" });
    let addr = served.addr.clone();
    let body = input.to_string();
    let tp = traceparent.clone();
    // Its connection breaks when the host is killed (the thread's panic).
    let first = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/workflows/api-orchestration/runs",
            &[("traceparent", &tp), ("Idempotency-Key", "swap-1")],
            &body,
        )
    });
    wait_for_requests(&api, &trace, 3);
    let (status, put) = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(request_async(
            &served.addr,
            "PUT",
            "/v1/components/aggregate",
            "authorization: Bearer s3cret\r\n",
            &v2_bytes,
        ));
    assert_eq!(status, 200, "{put}");
    assert!(put.contains(&sha(&v2_bytes)), "{put}");
    served.kill();
    let _ = first.join();
    served.restart();

    let replay = served.post_run(
        &input,
        &[("traceparent", &traceparent), ("Idempotency-Key", "swap-1")],
    );
    assert_eq!(replay.status, 200, "{}", replay.body);
    let answer = replay.json();
    assert_eq!(answer["trace_id"], trace.as_str());
    let run_id = str_of(&answer, "/run_id");
    let report = served.get(&format!("/v1/runs/{run_id}")).json();
    assert_eq!(
        report["resumed"]["reused_steps"][0], "authenticate",
        "{report}"
    );
    assert_eq!(
        step(&report, "aggregate")["component_sha256"],
        v1.as_str(),
        "the version the run started with"
    );
    // New runs get version 2.
    let (tp2, _) = new_trace();
    let fresh = served.post_run(&input, &[("traceparent", &tp2)]).json();
    let fresh = served
        .get(&format!("/v1/runs/{}", str_of(&fresh, "/run_id")))
        .json();
    assert_eq!(
        step(&fresh, "aggregate")["component_sha256"],
        sha(&v2_bytes).as_str()
    );
}

/// `braid serve` killed with SIGKILL while 120 runs with an
/// `Idempotency-Key` each are in flight (`BRAID_TEST_RESUME_RUNS` sets
/// another number), then started again on the same state: every run ends
/// `succeeded` with its report, the API issued one token per run, and a
/// replay of each key answers with the run's result.
#[test]
fn braid_serve_killed_mid_load_resumes_every_run_after_a_restart() {
    let n: usize = std::env::var("BRAID_TEST_RESUME_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(120);
    // Each API call takes 100 ms: a run is in flight for over 300 ms.
    let api = SampleApi::start(Some(100));
    let mut served = Served::spawn(&reference_workflow(), &[], &[]);
    let runs: Vec<(String, String, String)> = (0..n)
        .map(|i| {
            let (traceparent, trace) = new_trace();
            (format!("load-{i}"), traceparent, trace)
        })
        .collect();
    let body = |i: usize| json!({ "api_base": api.base(), "user_id": "u-100", "work_item": format!("load-item-{i}") });
    let senders: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, (key, traceparent, _))| {
            let (addr, key, tp, body) = (
                served.addr.clone(),
                key.clone(),
                traceparent.clone(),
                body(i).to_string(),
            );
            // Each connection breaks when the host is killed (a thread's panic).
            std::thread::spawn(move || {
                http(
                    &addr,
                    "POST",
                    "/v1/workflows/api-orchestration/runs",
                    &[("traceparent", &tp), ("Idempotency-Key", &key)],
                    &body,
                )
            })
        })
        .collect();
    // Every run has started (asked for its token); then some more calls.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = api.requests(None);
        let tokens = seen.iter().filter(|r| r["path"] == "/oauth/token").count();
        if tokens >= n && seen.len() >= n + n / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{tokens} runs started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = served.kill();
    for s in senders {
        let _ = s.join();
    }
    let running = list("runs", served.state_dir())
        .into_iter()
        .filter(|r| r["status"] == "running")
        .count();
    assert!(running > 0, "the kill left runs in flight: {log}");
    served.restart();

    for (i, (key, _, trace)) in runs.iter().enumerate() {
        let (tp, _) = new_trace();
        let replay = served.post_run(&body(i), &[("traceparent", &tp), ("Idempotency-Key", key)]);
        assert_eq!(replay.status, 200, "{key}: {}", replay.body);
        let answer = replay.json();
        assert_eq!(answer["outcome"], "succeeded", "{answer}");
        assert_eq!(answer["trace_id"], trace.as_str(), "the run's own trace");
        let report = served.get(&format!("/v1/runs/{}", str_of(&answer, "/run_id")));
        assert_eq!(report.status, 200, "{key}: the report is stored");
        let requests = api.requests(Some(trace));
        assert_eq!(tokens_issued(&requests), 1, "{key}: {requests:?}");
    }
    let runs = list("runs", served.state_dir());
    assert_eq!(runs.len(), n, "one run per key");
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:?}");
    // The restarted server counts the runs it resumed (and no others),
    // each as its resume ends (just after its report is stored).
    let counted = format!(
        "braid_runs_total{{workflow=\"api-orchestration\",outcome=\"succeeded\"}} {running}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut metrics = served.get("/metrics").body;
    while !metrics.contains(&counted) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        metrics = served.get("/metrics").body;
    }
    assert!(metrics.contains(&counted), "{counted} in:\n{metrics}");
    assert!(metrics.contains("braid_runs_in_flight 0"), "{metrics}");
    eprintln!("{running} of {n} runs were in flight at the kill; all resumed");
}

/// `braid serve` killed mid-run of a workflow with `on_crash = "undo"`, then
/// started again: recovery undoes and aborts the run, and the aborted run
/// has its report like every ended run (`GET /v1/runs/ID`, listed under
/// `?status=aborted`), while its `Idempotency-Key` answers 409: that run
/// cannot run again under the key.
#[test]
fn a_run_aborted_by_recovery_under_serve_has_its_report_and_its_key_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = audited_workflow(dir.path(), "undo");
    let api = SampleApi::start(Some(0));
    let mut served = Served::spawn(&workflow, &[], &[]);
    let (traceparent, trace) = new_trace();
    // The audit's permissions call (the 2nd on this trace) hangs.
    api.add_fault(
        json!({ "endpoint": "permissions", "delay_ms": 60000, "skip": 1, "trace_id": trace }),
    );
    let body =
        json!({ "api_base": api.base(), "user_id": "u-100", "work_item": "undo-item" }).to_string();
    let path = "/v1/workflows/api-orchestration-audited/runs";
    let (addr, tp, sent) = (served.addr.clone(), traceparent.clone(), body.clone());
    // Its connection breaks when the host is killed (the thread's panic).
    let first = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            path,
            &[("traceparent", &tp), ("Idempotency-Key", "undo-1")],
            &sent,
        )
    });
    wait_for_requests(&api, &trace, 4);
    served.kill();
    let _ = first.join();
    served.restart();

    // Recovery runs at start: wait for the run to be aborted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let listed = served.get("/v1/runs?status=aborted").json();
        if listed.as_array().is_some_and(|l| !l.is_empty()) {
            break listed;
        }
        assert!(Instant::now() < deadline, "no aborted run listed: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(listed[0]["trace_id"], trace.as_str(), "{listed}");
    let run_id = str_of(&listed[0], "/run_id").to_string();
    let report = served.get(&format!("/v1/runs/{run_id}"));
    assert_eq!(report.status, 200, "{}", report.body);
    let report = report.json();
    assert_eq!(report["outcome"], "aborted", "{report}");
    assert!(
        str_of(&report, "/error").contains("stopped mid-run; recovered"),
        "{report}"
    );
    let undone: Vec<&str> = report["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .map(|u| str_of(u, "/step"))
        .collect();
    assert_eq!(undone.first(), Some(&"claim_work"), "{report}");

    let replay = http(
        &served.addr,
        "POST",
        path,
        &[("traceparent", &traceparent), ("Idempotency-Key", "undo-1")],
        &body,
    );
    assert_eq!(replay.status, 409, "{}", replay.body);
    assert!(replay.body.contains("was aborted"), "{}", replay.body);
}
