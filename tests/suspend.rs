//! Suspended runs (`on_failure = "suspend"`, issue 28) on both journals,
//! with a scripted executor: a run whose step fails for good is
//! suspended (nothing undone, its claims held to its deadline), and ends
//! its suspension once: resumed (the failed step runs again, nothing
//! before it does, the claims get their leases back), aborted by an
//! operator or by its deadline (undone, `aborted`), or cancelled.

use crate::support::*;
use crate::waiting::{ADMIN, TOKEN, calls, spawn_waiting, start_async, wait_for_status};
use braid::journal::{JournalEntry, RunJournal, SqliteJournal, Unsuspend, UnsuspendAsked};
use braid::postgres::{PgPool, PostgresClaimStore, PostgresJournal};
use braid::scheduler::{
    AttemptContext, CLAIM_MARGIN, Compensation, RUN_LEASE, RunRequest, Scheduler, StepExecutor,
    StepFailure,
};
use braid::store::{ClaimRequest, ClaimStore, SqliteClaimStore, now_ms};
use braid::trace::IncomingTrace;
use braid::workflow::{StepSpec, Workflow};
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `a` (reversible) -> `b`, which suspends the run when it fails.
fn chain(suspend_for: &str) -> Arc<Workflow> {
    let text = format!(
        r#"
        name = "suspending"
        result = "b"
        on_failure = "suspend"
        suspend_for = "{suspend_for}"
        [inputs.x]
        [[steps]]
        name = "a"
        component = "a"
        args.x = {{ input = "x" }}
        [[steps]]
        name = "b"
        component = "b"
        args.a = {{ step = "a" }}
    "#
    );
    Arc::new(Workflow::from_toml(&text, Path::new("suspending.toml")).expect("workflow"))
}

/// Steps answer their name, except those `broken`, which fail for good;
/// calls and undos are kept in order.
#[derive(Default)]
struct Scripted {
    broken: Mutex<HashSet<String>>,
    calls: Mutex<Vec<String>>,
    undone: Mutex<Vec<String>>,
    version: &'static str,
}

impl Scripted {
    fn broken(step: &str, version: &'static str) -> Arc<Scripted> {
        let s = Scripted {
            version,
            ..Default::default()
        };
        s.broken.lock().expect("lock").insert(step.into());
        Arc::new(s)
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
    fn undone(&self) -> Vec<String> {
        self.undone.lock().expect("lock").clone()
    }
}

impl StepExecutor for Scripted {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("{step}.wasm"), format!("{step}-{}", self.version))
    }
    fn is_reversible(&self, step: &str) -> bool {
        step == "a"
    }
    async fn execute(
        &self,
        step: &StepSpec,
        _: AttemptContext,
        _: String,
    ) -> Result<String, StepFailure> {
        self.calls.lock().expect("lock").push(step.name.clone());
        if self.broken.lock().expect("lock").contains(&step.name) {
            return Err(StepFailure::Fatal(format!("{} is broken", step.name)));
        }
        Ok(format!("{{\"step\":\"{}\"}}", step.name))
    }
    async fn compensate(
        &self,
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        Ok(Compensation::GiveUp)
    }
    async fn undo(
        &self,
        step: &StepSpec,
        _: AttemptContext,
        _: String,
        _: String,
    ) -> Result<(), StepFailure> {
        self.undone.lock().expect("lock").push(step.name.clone());
        Ok(())
    }
}

struct Stores {
    name: &'static str,
    journal: Arc<dyn RunJournal>,
    claims: Arc<dyn ClaimStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn both_stores() -> Vec<Stores> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Stores {
        name: "sqlite",
        journal: Arc::new(SqliteJournal::open(dir.path()).expect("journal")),
        claims: Arc::new(SqliteClaimStore::open(dir.path()).expect("claims")),
        _dir: Some(dir),
    };
    let pg = PgPool::open(&fresh_database().await, 8)
        .await
        .expect("postgres opens");
    let postgres = Stores {
        name: "postgres",
        journal: Arc::new(PostgresJournal::new(pg.clone())),
        claims: Arc::new(PostgresClaimStore::new(pg)),
        _dir: None,
    };
    vec![sqlite, postgres]
}

