//! The scheduler with a journal: leases, the fence, journaled step ends.

use super::*;

/// A journal for the lease tests: `start` fails unless `starts`; the
/// n-th lease renewed (in a batch or alone) answers `renews[n]` (the last one from then on;
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
    /// The last run started.
    started: Mutex<Option<RunStart>>,
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
            *self.started.lock().expect("lock") = Some(start.clone());
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
    async fn renew_leases(
        &self,
        fences: &[crate::journal::RunFence],
        _: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        self.renewals.lock().expect("lock").push(fences.len());
        let mut renewed = Vec::new();
        for _ in fences {
            let n = self
                .heartbeats
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = self.renews.get(n).or(self.renews.last()).copied();
            renewed.push(answer.flatten().map_or_else(down, Ok)?);
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
    async fn request_cancel(
        &self,
        _: &str,
        _: &str,
    ) -> Result<crate::journal::CancelAsked, JournalError> {
        down()
    }
    async fn cancel_requests(&self, _: &[String]) -> Result<Vec<(String, String)>, JournalError> {
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

/// The runtime the runs execute on is busy (here its one thread is held,
/// as a long queue of guest code holds workers on a loaded machine) past
/// the lease fence: the lease is still renewed on time, on its own thread,
/// and the run is not stopped.
#[test]
fn a_lease_is_renewed_while_the_runs_runtime_is_busy() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let journal = FakeJournal::renewing(&[Some(true)]);
    let book = super::super::lease::LeaseBook::new(Arc::clone(&journal) as Arc<dyn RunJournal>);
    let keeper = runtime.block_on(async {
        let keeper = book.keep(
            crate::journal::RunFence::first("run-busy", "h:1"),
            CancellationToken::new(),
        );
        // Holds the runtime's only thread: nothing else of it runs.
        std::thread::sleep(LEASE_FENCE + Duration::from_secs(1));
        keeper
    });
    assert!(!keeper.lost.is_cancelled(), "the run was stopped");
    let renewals = journal.renewals.lock().expect("lock").clone();
    // At least the one due 2 s in (the next, 4 s in, may come late on a
    // loaded machine; the fence would fire at 6 s without the first).
    assert!(!renewals.is_empty(), "no renewal while busy");
}

#[tokio::test]
async fn a_run_resumed_inside_a_map_reuses_the_elements_done_and_runs_the_rest() {
    use super::map::{Elements, mapped, run_with};
    let journal = FakeJournal::renewing(&[Some(true)]);
    let first_host = Elements {
        fail_call: Some("each.3".into()),
        ..Default::default()
    };
    let sched =
        Scheduler::new(Arc::new(first_host), 8).with_journal(journal.clone(), "host-a:1".into());
    let wf = mapped(1, "");
    let xs: Vec<Value> = (0..6).map(|i| serde_json::json!(format!("x{i}"))).collect();
    let report = sched
        .run(run_with(Arc::clone(&wf), serde_json::json!({ "xs": xs })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    let start = journal
        .started
        .lock()
        .expect("lock")
        .clone()
        .expect("started");
    let entries = journal.entries.lock().expect("lock").clone();
    // The host died as element 3 ran: its journal up to there.
    let until_crash: Vec<JournalEntry> = entries
        .iter()
        .take_while(|e| e.kind != "attempt")
        .cloned()
        .collect();
    let done: Vec<&str> = until_crash
        .iter()
        .filter(|e| e.kind == "completed")
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(done, ["first", "each.0", "each.1", "each.2"]);
    let abandoned = |entries: Vec<JournalEntry>| crate::journal::AbandonedRun {
        start: start.clone(),
        previous_owner: "host-a:1".into(),
        fence: crate::journal::RunFence {
            run_id: start.run_id.clone(),
            owner: "host-b:2".into(),
            epoch: 2,
        },
        started_at_ms: 0,
        entries,
        woken: false,
        cancel_reason: None,
        unsuspend: None,
    };

    let resume = |entries| {
        let wf = Arc::clone(&wf);
        let run = abandoned(entries);
        async move {
            let sched = Scheduler::new(Arc::new(Elements::default()), 8)
                .with_journal(FakeJournal::renewing(&[Some(true)]), "host-b:2".into());
            let report = sched
                .resume(wf, &run, &CancellationToken::new())
                .await
                .expect("resumed");
            (report, super::map::called(&sched))
        }
    };
    let (report, calls) = resume(until_crash).await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(calls, ["each.3", "each.4", "each.5", "sum"]);
    let map = report
        .steps
        .iter()
        .find(|s| s.name == "each")
        .and_then(|s| s.map.clone())
        .expect("map");
    assert_eq!((map.reused, map.succeeded), (3, 3));
    let result = report.result.expect("result");
    let all = result["input"]["all"].as_array().expect("array").clone();
    let items: Vec<&Value> = all.iter().map(|r| &r["input"]["item"]).collect();
    assert_eq!(items, xs.iter().collect::<Vec<_>>(), "in input order");
    // The first host's output for a reused element, its key for the others.
    assert_eq!(all[0]["call"], "each.0");

    // Died after the map had ended: nothing of it runs again.
    let mut after_map = entries.clone();
    after_map.truncate(
        entries
            .iter()
            .position(|e| e.kind == "attempt")
            .unwrap_or(0),
    );
    after_map.push(JournalEntry {
        kind: "completed".into(),
        step: "each".into(),
        outcome: "mapped".into(),
        output: Some(serde_json::json!(["whole"]).to_string()),
        ..Default::default()
    });
    let (report, calls) = resume(after_map).await;
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(calls, ["sum"]);
    assert_eq!(
        report.result.expect("result")["input"]["all"],
        serde_json::json!(["whole"])
    );
}
