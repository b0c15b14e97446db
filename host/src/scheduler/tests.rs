//! The scheduler's unit tests: a scripted executor and a fake journal.

use super::*;
use crate::journal::RunStart;
use crate::workflow::StepSpec;
use std::collections::HashMap;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

/// An executor scripted per step: echoes its input, sleeps, or fails a
/// number of times first; reversible steps compensate and undo as told.
#[derive(Default)]
struct Scripted {
    fail_first: HashMap<String, (u32, StepFailure)>,
    delay: HashMap<String, Duration>,
    reversible: HashSet<String>,
    compensation: HashMap<String, Compensation>,
    /// Undo of these steps fails this many times first.
    undo_fails: HashMap<String, u32>,
    calls: Mutex<Vec<(String, u32, String)>>,
    undos: Mutex<Vec<String>>,
}

impl StepExecutor for Scripted {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("{step}.wasm"), "00".repeat(32))
    }

    fn is_reversible(&self, step: &str) -> bool {
        self.reversible.contains(step)
    }

    async fn compensate(
        &self,
        step: &StepSpec,
        _: AttemptContext,
        _: String,
        _: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        Ok(self
            .compensation
            .get(&step.name)
            .cloned()
            .unwrap_or(Compensation::GiveUp))
    }

    async fn undo(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        _: String,
        output: String,
    ) -> Result<(), StepFailure> {
        assert!(
            output.contains(&step.name),
            "undo gets the step's own output"
        );
        if let Ok(mut u) = self.undos.lock() {
            u.push(format!("{}#{}", step.name, ctx.attempt));
        }
        match self.undo_fails.get(&step.name) {
            Some(n) if ctx.attempt <= *n => Err(StepFailure::Retryable("undo backend down".into())),
            _ => Ok(()),
        }
    }
    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        if let Ok(mut c) = self.calls.lock() {
            c.push((
                step.name.clone(),
                ctx.attempt,
                ctx.trace.span_id.to_string(),
            ));
        }
        if let Some(d) = self.delay.get(&step.name) {
            tokio::time::sleep(*d).await;
        }
        if let Some((n, f)) = self.fail_first.get(&step.name)
            && ctx.attempt <= *n
        {
            return Err(f.clone());
        }
        Ok(serde_json::json!({"step": step.name, "input": serde_json::from_str::<Value>(&input).unwrap_or(Value::Null), "trace": ctx.trace.trace_id.to_string()}).to_string())
    }
}

fn diamond() -> Arc<Workflow> {
    let text = r#"
        name = "diamond"
        result = "d"
        [inputs.x]
        [defaults]
        max_retries = 2
        [[steps]]
        name = "a"
        component = "a"
        args.x = { input = "x" }
        [[steps]]
        name = "b"
        component = "b"
        args.a = { step = "a", pointer = "/input/x" }
        [[steps]]
        name = "c"
        component = "c"
        args.a = { step = "a" }
        [[steps]]
        name = "d"
        component = "d"
        args.b = { step = "b", pointer = "/step" }
        args.c = { step = "c", pointer = "/step" }
    "#;
    Arc::new(Workflow::from_toml(text, Path::new("diamond.toml")).expect("valid"))
}

fn request(wf: Arc<Workflow>) -> RunRequest {
    RunRequest {
        workflow: wf,
        input: serde_json::json!({"x": 7}),
        trace: IncomingTrace::from_headers(None, None),
    }
}

