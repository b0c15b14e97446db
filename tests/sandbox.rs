//! What a step may and may not do: act only under its own trace context, and
//! reach only the hosts it is allowed.

use crate::support::*;
use serde_json::Value;

#[test]
fn a_step_cannot_act_under_another_trace_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "forge.toml",
        "name = \"forge\"\nresult = \"forge\"\n[[steps]]\nname = \"forge\"\ncomponent = \"forge_trace\"\n",
    );
    let out = braid(&[
        "run",
        wf.to_str().expect("utf-8"),
        "--json",
        "--state-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    let result = &report["result"];
    for key in [
        "claim_forged_trace",
        "claim_forged_span",
        "log_forged",
        "event_forged",
        "key_forged",
    ] {
        let answer = str_of(result, &format!("/{key}"));
        assert!(
            answer.starts_with("refused: ") && answer.contains("trace context refused"),
            "{key}: {answer}"
        );
    }
    assert!(str_of(result, "/claim_forged_trace").contains("is not this run's"));
    assert!(str_of(result, "/claim_forged_span").contains("is not this step attempt's"));
    assert_eq!(result["own_log"], "accepted");
    // Under its own context it gets its idempotency key (`invocation`, 0.1.1).
    let run_id = str_of(&report, "/run_id");
    let own_key = str_of(result, "/own_key");
    assert!(
        own_key.starts_with(&format!("{run_id}.forge.")),
        "{own_key}"
    );

    // Each refusal is logged under the step's own trace, and nothing was claimed.
    let trace = str_of(&report, "/trace_id");
    let refusals: Vec<&Value> = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["name"] == "context.refused")
        .collect();
    assert_eq!(refusals.len(), 5);
    assert!(refusals.iter().all(|e| e["trace_id"] == trace));
    assert!(
        stderr(&out).contains("trace context refused"),
        "logged: {}",
        stderr(&out)
    );
    // Written to a pipe, not a terminal: plain text, no colour codes.
    assert!(!stderr(&out).contains('\u{1b}'), "{:?}", stderr(&out));
    let claims = braid(&[
        "claims",
        "--json",
        "--state-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(json_stdout(&claims), serde_json::json!([]));
}

#[test]
fn requests_to_hosts_off_the_allowlist_are_denied() {
    let api = SampleApi::start(Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    // The sample API runs on 127.0.0.1; this workflow only allows localhost:1.
    let wf = write_workflow(
        dir.path(),
        "deny.toml",
        r#"
name = "deny"
result = "authenticate"
[inputs.api_base]
[[steps]]
name = "authenticate"
component = "authenticate"
max_retries = 0
allowed_hosts = ["localhost:1"]
args.api_base = { input = "api_base" }
args.user_id = { value = "u-100" }
"#,
    );
    let input = serde_json::json!({ "api_base": api.base() }).to_string();
    let out = braid(&[
        "run",
        wf.to_str().expect("utf-8"),
        "--json",
        "--input",
        &input,
        "--state-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_stdout(&out);
    let error = str_of(&report, "/error");
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert!(
        error.contains("is not in this step's allowed_hosts (the workflow's allowed_hosts decides"),
        "{error}"
    );
    let call = &report["http_calls"][0];
    assert!(call["traceparent"].is_null(), "nothing was sent");
    assert!(
        str_of(call, "/error").contains("not in the step's allowed_hosts [localhost:1]"),
        "{call}"
    );
    assert!(api.requests(None).is_empty(), "the API saw nothing");
}

/// The contract is additive within 0.1: a component built against
/// `braid:workflow@0.1.0` (before `invocation`; a frozen copy of that WIT
/// builds it) is linked and run by this host unchanged, its imports and
/// exports matched by semver.
#[test]
fn a_component_built_for_0_1_0_runs_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = dir.path().to_str().expect("utf-8");
    let component = components().join("compat_010.wasm");
    let inspect = braid(&[
        "inspect",
        component.to_str().expect("utf-8"),
        "--json",
        "--state-dir",
        st,
    ]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let imports = json_stdout(&inspect)["imports"].to_string();
    assert!(
        imports.contains("braid:workflow/telemetry@0.1.0"),
        "{imports}"
    );
    assert!(!imports.contains("invocation"), "{imports}");
    let wf = write_workflow(
        dir.path(),
        "compat.toml",
        "name = \"compat\"\nresult = \"old\"\n[inputs.n]\n[[steps]]\nname = \"old\"\ncomponent = \"compat_010\"\nargs.n = { input = \"n\" }\n",
    );
    let out = braid(&[
        "run",
        wf.to_str().expect("utf-8"),
        "--json",
        "--input",
        "{\"n\": 7}",
        "--state-dir",
        st,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["result"]["built_for"], "braid:workflow@0.1.0");
    assert_eq!(report["result"]["input"]["n"], 7);
    let logged = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["message"] == "a 0.1.0 component, running");
    assert!(logged, "its telemetry import works: {report}");
}