fn scheduler(s: &Stores, exec: Arc<Scripted>, owner: &str) -> Scheduler<Scripted> {
    Scheduler::new(exec, 4)
        .with_journal(Arc::clone(&s.journal), owner.into())
        .with_claims(Arc::clone(&s.claims))
        .with_reports()
}

/// Starts a run of `wf` (as run `run_id`, which holds a claim on
/// `item` for 60 s) whose step `b` fails for good: it is suspended.
async fn suspended_run(s: &Stores, wf: &Arc<Workflow>, run_id: &str, item: &str) {
    let claim = s
        .claims
        .claim(ClaimRequest {
            work_item: item.into(),
            lease: Duration::from_secs(60),
            run_id: run_id.into(),
            trace_id: "0".repeat(32),
            span_id: "0".repeat(16),
            step: "a".into(),
            owner: "host-a:1".into(),
            metadata: "{}".into(),
            workflow: wf.name.clone(),
        })
        .await
        .expect("claim");
    let exec = Scripted::broken("b", "v1");
    let request = RunRequest {
        workflow: Arc::clone(wf),
        input: serde_json::json!({"x": 1}),
        trace: IncomingTrace::from_headers(None, None),
    };
    let report = scheduler(s, Arc::clone(&exec), "host-a:1")
        .run_as(request, run_id.into(), &CancellationToken::new())
        .await
        .expect("started");
    let name = s.name;
    assert_eq!(report.outcome, "suspended", "{name}: {:?}", report.error);
    assert_eq!(
        report.error.as_deref(),
        Some("step `b` failed: fatal: b is broken")
    );
    assert_eq!(exec.calls(), ["a", "b"], "{name}");
    assert!(exec.undone().is_empty(), "{name}: nothing undone");
    let record = s.journal.run(run_id).await.expect("read").expect("known");
    assert_eq!(record.status, "suspended", "{name}");
    let why = record.waiting_for.unwrap_or_default();
    assert!(
        why.starts_with("suspended: step `b` failed: fatal: b is broken"),
        "{name}: {why}"
    );
    // Held to the deadline (and the margin), not its own 60 s.
    let held = s.claims.held_by(run_id).await.expect("claims");
    assert_eq!(held.len(), 1, "{name}");
    let deadline = record.wake_at_ms.expect("deadline");
    assert!(held[0].expires_at_ms >= deadline + CLAIM_MARGIN.as_millis() as u64 - 1_000);
    assert!(held[0].claim_id == claim.claim_id);
}

/// Takes the run over from `suspended` (as a wake loop does) and carries
/// it on with `exec`.
async fn wake(s: &Stores, wf: &Arc<Workflow>, exec: Arc<Scripted>) -> braid::report::RunReport {
    let mut taken = s
        .journal
        .take_over_waiting("host-b:2", RUN_LEASE, 10)
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1, "{}: one run woken", s.name);
    let run = taken.remove(0);
    scheduler(s, exec, "host-b:2")
        .resume(Arc::clone(wf), &run, &CancellationToken::new())
        .await
        .expect("resumed")
}

