//! Workflows that fan out and branch, end to end with the real components
//! and the sample API: a map of `authenticate` (one token per member, each
//! element under its own idempotency key) feeding a map of
//! `fetch_permissions` that picks its arguments out of each element; a run
//! killed inside a map resumes with the elements done reused; a failed run
//! undoes the elements newest first; `braid check` names every mistake.

use crate::resume::{recover, spawn_run, stored_report, wait_for_requests};
use crate::support::*;
use serde_json::{Value, json};

const MEMBERS: [&str; 4] = ["u-100", "u-200", "u-300", "u-400"];

/// The team workflow: sign every member in (one element at a time, so the
/// completion order is the members' order), then fetch their permissions
/// two at a time with each member's own token.
fn team_workflow(dir: &std::path::Path) -> std::path::PathBuf {
    write_workflow(
        dir,
        "team.toml",
        r#"
name = "team"
result = "permissions"
[inputs.api_base]
[inputs.members]
[defaults]
timeout_ms = 60000
max_retries = 0
allowed_hosts = ["127.0.0.1", "localhost"]

[[steps]]
name = "sign_in"
component = "authenticate"
idempotency_key = true
args.api_base = { input = "api_base" }
[steps.map]
over = { input = "members" }
as = "user_id"
max_parallel = 1

[[steps]]
name = "permissions"
component = "fetch_permissions"
args.api_base = { input = "api_base" }
args.user_id = { element = "/user_id" }
args.token = { element = "/access_token" }
[steps.map]
over = { step = "sign_in" }
max_parallel = 2
"#,
    )
}

fn team_input(api: &SampleApi) -> String {
    json!({ "api_base": api.base(), "members": MEMBERS }).to_string()
}

/// A run of `braid run` on `trace` in `state`, killed with SIGKILL once the
/// API has seen some of its requests, then resumed by `braid recover`.
struct Killed<'a> {
    api: &'a SampleApi,
    /// (traceparent, trace id)
    trace: (&'a str, &'a str),
    state: &'a std::path::Path,
}

impl Killed<'_> {
    /// Kills the run of `wf` after `requests` of its requests, recovers it
    /// (it must be resumed and succeed) and returns its run id.
    fn after_requests(&self, wf: &std::path::Path, input: &str, requests: usize) -> String {
        let (traceparent, trace) = self.trace;
        let mut child = spawn_run(wf, self.state, traceparent, input);
        wait_for_requests(self.api, trace, requests);
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let run_id = str_of(&list("runs", self.state)[0], "/run_id").to_string();
        let recovered = recover(self.state);
        assert_eq!(recovered[0]["action"], "resumed", "{recovered}");
        assert_eq!(recovered[0]["outcome"], "succeeded", "{recovered}");
        run_id
    }
}

