//! The reference workflow end to end through the `braid` binary and the
//! sample API: one trace through every step, API call, claim and event.

use crate::support::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

fn interval(r: &Value) -> (u64, u64) {
    (
        r["received_at_ms"].as_u64().expect("received_at_ms"),
        r["finished_at_ms"].as_u64().expect("finished_at_ms"),
    )
}

/// Asserts everything a run did carries its trace id, and returns the spans
/// of its outbound requests.
pub(crate) fn assert_one_trace(report: &Value, api: &SampleApi) -> HashSet<String> {
    let trace = str_of(report, "/trace_id");
    assert_eq!(
        str_of(report, "/result/trace_id"),
        trace,
        "the result carries the trace id"
    );
    assert_eq!(
        str_of(report, "/result/claim/trace_id"),
        trace,
        "the claim carries the trace id"
    );

    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 6);
    let mut step_spans = HashSet::new();
    for s in steps {
        assert_eq!(s["outcome"], "succeeded", "{s}");
        assert_eq!(s["component_sha256"].as_str().map(str::len), Some(64));
        for a in s["attempts"].as_array().expect("attempts") {
            assert!(
                step_spans.insert(str_of(a, "/span_id").to_string()),
                "span ids are distinct"
            );
        }
    }

    let events = report["events"].as_array().expect("events");
    assert!(
        events.len() >= 6 + 5,
        "a host event per step plus guest events: {}",
        events.len()
    );
    for e in events {
        assert_eq!(str_of(e, "/trace_id"), trace, "event {e}");
        assert!(
            step_spans.contains(str_of(e, "/span_id")),
            "event span belongs to a step attempt: {e}"
        );
    }
    let names: HashSet<&str> = events.iter().map(|e| str_of(e, "/name")).collect();
    for n in [
        "api.auth.succeeded",
        "api.profile.fetched",
        "api.permissions.fetched",
        "claim.granted",
        "policy.decision",
    ] {
        assert!(names.contains(n), "event {n} missing: {names:?}");
    }

    let calls = report["http_calls"].as_array().expect("http_calls");
    assert_eq!(
        calls.len(),
        3,
        "token, profile, permissions: {}\nsteps: {}",
        serde_json::to_string_pretty(calls).unwrap_or_default(),
        serde_json::to_string_pretty(steps).unwrap_or_default()
    );
    let mut call_spans = HashSet::new();
    for c in calls {
        let span = str_of(c, "/span_id");
        assert!(
            !step_spans.contains(span),
            "a request has its own span, not the step's"
        );
        assert!(step_spans.contains(str_of(c, "/attempt_span_id")));
        assert_eq!(str_of(c, "/traceparent"), format!("00-{trace}-{span}-03"));
        assert_eq!(c["status"], 200);
        call_spans.insert(span.to_string());
    }
    assert_eq!(call_spans.len(), 3);

    let received = api.requests(Some(trace));
    assert_eq!(
        received.len(),
        3,
        "the API saw three requests on this trace"
    );
    let parents: HashSet<String> = received
        .iter()
        .map(|r| str_of(r, "/parent_id").to_string())
        .collect();
    assert_eq!(
        parents, call_spans,
        "the API saw each request's own span as parent-id"
    );
    call_spans
}

