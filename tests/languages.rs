//! Steps in Python, JavaScript and C: their twins of the Rust steps give the
//! same results and errors, and the trace goes through them intact,
//! including the JavaScript step's outbound `fetch()` and the C step's claim.
//!
//! The Python and JavaScript components are 13-18 MB and take wasmtime many
//! seconds to compile, so these tests share one compiled-component cache,
//! filled once (under `target/test-cache/`, keyed like every braid cache).

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The twins: (Rust component, its twin in another language).
const TWINS: [(&str, &str); 4] = [
    ("fetch_profile", "fetch_profile_js"),
    ("validate_access", "validate_access_py"),
    ("claim_work", "claim_work_c"),
    ("aggregate", "aggregate_js"),
];

fn polyglot_workflow() -> PathBuf {
    for (_, twin) in TWINS {
        let path = components().join(format!("{twin}.wasm"));
        assert!(
            path.exists(),
            "{} not found: run `make guests`",
            path.display()
        );
    }
    root().join("workflows/api-orchestration-polyglot.toml")
}

/// The shared compiled-component cache, warmed once with every component of
/// the polyglot workflow (a `braid check` compiles and stores them).
fn cache_dir() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = root().join("target/test-cache");
        let state = tempfile::tempdir().expect("tempdir");
        let out = braid(&[
            "check",
            polyglot_workflow().to_str().expect("utf-8"),
            "--state-dir",
            state.path().to_str().expect("utf-8"),
            "--cache-dir",
            dir.to_str().expect("utf-8"),
        ]);
        assert!(
            out.status.success(),
            "braid check of the polyglot workflow: {}",
            stderr(&out)
        );
        dir
    })
}

fn cache_args() -> [&'static str; 2] {
    ["--cache-dir", cache_dir().to_str().expect("utf-8")]
}

/// A result with what differs between any two runs (trace ids, the claim's
/// id and lease, timings) taken out; the timings must be numbers.
fn comparable(report: &Value) -> Value {
    let mut result = report["result"].clone();
    for step in ["authenticate", "fetch_profile", "fetch_permissions"] {
        let ms = &result["api_ms"][step];
        assert!(
            ms.as_f64().is_some_and(|ms| ms > 0.0),
            "api_ms.{step}: {ms}"
        );
    }
    let obj = result.as_object_mut().expect("result is an object");
    obj.remove("api_ms");
    obj.remove("trace_id");
    let claim = obj["claim"].as_object_mut().expect("claim");
    for volatile in ["claim_id", "trace_id", "expires_at_ms", "work_item"] {
        assert!(claim.remove(volatile).is_some(), "claim.{volatile}");
    }
    result
}

#[test]
fn the_polyglot_workflow_differs_from_the_reference_only_in_components() {
    let load = |path: PathBuf| -> toml::Table {
        let text = std::fs::read_to_string(&path).expect("read workflow");
        toml::from_str(&text).expect("workflow is TOML")
    };
    let mut reference = load(reference_workflow());
    let mut polyglot = load(polyglot_workflow());
    assert_eq!(
        polyglot
            .remove("name")
            .and_then(|n| n.as_str().map(String::from)),
        Some("api-orchestration-polyglot".into())
    );
    reference.remove("name");
    let steps = polyglot["steps"].as_array_mut().expect("steps");
    for step in steps.iter_mut() {
        let component = step["component"].as_str().expect("component").to_string();
        if let Some((rust, _)) = TWINS.iter().find(|(_, twin)| **twin == component) {
            step["component"] = toml::Value::String(rust.to_string());
        }
    }
    assert_eq!(
        polyglot, reference,
        "api-orchestration-polyglot.toml must match api-orchestration.toml but for the twins"
    );
}