#[tokio::test]
async fn runs_independent_steps_in_parallel_and_wires_outputs() {
    let exec = Scripted {
        delay: [
            ("b".to_string(), Duration::from_millis(80)),
            ("c".to_string(), Duration::from_millis(80)),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let report = sched.run(request(diamond())).await.expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let result = report.result.expect("result");
    assert_eq!(result["input"], serde_json::json!({"b": "b", "c": "c"}));
    assert_eq!(result["trace"], report.trace_id);
    let b = report.steps.iter().find(|s| s.name == "b").expect("b");
    assert_eq!(b.parallel_with, vec!["c".to_string()]);
    let a = report.steps.iter().find(|s| s.name == "a").expect("a");
    assert!(a.parallel_with.is_empty());
    // b received a's output narrowed by the pointer
    let calls = sched.executor().calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 4);
    let spans: HashSet<_> = calls.iter().map(|c| c.2.clone()).collect();
    assert_eq!(spans.len(), 4, "every attempt has its own span id");
}

#[tokio::test]
async fn retries_retryable_failures_then_succeeds() {
    let exec = Scripted {
        fail_first: [("b".to_string(), (2, StepFailure::Retryable("503".into())))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let report = sched.run(request(diamond())).await.expect("input ok");
    assert_eq!(report.outcome, "succeeded");
    let b = report.steps.iter().find(|s| s.name == "b").expect("b");
    let outcomes: Vec<_> = b.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retryable", "retryable", "succeeded"]);
}

#[tokio::test]
async fn fatal_failure_stops_the_run_and_skips_dependents() {
    let exec = Scripted {
        fail_first: [("b".to_string(), (9, StepFailure::Fatal("denied".into())))]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let report = sched.run(request(diamond())).await.expect("input ok");
    assert_eq!(report.outcome, "failed");
    assert_eq!(
        report.error.as_deref(),
        Some("step `b` failed: fatal: denied")
    );
    let b = report.steps.iter().find(|s| s.name == "b").expect("b");
    assert_eq!(b.attempts.len(), 1, "fatal errors are not retried");
    assert!(
        b.compensations.is_empty(),
        "a step that is not reversible is not compensated"
    );
    let d = report.steps.iter().find(|s| s.name == "d").expect("d");
    assert_eq!(d.outcome, "skipped");
    assert!(report.result.is_none());
}

#[tokio::test]
async fn a_missing_pointer_target_fails_the_step_with_a_clear_reason() {
    let text = r#"
        name = "p"
        result = "b"
        [[steps]]
        name = "a"
        component = "a"
        [[steps]]
        name = "b"
        component = "b"
        args.t = { step = "a", pointer = "/nope" }
    "#;
    let wf = Arc::new(Workflow::from_toml(text, Path::new("p.toml")).expect("valid"));
    let sched = Scheduler::new(Arc::new(Scripted::default()), 8);
    let report = sched
        .run(RunRequest {
            workflow: wf,
            input: serde_json::json!({}),
            trace: IncomingTrace::from_headers(None, None),
        })
        .await
        .expect("input ok");
    assert_eq!(
        report.error.as_deref(),
        Some("step `b`: argument `t`: pointer `/nope` matches nothing in the output of step `a`")
    );
}

/// How step `name` ended, as the report says.
fn step_outcome(report: &RunReport, name: &str) -> Option<String> {
    report
        .steps
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.outcome.clone())
}

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_failure_cancels_running_steps_and_undoes_completed_ones_in_reverse_completion_order() {
    // a completes; b completes quickly; c fails after 60 ms while `slow`
    // still runs; e never starts.
    let text = r#"
        name = "undo"
        result = "e"
        [[steps]]
        name = "a"
        component = "a"
        [[steps]]
        name = "b"
        component = "b"
        wait_for = ["a"]
        [[steps]]
        name = "c"
        component = "c"
        wait_for = ["a"]
        [[steps]]
        name = "slow"
        component = "slow"
        wait_for = ["a"]
        [[steps]]
        name = "e"
        component = "e"
        wait_for = ["b", "c", "slow"]
    "#;
    let wf = Arc::new(Workflow::from_toml(text, Path::new("undo.toml")).expect("valid"));
    let exec = Scripted {
        delay: [
            ("c".to_string(), Duration::from_millis(60)),
            ("slow".to_string(), Duration::from_secs(30)),
        ]
        .into_iter()
        .collect(),
        fail_first: [("c".to_string(), (9, StepFailure::Fatal("denied".into())))]
            .into_iter()
            .collect(),
        reversible: names(&["a", "b", "c", "slow"]),
        undo_fails: [("a".to_string(), 2)].into_iter().collect(),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let started = Instant::now();
    let report = sched
        .run(RunRequest {
            workflow: wf,
            input: serde_json::json!({}),
            trace: IncomingTrace::from_headers(None, None),
        })
        .await
        .expect("input ok");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the slow step was cancelled, not awaited"
    );
    assert_eq!(report.outcome, "failed");
    let outcome = |n: &str| step_outcome(&report, n);
    assert_eq!(outcome("a").as_deref(), Some("succeeded"));
    assert_eq!(outcome("b").as_deref(), Some("succeeded"));
    assert_eq!(outcome("c").as_deref(), Some("failed"));
    assert_eq!(outcome("slow").as_deref(), Some("cancelled"));
    assert_eq!(outcome("e").as_deref(), Some("skipped"));
    let slow = report
        .steps
        .iter()
        .find(|s| s.name == "slow")
        .expect("slow");
    assert_eq!(slow.attempts.len(), 1);
    assert_eq!(slow.attempts[0].outcome, "cancelled");
    // b completed after a: undo b first, then a (a's undo fails twice, then works).
    let undone: Vec<_> = report
        .undo
        .iter()
        .map(|u| (u.step.as_str(), u.outcome.as_str(), u.attempts.len()))
        .collect();
    assert_eq!(undone, [("b", "undone", 1), ("a", "undone", 3)]);
    let calls = sched.executor().undos.lock().expect("lock").clone();
    assert_eq!(calls, ["b#1", "a#1", "a#2", "a#3"]);
    // every undo attempt has its own span
    let spans: HashSet<_> = report
        .undo
        .iter()
        .flat_map(|u| u.attempts.iter().map(|a| a.span_id.clone()))
        .collect();
    assert_eq!(spans.len(), 4);
}

#[tokio::test]
async fn undo_failures_are_collected_not_dropped() {
    let text = r#"
        name = "u"
        result = "b"
        [[steps]]
        name = "a"
        component = "a"
        [[steps]]
        name = "b"
        component = "b"
        wait_for = ["a"]
    "#;
    let wf = Arc::new(Workflow::from_toml(text, Path::new("u.toml")).expect("valid"));
    let exec = Scripted {
        fail_first: [("b".to_string(), (9, StepFailure::Fatal("no".into())))]
            .into_iter()
            .collect(),
        reversible: names(&["a"]),
        undo_fails: [("a".to_string(), 99)].into_iter().collect(),
        ..Default::default()
    };
    let report = Scheduler::new(Arc::new(exec), 8)
        .run(RunRequest {
            workflow: wf,
            input: serde_json::json!({}),
            trace: IncomingTrace::from_headers(None, None),
        })
        .await
        .expect("input ok");
    assert_eq!(report.undo.len(), 1);
    assert_eq!(report.undo[0].outcome, "failed");
    assert_eq!(report.undo[0].attempts.len(), (UNDO_RETRIES + 1) as usize);
    assert_eq!(
        report.undo[0].error.as_deref(),
        Some("retryable: undo backend down")
    );
}

#[tokio::test]
async fn compensation_can_continue_degraded_or_retry() {
    // c keeps failing with a retryable error; it compensates with a substitute.
    let exec = Scripted {
        fail_first: [("c".to_string(), (99, StepFailure::Retryable("503".into())))]
            .into_iter()
            .collect(),
        reversible: names(&["c"]),
        compensation: [(
            "c".to_string(),
            Compensation::ContinueWith(r#"{"step":"c","safe":true}"#.into()),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    let report = Scheduler::new(Arc::new(exec), 8)
        .run(request(diamond()))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded");
    assert!(report.degraded);
    let c = report.steps.iter().find(|s| s.name == "c").expect("c");
    assert_eq!(c.outcome, "compensated");
    assert_eq!(
        c.attempts.len(),
        3,
        "1 + max_retries attempts before compensating"
    );
    assert_eq!(c.compensations.len(), 1);
    assert_eq!(c.compensations[0].decision, "continue-with");
    assert!(report.undo.is_empty());

    // b fails twice more than its retries allow; compensate asks for a retry, which succeeds.
    let exec = Scripted {
        fail_first: [(
            "b".to_string(),
            (3, StepFailure::Timeout(Duration::from_millis(5))),
        )]
        .into_iter()
        .collect(),
        reversible: names(&["b"]),
        compensation: [("b".to_string(), Compensation::Retry)]
            .into_iter()
            .collect(),
        ..Default::default()
    };
    let report = Scheduler::new(Arc::new(exec), 8)
        .run(request(diamond()))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded");
    assert!(!report.degraded);
    let b = report.steps.iter().find(|s| s.name == "b").expect("b");
    let outcomes: Vec<_> = b.attempts.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["timeout", "timeout", "timeout", "succeeded"]);
    assert_eq!(b.compensations.len(), 1);
    assert_eq!(b.compensations[0].decision, "retry");
}

#[test]
fn backoff_grows_and_is_capped() {
    for retry in 1..20 {
        let b = backoff(retry);
        assert!(b <= BACKOFF_CAP, "{b:?}");
    }
    assert!(backoff(1) <= BACKOFF_BASE && backoff(1) >= BACKOFF_BASE / 2);
    assert!(backoff(3) >= BACKOFF_BASE * 2);
}

/// A journal for the lease tests: `start` fails unless `starts`; the
/// n-th `heartbeat` answers `renews[n]` (the last one from then on;
/// `None`: an error, as when the database is out of reach); finishes
/// are recorded.
#[derive(Default)]
struct FakeJournal {
    starts: bool,
    renews: Vec<Option<bool>>,
    heartbeats: std::sync::atomic::AtomicUsize,
    finishes: Mutex<Vec<String>>,
    /// `finish` finds the run taken over.
    taken_before_finish: bool,
    /// Every entry appended, in order.
    entries: Mutex<Vec<JournalEntry>>,
    /// An `attempt` entry takes this long to be written.
    slow_completions: Option<Duration>,
    /// How many leases each `renew_leases` carried.
    renewals: Mutex<Vec<usize>>,
}

impl FakeJournal {
    fn renewing(renews: &[Option<bool>]) -> Arc<Self> {
        Arc::new(FakeJournal {
            starts: true,
            renews: renews.to_vec(),
            ..Default::default()
        })
    }
}

fn down<T>() -> Result<T, JournalError> {
    Err(JournalError::Unavailable("database is down".into()))
}

#[async_trait::async_trait]
impl RunJournal for FakeJournal {
    async fn start(
        &self,
        start: &RunStart,
        _: Duration,
    ) -> Result<crate::journal::RunFence, JournalError> {
        if self.starts {
            Ok(crate::journal::RunFence::first(&start.run_id, &start.owner))
        } else {
            down()
        }
    }
    async fn append(
        &self,
        _: &crate::journal::RunFence,
        entry: JournalEntry,
    ) -> Result<(), JournalError> {
        if let Some(d) = self.slow_completions.filter(|_| entry.kind == "completed") {
            tokio::time::sleep(d).await;
        }
        self.entries.lock().expect("lock").push(entry);
        Ok(())
    }
    async fn finish(
        &self,
        _: &crate::journal::RunFence,
        status: &str,
        _: bool,
        _: Option<String>,
        _: Option<crate::journal::StoredReport>,
    ) -> Result<bool, JournalError> {
        self.finishes.lock().expect("lock").push(status.to_string());
        Ok(!self.taken_before_finish)
    }
    async fn heartbeat(
        &self,
        _: &crate::journal::RunFence,
        _: Duration,
    ) -> Result<bool, JournalError> {
        let n = self
            .heartbeats
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let answer = self.renews.get(n).or(self.renews.last()).copied();
        answer.flatten().map_or_else(down, Ok)
    }
    async fn renew_leases(
        &self,
        fences: &[crate::journal::RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        self.renewals.lock().expect("lock").push(fences.len());
        let mut renewed = Vec::new();
        for fence in fences {
            renewed.push(self.heartbeat(fence, lease).await?);
        }
        Ok(renewed)
    }
    async fn take_over_abandoned(
        &self,
        _: &str,
        _: Duration,
        _: Option<crate::journal::OwnerIsDead>,
        _: &[String],
    ) -> Result<Vec<crate::journal::AbandonedRun>, JournalError> {
        down()
    }
    async fn report(&self, _: &str) -> Result<Option<String>, JournalError> {
        down()
    }
    async fn recent_reports(
        &self,
        _: crate::journal::ReportQuery,
    ) -> Result<Vec<crate::journal::ReportSummary>, JournalError> {
        down()
    }
    async fn running_runs(&self, _: usize) -> Result<Vec<crate::journal::RunRecord>, JournalError> {
        down()
    }
    async fn runs_of_trace(
        &self,
        _: &str,
        _: usize,
    ) -> Result<Vec<crate::journal::RunRecord>, JournalError> {
        down()
    }
    async fn idempotent_run(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        down()
    }
    async fn reserve_idempotent(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        down()
    }
    async fn release_idempotent(&self, _: &str, _: &str, _: &str) -> Result<bool, JournalError> {
        down()
    }
    async fn run(&self, _: &str) -> Result<Option<crate::journal::RunRecord>, JournalError> {
        down()
    }
    async fn runs(&self) -> Result<Vec<crate::journal::RunRecord>, JournalError> {
        down()
    }
    async fn ping(&self) -> Result<(), JournalError> {
        down()
    }
    async fn prune(
        &self,
        _: crate::journal::Retention,
        _: usize,
    ) -> Result<crate::journal::Pruned, JournalError> {
        down()
    }
}

/// The diamond with `a` reversible and `b`, `c` taking `delay`.
fn slow_reversible(delay: Duration) -> Scripted {
    Scripted {
        delay: [("b".to_string(), delay), ("c".to_string(), delay)]
            .into_iter()
            .collect(),
        reversible: ["a".to_string()].into_iter().collect(),
        ..Default::default()
    }
}

/// Runs the diamond with slow `b` and `c` (twice a lease) on `journal`;
/// the run must end within `within`, with `b` cancelled.
async fn lease_run(
    journal: &Arc<FakeJournal>,
    within: Duration,
) -> (RunReport, Scheduler<Scripted>) {
    let sched = Scheduler::new(Arc::new(slow_reversible(RUN_LEASE * 2)), 8)
        .with_journal(Arc::clone(journal) as Arc<dyn RunJournal>, "h:1".into());
    let started = tokio::time::Instant::now();
    let report = sched.run(request(diamond())).await.expect("started");
    assert!(
        started.elapsed() <= within,
        "stopped after {:?}",
        started.elapsed()
    );
    let b = report.steps.iter().find(|s| s.name == "b").expect("b");
    assert_eq!(b.outcome, "cancelled");
    (report, sched)
}

/// The run stopped and left undo and the terminal record to whoever
/// takes it over: it reports `aborted` with `why`.
fn assert_handed_over(
    report: &RunReport,
    sched: &Scheduler<Scripted>,
    journal: &FakeJournal,
    why: &str,
) {
    assert_eq!(report.outcome, "aborted");
    assert_eq!(report.error.as_deref(), Some(why));
    assert!(report.undo.is_empty(), "no undo here: {:?}", report.undo);
    assert!(sched.executor().undos.lock().expect("lock").is_empty());
    assert!(
        journal.finishes.lock().expect("lock").is_empty(),
        "no terminal record"
    );
}

#[tokio::test]
async fn a_run_taken_over_by_another_host_stops_without_undoing() {
    // Found at the first renewal, a third of the lease in (the steps
    // would take twice the lease).
    let journal = FakeJournal::renewing(&[Some(false)]);
    let (report, sched) = lease_run(&journal, RUN_LEASE).await;
    assert_handed_over(&report, &sched, &journal, TAKEN_OVER);
}

#[tokio::test]
async fn a_run_whose_lease_cannot_be_renewed_stops_and_undoes_itself_once_the_journal_is_back() {
    // Two renewals fail (the run stops, before the lease could run
    // out), then the journal answers and the lease is still this host's.
    let journal = FakeJournal::renewing(&[None, None, Some(true)]);
    let (report, sched) = lease_run(&journal, RUN_LEASE).await;
    assert_eq!(report.outcome, "failed");
    assert_eq!(report.error.as_deref(), Some(LEASE_UNRENEWED));
    let undone: Vec<&str> = report.undo.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(undone, ["a"]);
    assert_eq!(*sched.executor().undos.lock().expect("lock"), ["a#1"]);
    assert_eq!(*journal.finishes.lock().expect("lock"), ["failed"]);
}

#[tokio::test]
async fn a_run_taken_over_while_its_journal_was_silent_is_left_to_the_new_owner() {
    let journal = FakeJournal::renewing(&[None, None, Some(false)]);
    let (report, sched) = lease_run(&journal, RUN_LEASE).await;
    assert_handed_over(&report, &sched, &journal, TAKEN_OVER);
}

#[tokio::test]
async fn a_run_whose_journal_stays_silent_is_left_to_recovery() {
    let journal = FakeJournal::renewing(&[None]);
    let within = LEASE_FENCE + RECLAIM_WAIT + Duration::from_secs(2);
    let (report, sched) = lease_run(&journal, within).await;
    assert_handed_over(&report, &sched, &journal, LEFT_TO_RECOVERY);
    // It kept trying to take the lease back, with backoff.
    let tries = journal.heartbeats.load(std::sync::atomic::Ordering::SeqCst);
    assert!(tries > 4, "{tries} heartbeats");
}

#[tokio::test]
async fn a_run_that_renews_its_lease_runs_to_the_end() {
    let journal = FakeJournal::renewing(&[Some(true)]);
    // Long enough for a renewal or two.
    let delay = RUN_LEASE / 3 + Duration::from_millis(500);
    let sched = Scheduler::new(Arc::new(slow_reversible(delay)), 8)
        .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
    let report = sched.run(request(diamond())).await.expect("started");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(*journal.finishes.lock().expect("lock"), ["succeeded"]);
}

#[tokio::test]
async fn a_host_renews_the_leases_of_all_its_runs_in_one_write() {
    let journal = FakeJournal::renewing(&[Some(true)]);
    // Each run outlives a renewal period at least once.
    let delay = RUN_LEASE / 3 + Duration::from_millis(1500);
    let sched = Scheduler::new(Arc::new(slow_reversible(delay)), 64)
        .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let sched = sched.clone();
        runs.spawn(async move { sched.run(request(diamond())).await });
    }
    while let Some(report) = runs.join_next().await {
        let report = report.expect("joined").expect("started");
        assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    }
    assert_eq!(journal.finishes.lock().expect("lock").len(), 20);
    let renewals = journal.renewals.lock().expect("lock").clone();
    // Every renewal is one write for every run then in flight: the first
    // one (two seconds after the first start) carries all twenty.
    assert_eq!(renewals.first(), Some(&20), "{renewals:?}");
    assert!(renewals.iter().all(|n| *n <= 20), "{renewals:?}");
}

#[tokio::test]
async fn a_run_taken_over_before_its_end_was_recorded_reports_aborted() {
    let journal = Arc::new(FakeJournal {
        starts: true,
        renews: vec![Some(true)],
        taken_before_finish: true,
        ..Default::default()
    });
    let sched = Scheduler::new(Arc::new(Scripted::default()), 8)
        .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
    let report = sched.run(request(diamond())).await.expect("started");
    assert_eq!(*journal.finishes.lock().expect("lock"), ["succeeded"]);
    assert_eq!(report.outcome, "aborted");
    assert_eq!(report.error.as_deref(), Some(TAKEN_OVER));
}

#[tokio::test]
async fn a_run_whose_start_cannot_be_journaled_is_refused_before_any_step() {
    let sched = Scheduler::new(Arc::new(Scripted::default()), 8)
        .with_journal(Arc::new(FakeJournal::default()), "h:1".into());
    let err = sched.run(request(diamond())).await.expect_err("refused");
    assert_eq!(
        err.to_string(),
        "run not started: run journal unavailable: database is down"
    );
    assert!(matches!(err, RunError::JournalUnavailable(_)));
    let calls = sched.executor().calls.lock().expect("lock").len();
    assert_eq!(calls, 0, "no step ran");
}

/// The hole a run could fall into: step `a`'s call has returned (its effect
/// is done) but its completion is still being journaled when step `b` fails
/// the run. `a` must be taken in as completed, journaled so and undone -
/// never reported `cancelled` and left as it is.
#[tokio::test]
async fn a_step_whose_call_returned_is_undone_even_if_the_run_fails_meanwhile() {
    let text = r#"
        name = "race"
        result = "c"
        [inputs.x]
        [[steps]]
        name = "a"
        component = "a"
        [[steps]]
        name = "b"
        component = "b"
        [[steps]]
        name = "c"
        component = "c"
        wait_for = ["a", "b"]
    "#;
    let wf = Arc::new(Workflow::from_toml(text, Path::new("race.toml")).expect("valid"));
    let exec = Arc::new(Scripted {
        reversible: names(&["a"]),
        delay: [("b".to_string(), Duration::from_millis(20))]
            .into_iter()
            .collect(),
        fail_first: [("b".to_string(), (1, StepFailure::Fatal("no".into())))]
            .into_iter()
            .collect(),
        ..Default::default()
    });
    let journal = Arc::new(FakeJournal {
        starts: true,
        renews: vec![Some(true)],
        slow_completions: Some(Duration::from_millis(300)),
        ..Default::default()
    });
    let sched = Scheduler::new(Arc::clone(&exec), 4)
        .with_journal(Arc::clone(&journal) as Arc<dyn RunJournal>, "h:1".into());
    let report = sched.run(request(wf)).await.expect("ran");
    assert_eq!(report.outcome, "failed");
    assert_eq!(step_outcome(&report, "a").as_deref(), Some("succeeded"));
    assert_eq!(*exec.undos.lock().expect("lock"), ["a#1"]);
    let entries = journal.entries.lock().expect("lock");
    let of_a: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.step == "a")
        .map(|e| (e.kind.as_str(), e.outcome.as_str()))
        .collect();
    // One durable write for the completed step: its successful attempt
    // is in the completion entry, not an entry of its own.
    assert_eq!(of_a, [("completed", "succeeded"), ("undo", "undone")]);
    let completed = entries
        .iter()
        .find(|e| e.step == "a" && e.kind == "completed")
        .expect("completed");
    let attempts = &report
        .steps
        .iter()
        .find(|s| s.name == "a")
        .expect("a")
        .attempts;
    assert_eq!(completed.attempt, 1);
    assert_eq!(completed.span_id, attempts[0].span_id);
    let failed: Vec<&JournalEntry> = entries.iter().filter(|e| e.kind == "run-failed").collect();
    assert_eq!(failed.len(), 1, "the run's failure is journaled once");
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("step `b` failed"),
        "{failed:?}"
    );
}
