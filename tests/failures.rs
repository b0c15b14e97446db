//! The failure model: the five scenarios of the seed, crash recovery, and a
//! soak with random faults. Faults are scoped to one run's trace id, so the
//! sample API serves every other run cleanly.

use crate::support::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

fn revokes(api: &SampleApi, trace: &str) -> usize {
    api.requests(Some(trace))
        .iter()
        .filter(|r| r["path"] == "/oauth/revoke" && r["status"] == 200)
        .count()
}

/// Scenario 1: a 401 from the token endpoint fails the run at once; nothing
/// is claimed and the error names the trace.
#[test]
fn authentication_failure_fails_the_run_and_claims_nothing() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-999", "auth-fail"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json_stdout(&out);
    let trace = str_of(&report, "/trace_id");
    let error = str_of(&report, "/error");
    assert!(
        error.starts_with("step `authenticate` failed: fatal: authentication failed: HTTP 401"),
        "{error}"
    );
    let auth = step(&report, "authenticate");
    assert_eq!(
        auth["attempts"].as_array().map(Vec::len),
        Some(1),
        "a 401 is not retried"
    );
    assert_eq!(auth["compensations"][0]["decision"], "give-up");
    for s in [
        "fetch_profile",
        "fetch_permissions",
        "validate_access",
        "claim_work",
        "aggregate",
    ] {
        assert_eq!(step(&report, s)["outcome"], "skipped");
    }
    assert!(
        report["undo"].as_array().expect("undo").is_empty(),
        "nothing completed, nothing to undo"
    );
    assert!(list("claims", state.path()).is_empty());
    assert_eq!(
        journal_run(state.path(), str_of(&report, "/run_id"))["status"],
        "failed"
    );
    // Without --json the error line carries the trace id.
    let wf = reference_workflow();
    let out = braid(&[
        "run",
        wf.to_str().expect("utf-8"),
        "--input",
        &reference_input(&api, "u-999", "auth-fail-2"),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("failed (trace ") && err.contains("HTTP 401"),
        "{err}"
    );
    assert_ne!(trace, "");
}

/// Scenario 2: the profile API hangs past the step's 1 s timeout; each
/// attempt is a new span, retried with backoff, then compensated (give up),
/// and the completed steps are undone in reverse completion order.
#[test]
fn profile_timeout_is_retried_with_backoff_then_compensated_and_undone() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "profile", "delay_ms": 3000, "trace_id": trace }));
    let started = Instant::now();
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "timeout-1"),
        &["--traceparent", &traceparent],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["trace_id"], trace.as_str());

    let profile = step(&report, "fetch_profile");
    let attempts = profile["attempts"].as_array().expect("attempts");
    let kinds: Vec<&str> = attempts.iter().map(|a| str_of(a, "/outcome")).collect();
    assert_eq!(
        kinds,
        ["timeout", "timeout", "timeout"],
        "1 + max_retries attempts"
    );
    let spans: HashSet<&str> = attempts.iter().map(|a| str_of(a, "/span_id")).collect();
    assert_eq!(spans.len(), 3, "each attempt has its own span");
    for pair in attempts.windows(2) {
        let gap = pair[1]["start_ms"].as_f64().expect("start")
            - pair[0]["start_ms"].as_f64().expect("start");
        assert!(
            gap >= 1000.0 + 50.0,
            "timeout then backoff between attempts: {gap} ms"
        );
    }
    assert_eq!(profile["compensations"][0]["decision"], "give-up");
    assert!(str_of(profile, "/compensations/0/failure").starts_with("timeout"));
    let compensated = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["name"] == "api.profile.unavailable" && e["trace_id"] == trace.as_str());
    assert!(
        compensated,
        "compensate reported the outage on the run's trace"
    );

    // fetch_permissions completed after authenticate: undone first.
    assert_eq!(undone(&report), ["fetch_permissions", "authenticate"]);
    assert_eq!(
        revokes(&api, &trace),
        1,
        "authenticate's undo revoked the token"
    );
    assert!(list("claims", state.path()).is_empty());
    // The API saw three profile attempts on this trace, each from its own span.
    let profile_calls: Vec<Value> = api
        .requests(Some(&trace))
        .into_iter()
        .filter(|r| str_of(r, "/path").ends_with("/profile"))
        .collect();
    assert_eq!(profile_calls.len(), 3);
    // ...and the report lists each of those calls, cut short, under its attempt's span.
    let reported: Vec<&Value> = report["http_calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter(|c| str_of(c, "/url").ends_with("/profile"))
        .collect();
    assert_eq!(reported.len(), 3);
    let attempt_spans: HashSet<&str> = reported
        .iter()
        .map(|c| str_of(c, "/attempt_span_id"))
        .collect();
    assert_eq!(attempt_spans, spans);
    assert!(
        reported
            .iter()
            .all(|c| c["status"].is_null() && str_of(c, "/error").starts_with("no response"))
    );
    let sent: HashSet<&str> = profile_calls
        .iter()
        .map(|r| str_of(r, "/parent_id"))
        .collect();
    let ours: HashSet<&str> = reported.iter().map(|c| str_of(c, "/span_id")).collect();
    assert_eq!(sent, ours);
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// Scenario 3: the permissions API answers 503 every time; after its retries
/// the step compensates with read-only permissions and the run completes,
/// degraded.
#[test]
fn permissions_unavailable_degrades_gracefully() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let (traceparent, trace) = new_trace();
    api.add_fault(json!({ "endpoint": "permissions", "status": 503, "trace_id": trace }));
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-100", "degraded-1"),
        &["--traceparent", &traceparent],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["outcome"], "succeeded");
    assert_eq!(report["degraded"], true);
    let perms = step(&report, "fetch_permissions");
    assert_eq!(perms["outcome"], "compensated");
    let kinds: Vec<&str> = perms["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| str_of(a, "/outcome"))
        .collect();
    assert_eq!(kinds, ["retryable", "retryable", "retryable"]);
    assert_eq!(perms["compensations"][0]["decision"], "continue-with");
    assert_eq!(report["result"]["roles"], json!(["read-only"]));
    assert_eq!(report["result"]["decision"]["allowed"], true);
    assert_eq!(
        journal_run(state.path(), str_of(&report, "/run_id"))["degraded"],
        true
    );
    // A clean run next to it is not degraded: the fault is scoped to one trace.
    let clean = json_stdout(&run_reference(
        state.path(),
        &reference_input(&api, "u-100", "clean-1"),
        &[],
    ));
    assert_eq!(clean["degraded"], false);
}

