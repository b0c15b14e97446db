//! Fencing of a run's journal writes by its ownership, made deterministic:
//! host A's journal write of a step's completion is held (as a database
//! outage or a frozen process would hold it) while host B takes the run
//! over, then let go. On both journals the stale write must be refused, A
//! must stop the run without finishing it, and B must see exactly the
//! completions the journal accepted, so that a step recorded as completed
//! is never run again and none is recorded twice.

use crate::support::fresh_database;
use braid::journal::{
    AbandonedRun, JournalEntry, JournalError, OwnerIsDead, Pruned, ReportQuery, ReportSummary,
    Retention, RunFence, RunJournal, RunRecord, RunStart, SqliteJournal, StoredReport,
};
use braid::postgres::{PgPool, PostgresJournal};
use braid::scheduler::{
    AttemptContext, Compensation, RUN_LEASE, RunRequest, Scheduler, StepExecutor, StepFailure,
    TAKEN_OVER,
};
use braid::trace::IncomingTrace;
use braid::workflow::{StepSpec, Workflow};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const A: &str = "host-a:1";
const B: &str = "host-b:2";

/// `a -> b`, each answering its own name.
fn chain() -> Arc<Workflow> {
    let text = r#"
        name = "fenced"
        result = "b"
        [inputs.x]
        [[steps]]
        name = "a"
        component = "a"
        args.x = { input = "x" }
        [[steps]]
        name = "b"
        component = "b"
        args.a = { step = "a" }
    "#;
    Arc::new(Workflow::from_toml(text, Path::new("fenced.toml")).expect("workflow"))
}

/// Counts the calls of each step (what a step's API would receive).
#[derive(Default)]
struct Counting(Mutex<HashMap<String, u32>>);

impl Counting {
    fn calls(&self, step: &str) -> u32 {
        self.0.lock().expect("lock").get(step).copied().unwrap_or(0)
    }
}

impl StepExecutor for Counting {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("{step}.wasm"), "00".into())
    }
    fn is_reversible(&self, _: &str) -> bool {
        false
    }
    async fn execute(
        &self,
        step: &StepSpec,
        _: AttemptContext,
        _: String,
    ) -> Result<String, StepFailure> {
        *self
            .0
            .lock()
            .expect("lock")
            .entry(step.name.clone())
            .or_default() += 1;
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
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: String,
    ) -> Result<(), StepFailure> {
        Ok(())
    }
}

/// Where host A's journal holds the completion of step `a`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hold {
    /// Between the call's return and the write (the write lands late).
    BeforeWrite,
    /// Right after the write (the next write comes late).
    AfterWrite,
}

/// Host A's journal: the real one, except that the write of step `a`'s
/// completion is held at `hold` until `release`; what each `completed`
/// write answered is kept.
struct Holding {
    inner: Arc<dyn RunJournal>,
    hold: Hold,
    held: Notify,
    release: Notify,
    answers: Mutex<Vec<(String, Result<(), JournalError>)>>,
}