#[tokio::test]
async fn a_suspended_run_resumed_runs_its_failed_step_again_and_nothing_before_it() {
    for s in both_stores().await {
        let wf = chain("1h");
        suspended_run(&s, &wf, "run-s1", "item-1").await;
        // Retention never deletes a suspended run.
        let none = braid::journal::Retention {
            max_age: Duration::ZERO,
            max_runs: 0,
        };
        s.journal.prune(none, 100).await.expect("prune");
        assert!(
            s.journal.run("run-s1").await.expect("read").is_some(),
            "{}",
            s.name
        );
        // Not woken before anyone asks (its deadline is an hour away).
        let early = s.journal.take_over_waiting("host-b:2", RUN_LEASE, 10).await;
        assert!(early.expect("look").is_empty(), "{}", s.name);
        let resume = s
            .journal
            .request_unsuspend("run-s1", &Unsuspend::Resume)
            .await;
        assert_eq!(resume.expect("asked"), UnsuspendAsked::Asked);
        let again = s
            .journal
            .request_unsuspend("run-s1", &Unsuspend::Resume)
            .await;
        assert_eq!(
            again.expect("asked"),
            UnsuspendAsked::Asked,
            "a repeat is the same"
        );
        let abort = Unsuspend::Abort { reason: None };
        let other = s.journal.request_unsuspend("run-s1", &abort).await;
        assert_eq!(
            other.expect("asked"),
            UnsuspendAsked::AskedOtherwise {
                pending: "resume".into()
            }
        );
        // Fixed: version 2 of the components.
        let fixed = Arc::new(Scripted {
            version: "v2",
            ..Default::default()
        });
        let report = wake(&s, &wf, Arc::clone(&fixed)).await;
        let name = s.name;
        assert_eq!(report.outcome, "succeeded", "{name}: {:?}", report.error);
        assert_eq!(fixed.calls(), ["b"], "{name}: `a` is not run again");
        let resumed = report.resumed.clone().expect("resumed");
        assert_eq!(resumed.unsuspended.as_deref(), Some("resume"));
        assert_eq!(resumed.reused_steps, ["a"]);
        let step_sha = |n: &str| {
            let s = report.steps.iter().find(|s| s.name == n).expect("step");
            s.component_sha256.clone()
        };
        assert_eq!(
            step_sha("a"),
            "a-v1",
            "{name}: `a` ran on the first version"
        );
        assert_eq!(step_sha("b"), "b-v2", "{name}: `b` on the fixed one");
        // The claim has its unused lease back (about 60 s, not the deadline's).
        let held = s.claims.held_by("run-s1").await.expect("claims");
        assert_eq!(held.len(), 1, "{name}");
        assert!(
            held[0].expires_at_ms <= now_ms() + 61_000,
            "{name}: {held:?}"
        );
        let record = s.journal.run("run-s1").await.expect("read").expect("known");
        assert_eq!(record.status, "succeeded", "{name}");
        // Ended: nothing to resume.
        let late = s
            .journal
            .request_unsuspend("run-s1", &Unsuspend::Resume)
            .await;
        assert_eq!(
            late.expect("asked"),
            UnsuspendAsked::NotSuspended {
                status: "succeeded".into()
            }
        );
        let unknown = s
            .journal
            .request_unsuspend("run-none", &Unsuspend::Resume)
            .await;
        assert_eq!(unknown.expect("asked"), UnsuspendAsked::Unknown);
    }
}

