//! Bad definitions and bad input are refused with clear errors and exit 2.

use crate::support::*;

fn check(path: &std::path::Path, state: &std::path::Path) -> std::process::Output {
    braid(&[
        "check",
        path.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ])
}

#[test]
fn the_reference_workflow_checks_clean() {
    let state = tempfile::tempdir().expect("tempdir");
    let out = check(&reference_workflow(), state.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (workflow `api-orchestration`, 6 steps)")
    );
    // A check writes nothing but the compiled-component cache: no stores.
    let written: Vec<String> = std::fs::read_dir(state.path())
        .expect("state dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, ["cache"], "{written:?}");
    let bare = tempfile::tempdir().expect("tempdir");
    let out = braid(&[
        "check",
        reference_workflow().to_str().expect("utf-8"),
        "--no-cache",
        "--state-dir",
        bare.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(bare.path()).expect("dir").count(),
        0,
        "with --no-cache, nothing at all"
    );
}

#[test]
fn a_cycle_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "cycle.toml",
        r#"
name = "cycle"
result = "b"
[[steps]]
name = "a"
component = "aggregate"
args.x = { step = "b" }
[[steps]]
name = "b"
component = "aggregate"
args.y = { step = "a" }
"#,
    );
    let out = check(&wf, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cycle.toml: step `a`: dependency cycle: a -> b -> a"),
        "{err}"
    );
}

#[test]
fn unknown_steps_and_inputs_are_named_with_their_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "unknown.toml",
        r#"
name = "unknown"
result = "missing_result"
[inputs.user]
[[steps]]
name = "a"
component = "aggregate"
args.x = { step = "ghost" }
args.y = { input = "usr" }
"#,
    );
    let out = check(&wf, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("unknown.toml: step `a`: field `args.x.step`: unknown step `ghost`"),
        "{err}"
    );
    assert!(
        err.contains("unknown.toml: step `a`: field `args.y.input`: unknown input `usr`"),
        "{err}"
    );
    assert!(
        err.contains("unknown.toml: field `result`: unknown step `missing_result`"),
        "{err}"
    );
}

#[test]
fn a_missing_component_says_to_build_the_guests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "missing.toml",
        "name = \"missing\"\nresult = \"a\"\n[[steps]]\nname = \"a\"\ncomponent = \"no_such_step\"\n",
    );
    let out = check(&wf, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("missing.toml: step `a`: field `component`:"),
        "{err}"
    );
    assert!(
        err.contains("no_such_step.wasm: file not found (build it first: `make guests`"),
        "{err}"
    );
}

#[test]
fn a_component_of_the_wrong_world_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(
        dir.path(),
        "wrong.toml",
        "name = \"wrong\"\nresult = \"a\"\n[[steps]]\nname = \"a\"\ncomponent = \"not_a_step\"\n",
    );
    let out = check(&wf, dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("wrong.toml: step `a`: field `component`:"),
        "{err}"
    );
    assert!(
        err.contains("does not implement the braid step world: it does not export `braid:workflow/step@0.1.x`"),
        "{err}"
    );
    assert!(
        err.contains("wasi:cli/run"),
        "names what it does export: {err}"
    );

    // A file that is not a component at all.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").expect("write");
    let wf = write_workflow(
        dir.path(),
        "junk.toml",
        &format!(
            "name = \"junk\"\nresult = \"a\"\n[[steps]]\nname = \"a\"\ncomponent = \"{}\"\n",
            junk.display()
        ),
    );
    let out = check(&wf, dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a valid WebAssembly component"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_run_input_exits_2_and_says_what_is_wrong() {
    let state = tempfile::tempdir().expect("tempdir");
    let wf = reference_workflow();
    let wf = wf.to_str().expect("utf-8");
    let st = state.path().to_str().expect("utf-8");

    let out = braid(&[
        "run",
        wf,
        "--state-dir",
        st,
        "--input",
        r#"{"api_base": "http://127.0.0.1:1"}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing required inputs: user_id, work_item"),
        "{}",
        stderr(&out)
    );

    let out = braid(&["run", wf, "--state-dir", st, "--input", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--input is not valid JSON"),
        "{}",
        stderr(&out)
    );

    let out = braid(&["run", "/nonexistent/flow.toml", "--state-dir", st]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/flow.toml: cannot read the file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn inspect_names_the_world_and_refuses_what_the_host_will_not_run() {
    let state = tempfile::tempdir().expect("tempdir");
    let st = state.path().to_str().expect("utf-8");
    let inspect = |name: &str| {
        let path = components().join(name);
        braid(&[
            "inspect",
            path.to_str().expect("utf-8"),
            "--json",
            "--state-dir",
            st,
        ])
    };
    let out = inspect("claim_work.wasm");
    assert!(out.status.success(), "{}", stderr(&out));
    let i = json_stdout(&out);
    assert_eq!(i["world"], "braid:workflow/reversible-step-component");
    let imports: Vec<&str> = i["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        imports.contains(&"braid:workflow/coordination@0.1.1"),
        "{imports:?}"
    );
    // Unused imports are stripped: only the steps that call APIs import wasi:http.
    assert!(
        !imports.iter().any(|n| n.starts_with("wasi:http")),
        "{imports:?}"
    );
    let auth = json_stdout(&inspect("authenticate.wasm"));
    let auth_imports = auth["imports"].as_array().expect("imports");
    assert!(
        auth_imports.iter().any(|n| n
            .as_str()
            .unwrap_or("")
            .starts_with("wasi:http/outgoing-handler@0.2")),
        "{auth}"
    );

    let out = inspect("policy_rbac.wasm");
    assert_eq!(
        json_stdout(&out)["world"],
        "braid:workflow/policy-component"
    );

    let out = inspect("not_a_step.wasm");
    assert_eq!(out.status.code(), Some(2));
    let i = json_stdout(&out);
    assert!(i["world"].is_null());
    assert!(
        i["refused"]
            .as_str()
            .unwrap_or("")
            .contains("does not export"),
        "{i}"
    );
    assert!(stderr(&out).contains("error: refused:"));

    // A policy that imports a step's capability is refused as a policy.
    let out = inspect("greedy_policy.wasm");
    assert_eq!(out.status.code(), Some(2));
    let refused = json_stdout(&out)["refused"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        refused.contains("a policy (it exports `braid:workflow/policy`) may import only")
            && refused.contains("cannot reach the network or take claims")
            && refused.contains("braid:workflow/coordination@0.1.1"),
        "{refused}"
    );
    assert!(!refused.contains("step world"), "{refused}");
}