/// The `Idempotency-Key`s of the token requests, in the order sent.
fn token_keys(requests: &[Value]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r["path"] == "/oauth/token")
        .filter_map(|r| r["idempotency_key"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_map_signs_in_every_member_and_fetches_each_ones_permissions_with_its_token() {
    // 200 ms a call: the API sees how many of a map's requests overlap.
    let api = SampleApi::start(Some(200));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = team_workflow(state.path());
    let out = run_workflow(&wf, state.path(), &team_input(&api), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "succeeded", "{report}");
    let permissions = report["result"].as_array().expect("an array");
    let users: Vec<&str> = permissions
        .iter()
        .filter_map(|p| p["user_id"].as_str())
        .collect();
    assert_eq!(
        users, MEMBERS,
        "in the members' order, each with its own token"
    );
    let run_id = report["run_id"].as_str().expect("run id");
    let keys = token_keys(&api.requests(Some(report["trace_id"].as_str().expect("trace"))));
    for (i, key) in keys.iter().enumerate() {
        assert!(key.starts_with(&format!("{run_id}.sign_in.{i}.")), "{key}");
    }
    assert_eq!(keys.len(), 4);
    // `max_parallel`, as the API saw it: at most 2 permission requests at
    // once (and 2, as four of them were there to run), 1 token request.
    let requests = api.requests(Some(report["trace_id"].as_str().expect("trace")));
    let most_at_once = |path: &dyn Fn(&str) -> bool| {
        let spans: Vec<(u64, u64)> = requests
            .iter()
            .filter(|r| path(r["path"].as_str().unwrap_or("")))
            .filter_map(|r| Some((r["received_at_ms"].as_u64()?, r["finished_at_ms"].as_u64()?)))
            .collect();
        spans
            .iter()
            .map(|(start, _)| {
                spans
                    .iter()
                    .filter(|(s, e)| s <= start && start < e)
                    .count()
            })
            .max()
            .unwrap_or(0)
    };
    assert_eq!(most_at_once(&|p| p.ends_with("/permissions")), 2);
    assert_eq!(most_at_once(&|p| p == "/oauth/token"), 1);
    let map = &step(&report, "permissions")["map"];
    assert_eq!(map["elements"], 4);
    assert_eq!(map["succeeded"], 4);
    assert_eq!(map["max_parallel"], 2);
    // Each element attempt is a child of the map's span.
    let span = map["span_id"].as_str().expect("span");
    assert!(!span.is_empty());
    assert_eq!(map["shown"][3]["attempts"][0]["outcome"], "succeeded");
}

/// Killed while the third member's token request hangs: the resumed run
/// does not sign the first two in again, sends the third's request again
/// under the same key, and every member gets exactly one token.
#[test]
fn a_run_killed_inside_a_map_resumes_with_the_elements_done_reused() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = team_workflow(state.path());
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "token", "delay_ms": 60000, "skip": 2,
        "times": 1, "trace_id": trace }));
    let killed = Killed {
        api: &api,
        trace: (&traceparent, &trace),
        state: state.path(),
    };
    let run_id = killed.after_requests(&wf, &team_input(&api), 3);
    let requests = api.requests(Some(&trace));
    let keys = token_keys(&requests);
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert_eq!(keys[2], keys[3], "the hung element is sent again, same key");
    let distinct: std::collections::HashSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), 4);
    assert!(keys[4].starts_with(&format!("{run_id}.sign_in.3.")));
    assert_eq!(tokens_issued(&requests), 4, "one token per member");

    let report = stored_report(state.path(), &run_id).expect("report");
    assert_eq!(report["outcome"], "succeeded");
    let sign_in = &step(&report, "sign_in")["map"];
    assert_eq!(sign_in["reused"], 2, "{sign_in}");
    assert_eq!(sign_in["succeeded"], 2, "{sign_in}");
    let users: Vec<&str> = report["result"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|p| p["user_id"].as_str())
        .collect();
    assert_eq!(users, MEMBERS);
}

/// One member's permissions are refused (401, fatal): the run fails and
/// the tokens already issued are revoked, the newest first, each undo
/// under its element's own key.
#[test]
fn a_failed_map_undoes_the_completed_elements_newest_first() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = team_workflow(state.path());
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "permissions", "status": 401, "skip": 2,
        "times": 1, "trace_id": trace }));
    let out = run_workflow(
        &wf,
        state.path(),
        &team_input(&api),
        &["--traceparent", &traceparent],
    );
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "failed", "{report}");
    let error = report["error"].as_str().expect("error");
    assert!(
        error.starts_with("step `permissions` failed: element ")
            && error.contains("(1 failed, 0 tolerated)"),
        "{error}"
    );
    let run_id = report["run_id"].as_str().expect("run id");
    let undone: Vec<&str> = report["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .filter(|u| u["outcome"] == "undone")
        .filter_map(|u| u["step"].as_str())
        .filter(|s| s.starts_with("sign_in."))
        .collect();
    assert_eq!(undone, ["sign_in.3", "sign_in.2", "sign_in.1", "sign_in.0"]);
    let revokes: Vec<String> = api
        .requests(Some(&trace))
        .iter()
        .filter(|r| r["path"] == "/oauth/revoke")
        .filter_map(|r| r["idempotency_key"].as_str().map(str::to_string))
        .collect();
    assert_eq!(revokes.len(), 4, "{revokes:?}");
    for (key, i) in revokes.iter().zip([3, 2, 1, 0]) {
        assert!(
            key.starts_with(&format!("{run_id}.sign_in.{i}.undo.")),
            "{key}"
        );
    }
}

#[test]
fn check_names_every_mistake_in_conditions_and_maps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "bad.toml",
        r#"