#[async_trait::async_trait]
impl RunJournal for Holding {
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<RunFence, JournalError> {
        self.inner.start(start, lease).await
    }
    async fn append(&self, fence: &RunFence, entry: JournalEntry) -> Result<(), JournalError> {
        let completion = (entry.kind == "completed").then(|| entry.step.clone());
        let holds = completion.as_deref() == Some("a");
        if holds && self.hold == Hold::BeforeWrite {
            self.held.notify_one();
            self.release.notified().await;
        }
        let answer = self.inner.append(fence, entry).await;
        if holds && self.hold == Hold::AfterWrite {
            self.held.notify_one();
            self.release.notified().await;
        }
        if let Some(step) = completion {
            self.answers
                .lock()
                .expect("lock")
                .push((step, answer.clone()));
        }
        answer
    }
    async fn finish(
        &self,
        fence: &RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<StoredReport>,
    ) -> Result<bool, JournalError> {
        self.inner
            .finish(fence, status, degraded, error, report)
            .await
    }
    async fn renew_leases(
        &self,
        fences: &[RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        self.inner.renew_leases(fences, lease).await
    }
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        self.inner
            .take_over_abandoned(new_owner, lease, is_dead, running_here)
            .await
    }
    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        self.inner.report(run_id).await
    }
    async fn recent_reports(&self, query: ReportQuery) -> Result<Vec<ReportSummary>, JournalError> {
        self.inner.recent_reports(query).await
    }
    async fn running_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.running_runs(limit).await
    }
    async fn runs_of_trace(
        &self,
        trace_id: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.runs_of_trace(trace_id, limit).await
    }
    async fn idempotent_run(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.inner.idempotent_run(workflow, key).await
    }
    async fn reserve_idempotent(
        &self,
        workflow: &str,
        key: &str,
        body_sha256: &str,
        run_id: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.inner
            .reserve_idempotent(workflow, key, body_sha256, run_id)
            .await
    }
    async fn release_idempotent(
        &self,
        workflow: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, JournalError> {
        self.inner.release_idempotent(workflow, key, run_id).await
    }
    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.runs().await
    }
    async fn request_cancel(
        &self,
        run_id: &str,
        reason: &str,
    ) -> Result<braid::journal::CancelAsked, JournalError> {
        self.inner.request_cancel(run_id, reason).await
    }
    async fn cancel_requests(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<(String, String)>, JournalError> {
        self.inner.cancel_requests(run_ids).await
    }
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError> {
        self.inner.run(run_id).await
    }
    async fn ping(&self) -> Result<(), JournalError> {
        self.inner.ping().await
    }
    async fn prune(&self, retention: Retention, batch: usize) -> Result<Pruned, JournalError> {
        self.inner.prune(retention, batch).await
    }
}

/// Two handles on one journal, as two hosts have: (name, A's, B's).
async fn two_hosts() -> Vec<(
    &'static str,
    Arc<dyn RunJournal>,
    Arc<dyn RunJournal>,
    Option<tempfile::TempDir>,
)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = |d: &tempfile::TempDir| -> Arc<dyn RunJournal> {
        Arc::new(SqliteJournal::open(d.path()).expect("sqlite journal"))
    };
    let url = fresh_database().await;
    let pg = |pool: PgPool| -> Arc<dyn RunJournal> { Arc::new(PostgresJournal::new(pool)) };
    let pg_a = pg(PgPool::open(&url, 4).await.expect("postgres"));
    let pg_b = pg(PgPool::open(&url, 4).await.expect("postgres"));
    vec![
        ("sqlite", sqlite(&dir), sqlite(&dir), Some(dir)),
        ("postgres", pg_a, pg_b, None),
    ]
}

/// Host A runs `a -> b`; its completion of `a` is held at `hold` while B
/// takes the run over (A's process counts as dead); then A is let go and
/// B resumes the run. Returns what each host's steps were called, the
/// answers A's completions got, what B found completed, and the journal.
struct Outcome {
    a_report: braid::report::RunReport,
    a_calls: Arc<Counting>,
    b_calls: Arc<Counting>,
    a_answers: Vec<(String, Result<(), JournalError>)>,
    b_found: Vec<String>,
    b_report: braid::report::RunReport,
    record: RunRecord,
}

async fn take_over_while_held(
    journal_a: Arc<dyn RunJournal>,
    journal_b: Arc<dyn RunJournal>,
    hold: Hold,
) -> Outcome {
    let holding = Arc::new(Holding {
        inner: journal_a,
        hold,
        held: Notify::new(),
        release: Notify::new(),
        answers: Mutex::new(Vec::new()),
    });
    let a_calls = Arc::new(Counting::default());
    let host_a = Scheduler::new(Arc::clone(&a_calls), 4)
        .with_journal(Arc::clone(&holding) as Arc<dyn RunJournal>, A.into());
    let run_a = tokio::spawn(async move {
        let request = RunRequest {
            workflow: chain(),
            input: serde_json::json!({"x": 1}),
            trace: IncomingTrace::from_headers(None, None),
        };
        host_a.run(request).await
    });
    tokio::time::timeout(Duration::from_secs(60), holding.held.notified())
        .await
        .expect("host A reached the held write");

    // B takes the run over while A is held: A's lease is still fresh, so A
    // counts as dead (as after a freeze long enough for its lease to run out).
    let dead: OwnerIsDead = Box::new(|owner| owner == A);
    let mut taken = journal_b
        .take_over_abandoned(B, RUN_LEASE, Some(dead), &[])
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1, "B takes the one run");
    let run = taken.remove(0);
    assert_eq!(run.fence.owner, B);
    assert_eq!(run.fence.epoch, 2, "the take-over moves the run to epoch 2");
    let b_found: Vec<String> = run.completed().into_iter().map(|c| c.step).collect();

    holding.release.notify_one();
    let a_report = tokio::time::timeout(Duration::from_secs(60), run_a)
        .await
        .expect("host A's run ends once let go")
        .expect("task")
        .expect("run started");

    let b_calls = Arc::new(Counting::default());
    let host_b =
        Scheduler::new(Arc::clone(&b_calls), 4).with_journal(Arc::clone(&journal_b), B.into());
    let b_report = host_b
        .resume(chain(), &run, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("B resumes");

    let record = journal_b
        .run(&run.start.run_id)
        .await
        .expect("read")
        .expect("the run is journaled");
    let a_answers = holding.answers.lock().expect("lock").clone();
    Outcome {
        a_report,
        a_calls,
        b_calls,
        a_answers,
        b_found,
        b_report,
        record,
    }
}

