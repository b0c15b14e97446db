//! A step cannot make the host keep, print or refuse without bound: each
//! budget of docs/security.md against the `flood` and `flood_policy` guests.
//! In-process (the library), with the real components.

use crate::support::*;
use braid::report::{MAX_ERROR_BYTES, RunReport};
use braid::sandbox::{Sandbox, SandboxConfig, SandboxExecutor};
use braid::scheduler::{RunRequest, Scheduler};
use braid::store::{ClaimStore, SqliteClaimStore};
use braid::trace::IncomingTrace;
use braid::workflow::Workflow;
use serde_json::{Value, json};
use std::sync::Arc;

/// `flood` as told, then `after` (another `flood`, by default `ok`): a
/// failing `after` makes the run undo `flood`.
const FLOOD: &str = r#"
name = "flood"
result = "after"
[inputs.mode]
[inputs.count]
default = 1000
[inputs.bytes]
default = 8192
[inputs.continue_bytes]
default = 0
[inputs.undo_error_bytes]
default = 0
[inputs.after]
default = "ok"
[defaults]
timeout_ms = 20000
max_retries = 0
memory_limit_mb = 256
allowed_hosts = ["localhost"]
[[steps]]
name = "flood"
component = "flood"
args.mode = { input = "mode" }
args.count = { input = "count" }
args.bytes = { input = "bytes" }
args.continue_bytes = { input = "continue_bytes" }
args.undo_error_bytes = { input = "undo_error_bytes" }
[[steps]]
name = "after"
component = "flood"
wait_for = ["flood"]
args.mode = { input = "after" }
"#;

/// A policy step deciding on its input.
const POLICY: &str = r#"
name = "flood-policy"
result = "decide"
[inputs.facts]
[[steps]]
name = "decide"
component = "flood_policy"
memory_limit_mb = 256
args.facts = { input = "facts" }
"#;

struct Harness {
    _dir: tempfile::TempDir,
    sandbox: Arc<Sandbox>,
    claims: Arc<dyn ClaimStore>,
    flood: Arc<Workflow>,
    policy: Arc<Workflow>,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let claims: Arc<dyn ClaimStore> =
            Arc::new(SqliteClaimStore::open(dir.path()).expect("claims"));
        let config = SandboxConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..SandboxConfig::default()
        };
        let sandbox = Arc::new(Sandbox::new(config, Arc::clone(&claims)).expect("sandbox"));
        let load = |name: &str, body: &str| {
            let path = write_workflow(dir.path(), name, body);
            Arc::new(Workflow::load(&path).expect("workflow"))
        };
        Harness {
            flood: load("flood.toml", FLOOD),
            policy: load("policy.toml", POLICY),
            _dir: dir,
            sandbox,
            claims,
        }
    }

    async fn run(&self, workflow: &Arc<Workflow>, input: Value) -> RunReport {
        let executor = SandboxExecutor::prepare(Arc::clone(&self.sandbox), workflow)
            .unwrap_or_else(|e| panic!("components load: {}", e[0].1));
        Scheduler::new(Arc::new(executor), 64)
            .with_claims(Arc::clone(&self.claims))
            .run(RunRequest {
                workflow: Arc::clone(workflow),
                input,
                trace: IncomingTrace::from_headers(None, None),
            })
            .await
            .expect("input fits")
    }
}

/// The report as JSON, in bytes.
fn report_bytes(report: &RunReport) -> usize {
    serde_json::to_vec(report).expect("report serializes").len()
}

/// Events of `step` (run-level: `None`) named `name`.
fn events<'r>(report: &'r RunReport, name: &str) -> Vec<&'r braid::report::EventRecord> {
    report.events.iter().filter(|e| e.name == name).collect()
}