#[test]
fn python_javascript_and_c_twins_give_the_rust_result_on_one_trace() {
    let api = SampleApi::start(None);
    let state = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();
    for (workflow, user, item) in [
        (reference_workflow(), "u-100", "lang-rust-1"),
        (polyglot_workflow(), "u-100", "lang-poly-1"),
        (reference_workflow(), "u-200", "lang-rust-2"),
        (polyglot_workflow(), "u-200", "lang-poly-2"),
    ] {
        let out = run_workflow(
            &workflow,
            state.path(),
            &reference_input(&api, user, item),
            &cache_args(),
        );
        assert!(
            out.status.success(),
            "{}: {}",
            workflow.display(),
            stderr(&out)
        );
        let report = json_stdout(&out);
        // Every step, API call (the JavaScript fetch among them), claim and
        // event of the run is on its own trace.
        crate::reference::assert_one_trace(&report, &api);
        reports.push(report);
    }

    // Each step ran the component the workflow file named.
    let digest = |name: &str| {
        let bytes = std::fs::read(components().join(format!("{name}.wasm"))).expect("component");
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
    };
    for (rust, twin) in TWINS {
        let step = rust;
        assert_eq!(
            crate::support::step(&reports[0], step)["component_sha256"],
            digest(rust)
        );
        assert_eq!(
            crate::support::step(&reports[1], step)["component_sha256"],
            digest(twin),
            "step {step} ran {twin}"
        );
    }

    // Same input, same result, whichever language ran the steps.
    assert_eq!(comparable(&reports[0]), comparable(&reports[1]));
    assert_eq!(comparable(&reports[2]), comparable(&reports[3]));
    assert_ne!(
        comparable(&reports[0]),
        comparable(&reports[2]),
        "two users give two results"
    );
    assert_eq!(reports[1]["result"]["decision"]["allowed"], true);
    assert_eq!(
        reports[1]["result"]["trace_id"], reports[1]["trace_id"],
        "the JavaScript aggregate reports the run's trace id"
    );

    // The JavaScript step's fetch() went out with the host's traceparent,
    // whose parent is a span of its own under the JavaScript step's attempt.
    let poly = &reports[1];
    let trace = str_of(poly, "/trace_id");
    let profile_span = str_of(
        crate::support::step(poly, "fetch_profile"),
        "/attempts/0/span_id",
    );
    let calls = poly["http_calls"].as_array().expect("http_calls");
    let call = calls
        .iter()
        .find(|c| str_of(c, "/url").ends_with("/profile"))
        .expect("the profile call");
    assert_eq!(str_of(call, "/attempt_span_id"), profile_span);
    let seen = api.requests(Some(trace));
    let at_api = seen
        .iter()
        .find(|r| str_of(r, "/path").ends_with("/profile"))
        .expect("the API saw the profile request");
    assert_eq!(
        str_of(at_api, "/traceparent"),
        format!("00-{trace}-{}-03", str_of(call, "/span_id"))
    );
}

#[test]
fn a_javascript_step_fails_retries_and_compensates_like_its_rust_twin() {
    // The profile API answers 403 (fatal: no retry) or 503 (retryable: three
    // attempts, then compensate gives up); either way the run fails with the
    // same error text in both languages and undoes `authenticate`.
    for (status, attempts, kind) in [(403, 1, "fatal"), (503, 3, "retryable")] {
        let mut errors = Vec::new();
        for workflow in [reference_workflow(), polyglot_workflow()] {
            let api = SampleApi::start(None);
            api.add_fault(json!({ "endpoint": "profile", "status": status }));
            let state = tempfile::tempdir().expect("tempdir");
            let input = reference_input(&api, "u-100", "lang-fail");
            let out = run_workflow(&workflow, state.path(), &input, &cache_args());
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            let report = json_stdout(&out);
            assert_eq!(report["outcome"], "failed");
            let profile = crate::support::step(&report, "fetch_profile");
            assert_eq!(profile["outcome"], "failed", "{profile}");
            assert_eq!(
                profile["attempts"].as_array().map(Vec::len),
                Some(attempts),
                "{}: {profile}",
                workflow.display()
            );
            // fetch_permissions may have finished before the profile gave
            // up (then it is undone too); authenticate is always undone last.
            let undone = undone(&report);
            assert_eq!(undone.last().map(String::as_str), Some("authenticate"));
            errors.push(str_of(&report, "/error").to_string());
        }
        assert_eq!(errors[0], errors[1], "HTTP {status}");
        assert!(
            errors[0].contains(&format!("{kind}: profile fetch: HTTP {status}")),
            "{}",
            errors[0]
        );
    }
}