name = "bad"
result = "b"
[inputs.xs]
[[steps]]
name = "a"
component = "noop"
args.x = { element = "/x" }
when = { step = "ghost", equals = 1 }
[[steps]]
name = "b"
component = "noop"
[steps.map]
over = { input = "xs" }
max_elements = 1000000
"#,
    );
    let out = braid(&["check", wf.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    for want in [
        "step `a`: field `args.x.element`: `element` only applies to an argument of a map step",
        "step `a`: field `when.step`: unknown step `ghost`",
        "step `b`: field `map.max_elements`: must be between 1 and 100000",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

fn team_access() -> std::path::PathBuf {
    root().join("workflows/team-access.toml")
}

fn access_input(api: &SampleApi, user: &str) -> String {
    json!({ "api_base": api.base(), "user_id": user }).to_string()
}

/// The reference access review, allowed: the requester signs in through the
/// composed `sign-in` workflow, the policy allows, every member's
/// permissions are fetched, the notification is skipped with why.
#[test]
fn the_access_review_fetches_the_teams_permissions_when_the_policy_allows() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let out = run_workflow(
        &team_access(),
        state.path(),
        &access_input(&api, "u-200"),
        &[],
    );
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "succeeded", "{report}");
    let team: Vec<&str> = report["result"]["team"]
        .as_array()
        .expect("the team's permissions")
        .iter()
        .filter_map(|m| m["output"]["user_id"].as_str())
        .collect();
    assert_eq!(team, ["u-100", "u-200", "u-300"]);
    assert_eq!(report["result"]["decision"]["allowed"], true);
    assert_eq!(report["result"]["notified"], Value::Null);
    let notify = step(&report, "notify_denied");
    assert_eq!(notify["outcome"], "skipped");
    assert_eq!(
        notify["skipped_because"],
        "condition false: step `decide/allowed` equals false"
    );
    let requester = step(&report, "requester");
    assert_eq!(requester["compose"]["workflow"], "sign-in");
    let sign_in = step(&report, "requester/authenticate");
    assert_eq!(
        sign_in["attempts"][0]["parent_span_id"], requester["compose"]["span_id"],
        "the composed step is a child of the compose step's span"
    );
    let trace = report["trace_id"].as_str().expect("trace");
    let requests = api.requests(Some(trace));
    assert_eq!(
        tokens_issued(&requests),
        4,
        "the requester and three members"
    );
    assert!(requests.iter().all(|r| r["path"] != "/notifications"));
}

/// Denied: one notification (under the step's idempotency key), and the
/// team's branch skipped with why.
#[test]
fn the_access_review_notifies_once_when_the_policy_denies() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let out = run_workflow(
        &team_access(),
        state.path(),
        &access_input(&api, "u-300"),
        &[],
    );
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "succeeded", "{report}");
    assert_eq!(report["result"]["decision"]["allowed"], false);
    assert_eq!(report["result"]["notified"]["to"], "security@example.com");
    assert_eq!(report["result"]["team"], Value::Null);
    assert_eq!(
        step(&report, "team_tokens")["skipped_because"],
        "condition false: step `decide/allowed` equals true"
    );
    assert_eq!(
        step(&report, "team_permissions")["skipped_because"],
        "step `team_tokens` was skipped"
    );
    let run_id = report["run_id"].as_str().expect("run id");
    let requests = api.requests(Some(report["trace_id"].as_str().expect("trace")));
    let sent: Vec<&Value> = requests
        .iter()
        .filter(|r| r["path"] == "/notifications")
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0]["idempotency_key"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("{run_id}.notify_denied."))),
        "{sent:?}"
    );
}

/// Killed while the composed workflow's step hangs: the resumed run
/// carries on inside it, the token request sent again under the same key
/// (one token for the requester), and the review ends.
#[test]
fn a_run_killed_inside_a_composed_workflow_resumes_inside_it() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "token", "delay_ms": 60000, "times": 1,
        "trace_id": trace }));
    let killed = Killed {
        api: &api,
        trace: (&traceparent, &trace),
        state: state.path(),
    };
    let run_id = killed.after_requests(&team_access(), &access_input(&api, "u-300"), 1);
    let requests = api.requests(Some(&trace));
    let keys = token_keys(&requests);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[0], keys[1], "the same request, sent again");
    assert!(keys[0].starts_with(&format!("{run_id}.requester/authenticate.")));
    assert_eq!(tokens_issued(&requests), 1);
    let report = stored_report(state.path(), &run_id).expect("report");
    assert_eq!(report["result"]["notified"]["to"], "security@example.com");
}