#[tokio::test]
async fn a_suspended_run_aborted_by_an_operator_or_its_deadline_is_undone_and_aborted() {
    for s in both_stores().await {
        let name = s.name;
        let wf = chain("1h");
        suspended_run(&s, &wf, "run-s2", "item-2").await;
        let abort = Unsuspend::Abort {
            reason: Some("the fix is not coming".into()),
        };
        let asked = s.journal.request_unsuspend("run-s2", &abort).await;
        assert_eq!(asked.expect("asked"), UnsuspendAsked::Asked);
        let exec = Arc::new(Scripted::default());
        let report = wake(&s, &wf, Arc::clone(&exec)).await;
        assert_eq!(report.outcome, "aborted", "{name}");
        assert_eq!(
            report.error.as_deref(),
            Some(
                "run aborted by an operator: the fix is not coming (step `b` had failed: fatal: b is broken)"
            )
        );
        assert!(exec.calls().is_empty(), "{name}: nothing runs");
        assert_eq!(exec.undone(), ["a"], "{name}: `a` undone");
        assert!(
            s.claims.held_by("run-s2").await.expect("claims").is_empty(),
            "{name}"
        );
        let record = s.journal.run("run-s2").await.expect("read").expect("known");
        assert_eq!(record.status, "aborted", "{name}");
        let journal = s.journal.entries("run-s2").await.expect("entries");
        let kinds: Vec<&str> = journal
            .iter()
            .map(|e: &JournalEntry| e.kind.as_str())
            .collect();
        assert!(kinds.contains(&"suspended"), "{name}: {kinds:?}");

        // Nobody answers within `suspend_for`: aborted at the deadline.
        let wf = chain("1s");
        suspended_run(&s, &wf, "run-s3", "item-3").await;
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let exec = Arc::new(Scripted::default());
        let report = wake(&s, &wf, Arc::clone(&exec)).await;
        assert_eq!(report.outcome, "aborted", "{name}");
        let error = report.error.unwrap_or_default();
        assert!(
            error.starts_with("run aborted: suspended for 1s and neither resumed nor aborted"),
            "{name}: {error}"
        );
        assert_eq!(exec.undone(), ["a"], "{name}");
        assert_eq!(
            report.resumed.and_then(|r| r.unsuspended).as_deref(),
            Some("deadline")
        );
    }
}

#[tokio::test]
async fn a_suspended_run_is_cancelled_and_a_signal_for_it_is_kept() {
    for s in both_stores().await {
        let name = s.name;
        let wf = chain("1h");
        suspended_run(&s, &wf, "run-s4", "item-4").await;
        let sent = s.journal.send_signal("run-s4", "later", "{}", "").await;
        assert_eq!(
            sent.expect("sent"),
            braid::journal::SignalSent::Delivered,
            "{name}"
        );
        let asked = s.journal.request_cancel("run-s4", "no longer needed").await;
        assert!(
            matches!(
                asked.expect("asked"),
                braid::journal::CancelAsked::Asked { .. }
            ),
            "{name}"
        );
        let exec = Arc::new(Scripted::default());
        let report = wake(&s, &wf, Arc::clone(&exec)).await;
        assert_eq!(report.outcome, "cancelled", "{name}");
        assert_eq!(
            report.error.as_deref(),
            Some("run cancelled: no longer needed")
        );
        assert!(exec.calls().is_empty(), "{name}");
        assert_eq!(exec.undone(), ["a"], "{name}");
        assert!(
            s.claims.held_by("run-s4").await.expect("claims").is_empty(),
            "{name}"
        );
    }
}

/// A workflow of its own components directory (a hot swap writes the
/// fixed version back there): `authenticate`, then `check` (the hostile
/// guest told to panic: broken until a fix is uploaded), then `after`
/// notifies with `check`'s output. A failure suspends the run.
fn broken_workflow(dir: &Path, suspend_for: &str) -> std::path::PathBuf {
    let body = format!(
        r#"
name = "fixable"
result = "after"
on_failure = "suspend"
suspend_for = "{suspend_for}"
[inputs.api_base]
[inputs.user_id]
[defaults]
timeout_ms = 20000
max_retries = 0
allowed_hosts = ["127.0.0.1", "localhost"]

[[steps]]
name = "authenticate"
component = "authenticate"
args.api_base = {{ input = "api_base" }}
args.user_id = {{ input = "user_id" }}

[[steps]]
name = "check"
component = "check"
wait_for = ["authenticate"]
args.mode = {{ value = "panic" }}

[[steps]]
name = "after"
component = "notify"
args.api_base = {{ input = "api_base" }}
args.token = {{ step = "authenticate", pointer = "/access_token" }}
args.to = {{ value = "requester@example.com" }}
args.subject = {{ value = "checked" }}
args.about = {{ step = "check" }}
"#
    );
    private_workflow(
        dir,
        "fixable",
        &[
            ("authenticate", "authenticate"),
            ("notify", "notify"),
            ("hostile", "check"),
        ],
        &body,
    )
}

fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpResponse {
    http(addr, "POST", path, headers, body)
}

/// Uploads the fix for step `check` (`noop`, which answers its input) to
/// the server at `addr`; what it answered.
pub(crate) fn upload_fix(addr: &str) -> (u16, String) {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(crate::serve::request_async(
            addr,
            "PUT",
            "/v1/components/check",
            &format!("authorization: Bearer {TOKEN}\r\n"),
            &crate::serve::component_bytes("noop"),
        ))
}

/// Suspended, the server killed and started again, the broken step fixed
/// by a hot swap, resumed over HTTP: the run succeeds, `authenticate` is
/// not called again, and the report names the version change.
#[test]
fn a_suspended_run_survives_a_restart_and_resumes_on_the_hot_swapped_fix() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = broken_workflow(dir.path(), "1h");
    let mut served = spawn_waiting(&workflow, &[]);
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&served, "fixable", &api, &traceparent);
    let now = wait_for_status(&served, &run_id, "suspended");
    let why = str_of(&now, "/waiting_for");
    assert!(
        why.starts_with("suspended: step `check` failed: trap: guest trapped"),
        "{now}"
    );
    assert!(now["wake_at_ms"].as_u64().expect("deadline") > now_ms() + 3_500_000);
    served.kill();
    served.restart();
    let addr = served.addr.clone();
    let run = format!("/v1/runs/{run_id}");

    // Refused, and nothing changes: no token, an unknown run, a body.
    let resume = format!("{run}/resume");
    assert_eq!(post(&addr, &resume, &[], "").status, 401);
    let unknown = post(&addr, "/v1/runs/run-0000000000000000/resume", &[ADMIN], "");
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let body = post(
        &addr,
        &resume,
        &[ADMIN, ("content-type", "application/json")],
        r#"{"from": "check"}"#,
    );
    assert_eq!(body.status, 400, "{}", body.body);
    let listed = served.get("/v1/runs?status=suspended").json();
    assert_eq!(listed[0]["run_id"], run_id.as_str(), "{listed}");
    let waiting = served.get("/v1/runs?status=waiting").json();
    assert_eq!(waiting, json!([]), "suspended is not waiting");
    let cancel_signal = post(&addr, &format!("{run}/signals/nope"), &[ADMIN], "{}");
    assert_eq!(cancel_signal.status, 404, "{}", cancel_signal.body);
    assert_eq!(served.get(&run).json()["status"], "suspended");

    // The fix: `noop` answers its input instead of panicking.
    let fix = crate::serve::component_bytes("noop");
    let broken = crate::serve::sha(&crate::serve::component_bytes("hostile"));
    let (status, put) = upload_fix(&addr);
    assert_eq!(status, 200, "{put}");
    let resumed = post(&addr, &resume, &[ADMIN], "");
    assert_eq!(resumed.status, 202, "{}", resumed.body);
    assert_eq!(resumed.header("location"), Some(run.as_str()));
    let done = served.get(&format!("{run}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    let output = str_of(step(&done, "check"), "/output");
    assert_eq!(output, r#"{"mode":"panic"}"#, "the fix answered its input");
    assert_eq!(
        calls(&api, &trace_id, "/oauth/token"),
        1,
        "not called again"
    );
    assert_eq!(calls(&api, &trace_id, "/notifications"), 1);
    assert_eq!(done["resumed"]["unsuspended"], "resume");
    assert_eq!(done["resumed"]["reused_steps"], json!(["authenticate"]));
    let change = &done["resumed"]["component_changes"];
    assert_eq!(change[0]["step"], "check", "{done}");
    assert_eq!(change[0]["from_sha256"], broken.as_str());
    assert_eq!(change[0]["to_sha256"], crate::serve::sha(&fix).as_str());
    assert_eq!(
        step(&done, "check")["component_sha256"],
        crate::serve::sha(&fix).as_str()
    );
    assert_eq!(done["trace_id"], trace_id.as_str(), "one trace throughout");
    let again = post(&addr, &resume, &[ADMIN], "");
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.body.contains("is succeeded, not suspended"),
        "{}",
        again.body
    );
}

/// Aborted from the CLI through the server, and at the deadline: undone
/// (`authenticate`'s token revoked once), `aborted`.
#[test]
fn a_suspended_run_is_aborted_from_the_cli_or_by_its_deadline_and_undone() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = broken_workflow(dir.path(), "3s");
    let served = spawn_waiting(&workflow, &[]);
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&served, "fixable", &api, &traceparent);
    wait_for_status(&served, &run_id, "suspended");
    let server = format!("http://{}", served.addr);
    let out = braid(&[
        "runs",
        "abort",
        &run_id,
        "--reason",
        "won't fix",
        "--server",
        &server,
        "--admin-token",
        TOKEN,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "aborted", "{done}");
    let error = str_of(&done, "/error");
    assert!(
        error.starts_with(
            "run aborted by an operator: won't fix (step `check` had failed: trap: guest trapped"
        ),
        "{error}"
    );
    assert!(error.contains("hostile guest panics on purpose"), "{error}");
    assert_eq!(calls(&api, &trace_id, "/oauth/revoke"), 1, "undone once");
    assert_eq!(step(&done, "check")["outcome"], "failed");
    let resume = braid(&[
        "runs",
        "resume",
        &run_id,
        "--server",
        &server,
        "--admin-token",
        TOKEN,
    ]);
    assert_eq!(resume.status.code(), Some(1), "{}", stderr(&resume));
    assert!(
        stderr(&resume).contains("is aborted, not suspended"),
        "{}",
        stderr(&resume)
    );

    // Nobody answers: aborted at the deadline (3 s), by the wake loop.
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&served, "fixable", &api, &traceparent);
    let done = served.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "aborted", "{done}");
    assert!(
        str_of(&done, "/error")
            .starts_with("run aborted: suspended for 3s and neither resumed nor aborted"),
        "{done}"
    );
    assert_eq!(calls(&api, &trace_id, "/oauth/revoke"), 1, "undone once");
}

