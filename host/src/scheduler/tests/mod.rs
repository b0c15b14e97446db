//! The scheduler's unit tests: a scripted executor (`journaled`: with a fake journal).

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

mod journaled;
mod map;

#[tokio::test]
async fn a_cancelled_run_stops_its_steps_undoes_in_reverse_and_ends_cancelled() {
    // a, then b (fast) and slow (30 s); the run is cancelled while slow runs.
    let text = r#"
        name = "cancel"
        result = "e"
        [[steps]]
        name = "a"
        component = "a"
        [[steps]]
        name = "b"
        component = "b"
        wait_for = ["a"]
        [[steps]]
        name = "slow"
        component = "slow"
        wait_for = ["a"]
        [[steps]]
        name = "e"
        component = "e"
        wait_for = ["b", "slow"]
    "#;
    let wf = Arc::new(Workflow::from_toml(text, Path::new("cancel.toml")).expect("valid"));
    let exec = Scripted {
        delay: [("slow".to_string(), Duration::from_secs(30))]
            .into_iter()
            .collect(),
        reversible: names(&["a", "b", "slow"]),
        ..Default::default()
    };
    let local = LocalRuns::default();
    let sched = Scheduler::new(Arc::new(exec), 8).with_local_runs(local.clone());
    assert!(!local.cancel("run-1", "not here yet"), "an unknown run");
    let run = {
        let sched = sched.clone();
        tokio::spawn(async move {
            let request = RunRequest {
                workflow: wf,
                input: serde_json::json!({}),
                trace: IncomingTrace::from_headers(None, None),
            };
            sched
                .run_as(request, "run-1".into(), &CancellationToken::new())
                .await
        })
    };
    // Wait until slow is running (b and a have completed by then or soon).
    for _ in 0..500 {
        let calls = sched.executor().calls.lock().expect("lock").len();
        if calls == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert!(local.cancel("run-1", "operator said stop"));
    assert!(local.cancel("run-1", "a second reason"), "idempotent");
    let report = run.await.expect("task").expect("input ok");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "slow was stopped"
    );
    assert_eq!(report.outcome, "cancelled");
    assert_eq!(
        report.error.as_deref(),
        Some("run cancelled: operator said stop"),
        "the first reason stands"
    );
    assert_eq!(step_outcome(&report, "slow").as_deref(), Some("cancelled"));
    assert_eq!(step_outcome(&report, "e").as_deref(), Some("skipped"));
    let undone: Vec<_> = report.undo.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(undone, ["b", "a"], "newest completion first");
    assert!(local.list().is_empty(), "the run left the host's list");
}
