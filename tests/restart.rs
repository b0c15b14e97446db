//! Restarting an ended run from one of its steps (`POST
//! /v1/runs/ID/restart`, issue 28): a new run with the old input reuses
//! the journaled outputs of the steps before the one named (they are not
//! called again) and runs that step and what follows on today's
//! components; its report links the old run.

use crate::support::*;
use crate::waiting::{ADMIN, TOKEN, calls, spawn_waiting};
use serde_json::{Value, json};
use std::path::Path;

/// `ping` (an irreversible GET of the sample API), then `check` (broken
/// until fixed: the hostile guest told to panic), `authenticate`, and
/// `after` (notifies). Its own components directory (a hot swap writes
/// there). A failure undoes the run.
fn restartable(dir: &Path) -> std::path::PathBuf {
    let body = r#"
name = "restartable"
result = "after"
[inputs.api_base]
[inputs.user_id]
[inputs.ping_url]
[defaults]
timeout_ms = 20000
max_retries = 0
allowed_hosts = ["127.0.0.1", "localhost"]

[[steps]]
name = "ping"
component = "ping"
args.mode = { value = "http" }
args.url = { input = "ping_url" }

[[steps]]
name = "check"
component = "check"
wait_for = ["ping"]
args.mode = { value = "panic" }

[[steps]]
name = "authenticate"
component = "authenticate"
wait_for = ["check"]
args.api_base = { input = "api_base" }
args.user_id = { input = "user_id" }

[[steps]]
name = "after"
component = "notify"
args.api_base = { input = "api_base" }
args.token = { step = "authenticate", pointer = "/access_token" }
args.to = { value = "requester@example.com" }
args.subject = { value = "restarted" }
args.about = { step = "check" }
"#;
    private_workflow(
        dir,
        "restartable",
        &[
            ("authenticate", "authenticate"),
            ("notify", "notify"),
            ("hostile", "ping"),
            ("hostile", "check"),
        ],
        body,
    )
}

fn restart(addr: &str, run_id: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/v1/runs/{run_id}/restart"),
        headers,
        body,
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Restarts `run_id` from `from` and waits for the new run's end.
fn restarted(served: &crate::serve::Served, run_id: &str, from: &str) -> Value {
    let (traceparent, _) = new_trace();
    let r = restart(
        &served.addr,
        run_id,
        &[ADMIN, JSON, ("traceparent", &traceparent)],
        &json!({ "from": from }).to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("location").to_string();
    served.get(&format!("{location}?wait=60s")).json()
}

#[test]
fn a_failed_and_a_succeeded_run_restart_from_a_middle_step_without_calling_what_came_before() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let served = spawn_waiting(&restartable(dir.path()), &[]);
    let input = json!({ "api_base": api.base(), "user_id": "u-100",
                        "ping_url": format!("{}/users/u-100/profile", api.base()) });
    let (traceparent, first_trace) = new_trace();
    let failed = http(
        &served.addr,
        "POST",
        "/v1/workflows/restartable/runs",
        &[("traceparent", &traceparent)],
        &input.to_string(),
    );
    assert_eq!(failed.status, 422, "{}", failed.body);
    let failed_id = str_of(&failed.json(), "/run_id").to_string();
    assert_eq!(calls(&api, &first_trace, "/users/u-100/profile"), 1);

    // Refused, and nothing starts: no token, an unknown run or step, no `from`.
    let addr = served.addr.clone();
    let body = r#"{"from": "check"}"#;
    assert_eq!(restart(&addr, &failed_id, &[JSON], body).status, 401);
    let unknown = restart(&addr, "run-0000000000000000", &[ADMIN, JSON], body);
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let bad_step = restart(&addr, &failed_id, &[ADMIN, JSON], r#"{"from": "nope"}"#);
    assert_eq!(bad_step.status, 400, "{}", bad_step.body);
    assert!(
        bad_step.body.contains(
            "has no step `nope` to restart from (its steps: ping, check, authenticate, after)"
        ),
        "{}",
        bad_step.body
    );
    let no_from = restart(&addr, &failed_id, &[ADMIN, JSON], "{}");
    assert_eq!(no_from.status, 400, "{}", no_from.body);

    assert_eq!(list("runs", served.state_dir()).len(), 1, "none started");

    // The fix, then the failed run restarted from `check`.
    let (status, put) = crate::suspend::upload_fix(&addr);
    assert_eq!(status, 200, "{put}");
    let second = restarted(&served, &failed_id, "check");
    assert_eq!(second["status"], "succeeded", "{second}");
    let second_trace = str_of(&second, "/trace_id").to_string();
    assert_ne!(second_trace, first_trace, "a trace of its own");
    assert_eq!(second["restarted_from"]["run_id"], failed_id.as_str());
    assert_eq!(second["restarted_from"]["step"], "check");
    assert_eq!(second["restarted_from"]["trace_id"], first_trace.as_str());
    assert_eq!(second["restarted_from"]["reused_steps"], json!(["ping"]));
    assert_eq!(
        calls(&api, &second_trace, "/users/u-100/profile"),
        0,
        "ping not called again"
    );
    assert_eq!(calls(&api, &first_trace, "/users/u-100/profile"), 1);
    assert_eq!(calls(&api, &second_trace, "/oauth/token"), 1);
    assert_eq!(step(&second, "ping")["outcome"], "succeeded");
    let second_id = str_of(&second, "/run_id").to_string();

    // The succeeded run restarted from its last step: only it runs again.
    let third = restarted(&served, &second_id, "after");
    assert_eq!(third["status"], "succeeded", "{third}");
    let third_trace = str_of(&third, "/trace_id");
    assert_eq!(
        third["restarted_from"]["reused_steps"],
        json!(["ping", "check", "authenticate"])
    );
    assert_eq!(calls(&api, third_trace, "/oauth/token"), 0);
    assert_eq!(calls(&api, third_trace, "/users/u-100/profile"), 0);
    assert_eq!(calls(&api, third_trace, "/notifications"), 1);
    // The journal of the restart holds what it reused, as its own.
    let runs = list("runs", served.state_dir());
    let third_id = str_of(&third, "/run_id");
    let record = runs
        .iter()
        .find(|r| r["run_id"] == third_id)
        .expect("listed");
    assert!(record["entries"].as_u64().expect("count") >= 4, "{record}");

    // From the CLI, through the server (a restart runs steps: a server).
    let server = format!("http://{}", served.addr);
    let out = braid(&[
        "runs",
        "restart",
        third_id,
        "--from",
        "after",
        "--server",
        &server,
        "--admin-token",
        TOKEN,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let fourth = json_stdout(&out);
    let fourth_id = str_of(&fourth, "/run_id");
    let done = served.get(&format!("/v1/runs/{fourth_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["restarted_from"]["run_id"], third_id);
    let state = served.state_dir().to_str().expect("utf-8").to_string();
    let local = braid(&[
        "runs",
        "restart",
        third_id,
        "--from",
        "after",
        "--state-dir",
        &state,
    ]);
    assert_eq!(local.status.code(), Some(2), "{}", stderr(&local));
    assert!(
        stderr(&local).contains("name the server that runs it"),
        "{}",
        stderr(&local)
    );
}