/// In headless Chromium: a suspended run's page says why; after a fix is
/// uploaded, its resume form (with the admin token) finishes the run, and
/// the waterfall says the suspension ended by `resume`.
#[test]
fn a_suspended_runs_page_resumes_it_in_chromium() {
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let served = spawn_waiting(&broken_workflow(dir.path(), "1h"), &[]);
    let (traceparent, trace_id) = new_trace();
    let addr = served.addr.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // The runs page, open as the run starts, moves it to "Waiting" live.
    let run_id = runtime.block_on(async {
        let browser = crate::viewer::Browser::launch();
        let mut page = browser.open(&format!("http://{addr}/ui/runs")).await;
        page.wait_for("the runs page", "document.readyState === 'complete' && document.getElementById('waiting-runs').hidden").await;
        // The page's event stream is open before the run starts.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let run_id = start_async(&served, "fixable", &api, &traceparent);
        let live = page
            .wait_for(
                "the parked run's row",
                &format!("(() => {{ const tr = document.querySelector('#waiting tr[data-run=\"{run_id}\"]'); return tr && !document.getElementById('waiting-runs').hidden && tr.dataset.live; }})()"),
            )
            .await;
        assert_eq!(live, "suspended");
        let finished = page
            .eval(&format!("!!document.querySelector('#finished tr[data-run=\"{run_id}\"]')"))
            .await
            .expect("eval");
        assert_eq!(finished, false, "not listed as finished");
        run_id
    });
    wait_for_status(&served, &run_id, "suspended");
    let (status, put) = upload_fix(&addr);
    assert_eq!(status, 200, "{put}");
    runtime.block_on(async {
        let browser = crate::viewer::Browser::launch();
        let mut page = browser
            .open(&format!("http://{addr}/ui/runs/{run_id}"))
            .await;
        let why = page
            .wait_for(
                "the suspended run's page",
                "document.readyState === 'complete' && document.querySelector('[data-run-outcome]').dataset.runOutcome === 'suspended' && document.getElementById('waiting-for').textContent",
            )
            .await;
        assert!(
            why.as_str()
                .is_some_and(|w| w.starts_with("suspended: step `check` failed: trap")),
            "{why}"
        );
        let resume = |token: &str| {
            format!(
                "(() => {{ const f = document.getElementById('resume-form');
                   f.querySelector('[name=token]').value = '{token}';
                   f.querySelector('button').click(); return true; }})()"
            )
        };
        page.eval(&resume("not-the-token")).await.expect("submit");
        let refused = page
            .wait_for(
                "the refusal",
                "(() => { const a = document.getElementById('control-answer').textContent; return a.startsWith('401') && a; })()",
            )
            .await;
        assert!(refused.as_str().is_some_and(|a| a.contains("admin token")), "{refused}");
        page.eval(&resume(TOKEN)).await.expect("submit");
        let outcome = page
            .wait_for(
                "the run's waterfall",
                "document.querySelector('.waterfall') && document.querySelector('[data-unsuspended]') && document.querySelector('[data-run-outcome]').dataset.runOutcome",
            )
            .await;
        assert_eq!(outcome, "succeeded");
    });
    assert_eq!(calls(&api, &trace_id, "/oauth/token"), 1);
}

