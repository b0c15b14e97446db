//! Sandboxed policies: the two example policies allow and deny as their rules
//! say, `braid policy eval` tries one alone, and any policy can serve the
//! reference workflow's validate-access step.

use crate::support::*;
use serde_json::{Value, json};

fn eval(policy: &str, input: Value, extra: &[&str]) -> (Option<i32>, Value) {
    let state = tempfile::tempdir().expect("tempdir");
    let path = components().join(format!("{policy}.wasm"));
    let mut args = vec![
        "policy".to_string(),
        "eval".into(),
        path.display().to_string(),
        "--input".into(),
        input.to_string(),
        "--state-dir".into(),
        state.path().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = braid(&args);
    (out.status.code(), json_stdout(&out))
}

fn facts(
    roles: &[&str],
    grants: Value,
    department: &str,
    active: bool,
    resource: &str,
    action: &str,
) -> Value {
    json!({
        "profile": { "id": "u-7", "active": active, "department": department },
        "permissions": { "roles": roles, "grants": grants },
        "resource": resource,
        "action": action,
    })
}

#[test]
fn the_attribute_based_policy_allows_and_denies_by_its_rules() {
    let grants = json!([{ "resource": "reports/*", "actions": ["read"] }, { "resource": "projects/x", "actions": ["*"] }]);
    let (code, d) = eval(
        "validate_access",
        facts(
            &["engineer"],
            grants.clone(),
            "engineering",
            true,
            "reports/q3",
            "read",
        ),
        &[],
    );
    assert_eq!(code, Some(0));
    assert_eq!(d["allow"], true);
    assert_eq!(
        d["reasons"][0],
        "grant on `reports/*` allows `read` for active user `u-7`"
    );
    assert_eq!(d["obligations"], json!({}));

    let (code, d) = eval(
        "validate_access",
        facts(
            &["engineer"],
            grants.clone(),
            "contractors",
            true,
            "reports/q3",
            "read",
        ),
        &[],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        d["obligations"],
        json!({ "mask": "email" }),
        "contractors see masked data"
    );

    let (code, d) = eval(
        "validate_access",
        facts(
            &["engineer"],
            grants.clone(),
            "engineering",
            true,
            "reports/q3",
            "write",
        ),
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(d["allow"], false);
    assert_eq!(
        d["reasons"][0],
        "user `u-7` has no grant to `write` `reports/q3`"
    );

    let (code, d) = eval(
        "validate_access",
        facts(
            &["engineer"],
            grants.clone(),
            "engineering",
            false,
            "reports/q3",
            "read",
        ),
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(d["reasons"][0], "user `u-7` is not active");

    let (code, d) = eval(
        "validate_access",
        facts(
            &["engineer"],
            grants,
            "engineering",
            true,
            "projects/x",
            "delete",
        ),
        &[],
    );
    assert_eq!(code, Some(1), "delete needs admin even with a grant: {d}");
}

#[test]
fn the_role_based_policy_allows_and_denies_by_its_role_table() {
    let none = json!([]);
    let (code, d) = eval(
        "policy_rbac",
        facts(
            &["engineer"],
            none.clone(),
            "x",
            true,
            "projects/apollo",
            "write",
        ),
        &[],
    );
    assert_eq!(code, Some(0));
    assert_eq!(
        d["reasons"][0],
        "role `engineer` may `write` `projects/apollo`"
    );
    assert_eq!(d["obligations"], json!({ "audit": "write" }));

    let (code, _) = eval(
        "policy_rbac",
        facts(
            &["reports-reader"],
            none.clone(),
            "x",
            true,
            "reports/q3",
            "read",
        ),
        &[],
    );
    assert_eq!(code, Some(0));

    let (code, d) = eval(
        "policy_rbac",
        facts(&["guest"], none.clone(), "x", true, "reports/q3", "read"),
        &[],
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        d["reasons"][0],
        "none of the roles [\"guest\"] may `read` `reports/q3`"
    );

    let (code, _) = eval(
        "policy_rbac",
        facts(&["admin"], none, "x", true, "anything/at/all", "delete"),
        &[],
    );
    assert_eq!(code, Some(0));
}

#[test]
fn policy_eval_continues_a_trace_and_refuses_what_is_not_a_policy() {
    let (_, d) = eval(
        "policy_rbac",
        facts(&["admin"], json!([]), "x", true, "a", "read"),
        &[
            "--traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ],
    );
    assert_eq!(d["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");

    let state = tempfile::tempdir().expect("tempdir");
    let step = components().join("authenticate.wasm");
    let out = braid(&[
        "policy",
        "eval",
        step.to_str().expect("utf-8"),
        "--input",
        "{}",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("not a policy: it implements braid:workflow/reversible-step-component")
    );

    let policy = components().join("policy_rbac.wasm");
    let out = braid(&[
        "policy",
        "eval",
        policy.to_str().expect("utf-8"),
        "--input",
        r#"{"resource": "x"}"#,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("the policy could not decide: input needs `resource` and `action`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn any_policy_can_validate_access_in_the_reference_workflow() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let reference = std::fs::read_to_string(reference_workflow()).expect("read");
    let body = reference
        .replace("components_dir = \"../target/components\"\n", "")
        .replace(
            "component = \"validate_access\"",
            "component = \"policy_rbac\"",
        );
    let wf = write_workflow(state.path(), "rbac.toml", &body);

    // u-100 has the reports-reader role: allowed.
    let out = run_workflow(
        &wf,
        state.path(),
        &reference_input(&api, "u-100", "rbac-1"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(
        report["result"]["decision"]["reasons"][0],
        "role `reports-reader` may `read` `reports/q3`"
    );
    let decision = step(&report, "validate_access");
    assert!(str_of(decision, "/component").ends_with("policy_rbac.wasm"));

    // u-300 is a guest: denied, and the run undoes what it did.
    let out = run_workflow(
        &wf,
        state.path(),
        &reference_input(&api, "u-300", "rbac-2"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json_stdout(&out);
    assert!(
        str_of(&report, "/error").contains("denied by policy: none of the roles [\"guest\"]"),
        "{report}"
    );
    assert_eq!(
        undone(&report).last().map(String::as_str),
        Some("authenticate")
    );
}