#[test]
fn reference_workflow_carries_one_trace_everywhere() {
    // 300 ms per API call: long enough that the two parallel fetches overlap
    // at the API even when a busy machine starts one of them late.
    let api = SampleApi::start(Some(300));
    let state = tempfile::tempdir().expect("tempdir");
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "ticket-1"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["continued_trace"], false);
    assert_one_trace(&report, &api);
    let trace = str_of(&report, "/trace_id");

    // The result is what the steps computed from the API's data.
    assert_eq!(report["result"]["user"]["name"], "Ada Lovelace");
    assert_eq!(report["result"]["decision"]["allowed"], true);

    // The claim row in the store carries the run and its trace.
    let rows = list("claims", state.path());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["work_item"], "ticket-1");
    assert_eq!(rows[0]["trace_id"], trace);
    assert_eq!(rows[0]["run_id"], report["run_id"]);
    assert_eq!(rows[0]["step"], "claim_work");

    // Profile and permissions ran in parallel: in the report and at the API.
    let step = |name: &str| {
        report["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .cloned()
            .expect("step")
    };
    assert_eq!(
        step("fetch_profile")["parallel_with"],
        serde_json::json!(["fetch_permissions"])
    );
    let received = api.requests(Some(trace));
    let at = |suffix: &str| {
        interval(
            received
                .iter()
                .find(|r| str_of(r, "/path").ends_with(suffix))
                .expect("request"),
        )
    };
    let (p0, p1) = at("/profile");
    let (q0, q1) = at("/permissions");
    assert!(
        p0 < q1 && q0 < p1,
        "profile {p0}..{p1} and permissions {q0}..{q1} overlap"
    );
}

