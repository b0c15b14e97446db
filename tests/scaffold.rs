//! `braid new`: each language's step and policy project builds with `make`,
//! passes `braid check` (`make check`), and runs as its README says, on the
//! run's trace. The builds use the toolchains `make guests` installed (the
//! projects' Makefiles take them as overrides) instead of downloading them
//! again.

use crate::support::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Creates a project with `braid new`, builds it and checks it.
fn new_project(parent: &Path, kind: &str, name: &str, lang: &str) -> PathBuf {
    let dir = parent.join(name);
    let out = braid(&[
        "new",
        kind,
        name,
        "--lang",
        lang,
        "--dir",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "braid new: {}", stderr(&out));
    make_check(&dir, lang, kind);
    assert!(dir.join(format!("{name}.wasm")).exists());
    dir
}

/// `make check` in a project, with the toolchains `make guests` installed.
fn make_check(dir: &Path, lang: &str, kind: &str) {
    let tools = |path: &str| root().join(path).display().to_string();
    let cache = root().join("target/test-cache");
    let make = Command::new("make")
        .arg("-C")
        .arg(dir)
        .arg("check")
        .arg(format!("BRAID={}", env!("CARGO_BIN_EXE_braid")))
        .arg(format!(
            "COMPONENTIZE_PY={}",
            tools("target/tools/python/bin/componentize-py")
        ))
        .arg(format!(
            "COMPONENTIZE_JS={}",
            tools("guest-steps/js/node_modules/.bin/componentize-js")
        ))
        .arg(format!(
            "COMPONENTIZE_QJS={}",
            tools("guest-steps/js/node_modules/.bin/componentize-qjs")
        ))
        .arg(format!(
            "CARGO_TARGET_DIR={}",
            tools("target/scaffold-target")
        ))
        .env("BRAID_CACHE_DIR", &cache)
        .env("BRAID_LOG", "warn")
        .output()
        .expect("make runs");
    assert!(
        make.status.success(),
        "make check of a new {lang} {kind} (tools missing? run `make guests`): {}\n{}",
        String::from_utf8_lossy(&make.stdout),
        String::from_utf8_lossy(&make.stderr)
    );
}

/// `braid run workflow.toml --json` in a new project.
fn run(dir: &Path, input: &str) -> (Option<i32>, Value) {
    let state = tempfile::tempdir().expect("tempdir");
    let cache = root().join("target/test-cache");
    let out = run_workflow(
        &dir.join("workflow.toml"),
        state.path(),
        input,
        &["--cache-dir", cache.to_str().expect("utf-8")],
    );
    (out.status.code(), json_stdout(&out))
}

/// The step's `NAME.greeted` event in `report`.
fn greeted_event<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["name"] == format!("{name}.greeted"))
        .unwrap_or_else(|| panic!("no {name}.greeted event: {report}"))
}