/// Scenario 4: access denied is a business error (no retry); every completed
/// reversible step is undone in reverse completion order.
#[test]
fn access_denied_undoes_completed_steps_in_reverse_completion_order() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    // u-300 may read public/* only.
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-300", "denied-1"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let report = json_stdout(&out);
    let error = str_of(&report, "/error");
    assert!(
        error.contains("fatal: denied by policy: user `u-300` has no grant to `read` `reports/q3`"),
        "{error}"
    );
    let decision = report["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["name"] == "policy.decision")
        .expect("the decision is an event");
    assert_eq!(decision["metadata"]["decision"], "deny");
    assert_eq!(decision["trace_id"], report["trace_id"]);
    assert_eq!(
        step(&report, "validate_access")["attempts"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Completion order from the report: end = start + duration.
    let end = |name: &str| {
        let s = step(&report, name);
        s["start_ms"].as_f64().expect("start") + s["duration_ms"].as_f64().expect("duration")
    };
    let mut completed = vec!["authenticate", "fetch_profile", "fetch_permissions"];
    completed.sort_by(|a, b| end(b).total_cmp(&end(a)));
    assert_eq!(undone(&report), completed, "reverse completion order");
    assert_eq!(completed.last(), Some(&"authenticate"));
    assert_eq!(revokes(&api, str_of(&report, "/trace_id")), 1);
    assert!(list("claims", state.path()).is_empty());
}

/// Scenario 5 (the conflict itself is in `reference`): the losing run never
/// steals the item, undoes its own steps, and releases nothing of the holder's.
#[test]
fn a_conflicting_run_undoes_itself_without_touching_the_holder() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let first = json_stdout(&run_reference(
        state.path(),
        &reference_input(&api, "u-100", "contested"),
        &[],
    ));
    assert_eq!(first["outcome"], "succeeded");
    let out = run_reference(
        state.path(),
        &reference_input(&api, "u-200", "contested"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let second = json_stdout(&out);
    assert!(str_of(&second, "/error").contains(str_of(&first, "/trace_id")));

    // A run of another workflow learns that the item is held and until
    // when, not which run, trace or host holds it.
    let other = state.path().join("other-team.toml");
    let text = std::fs::read_to_string(reference_workflow()).expect("read");
    let text = text
        .replace("components_dir = \"../target/components\"\n", "")
        .replace("name = \"api-orchestration\"", "name = \"other-team\"");
    write_workflow(state.path(), "other-team.toml", &text);
    let out = run_workflow(
        &other,
        state.path(),
        &reference_input(&api, "u-100", "contested"),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let third = json_stdout(&out);
    let error = str_of(&third, "/error");
    assert!(
        error.contains("already claimed by a run of another workflow until"),
        "{error}"
    );
    for hidden in ["/run_id", "/trace_id"] {
        assert!(!error.contains(str_of(&first, hidden)), "{error}");
    }
    assert_eq!(
        undone(&second).last().map(String::as_str),
        Some("authenticate")
    );
    assert!(
        second["released_claims"]
            .as_array()
            .expect("released")
            .is_empty()
    );
    assert_eq!(revokes(&api, str_of(&second, "/trace_id")), 1);
    assert_eq!(
        revokes(&api, str_of(&first, "/trace_id")),
        0,
        "the holder keeps its token"
    );
    let claims = list("claims", state.path());
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["run_id"], first["run_id"]);
}

/// The state directory's journal, except that every lease renewal finds the
/// run taken over by another host.
struct LeaseAlwaysLost(braid::journal::SqliteJournal);

fn not_used<T>() -> Result<T, braid::journal::JournalError> {
    Err(braid::journal::JournalError::Unavailable(
        "not used by recovery".into(),
    ))
}

#[async_trait::async_trait]
impl braid::journal::RunJournal for LeaseAlwaysLost {
    async fn start(
        &self,
        _: &braid::journal::RunStart,
        _: Duration,
    ) -> Result<braid::journal::RunFence, braid::journal::JournalError> {
        not_used()
    }
    async fn append(
        &self,
        fence: &braid::journal::RunFence,
        entry: braid::journal::JournalEntry,
    ) -> Result<(), braid::journal::JournalError> {
        self.0.append(fence, entry).await
    }
    async fn finish(
        &self,
        fence: &braid::journal::RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<braid::journal::StoredReport>,
    ) -> Result<bool, braid::journal::JournalError> {
        self.0.finish(fence, status, degraded, error, report).await
    }
    async fn renew_leases(
        &self,
        fences: &[braid::journal::RunFence],
        _: Duration,
    ) -> Result<Vec<bool>, braid::journal::JournalError> {
        Ok(vec![false; fences.len()])
    }
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<braid::journal::OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<braid::journal::AbandonedRun>, braid::journal::JournalError> {
        self.0
            .take_over_abandoned(new_owner, lease, is_dead, running_here)
            .await
    }
    async fn report(&self, _: &str) -> Result<Option<String>, braid::journal::JournalError> {
        not_used()
    }
    async fn recent_reports(
        &self,
        _: braid::journal::ReportQuery,
    ) -> Result<Vec<braid::journal::ReportSummary>, braid::journal::JournalError> {
        not_used()
    }
    async fn running_runs(
        &self,
        _: usize,
    ) -> Result<Vec<braid::journal::RunRecord>, braid::journal::JournalError> {
        not_used()
    }
    async fn runs_of_trace(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Vec<braid::journal::RunRecord>, braid::journal::JournalError> {
        not_used()
    }
    async fn idempotent_run(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<(String, String)>, braid::journal::JournalError> {
        not_used()
    }
    async fn reserve_idempotent(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<(String, String)>, braid::journal::JournalError> {
        not_used()
    }
    async fn release_idempotent(
        &self,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<bool, braid::journal::JournalError> {
        not_used()
    }
    async fn runs(&self) -> Result<Vec<braid::journal::RunRecord>, braid::journal::JournalError> {
        not_used()
    }
    async fn request_cancel(
        &self,
        _: &str,
        _: &str,
    ) -> Result<braid::journal::CancelAsked, braid::journal::JournalError> {
        not_used()
    }
    async fn cancel_requests(
        &self,
        _: &[String],
    ) -> Result<Vec<(String, String)>, braid::journal::JournalError> {
        not_used()
    }
    async fn run(
        &self,
        _: &str,
    ) -> Result<Option<braid::journal::RunRecord>, braid::journal::JournalError> {
        not_used()
    }
    async fn ping(&self) -> Result<(), braid::journal::JournalError> {
        not_used()
    }
    async fn prune(
        &self,
        _: braid::journal::Retention,
        _: usize,
    ) -> Result<braid::journal::Pruned, braid::journal::JournalError> {
        not_used()
    }
}

/// Recovers `state`'s abandoned runs through [`LeaseAlwaysLost`], as a
/// process of this machine that has since died (so `braid recover` can take
/// the runs from it at once afterwards).
async fn recover_losing_the_lease(state: &std::path::Path) -> Vec<braid::recovery::RecoveredRun> {
    use braid::sandbox::{Sandbox, SandboxConfig};
    use braid::store::{ClaimStore, SqliteClaimStore};
    use std::sync::Arc;
    let claims: Arc<dyn ClaimStore> = Arc::new(SqliteClaimStore::open(state).expect("claims"));
    let journal = braid::journal::SqliteJournal::open(state).expect("journal");
    let config = SandboxConfig {
        cache_dir: Some(state.join("cache")),
        ..SandboxConfig::default()
    };
    // No process has this pid (the largest is 2^22): "dead" to the next
    // recoverer on this machine.
    let machine = config.host_id.rsplit_once(':').expect("host:pid").0;
    let owner = format!("{machine}:4000000000");
    let sandbox = Arc::new(Sandbox::new(config, Arc::clone(&claims)).expect("sandbox"));
    braid::recovery::Recoverer {
        sandbox,
        journal: Arc::new(LeaseAlwaysLost(journal)),
        claims,
        owner,
        liveness: braid::recovery::Liveness::ThisMachine,
        local: braid::journal::LocalRuns::default(),
        history_dir: None,
        max_concurrency: 16,
        on_resumed: None,
        live: None,
    }
    .recover()
    .await
    .expect("recover")
}

/// A host killed with SIGKILL mid-run of a workflow with `on_crash =
/// "undo"`: the next `braid recover` undoes the run's completed steps
/// (releasing its claim) exactly once and marks it `aborted` under its
/// original trace id. (Resuming is tests/resume.rs.)
#[test]
fn a_killed_run_is_recovered_aborted_and_undone_exactly_once() {
    let api = SampleApi::start(Some(0));
    let state = tempfile::tempdir().expect("tempdir");
    let (traceparent, trace) = new_trace();
    // The reference workflow plus a slow audit step after the claim.
    let wf = audited_workflow(state.path(), "undo");
    // The audit's permissions call (the 2nd on this trace) hangs.
    api.add_fault(
        json!({ "endpoint": "permissions", "delay_ms": 60000, "skip": 1, "trace_id": trace }),
    );

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_braid"))
        .args([
            "run",
            wf.to_str().expect("utf-8"),
            "--json",
            "--traceparent",
            &traceparent,
            "--state-dir",
        ])
        .arg(state.path())
        .args(["--input", &reference_input(&api, "u-100", "crash-item")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn braid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.requests(Some(&trace)).len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the run never reached the audit step"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let claims = list("claims", state.path());
    assert_eq!(claims.len(), 1, "the run holds its claim when it dies");
    assert_eq!(claims[0]["trace_id"], trace.as_str());
    child.kill().expect("kill -9");
    child.wait().expect("reap");

    let running = list("runs", state.path());
    assert_eq!(running.len(), 1);
    assert_eq!(
        running[0]["status"], "running",
        "the dead host left no terminal record"
    );
    let run_id = str_of(&running[0], "/run_id").to_string();

    // A recoverer that loses the run to another host before its first undo
    // (its lease renewal says so) leaves the run alone: nothing undone.
    let taken = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(recover_losing_the_lease(state.path()));
    assert!(taken.is_empty(), "{taken:?}");
    assert_eq!(revokes(&api, &trace), 0, "nothing undone");
    assert_eq!(list("claims", state.path()).len(), 1, "claim kept");
    assert_eq!(journal_run(state.path(), &run_id)["status"], "running");

    let out = braid(&[
        "recover",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recovered = json_stdout(&out);
    assert_eq!(recovered[0]["run_id"], run_id.as_str());
    assert_eq!(recovered[0]["trace_id"], trace.as_str());
    let order: Vec<&str> = recovered[0]["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .map(|u| {
            assert_eq!(u["outcome"], "undone", "{u}");
            str_of(u, "/step")
        })
        .collect();
    assert_eq!(
        order.first(),
        Some(&"claim_work"),
        "the last completed step is undone first"
    );
    assert_eq!(order.last(), Some(&"authenticate"));
    assert_eq!(
        order.len(),
        4,
        "claim_work, the two fetches, authenticate: {order:?}"
    );

    assert!(
        list("claims", state.path()).is_empty(),
        "the claim was released"
    );
    let record = journal_run(state.path(), &run_id);
    assert_eq!(record["status"], "aborted");
    assert_eq!(record["trace_id"], trace.as_str());
    assert_eq!(revokes(&api, &trace), 1);

    // Again: nothing left to recover, nothing undone twice.
    let out = braid(&[
        "recover",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(json_stdout(&out), json!([]));
    assert_eq!(revokes(&api, &trace), 1, "undo performed exactly once");
}

/// 200 runs against an API that fails at random: every run ends with a
/// terminal record, and no claim is left held by a run that did not succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_with_random_faults_all_end_terminal() {
    use braid::journal::{RunJournal, SqliteJournal};
    use braid::sandbox::{Sandbox, SandboxConfig};
    use braid::scheduler::{RunRequest, Scheduler};
    use braid::store::{ClaimStore, SqliteClaimStore};
    use braid::trace::IncomingTrace;
    use std::sync::Arc;

    let api = SampleApi::start_with(
        Some(1),
        &[
            "token:status=503,probability=0.05",
            "profile:status=503,probability=0.15",
            "permissions:status=500,probability=0.5",
            "profile:drop,probability=0.05",
            "permissions:delay_ms=1200,probability=0.02",
        ],
    );
    let state = tempfile::tempdir().expect("tempdir");
    let claims: Arc<dyn ClaimStore> =
        Arc::new(SqliteClaimStore::open(state.path()).expect("claims"));
    let journal: Arc<dyn RunJournal> =
        Arc::new(SqliteJournal::open(state.path()).expect("journal"));
    let config = SandboxConfig {
        cache_dir: Some(state.path().join("cache")),
        ..SandboxConfig::default()
    };
    let owner = config.host_id.clone();
    let sandbox = Arc::new(Sandbox::new(config, Arc::clone(&claims)).expect("sandbox"));
    let (workflow, executor) = braid::check::load_and_prepare(&reference_workflow(), sandbox)
        .expect("reference workflow loads");
    let scheduler = Arc::new(
        Scheduler::new(Arc::new(executor), 64)
            .with_journal(Arc::clone(&journal), owner)
            .with_claims(Arc::clone(&claims)),
    );

    let mut tasks = tokio::task::JoinSet::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(25));
    for i in 0..200 {
        let (scheduler, workflow, limit) = (
            Arc::clone(&scheduler),
            Arc::clone(&workflow),
            Arc::clone(&limit),
        );
        // Some users are denied; some work items are contested.
        let user = ["u-100", "u-200", "u-300"][i % 3];
        let input: Value =
            serde_json::from_str(&reference_input(&api, user, &format!("soak-{}", i % 150)))
                .expect("json");
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            scheduler
                .run(RunRequest {
                    workflow,
                    input,
                    trace: IncomingTrace::from_headers(None, None),
                })
                .await
                .expect("input fits")
        });
    }
    let mut reports = Vec::new();
    while let Some(r) = tasks.join_next().await {
        reports.push(r.expect("run task"));
    }
    assert_eq!(reports.len(), 200);

    let runs = journal.runs().await.expect("runs");
    assert_eq!(runs.len(), 200, "every run is journaled");
    let status: HashMap<&str, &str> = runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.status.as_str()))
        .collect();
    for r in &reports {
        assert_eq!(
            status.get(r.run_id.as_str()).copied(),
            Some(r.outcome.as_str()),
            "terminal record matches"
        );
        for u in &r.undo {
            assert_eq!(
                u.outcome, "undone",
                "undo of {} in {}: {:?}",
                u.step, r.run_id, u.error
            );
        }
    }
    let succeeded = reports.iter().filter(|r| r.outcome == "succeeded").count();
    let failed = reports.iter().filter(|r| r.outcome == "failed").count();
    assert_eq!(succeeded + failed, 200);
    let degraded = reports.iter().filter(|r| r.degraded).count();
    let undos: usize = reports.iter().map(|r| r.undo.len()).sum();
    eprintln!("soak: {succeeded} succeeded ({degraded} degraded), {failed} failed, {undos} undos");
    assert!(
        succeeded > 0 && failed > 0,
        "a mix of outcomes: {succeeded} succeeded, {failed} failed"
    );
    assert!(degraded > 0, "some runs degraded gracefully");

    for c in claims.list().await.expect("claims") {
        assert_eq!(
            status.get(c.run_id.as_str()).copied(),
            Some("succeeded"),
            "claim {c:?} held by a run that did not succeed"
        );
    }
}