/// The flood step's first attempt: (outcome, error).
fn flood_attempt(report: &RunReport) -> (String, String) {
    let step = report
        .steps
        .iter()
        .find(|s| s.name == "flood")
        .expect("flood");
    let a = &step.attempts[0];
    (a.outcome.clone(), a.error.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_storm_keeps_the_attempts_budget_and_says_what_it_dropped() {
    let h = Harness::new();
    let report = h
        .run(
            &h.flood,
            json!({"mode": "log-storm", "count": 5000, "bytes": 8192}),
        )
        .await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let kept = events(&report, "log");
    // Defaults: 1000 records, 256 KiB per attempt (each line ~8.3 KiB as counted).
    let kept_bytes: usize = kept.iter().map(|e| e.size()).sum();
    assert!(kept_bytes <= 256 << 10, "{kept_bytes} bytes kept");
    assert!(!kept.is_empty() && kept.len() < 5000, "{} kept", kept.len());
    assert_eq!(
        report.dropped.telemetry_records,
        5000 - kept.len() as u64,
        "every line is either kept or counted"
    );
    assert!(report.dropped.host_log_lines >= 5000 - 100);
    // One summary, not one per drop, on the attempt's span.
    let summary = events(&report, "telemetry.dropped");
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0].step, "flood");
    assert_eq!(
        summary[0].measurements.get("records").copied(),
        Some(report.dropped.telemetry_records as f64)
    );
    assert!(
        report_bytes(&report) < 2 << 20,
        "{} bytes",
        report_bytes(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_storm_until_the_timeout_leaves_a_small_report() {
    let h = Harness::new();
    let wf = {
        let body = FLOOD.replace("timeout_ms = 20000", "timeout_ms = 1500");
        let path = write_workflow(h._dir.path(), "storm.toml", &body);
        Arc::new(Workflow::load(&path).expect("workflow"))
    };
    // No count: logs until the attempt's timeout.
    let report = h
        .run(&wf, json!({"mode": "log-storm", "count": 1u64 << 40}))
        .await;
    assert_eq!(flood_attempt(&report).0, "timeout");
    assert!(report.dropped.telemetry_records > 0);
    assert!(
        report_bytes(&report) < 2 << 20,
        "{} bytes",
        report_bytes(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_after_a_storm_is_still_in_the_report() {
    let h = Harness::new();
    // The storm spends the attempt's record budget; the claim that follows
    // is an effect, kept (metrics, the step tree and OTLP count on it).
    let report = h
        .run(&h.flood, json!({"mode": "storm-then-claim", "count": 3000}))
        .await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert!(report.dropped.telemetry_records > 0);
    let granted = events(&report, "claim.granted");
    assert_eq!(granted.len(), 1, "the claim is reported");
    assert_eq!(
        granted[0].metadata.get("work_item").map(String::as_str),
        Some("flood-claim")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_storm_is_dropped_past_the_byte_budget() {
    let h = Harness::new();
    // Each event: 64 metadata values of 8 KiB, over the 256 KiB budget.
    let report = h
        .run(
            &h.flood,
            json!({"mode": "event-storm", "count": 50, "bytes": 8192}),
        )
        .await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert!(events(&report, "storm").len() <= 1);
    assert!(report.dropped.telemetry_records >= 49);
    assert!(report.dropped.telemetry_bytes >= 49 * 64 * 8192);
    assert_eq!(events(&report, "telemetry.dropped").len(), 1);
    assert!(report_bytes(&report) < 2 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_storm_ends_the_attempt_with_the_refusals_limit() {
    let h = Harness::new();
    for mode in ["context-storm", "denied-storm"] {
        let report = h
            .run(&h.flood, json!({"mode": mode, "count": 1u64 << 40}))
            .await;
        let (outcome, error) = flood_attempt(&report);
        assert_eq!(outcome, "refusals", "{mode}: {error}");
        assert!(
            error.contains("max_refusals is 64"),
            "{mode}: the error names the limit: {error}"
        );
        let last = if mode == "context-storm" {
            "trace context refused"
        } else {
            "not in the step's allowed_hosts"
        };
        assert!(
            error.contains(last),
            "{mode}: and the last refusal: {error}"
        );
        assert_eq!(report.outcome, "failed");
        // The limit's name is said once, where the run's error says it.
        let run_error = report.error.clone().unwrap_or_default();
        assert!(run_error.contains("refusals: "), "{run_error}");
        assert!(!run_error.contains("refusals: refusals"), "{run_error}");
        assert!(!error.starts_with("refusals"), "{error}");
        assert!(report_bytes(&report) < 2 << 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stderr_flood_is_suppressed_in_the_host_log_and_counted() {
    let h = Harness::new();
    let report = h
        .run(
            &h.flood,
            json!({"mode": "stderr-flood", "count": 100000, "bytes": 100}),
        )
        .await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    // stderr is captured up to 64 KiB, ~640 lines; at most 100 reach the host log.
    let lines = events(&report, "stderr").len() as u64;
    assert!(lines > 100, "{lines} stderr lines kept");
    assert_eq!(report.dropped.host_log_lines, lines - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_texts_are_cut_to_a_few_kib_saying_how_much() {
    let h = Harness::new();
    // 50 MB from `run`.
    let report = h
        .run(&h.flood, json!({"mode": "error", "bytes": 50_000_000}))
        .await;
    let (outcome, error) = flood_attempt(&report);
    assert_eq!(outcome, "fatal");
    assert!(error.len() <= MAX_ERROR_BYTES + 64, "{} bytes", error.len());
    assert!(
        error.ends_with("… [49995904 bytes cut]"),
        "{}",
        &error[error.len() - 40..]
    );
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.len() < 2 * MAX_ERROR_BYTES)
    );
    assert!(report_bytes(&report) < 64 << 10);

    // 20 MB from `undo` (the run fails after `flood` completed).
    let report = h
        .run(
            &h.flood,
            json!({"mode": "ok", "undo_error_bytes": 20_000_000, "after": "fail"}),
        )
        .await;
    assert_eq!(report.outcome, "failed");
    assert_eq!(report.undo.len(), 1, "{:?}", report.undo);
    let undo = &report.undo[0];
    assert_eq!(undo.outcome, "failed");
    let error = undo.error.as_deref().unwrap_or_default();
    assert!(error.contains("bytes cut]"), "{}", error.len());
    assert!(error.len() <= MAX_ERROR_BYTES + 64);
    assert!(
        report_bytes(&report) < 64 << 10,
        "{}",
        report_bytes(&report)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_with_is_held_to_the_output_limit() {
    let h = Harness::new();
    // 8 MB substitute output against the default 1 MiB.
    let report = h
        .run(
            &h.flood,
            json!({"mode": "fail", "continue_bytes": 8_000_000}),
        )
        .await;
    assert_eq!(report.outcome, "failed", "not `succeeded, degraded`");
    assert!(!report.degraded);
    let step = report
        .steps
        .iter()
        .find(|s| s.name == "flood")
        .expect("flood");
    assert_eq!(step.compensations.len(), 1);
    let c = &step.compensations[0];
    assert_eq!(c.decision, "error");
    let why = c.error.as_deref().unwrap_or_default();
    assert!(
        why.contains("output-too-large: continue-with value: 8000002 bytes, the limit is 1048576"),
        "{why}"
    );
    // A small substitute still stands in.
    let report = h
        .run(&h.flood, json!({"mode": "fail", "continue_bytes": 10}))
        .await;
    assert_eq!(report.outcome, "succeeded");
    assert!(report.degraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_decision_is_held_to_the_output_limit_and_its_error_cut() {
    let h = Harness::new();
    let decide = |report: &RunReport| {
        let a = &report.steps[0].attempts[0];
        (a.outcome.clone(), a.error.clone().unwrap_or_default())
    };
    let report = h
        .run(&h.policy, json!({"facts": {"reasons_bytes": 5_000_000}}))
        .await;
    let (outcome, error) = decide(&report);
    assert_eq!(outcome, "output-too-large", "{error}");
    assert!(error.contains("policy decision (reasons and obligations): 5000000 bytes"));

    let report = h
        .run(&h.policy, json!({"facts": {"error_bytes": 50_000_000}}))
        .await;
    let (outcome, error) = decide(&report);
    assert_eq!(outcome, "fatal");
    assert!(
        error.starts_with("policy could not decide: eee"),
        "{}",
        &error[..40]
    );
    assert!(error.len() <= MAX_ERROR_BYTES + 64, "{}", error.len());
    assert!(report_bytes(&report) < 64 << 10);

    let report = h.run(&h.policy, json!({"facts": {}})).await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_obligation_keys_are_an_invalid_output() {
    let h = Harness::new();
    let report = h
        .run(&h.policy, json!({"facts": {"duplicate": true}}))
        .await;
    let a = &report.steps[0].attempts[0];
    assert_eq!(a.outcome, "invalid-output");
    assert_eq!(
        a.error.as_deref(),
        Some("invalid output: the policy's obligations name `mask` more than once")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_runs_beside_storms_keep_everything() {
    let h = Arc::new(Harness::new());
    let storm = {
        let h = Arc::clone(&h);
        tokio::spawn(async move {
            h.run(
                &h.flood,
                json!({"mode": "log-storm", "count": 20000, "bytes": 4096}),
            )
            .await
        })
    };
    for _ in 0..10 {
        let report = h.run(&h.flood, json!({"mode": "ok"})).await;
        assert_eq!(report.outcome, "succeeded");
        assert!(report.dropped.is_empty(), "{:?}", report.dropped);
        assert!(events(&report, "telemetry.dropped").is_empty());
    }
    let storm = storm.await.expect("storm run");
    assert!(storm.dropped.telemetry_records > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_side_limit_says_which_limit() {
    let h = Harness::new();
    // 100,000 header values of 1 KiB in one fields resource; 5 million
    // pollables held at once. Each is stopped by a limit inside wasmtime's
    // host code; the step's error names it (not only "error while executing").
    let cases = [
        (
            json!({"mode": "headers", "count": 100000, "bytes": 1024}),
            "total size of fields exceeds limit",
        ),
        (
            json!({"mode": "pollables", "count": 5_000_000}),
            "store handle limit exceeded",
        ),
    ];
    for (input, reason) in cases {
        let report = h.run(&h.flood, input.clone()).await;
        let (outcome, error) = flood_attempt(&report);
        assert_eq!(outcome, "trap", "{input}: {error}");
        assert!(error.contains(reason), "{input}: {error}");
        assert!(!error.contains("error while executing"), "{input}: {error}");
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// The journal's size: the SQLite files (database and write-ahead log),
/// or the PostgreSQL database's.
fn journal_bytes(state: &std::path::Path, postgres: Option<&str>) -> u64 {
    if let Some(url) = postgres {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        return rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            let row = client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
                .expect("size");
            row.get::<_, i64>(0).max(0) as u64
        });
    }
    ["runs.sqlite3", "runs.sqlite3-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_log_storm_under_serve_leaves_memory_the_journal_and_its_report_bounded() {
    storm_under_serve(None);
    let url = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fresh_database());
    storm_under_serve(Some(&url));
}

/// A 5 s storm of 8 KiB log lines then 100 normal runs under `braid serve`
/// on SQLite or (with a URL) PostgreSQL (docs/security.md has 10 s figures).
fn storm_under_serve(postgres: Option<&str>) {
    use crate::serve::Served;
    let store = postgres.unwrap_or("sqlite");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = FLOOD.replace("timeout_ms = 20000", "timeout_ms = 5000");
    let workflow = write_workflow(dir.path(), "flood.toml", &body);
    let served = Served::spawn(&workflow, &["--store", store], &[]);
    let post = |input: Value| {
        http(
            &served.addr,
            "POST",
            "/v1/workflows/flood/runs",
            &[],
            &input.to_string(),
        )
    };
    // Warm up, then measure.
    for _ in 0..20 {
        assert_eq!(post(json!({"mode": "ok"})).status, 200, "{store}");
    }
    let rss_before = rss_bytes(served.pid());
    let journal_before = journal_bytes(served.state_dir(), postgres);
    let storm = post(json!({"mode": "log-storm", "count": 1u64 << 40}));
    assert_eq!(storm.status, 422, "{store}: {}", storm.body);
    let journal_growth = journal_bytes(served.state_dir(), postgres).saturating_sub(journal_before);
    let report = http(
        &served.addr,
        "GET",
        str_of(&storm.json(), "/report"),
        &[],
        "",
    );
    assert_eq!(
        report.status, 200,
        "{store}: the storm run's report is kept"
    );
    assert!(
        report.body.len() <= 2 << 20,
        "{store}: {} bytes",
        report.body.len()
    );
    let report = report.json();
    assert!(report["dropped"]["telemetry_records"].as_u64() > Some(0));
    for _ in 0..100 {
        let r = post(json!({"mode": "ok"}));
        assert_eq!(r.status, 200, "{store}: {}", r.body);
    }
    let rss_growth = rss_bytes(served.pid()).saturating_sub(rss_before);
    assert!(
        rss_growth <= 64 << 20,
        "{store}: RSS grew {} MiB",
        rss_growth >> 20
    );
    assert!(
        journal_growth <= 4 << 20,
        "{store}: the storm run grew the journal by {journal_growth} bytes"
    );
    // The host log got at most 100 of the storm's lines.
    let logged = served
        .stderr()
        .lines()
        .filter(|l| l.contains("xxxxxxxx"))
        .count();
    assert!(
        logged <= 100,
        "{store}: {logged} storm lines in the host log"
    );
}

#[test]
fn two_thousand_hostile_runs_under_serve_with_a_short_retention_keep_the_journal_small() {
    use crate::serve::Served;
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = write_workflow(dir.path(), "flood.toml", FLOOD);
    let served = Served::spawn(
        &workflow,
        &["--retain-runs", "50", "--prune-interval-s", "1"],
        &[],
    );
    let modes = [
        json!({"mode": "log-storm", "count": 2000}),
        json!({"mode": "event-storm", "count": 10}),
        json!({"mode": "context-storm", "count": 1u64 << 40}),
        json!({"mode": "denied-storm", "count": 1u64 << 40}),
        json!({"mode": "stderr-flood", "count": 2000, "bytes": 100}),
        json!({"mode": "error", "bytes": 1_000_000}),
        json!({"mode": "ok"}),
        json!({"mode": "fail", "continue_bytes": 2_000_000}),
    ];
    let post = |i: usize| {
        let r = http(
            &served.addr,
            "POST",
            "/v1/workflows/flood/runs",
            &[],
            // Mixed per thread too (thread t posts i = t, t + 8, ...).
            &modes[(i + i / 8) % modes.len()].to_string(),
        );
        assert!(
            r.status == 200 || r.status == 422,
            "run {i}: {} {}",
            r.status,
            r.body
        );
    };
    // 200 to warm up, then 1,800 more, 8 at a time.
    for i in 0..200 {
        post(i);
    }
    let rss_warm = rss_bytes(served.pid());
    std::thread::scope(|s| {
        for t in 0..8 {
            let post = &post;
            s.spawn(move || {
                for i in (200 + t..2000).step_by(8) {
                    post(i);
                }
            });
        }
    });
    let rss_growth = rss_bytes(served.pid()).saturating_sub(rss_warm);
    // A prune runs every second: then 50 finished runs are left, and the
    // pages they freed are given back. What the journal holds (pages in
    // use), and its files on disk (the database file shrinks at checkpoints;
    // the log is cut to 8 MiB after one).
    let state = served.state_dir().to_str().expect("utf-8").to_string();
    let live_bytes = || {
        let db = rusqlite::Connection::open(served.state_dir().join("runs.sqlite3"))
            .expect("open the journal");
        let pragma = |name: &str| -> u64 {
            db.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0))
                .expect("pragma")
                .max(0) as u64
        };
        (pragma("page_count") - pragma("freelist_count")) * pragma("page_size")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (left, live) = loop {
        let out = braid(&["runs", "--json", "--state-dir", &state]);
        let runs: Value = serde_json::from_slice(&out.stdout).expect("runs JSON");
        let n = runs.as_array().map_or(0, Vec::len);
        let live = live_bytes();
        if (n <= 50 && live <= 16 << 20) || std::time::Instant::now() > deadline {
            break (n, live);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(left, 50, "the newest 50 finished runs are kept");
    // 50 runs, a storm's report being ~260 KB (a report's ceiling is ~2 MiB).
    assert!(live <= 16 << 20, "{} KiB in use", live >> 10);
    let files = journal_bytes(served.state_dir(), None);
    assert!(files <= 32 << 20, "journal files {} MiB", files >> 20);
    assert!(rss_growth <= 64 << 20, "RSS grew {} MiB", rss_growth >> 20);
    eprintln!(
        "2,000 hostile runs: journal {} KiB in use, {} KiB of files, RSS growth {} MiB",
        live >> 10,
        files >> 10,
        rss_growth >> 20
    );
}