fn refused(answer: &Result<(), JournalError>) -> bool {
    matches!(answer, Err(JournalError::Fenced { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_hosts_completion_is_refused_and_the_new_owner_runs_the_step_once() {
    for (name, journal_a, journal_b, _dir) in two_hosts().await {
        let out = take_over_while_held(journal_a, journal_b, Hold::BeforeWrite).await;
        // A's late write of `a` was refused, and A went no further.
        assert_eq!(out.a_answers.len(), 1, "{name}: {:?}", out.a_answers);
        assert_eq!(out.a_answers[0].0, "a", "{name}");
        assert!(refused(&out.a_answers[0].1), "{name}: {:?}", out.a_answers);
        assert_eq!(out.a_calls.calls("a"), 1, "{name}");
        assert_eq!(
            out.a_calls.calls("b"),
            0,
            "{name}: A ran b after losing the run"
        );
        assert_eq!(out.a_report.outcome, "aborted", "{name}");
        assert_eq!(out.a_report.error.as_deref(), Some(TAKEN_OVER), "{name}");
        // B found nothing completed, so it ran `a` (same idempotency key) and `b`.
        assert!(out.b_found.is_empty(), "{name}: {:?}", out.b_found);
        assert_eq!(out.b_calls.calls("a"), 1, "{name}");
        assert_eq!(out.b_calls.calls("b"), 1, "{name}");
        assert_eq!(out.b_report.outcome, "succeeded", "{name}");
        // The run is B's, ended once; its journal: B's `resumed` and one
        // completion per step (A's refused write left nothing).
        assert_eq!(
            (out.record.owner.as_str(), out.record.status.as_str()),
            (B, "succeeded"),
            "{name}"
        );
        assert_eq!(out.record.entries, 3, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_written_before_the_take_over_is_reused_not_run_again() {
    for (name, journal_a, journal_b, _dir) in two_hosts().await {
        let out = take_over_while_held(journal_a, journal_b, Hold::AfterWrite).await;
        // A's write of `a` got in before B took over: B sees it.
        assert!(
            out.a_answers.iter().any(|(s, r)| s == "a" && r.is_ok()),
            "{name}: {:?}",
            out.a_answers
        );
        assert_eq!(out.b_found, ["a"], "{name}");
        assert_eq!(
            out.b_calls.calls("a"),
            0,
            "{name}: a completed step ran again"
        );
        assert_eq!(out.b_calls.calls("b"), 1, "{name}");
        // A's write of `b` (if A got as far as calling it) was refused.
        for (step, answer) in &out.a_answers {
            if step == "b" {
                assert!(refused(answer), "{name}: A's late `b` was journaled");
            }
        }
        assert_eq!(out.a_report.outcome, "aborted", "{name}");
        assert_eq!(out.b_report.outcome, "succeeded", "{name}");
        assert_eq!(
            out.b_report
                .resumed
                .as_ref()
                .map(|r| r.reused_steps.clone()),
            Some(vec!["a".to_string()]),
            "{name}"
        );
        assert_eq!(
            (out.record.owner.as_str(), out.record.status.as_str()),
            (B, "succeeded"),
            "{name}"
        );
        // A's `a`, B's `resumed` and B's `b`: nothing twice.
        assert_eq!(out.record.entries, 3, "{name}");
    }
}
