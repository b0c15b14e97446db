//! Hostile steps: each misbehaviour ends in a typed failure within its limit
//! or a refusal, normal runs are unaffected meanwhile, and a thousand hostile
//! runs leave the host's memory flat. These run in-process (the library),
//! with the real `hostile` guest component.

use crate::support::*;
use braid::report::RunReport;
use braid::sandbox::{Sandbox, SandboxConfig, SandboxExecutor};
use braid::scheduler::{RunRequest, Scheduler};
use braid::store::{ClaimStore, SqliteClaimStore};
use braid::trace::IncomingTrace;
use braid::workflow::Workflow;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The `hostile` step with tight limits: 300 ms, 32 MiB, 64 KiB of output,
/// 5 requests, 3 claims, no retries.
const HOSTILE: &str = r#"
name = "hostile"
result = "hostile"
[inputs.mode]
[inputs.url]
default = "http://127.0.0.1:1/"
[inputs.count]
default = 100
[inputs.bytes]
default = 200000
[inputs.key]
default = ""
[[steps]]
name = "hostile"
component = "hostile"
timeout_ms = 300
max_retries = 0
memory_limit_mb = 32
max_output_bytes = 65536
max_requests = 5
max_claims = 3
allowed_hosts = ["localhost"]
args.mode = { input = "mode" }
args.url = { input = "url" }
args.count = { input = "count" }
args.bytes = { input = "bytes" }
args.key = { input = "key" }
"#;

struct Harness {
    _state: tempfile::TempDir,
    sandbox: Arc<Sandbox>,
    claims: Arc<dyn ClaimStore>,
}

impl Harness {
    fn new() -> Harness {
        Self::with(SandboxConfig::default())
    }

    fn with_fuel(fuel: bool) -> Harness {
        Self::with(SandboxConfig {
            fuel,
            ..SandboxConfig::default()
        })
    }

    fn with(config: SandboxConfig) -> Harness {
        let state = tempfile::tempdir().expect("tempdir");
        let claims: Arc<dyn ClaimStore> =
            Arc::new(SqliteClaimStore::open(state.path()).expect("claims"));
        let config = SandboxConfig {
            cache_dir: Some(state.path().join("cache")),
            ..config
        };
        let sandbox = Arc::new(Sandbox::new(config, Arc::clone(&claims)).expect("sandbox"));
        Harness {
            _state: state,
            sandbox,
            claims,
        }
    }

    fn scheduler(&self, workflow: &Workflow) -> Scheduler<SandboxExecutor> {
        let executor = SandboxExecutor::prepare(Arc::clone(&self.sandbox), workflow)
            .unwrap_or_else(|e| panic!("components load: {}", e[0].1));
        Scheduler::new(Arc::new(executor), 256).with_claims(Arc::clone(&self.claims))
    }
}

fn hostile_workflow(dir: &std::path::Path, extra_hosts: &[&str]) -> Arc<Workflow> {
    let mut body = HOSTILE.to_string();
    if !extra_hosts.is_empty() {
        let hosts: Vec<String> = extra_hosts.iter().map(|h| format!("\"{h}\"")).collect();
        body = body.replace(
            "allowed_hosts = [\"localhost\"]",
            &format!("allowed_hosts = [\"localhost\", {}]", hosts.join(", ")),
        );
    }
    let path = write_workflow(dir, "hostile.toml", &body);
    Arc::new(Workflow::load(&path).expect("hostile workflow"))
}

async fn run(sched: &Scheduler<SandboxExecutor>, wf: &Arc<Workflow>, input: Value) -> RunReport {
    sched
        .run(RunRequest {
            workflow: Arc::clone(wf),
            input,
            trace: IncomingTrace::from_headers(None, None),
        })
        .await
        .expect("input fits")
}