/// Two hosts on one PostgreSQL journal: a run suspended on one is resumed
/// through the other (after the fix is rolled out to both) and succeeds
/// once; another is cancelled through the other host and undone.
#[test]
fn a_suspended_run_is_resumed_or_cancelled_through_another_host_of_a_shared_postgresql_journal() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = runtime.block_on(fresh_database());
    let api = SampleApi::start(None);
    let dir = tempfile::tempdir().expect("tempdir");
    let workflow = broken_workflow(dir.path(), "1h");
    let host = |name: &str| {
        crate::serve::Served::spawn(
            &workflow,
            &["--store", url.as_str(), "--admin-token", TOKEN],
            &[("HOSTNAME", name)],
        )
    };
    let (first, second) = (host("host-0"), host("host-1"));
    let (traceparent, trace_id) = new_trace();
    let run_id = start_async(&first, "fixable", &api, &traceparent);
    let (cancel_tp, cancel_trace) = new_trace();
    let doomed = start_async(&first, "fixable", &api, &cancel_tp);
    let now = wait_for_status(&second, &run_id, "suspended");
    assert!(str_of(&now, "/owner").starts_with("host-0"), "{now}");
    wait_for_status(&second, &doomed, "suspended");

    let cancelled = post(
        &second.addr,
        &format!("/v1/runs/{doomed}/cancel"),
        &[ADMIN],
        r#"{"reason": "not worth fixing"}"#,
    );
    assert_eq!(cancelled.status, 202, "{}", cancelled.body);
    let done = first.get(&format!("/v1/runs/{doomed}?wait=60s")).json();
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["error"], "run cancelled: not worth fixing");
    assert_eq!(
        calls(&api, &cancel_trace, "/oauth/revoke"),
        1,
        "undone once"
    );

    for served in [&first, &second] {
        let (status, put) = upload_fix(&served.addr);
        assert_eq!(status, 200, "{put}");
    }
    let resumed = post(
        &second.addr,
        &format!("/v1/runs/{run_id}/resume"),
        &[ADMIN],
        "",
    );
    assert_eq!(resumed.status, 202, "{}", resumed.body);
    let done = first.get(&format!("/v1/runs/{run_id}?wait=60s")).json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        calls(&api, &trace_id, "/oauth/token"),
        1,
        "not called again"
    );
    assert_eq!(calls(&api, &trace_id, "/notifications"), 1, "once");
}