#[test]
fn the_tree_output_shows_every_step_and_the_trace() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = reference_workflow();
    let out = braid(&[
        "run",
        wf.to_str().expect("utf-8"),
        "--input",
        &reference_input(&api, "u-100", "tree-1"),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let trace = text
        .lines()
        .find_map(|l| l.strip_prefix("trace "))
        .and_then(|l| l.split_whitespace().next())
        .expect("trace line");
    assert_eq!(trace.len(), 32);
    for step in [
        "authenticate",
        "fetch_profile",
        "fetch_permissions",
        "validate_access",
        "claim_work",
        "aggregate",
    ] {
        assert!(
            text.lines().any(|l| l.contains(step) && l.contains(" ok ")),
            "{step} line in\n{text}"
        );
    }
    assert!(text.contains("(parallel with fetch_permissions)"), "{text}");
    assert!(text.contains("3 API calls, 1 claim"), "{text}");
    assert!(text.contains(&format!("all on trace {trace}")), "{text}");
}

#[test]
fn an_incoming_traceparent_is_continued_and_an_invalid_one_replaced() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "cont-1"),
        &["--traceparent", incoming, "--tracestate", "vendor=abc"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(report["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(report["continued_trace"], true);
    let run_tp = str_of(&report, "/traceparent");
    assert!(
        run_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && run_tp.ends_with("-01"),
        "{run_tp}"
    );
    let received = api.requests(Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(received.len(), 3);
    for r in &received {
        assert!(
            str_of(r, "/traceparent").ends_with("-01"),
            "flags kept: {r}"
        );
        assert_eq!(r["tracestate"], "vendor=abc", "tracestate forwarded: {r}");
        assert_ne!(
            r["parent_id"], "00f067aa0ba902b7",
            "each request has its own span"
        );
    }

    for invalid in [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ] {
        let out = run_reference(
            state.path(),
            &reference_input(&api, "u-100", &format!("inv-{}", &invalid[3..9])),
            &["--traceparent", invalid, "--tracestate", "vendor=abc"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let report = json_stdout(&out);
        assert_eq!(report["continued_trace"], false);
        let trace = str_of(&report, "/trace_id");
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(trace, "00000000000000000000000000000000");
        assert_eq!(
            report["tracestate"], "",
            "tracestate without a valid traceparent is dropped"
        );
        assert!(
            stderr(&out).contains("ignored"),
            "the rejection is logged: {}",
            stderr(&out)
        );
        let received = api.requests(Some(trace));
        assert_eq!(received.len(), 3);
        assert!(received.iter().all(|r| r["tracestate"].is_null()));
    }

    // The flags may be repeated, as header lines can: two --traceparent
    // start a new trace; two --tracestate are combined in order.
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "rep-1"),
        &["--traceparent", incoming, "--traceparent", incoming],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["continued_trace"], false);
    assert!(stderr(&out).contains("2 header fields"), "{}", stderr(&out));
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "rep-2"),
        &[
            "--traceparent",
            incoming,
            "--tracestate",
            "a=1",
            "--tracestate",
            "b=2,a=3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_stdout(&out)["tracestate"], "a=1,b=2");
}

#[test]
fn a_second_claim_of_the_same_work_item_conflicts_and_names_the_holder() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let first = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "shared-item"),
        &[],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let first = json_stdout(&first);

    let second = run_reference(
        state.path(),
        &reference_input(&api, "u-200", "shared-item"),
        &[],
    );
    assert_eq!(second.status.code(), Some(1), "a failed run exits 1");
    let second = json_stdout(&second);
    assert_eq!(second["outcome"], "failed");
    let error = str_of(&second, "/error");
    let holder = format!(
        "already claimed by run {} (trace {}, step `claim_work`)",
        str_of(&first, "/run_id"),
        str_of(&first, "/trace_id")
    );
    assert!(error.contains(&holder), "{error}");
    assert!(
        error.starts_with("step `claim_work` failed: fatal:"),
        "{error}"
    );
    let conflict = second["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["name"] == "claim.conflict"))
        .expect("conflict event");
    assert_eq!(conflict["trace_id"], second["trace_id"]);
    assert_eq!(conflict["metadata"]["holder_trace_id"], first["trace_id"]);
    let skipped = &second["steps"][5];
    assert_eq!(skipped["name"], "aggregate");
    assert_eq!(skipped["outcome"], "skipped");

    // The holder keeps its claim.
    let rows = list("claims", state.path());
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["trace_id"], first["trace_id"]);
}

#[test]
fn fifty_concurrent_runs_keep_their_traces_apart() {
    let api = SampleApi::start(Some(5));
    let state = tempfile::tempdir().expect("tempdir");
    let wf = reference_workflow();
    // Warm the compiled-component cache once instead of 50 times.
    let warm = braid(&[
        "check",
        wf.to_str().expect("utf-8"),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(warm.status.success(), "{}", stderr(&warm));

    // Fifty processes commit to one SQLite journal. Synced to disk at each
    // commit (`--durability machine`), they queue on its write lock so long
    // on a saturated machine that a run's lease renewal can wait past the
    // 4 s fence, and that run then (rightly) stops itself: seen once beside
    // stress-ng and a release build. What is checked here is trace
    // separation, so the runs commit without the sync.
    let children: Vec<_> = (0..50)
        .map(|i| {
            std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
                .args(["run", wf.to_str().expect("utf-8"), "--json", "--state-dir"])
                .arg(state.path())
                .args(["--durability", "process"])
                .args([
                    "--input",
                    &reference_input(&api, "u-100", &format!("item-{i}")),
                ])
                .env("BRAID_LOG", "error")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn braid")
        })
        .collect();
    let reports: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("braid finishes");
            assert!(out.status.success(), "{}", stderr(&out));
            json_stdout(&out)
        })
        .collect();

    let traces: HashSet<&str> = reports.iter().map(|r| str_of(r, "/trace_id")).collect();
    assert_eq!(traces.len(), 50, "50 distinct trace ids");

    for report in &reports {
        assert_one_trace(report, &api);
    }

    // Every request the API saw belongs to exactly one run, three per run.
    let all = api.requests(None);
    assert_eq!(all.len(), 150);
    let mut per_trace: HashMap<&str, usize> = HashMap::new();
    for r in &all {
        let t = str_of(r, "/trace_id");
        assert!(traces.contains(t), "request on an unknown trace: {r}");
        *per_trace.entry(t).or_default() += 1;
    }
    assert!(per_trace.values().all(|n| *n == 3), "{per_trace:?}");

    // Every claim row carries the trace of the run that holds it.
    let by_run: HashMap<&str, &str> = reports
        .iter()
        .map(|r| (str_of(r, "/run_id"), str_of(r, "/trace_id")))
        .collect();
    let rows = list("claims", state.path());
    assert_eq!(rows.len(), 50);
    for row in &rows {
        assert_eq!(
            by_run.get(str_of(row, "/run_id")).copied(),
            Some(str_of(row, "/trace_id")),
            "{row}"
        );
    }
}