/// The single attempt's outcome and error.
fn attempt(report: &RunReport) -> (String, String) {
    let a = &report.steps[0].attempts[0];
    (a.outcome.clone(), a.error.clone().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_guest_fails_with_a_typed_reason_within_its_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new();
    let wf = hostile_workflow(dir.path(), &[]);
    let sched = h.scheduler(&wf);

    let cases: &[(&str, &str, &str)] = &[
        ("loop", "timeout", "timed out after 300 ms"),
        ("memory", "memory-limit", "the limit is 33554432"),
        ("recurse", "stack-overflow", "call stack exhausted"),
        ("recurse-shadow", "trap", "out of bounds memory access"),
        (
            "huge-output",
            "output-too-large",
            "200002 bytes returned, the limit is 65536",
        ),
        ("bad-json", "invalid-output", "output is not valid JSON"),
        ("panic", "trap", "guest trapped"),
        ("unreachable", "trap", "guest trapped"),
    ];
    for (mode, kind, detail) in cases {
        let started = std::time::Instant::now();
        let report = run(&sched, &wf, json!({ "mode": mode })).await;
        assert_eq!(report.outcome, "failed", "{mode}");
        let (outcome, error) = attempt(&report);
        assert_eq!(outcome, *kind, "{mode}: {error}");
        assert!(error.contains(detail), "{mode}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{mode} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            report.steps[0].attempts.len(),
            1,
            "{mode}: limits are not retried"
        );
    }

    // A panicking guest's message reaches the log, tagged with its trace.
    let report = run(&sched, &wf, json!({ "mode": "panic" })).await;
    let stderr = report
        .events
        .iter()
        .find(|e| e.name == "stderr" && e.message.contains("hostile guest panics on purpose"))
        .expect("the panic message is logged");
    assert_eq!(stderr.trace_id, report.trace_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_guest_is_refused_what_it_was_not_granted() {
    let api = SampleApi::start(Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new();
    // The sample API's address is allowed (for the flood); 127.0.0.2 is not.
    let wf = hostile_workflow(dir.path(), &["127.0.0.1"]);
    let sched = h.scheduler(&wf);
    let result = |report: &RunReport| {
        assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
        report.result.clone().expect("result")
    };

    let file = result(&run(&sched, &wf, json!({ "mode": "file" })).await);
    assert_eq!(file["opened"], false, "{file}");

    let socket = result(
        &run(
            &sched,
            &wf,
            json!({ "mode": "socket", "url": format!("http://{}", api.addr) }),
        )
        .await,
    );
    assert_eq!(socket["connected"], false, "{socket}");

    let env = result(&run(&sched, &wf, json!({ "mode": "env" })).await);
    assert_eq!(env["vars"], 0, "{env}");
    assert_eq!(env["args"], 0, "{env}");

    let off_list = run(
        &sched,
        &wf,
        json!({ "mode": "http", "url": "http://127.0.0.2:9/" }),
    )
    .await;
    let denied = result(&off_list);
    assert_eq!(denied["sent"], false);
    assert!(
        denied["error"]
            .as_str()
            .unwrap_or("")
            .contains("HttpRequestDenied"),
        "{denied}"
    );
    assert!(
        off_list
            .events
            .iter()
            .any(|e| e.name == "http.denied" && e.trace_id == off_list.trace_id)
    );

    let flood = result(&run(&sched, &wf, json!({ "mode": "claim-flood", "count": 100 })).await);
    assert_eq!(flood["granted"], 3, "{flood}");
    assert!(
        flood["refused"][0]
            .as_str()
            .unwrap_or("")
            .contains("LimitReached"),
        "{flood}"
    );

    let requests = run(
        &sched,
        &wf,
        json!({ "mode": "http-flood", "count": 50, "url": format!("{}/healthz", api.base()) }),
    )
    .await;
    let requests = result(&requests);
    assert_eq!(requests["sent"], 5, "{requests}");
    assert!(
        requests["error"]
            .as_str()
            .unwrap_or("")
            .contains("ConnectionLimitReached"),
        "{requests}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_and_response_size_budgets_hold() {
    let api = SampleApi::start(Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let body = HOSTILE
        .replace(
            "max_claims = 3",
            "max_claims = 3\nfuel = 5000000\nmax_response_bytes = 16",
        )
        .replace(
            "allowed_hosts = [\"localhost\"]",
            "allowed_hosts = [\"127.0.0.1\"]",
        );
    let path = write_workflow(dir.path(), "fuel.toml", &body);
    let wf = Arc::new(Workflow::load(&path).expect("workflow"));

    // Without fuel metering the step's budget cannot be honoured: refused up front.
    let plain = Harness::new();
    let refused = SandboxExecutor::prepare(Arc::clone(&plain.sandbox), &wf)
        .err()
        .expect("refused");
    assert!(
        refused[0].1.to_string().contains("without fuel metering"),
        "{}",
        refused[0].1
    );

    let h = Harness::with_fuel(true);
    let sched = h.scheduler(&wf);
    let started = std::time::Instant::now();
    let report = run(&sched, &wf, json!({ "mode": "loop" })).await;
    let (outcome, error) = attempt(&report);
    assert_eq!(outcome, "fuel-exhausted", "{error}");
    assert!(
        error.contains("the budget of 5000000 fuel is spent"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "fuel ran out before the 300 ms timeout"
    );

    // A 401 body (~50 bytes) is over the 16-byte response limit.
    let url = format!("{}/users/u-100/profile", api.base());
    let report = run(&sched, &wf, json!({ "mode": "http", "url": url })).await;
    let result = report.result.clone().expect("result");
    assert_eq!(result["sent"], false, "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or("")
            .contains("body size exceeds limit: 16 bytes"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolving_to_private_addresses_can_be_refused() {
    let api = SampleApi::start(Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::with(SandboxConfig {
        deny_private_networks: true,
        ..SandboxConfig::default()
    });
    let wf = hostile_workflow(dir.path(), &["127.0.0.1"]);
    let sched = h.scheduler(&wf);
    let port = api.addr.rsplit(':').next().expect("port").to_string();

    // `localhost` is allowlisted, but it resolves to loopback: refused.
    let by_name = run(
        &sched,
        &wf,
        json!({ "mode": "http", "url": format!("http://localhost:{port}/healthz") }),
    )
    .await;
    let result = by_name.result.clone().expect("result");
    assert_eq!(result["sent"], false, "{result}");
    assert!(
        result["error"]
            .as_str()
            .unwrap_or("")
            .contains("HttpRequestDenied"),
        "{result}"
    );
    assert!(
        by_name
            .events
            .iter()
            .any(|e| e.name == "http.denied"
                && e.message.contains("resolves to the private address"))
    );

    // The loopback IP itself is allowlisted: allowed.
    let by_ip = run(
        &sched,
        &wf,
        json!({ "mode": "http", "url": format!("http://127.0.0.1:{port}/healthz") }),
    )
    .await;
    let result = by_ip.result.clone().expect("result");
    assert_eq!(result["sent"], true, "{result}");
    assert_eq!(result["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_runs_than_instance_slots_wait_for_a_slot_instead_of_failing() {
    let api = SampleApi::start(Some(2));
    let h = Harness::with(SandboxConfig {
        max_instances: 3,
        ..SandboxConfig::default()
    });
    let reference = Arc::new(Workflow::load(&reference_workflow()).expect("reference"));
    let sched = Arc::new(h.scheduler(&reference));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let (sched, wf) = (Arc::clone(&sched), Arc::clone(&reference));
        let input: Value =
            serde_json::from_str(&reference_input(&api, "u-100", &format!("slot-{i}")))
                .expect("json");
        tasks.spawn(async move { run(&sched, &wf, input).await });
    }
    while let Some(r) = tasks.join_next().await {
        let report = r.expect("task");
        assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_runs_succeed_while_hostile_runs_execute() {
    let api = SampleApi::start(Some(5));
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new();
    let hostile_wf = hostile_workflow(dir.path(), &[]);
    let hostile = Arc::new(h.scheduler(&hostile_wf));
    let reference = Arc::new(Workflow::load(&reference_workflow()).expect("reference"));
    let normal = Arc::new(h.scheduler(&reference));

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (hostile, wf) = (Arc::clone(&hostile), Arc::clone(&hostile_wf));
        let mode = ["loop", "memory", "recurse", "huge-output", "panic"][i % 5];
        tasks.spawn(async move { ("hostile", run(&hostile, &wf, json!({ "mode": mode })).await) });
        let (normal, wf) = (Arc::clone(&normal), Arc::clone(&reference));
        let input: Value =
            serde_json::from_str(&reference_input(&api, "u-100", &format!("calm-{i}")))
                .expect("json");
        tasks.spawn(async move { ("normal", run(&normal, &wf, input).await) });
    }
    let (mut normal_ok, mut hostile_failed) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (kind, report) = joined.expect("task");
        match kind {
            "normal" => {
                assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
                normal_ok += 1;
            }
            _ => {
                assert_eq!(report.outcome, "failed");
                hostile_failed += 1;
            }
        }
    }
    assert_eq!((normal_ok, hostile_failed), (30, 30));
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Runs in a child process of its own (this test binary, filtered to this
/// test), since RSS is per process and the other tests run alongside.
#[test]
fn a_thousand_hostile_runs_leave_memory_flat() {
    if std::env::var_os("BRAID_RSS_PROBE").is_none() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "hostile::a_thousand_hostile_runs_leave_memory_flat",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("BRAID_RSS_PROBE", "1")
            .output()
            .expect("run the probe");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("after 1000 hostile runs"),
            "the probe ran: {text}"
        );
        for line in text.lines().filter(|l| l.starts_with("RSS")) {
            eprintln!("{line}");
        }
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(thousand_hostile_runs());
}

async fn thousand_hostile_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new();
    let wf = hostile_workflow(dir.path(), &[]);
    let sched = Arc::new(h.scheduler(&wf));
    let modes = Arc::new([
        "memory",
        "recurse",
        "recurse-shadow",
        "huge-output",
        "panic",
        "bad-json",
        "claim-flood",
    ]);
    let batch = |n: usize, offset: usize| {
        let (sched, wf, modes) = (Arc::clone(&sched), Arc::clone(&wf), Arc::clone(&modes));
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            let limit = Arc::new(tokio::sync::Semaphore::new(16));
            for i in 0..n {
                let (sched, wf, limit) = (Arc::clone(&sched), Arc::clone(&wf), Arc::clone(&limit));
                let mode = modes[(i + offset) % modes.len()];
                tasks.spawn(async move {
                    let _permit = limit.acquire().await;
                    run(&sched, &wf, json!({ "mode": mode, "count": 5 })).await
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("task");
            }
        }
    };
    // Warm up: pool slots, code, allocator arenas.
    batch(100, 0).await;
    let before = rss_kib();
    batch(1000, 100).await;
    let after = rss_kib();
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!(
        "RSS before {before} KiB, after 1000 hostile runs {after} KiB (+{growth_mib:.1} MiB)"
    );
    assert!(
        growth_mib < 48.0,
        "RSS grew by {growth_mib:.1} MiB over 1000 hostile runs"
    );
}

/// A step cannot choose the idempotency key its requests carry (it could
/// be another run's, and an API that replays by key would hand it that
/// run's answer): a key it sets itself is removed, whether or not the step
/// opted in; one that opted in sends the host's key, which names the run
/// and step and carries a MAC of the run's secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_cannot_send_an_idempotency_key_of_its_own() {
    let api = SampleApi::start(Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let h = Harness::new();
    let forged = "run-0123456789abcdef.authenticate";
    let url = format!("http://{}/oauth/token", api.addr);
    let input = json!({ "mode": "forged-key", "url": url, "key": forged });
    for opted_in in [false, true] {
        let mut wf = (*hostile_workflow(dir.path(), &["127.0.0.1"])).clone();
        if opted_in {
            wf.steps[0].idempotency_header = Some("Idempotency-Key".into());
        }
        let wf = Arc::new(wf);
        let report = run(&h.scheduler(&wf), &wf, input.clone()).await;
        let result = report.result.clone().expect("result");
        assert_eq!(result["sent"], true, "{result}");
        let sent = api.requests(Some(&report.trace_id));
        assert_eq!(sent.len(), 1, "{sent:?}");
        let key = &sent[0]["idempotency_key"];
        assert_ne!(key, forged, "the guest's key reached the API");
        if opted_in {
            let key = key.as_str().expect("the host's key");
            let named = format!("{}.hostile.", report.run_id);
            let mac = key.strip_prefix(&named).expect("RUN_ID.STEP.MAC");
            assert_eq!(mac.len(), 32, "{key}");
            assert!(mac.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
            assert_eq!(report.http_calls[0].idempotency_key.as_deref(), Some(key));
        } else {
            assert!(key.is_null(), "a step that did not opt in sent {key}");
            assert_eq!(report.http_calls[0].idempotency_key, None);
        }
    }
}