/// `braid serve` serves the access review: a run over HTTP branches the
/// same way, and the viewer draws the compose step linking to its workflow.
#[test]
fn the_access_review_runs_under_serve_and_its_dag_links_the_composed_workflow() {
    let api = SampleApi::start(Some(0));
    let served = crate::serve::Served::spawn(&team_access(), &[], &[]);
    let answer = http(
        &served.addr,
        "POST",
        "/v1/workflows/team-access/runs",
        &[("content-type", "application/json")],
        &access_input(&api, "u-300"),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["result"]["decision"]["allowed"], false, "{body}");
    let page = http(&served.addr, "GET", "/ui/workflows", &[], "");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains(r##"<a href="/ui/workflows#workflow-sign-in" data-composes="sign-in">"##),
        "the compose step links to its workflow: {}",
        page.body
    );
    assert!(page.body.contains("team_tokens [map]"), "{}", page.body);
    // The composed workflow, not served itself, is drawn where the link leads.
    assert!(
        page.body.contains(
            r#"id="workflow-sign-in" data-workflow="sign-in" data-composed-by="team-access""#
        ),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(r#"data-when="step `decide/allowed` equals false""#),
        "a conditional step says its condition"
    );
}

/// The access review and its composed workflow served from a directory of
/// their own (uploads replace the component files there).
fn private_access_review(dir: &std::path::Path) -> std::path::PathBuf {
    let components = dir.join("components");
    std::fs::create_dir_all(&components).expect("mkdir");
    for name in [
        "authenticate",
        "fetch_profile",
        "fetch_permissions",
        "validate_access",
        "notify",
        "noop",
    ] {
        std::fs::copy(
            crate::support::components().join(format!("{name}.wasm")),
            components.join(format!("{name}.wasm")),
        )
        .expect("copy component");
    }
    for name in ["team-access", "sign-in"] {
        let text = std::fs::read_to_string(root().join(format!("workflows/{name}.toml")))
            .expect("workflow")
            .replace(
                "components_dir = \"../target/components\"",
                "components_dir = \"components\"",
            )
            .replace("timeout_ms = 5000", "timeout_ms = 20000");
        std::fs::write(dir.join(format!("{name}.toml")), text).expect("write workflow");
    }
    dir.join("team-access.toml")
}

/// `authenticate` hot-swapped while a review is in flight: the run's
/// composed step and its map keep the version the run started with (it is
/// pinned, composed workflow included); the next run takes the new one.
#[test]
fn a_hot_swap_during_a_run_leaves_its_composed_and_mapped_steps_on_their_version() {
    use crate::serve::{component_bytes, sha};
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = private_access_review(dir.path());
    // Every call takes 1.5 s: the swap lands while the run signs in, long
    // before its map of `authenticate` starts (3 s later).
    let api = SampleApi::start(Some(1500));
    let served = crate::serve::Served::spawn(&workflow, &["--admin-token", "s3cret"], &[]);
    let old = component_bytes("authenticate");
    // The same code under another version: a custom section appended.
    let mut new = old.clone();
    new.extend_from_slice(&[0, 6, 5, b'b', b'r', b'a', b'i', b'd']);
    let (old_sha, new_sha) = (sha(&old), sha(&new));
    assert_ne!(old_sha, new_sha);
    let addr = served.addr.clone();
    let input = access_input(&api, "u-200");
    let first = std::thread::spawn({
        let (addr, input) = (addr.clone(), input.clone());
        move || {
            http(
                &addr,
                "POST",
                "/v1/workflows/team-access/runs",
                &[("content-type", "application/json")],
                &input,
            )
        }
    });
    // The first run's token request has reached the API: swap.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !api
        .requests(None)
        .iter()
        .any(|r| r["path"] == "/oauth/token")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never signed in"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (status, body) =
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(crate::serve::request_async(
                &addr,
                "PUT",
                "/v1/components/authenticate",
                "authorization: Bearer s3cret\r\n",
                &new,
            ));
    assert_eq!(status, 200, "{body}");
    let swapped_at = braid::store::now_ms();
    let first = first.join().expect("first run");
    let members_signed_in: Vec<u64> = api
        .requests(None)
        .iter()
        .filter(|r| {
            r["idempotency_key"]
                .as_str()
                .is_some_and(|k| k.contains(".team_tokens."))
        })
        .filter_map(|r| r["received_at_ms"].as_u64())
        .collect();
    assert_eq!(members_signed_in.len(), 3);
    assert!(
        members_signed_in.iter().all(|at| *at > swapped_at),
        "the map started after the swap: {members_signed_in:?} vs {swapped_at}"
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let report = http(&addr, "GET", str_of(&first.json(), "/report"), &[], "").json();
    for s in ["requester/authenticate", "team_tokens"] {
        assert_eq!(
            step(&report, s)["component_sha256"],
            old_sha.as_str(),
            "{s}"
        );
    }
    let second = http(
        &addr,
        "POST",
        "/v1/workflows/team-access/runs",
        &[("content-type", "application/json")],
        &input,
    );
    assert_eq!(second.status, 200, "{}", second.body);
    let report = http(&addr, "GET", str_of(&second.json(), "/report"), &[], "").json();
    for s in ["requester/authenticate", "team_tokens"] {
        assert_eq!(
            step(&report, s)["component_sha256"],
            new_sha.as_str(),
            "{s}"
        );
    }
}