fn assert_step_works(dir: &Path, name: &str) {
    let (code, report) = run(dir, r#"{"name": "world"}"#);
    assert_eq!(code, Some(0), "{report}");
    let trace = str_of(&report, "/trace_id");
    assert_eq!(report["result"]["greeting"], "hello, world");
    assert_eq!(
        report["result"]["trace_id"], trace,
        "the step saw the run's trace"
    );
    let greeted = greeted_event(&report, name);
    assert_eq!(str_of(greeted, "/trace_id"), trace);

    // JSON escapes and UTF-8 make it through in and out; characters, not
    // bytes, are counted.
    let quoted = "wörld \"é\"";
    let (code, report) = run(dir, &json!({ "name": quoted }).to_string());
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["result"]["greeting"], format!("hello, {quoted}"));
    let greeted = greeted_event(&report, name);
    assert_eq!(greeted["measurements"]["name_chars"], 9.0, "{greeted}");

    // A bad argument is a fatal error with the step's own words.
    let (code, report) = run(dir, r#"{"name": 42}"#);
    assert_eq!(code, Some(1), "{report}");
    let error = str_of(&report, "/error");
    assert!(
        error.contains("fatal: input field `name` is missing or not a string"),
        "{error}"
    );
    assert_eq!(
        step(&report, name)["attempts"].as_array().map(Vec::len),
        Some(1),
        "a fatal error is not retried"
    );
}

fn assert_policy_works(dir: &Path) {
    let (code, report) = run(dir, r#"{"action": "read"}"#);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["result"]["allowed"], true);
    assert_eq!(
        report["result"]["reasons"][0],
        "`read` is allowed on `reports/q3`"
    );
    let (code, report) = run(dir, r#"{"action": "write"}"#);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        str_of(&report, "/error").contains("denied by policy: only `read` is allowed, not `write`"),
        "{report}"
    );
}

/// An uncaught exception in a Python or JavaScript step, a panic in a Rust
/// one or an `abort()` in a C one (not a typed `step-error`), traps; the step's error quotes its
/// text from the guest's stderr, so the author sees what went wrong in the
/// report.
fn assert_exception_text_in_the_error(dir: &Path, name: &str, lang: &str) {
    let (file, anchor, throw, expected) = match lang {
        "python" => (
            "app.py",
            "        # Every host call",
            "        if name == \"explode\":\n            raise RuntimeError(\"exploded on purpose: 42\")\n",
            "RuntimeError: exploded on purpose: 42",
        ),
        "rust" => (
            "src/lib.rs",
            "        // Every host call",
            "        if name == \"explode\" {\n            panic!(\"exploded on purpose: {}\", 42);\n        }\n",
            "exploded on purpose: 42",
        ),
        "c" => (
            "app.c",
            "    /* Every host call",
            "    if (strcmp(name, \"explode\") == 0) {\n        fprintf(stderr, \"exploded on purpose: %d\\n\", 42);\n        abort();\n    }\n",
            "exploded on purpose: 42",
        ),
        _ => (
            "app.js",
            "    // Every host call",
            "    if (name === 'explode') throw new Error('exploded on purpose: 42');\n",
            "Error: exploded on purpose: 42",
        ),
    };
    let path = dir.join(file);
    let source = std::fs::read_to_string(&path).expect("read the step's source");
    assert!(source.contains(anchor), "{file} changed: {source}");
    std::fs::write(
        &path,
        source.replacen(anchor, &format!("{throw}{anchor}"), 1),
    )
    .expect("write the step's source");
    make_check(dir, lang, "step");
    let (code, report) = run(dir, r#"{"name": "explode"}"#);
    assert_eq!(code, Some(1), "{report}");
    let attempts = step(&report, name)["attempts"]
        .as_array()
        .expect("attempts");
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the guest's stderr ends:") && error.contains(expected),
        "{lang}: {error}"
    );
    assert!(
        error.len() <= 4 * 1024 + 64,
        "bounded: {} bytes",
        error.len()
    );
}

/// The step POSTs its greeting to `url` through wasi:http (Rust: wstd;
/// Python: the scaffold's braid_http.py; JavaScript: fetch; C: the
/// scaffold's braid_http.c): the API got it on the
/// run's trace, under the request's own span (the one the report lists),
/// and the API's JSON answer is in the output. A URL without its scheme is
/// refused with an error that says so.
fn assert_outbound_call_on_the_runs_trace(dir: &Path, name: &str, lang: &str) {
    let api = SampleApi::start(None);
    let url = format!("{}/oauth/token", api.base());
    let (code, report) = run(dir, &json!({ "name": "world", "url": url }).to_string());
    assert_eq!(code, Some(0), "{report}");
    let trace = str_of(&report, "/trace_id");
    let posted = &report["result"]["posted"];
    // The sample API wants a client and a user: the greeting alone is a 401.
    assert_eq!(posted["status"], 401, "{report}");
    assert_eq!(
        posted["answer"]["error"], "invalid client or user",
        "{report}"
    );
    let seen = api.requests(Some(trace));
    assert_eq!(seen.len(), 1, "one request on the run's trace: {seen:?}");
    assert_eq!(seen[0]["path"], "/oauth/token");
    assert_eq!(seen[0]["method"], "POST");
    let calls = report["http_calls"].as_array().expect("http_calls");
    assert_eq!(calls.len(), 1, "{report}");
    assert_eq!(seen[0]["traceparent"], calls[0]["traceparent"]);
    assert_eq!(seen[0]["parent_id"], calls[0]["span_id"]);
    let attempt = &step(&report, name)["attempts"][0];
    assert_eq!(calls[0]["attempt_span_id"], attempt["span_id"]);

    let (code, report) = run(
        dir,
        &json!({ "name": "world", "url": url.trim_start_matches("http://") }).to_string(),
    );
    assert_eq!(code, Some(1), "{report}");
    let error = str_of(&report, "/error");
    assert!(error.contains("URL needs its scheme"), "{error}");

    // A host off the allowlist: fatal (one attempt), and the error names the
    // host and what decides. The Rust, Python and C helpers say so
    // themselves; JavaScript's fetch sees only a network error, which the
    // host then fails for good, saying why.
    let off_list = "http://10.255.255.1:9/x";
    let (code, report) = run(
        dir,
        &json!({ "name": "world", "url": off_list }).to_string(),
    );
    assert_eq!(code, Some(1), "{report}");
    let error = str_of(&report, "/error");
    assert!(error.contains("fatal: "), "{error}");
    let named = if lang == "js" {
        "`10.255.255.1:9` denied: not in the step's allowed_hosts"
    } else {
        "10.255.255.1:9 is not in this step's allowed_hosts"
    };
    assert!(error.contains(named), "{error}");
    assert!(
        error.contains("the workflow's allowed_hosts decides"),
        "{error}"
    );
    assert!(!error.contains("POST POST"), "{error}");
    assert_eq!(
        step(&report, name)["attempts"].as_array().map(Vec::len),
        Some(1),
        "a refusal is not retried: {report}"
    );
}

fn scaffold_both(lang: &str) {
    let parent = tempfile::tempdir().expect("tempdir");
    let step = format!("greet_{lang}");
    let dir = new_project(parent.path(), "step", &step, lang);
    assert_step_works(&dir, &step);
    assert_outbound_call_on_the_runs_trace(&dir, &step, lang);
    assert_exception_text_in_the_error(&dir, &step, lang);
    let dir = new_project(parent.path(), "policy", &format!("allow_{lang}"), lang);
    assert_policy_works(&dir);
}

#[test]
fn a_new_rust_step_and_policy_build_check_and_run() {
    scaffold_both("rust");
}

#[test]
fn a_new_python_step_and_policy_build_check_and_run() {
    scaffold_both("python");
}

#[test]
fn a_new_javascript_step_and_policy_build_check_and_run() {
    scaffold_both("js");
}

#[test]
fn a_new_c_step_and_policy_build_check_and_run() {
    scaffold_both("c");
}

#[test]
fn braid_new_refuses_a_bad_name_or_an_existing_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    let existing = parent.path().join("taken");
    std::fs::create_dir(&existing).expect("mkdir");
    std::fs::write(existing.join("mine.txt"), "keep").expect("write");
    let out = braid(&[
        "new",
        "step",
        "taken",
        "--lang",
        "python",
        "--dir",
        existing.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&existing).expect("read_dir").count(),
        1,
        "nothing written into it"
    );

    let out = braid(&["new", "policy", "Has-Dash", "--lang", "js"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid name `Has-Dash`"),
        "{}",
        stderr(&out)
    );
    let out = braid(&["new", "step", "ok", "--lang", "cobol"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cobol"), "{}", stderr(&out));
}