/// `braid policy eval` of `policy` on `facts`: (exit code, stdout, stderr).
fn eval_policy(policy: &str, facts: &str) -> (Option<i32>, Vec<u8>, String) {
    let state = tempfile::tempdir().expect("tempdir");
    let path = components().join(format!("{policy}.wasm"));
    let [flag, dir] = cache_args();
    let out = braid(&[
        "policy",
        "eval",
        path.to_str().expect("utf-8"),
        "--input",
        facts,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        flag,
        dir,
    ]);
    (out.status.code(), out.stdout.clone(), stderr(&out))
}

/// The policy twins decide every case alike; returns how many were allowed.
fn assert_policies_agree(pair: [&str; 2], cases: &[Value]) -> usize {
    let mut allowed = 0;
    for facts in cases {
        let mut decisions = Vec::new();
        for policy in pair {
            let (code, stdout, stderr) = eval_policy(policy, &facts.to_string());
            let mut decision: Value = serde_json::from_slice(&stdout)
                .unwrap_or_else(|e| panic!("{policy} on {facts}: {e}: {stderr}"));
            let allow = decision["allow"].as_bool().expect("allow");
            assert_eq!(code, Some(if allow { 0 } else { 1 }));
            let obj = decision.as_object_mut().expect("decision");
            obj.remove("trace_id");
            obj.remove("policy_sha256");
            decisions.push(decision);
        }
        assert_eq!(decisions[0], decisions[1], "{pair:?} on facts {facts}");
        allowed += usize::from(decisions[0]["allow"] == true);
    }
    // Input a policy cannot decide on is refused the same way by both.
    for policy in pair {
        let (code, _, stderr) = eval_policy(policy, r#"{"profile": {}}"#);
        assert_eq!(code, Some(2), "{policy}");
        assert!(
            stderr.contains("the policy could not decide: input needs `resource` and `action`"),
            "{policy}: {stderr}"
        );
    }
    allowed
}

#[test]
fn the_javascript_rbac_policy_decides_as_the_rust_one_does() {
    let case = |roles: Value, resource: &str, action: &str| json!({ "permissions": { "roles": roles }, "resource": resource, "action": action });
    let cases = [
        case(json!(["admin"]), "anything/at/all", "delete"),
        case(json!(["engineer"]), "projects/x", "write"),
        case(json!(["engineer"]), "projects", "write"),
        case(json!(["engineer", "guest"]), "public/a", "read"),
        case(json!(["reports-reader"]), "reports/q3", "write"),
        case(json!(["guest", "ünïcode", "tab\t"]), "reports/q3", "read"),
        case(json!([1, null, "read-only"]), "x", "read"),
        case(json!("admin"), "x", "read"),
        json!({ "resource": "x", "action": "read" }),
    ];
    let allowed = assert_policies_agree(["policy_rbac", "policy_rbac_js"], &cases);
    assert_eq!(allowed, 4, "the cases cover both outcomes");
}

#[test]
fn the_python_policy_decides_as_the_rust_policy_does() {
    let grants = json!([
        { "resource": "reports/*", "actions": ["read"] },
        { "resource": "projects/x", "actions": ["*"] },
    ]);
    let facts = |roles: Value, department: &str, active: Value, resource: &str, action: &str| {
        json!({
            "profile": { "id": "u-7", "active": active, "department": department },
            "permissions": { "roles": roles, "grants": grants },
            "resource": resource,
            "action": action,
        })
    };
    let cases = [
        facts(
            json!(["engineer"]),
            "engineering",
            json!(true),
            "reports/q3",
            "read",
        ),
        facts(
            json!(["engineer"]),
            "contractors",
            json!(true),
            "reports/q3",
            "read",
        ),
        facts(
            json!(["engineer"]),
            "engineering",
            json!(false),
            "reports/q3",
            "read",
        ),
        facts(
            json!(["engineer"]),
            "engineering",
            json!("yes"),
            "reports/q3",
            "read",
        ),
        facts(
            json!(["engineer"]),
            "engineering",
            json!(true),
            "reports",
            "read",
        ),
        facts(
            json!(["engineer"]),
            "engineering",
            json!(true),
            "reports/q3",
            "write",
        ),
        facts(
            json!(["engineer", "ünïcode"]),
            "x",
            json!(true),
            "projects/x",
            "delete",
        ),
        facts(json!(["admin"]), "x", json!(true), "projects/x", "delete"),
        json!({
            "profile": { "active": true },
            "permissions": { "roles": [], "grants": [{ "resource": "*", "actions": ["read"] }], "degraded": true },
            "resource": "anything",
            "action": "read",
        }),
        json!({ "profile": {}, "permissions": {}, "resource": "r", "action": "read" }),
    ];
    let allowed = assert_policies_agree(["validate_access", "validate_access_py"], &cases);
    assert_eq!(allowed, 4, "the cases cover both outcomes");
}

#[test]
fn a_denial_by_the_python_policy_fails_the_run_as_the_rust_policy_does() {
    // u-300 (a contractor with `public/*` grants only) may not read reports/q3.
    let api = SampleApi::start(None);
    let mut outcomes = Vec::new();
    for workflow in [reference_workflow(), polyglot_workflow()] {
        let state = tempfile::tempdir().expect("tempdir");
        let input = reference_input(&api, "u-300", "lang-denied");
        let out = run_workflow(&workflow, state.path(), &input, &cache_args());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let report = json_stdout(&out);
        assert_eq!(
            crate::support::step(&report, "validate_access")["outcome"],
            "failed"
        );
        assert_eq!(
            crate::support::step(&report, "claim_work")["outcome"],
            "skipped"
        );
        assert!(list("claims", state.path()).is_empty(), "no claim taken");
        // The parallel fetches finish in either order, so their undo order
        // varies; authenticate, which came first, is undone last.
        let mut undone = undone(&report);
        assert_eq!(undone.last().map(String::as_str), Some("authenticate"));
        undone.sort();
        outcomes.push((str_of(&report, "/error").to_string(), undone));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    assert!(
        outcomes[0]
            .0
            .contains("user `u-300` has no grant to `read` `reports/q3`"),
        "{}",
        outcomes[0].0
    );
}

/// A claim step followed by the hostile test guest, which succeeds (mode
/// `env`) or panics (mode `panic`), so the claim is kept or undone.
fn claim_then(component: &str, dir: &Path) -> PathBuf {
    let path = dir.join(format!("claim-then-{component}.toml"));
    let text = format!(
        r#"name = "claim-then"
components_dir = "{components}"
result = "claim"
[inputs.work_item]
[inputs.mode]
[defaults]
max_retries = 0
allowed_hosts = []
[[steps]]
name = "claim"
component = "{component}"
args.work_item = {{ input = "work_item" }}
args.lease_ms = {{ value = 60000 }}
[[steps]]
name = "after"
component = "hostile"
args.mode = {{ input = "mode" }}
args.claim = {{ step = "claim" }}
"#,
        components = components().display()
    );
    std::fs::write(&path, text).expect("write the workflow");
    path
}

/// The C twin of `claim_work` (guest-steps/c/claim_work_c) behaves as the
/// Rust step does: the same claim output and `coordination.claimed` event,
/// the same conflict error word for word, and its `undo` releases the claim
/// when a later step fails.
#[test]
fn the_c_claim_step_claims_conflicts_and_undoes_like_its_rust_twin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let run = |workflow: &Path, item: &str, mode: &str| {
        let input = json!({ "work_item": item, "mode": mode }).to_string();
        json_stdout(&run_workflow(workflow, state.path(), &input, &[]))
    };
    let mut conflicts = Vec::new();
    for component in ["claim_work", "claim_work_c"] {
        let workflow = claim_then(component, dir.path());
        let held = format!("held-{component}");
        let first = run(&workflow, &held, "env");
        assert_eq!(first["outcome"], "succeeded", "{component}: {first}");
        let claim = &first["result"];
        assert_eq!(claim["work_item"], held.as_str(), "{component}: {claim}");
        assert_eq!(claim["run_id"], first["run_id"], "{component}: {claim}");
        assert_eq!(claim["trace_id"], first["trace_id"], "{component}: {claim}");
        assert_eq!(claim["step"], "claim", "{component}: {claim}");
        let claimed = first["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["name"] == "coordination.claimed")
            .unwrap_or_else(|| panic!("{component}: no coordination.claimed event"));
        assert_eq!(claimed["measurements"]["lease_ms"], 60000.0, "{claimed}");
        assert_eq!(
            claimed["metadata"]["claim_id"], claim["claim_id"],
            "{claimed}"
        );
        assert_eq!(claimed["trace_id"], first["trace_id"], "{claimed}");

        let second = run(&workflow, &held, "env");
        assert_eq!(second["outcome"], "failed", "{component}: {second}");
        let expected = format!(
            "work item `{held}` is already claimed by run {} (trace {}, step `claim`) until {} ms",
            str_of(&first, "/run_id"),
            str_of(&first, "/trace_id"),
            claim["expires_at_ms"]
        );
        let error = str_of(&second, "/error").to_string();
        assert!(error.contains(&expected), "{component}: {error}");
        conflicts.push(
            error
                .replace(&held, "ITEM")
                .replace(str_of(&first, "/run_id"), "RUN"),
        );

        let undone_item = format!("undone-{component}");
        let failed = run(&workflow, &undone_item, "panic");
        assert_eq!(failed["outcome"], "failed", "{component}: {failed}");
        assert_eq!(undone(&failed), ["claim"], "{component}: {failed}");
        let claims = list("claims", state.path());
        assert!(
            claims
                .iter()
                .all(|c| c["work_item"] != undone_item.as_str()),
            "{component}: the undo released the claim: {claims:?}"
        );
        assert!(
            claims.iter().any(|c| c["work_item"] == held.as_str()),
            "{component}: the first run's claim is still held: {claims:?}"
        );
    }
    // Apart from the item, the holder and its lease, the two errors are one text.
    let shape = |e: &str| e.split(" (trace ").next().unwrap_or_default().to_string();
    assert_eq!(shape(&conflicts[0]), shape(&conflicts[1]));
}

/// The C scaffold's JSON helper, natively with the address and undefined-
/// behaviour sanitizers: tests/c/braid_json_test.c's checks all pass and
/// nothing reads out of bounds or leaks.
#[test]
fn the_c_json_helper_passes_its_checks_under_the_sanitizers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("braid_json_test");
    let helpers = root().join("host/templates/c");
    let build = std::process::Command::new("cc")
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
        ])
        .arg("-I")
        .arg(&helpers)
        .arg(root().join("tests/c/braid_json_test.c"))
        .arg(helpers.join("braid_json.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("cc runs");
    assert!(build.status.success(), "cc: {}", stderr(&build));
    let run = std::process::Command::new(&exe)
        .output()
        .expect("the test runs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        stderr(&run)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("all checks passed"));
}
