//! Conditions and map steps: skipped steps and why, optional arguments,
//! elements in order, `max_parallel`, failure budgets, undo of elements.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// An executor for map tests: echoes the element (`item`), fails an
/// element whose item is `{"fail": ...}`, holds each call `delay`, and
/// counts calls in flight. Reversible when told; records undos by call.
#[derive(Default)]
pub(super) struct Elements {
    pub(super) delay: Duration,
    pub(super) reversible: bool,
    /// This call fails (as if its host had died there).
    pub(super) fail_call: Option<String>,
    pub(super) in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
    /// (call, idempotency key, parent span) of every attempt, in start order.
    pub(super) calls: Mutex<Vec<(String, String, String)>>,
    pub(super) undos: Mutex<Vec<String>>,
}

impl StepExecutor for Elements {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("{step}.wasm"), "00".repeat(32))
    }

    fn is_reversible(&self, _: &str) -> bool {
        self.reversible
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
        ctx: AttemptContext,
        _: String,
        output: String,
    ) -> Result<(), StepFailure> {
        assert!(
            output.contains(&ctx.step),
            "undo gets the call's own output"
        );
        self.undos.lock().expect("lock").push(ctx.step.clone());
        Ok(())
    }

    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.calls.lock().expect("lock").push((
            ctx.step.clone(),
            ctx.idempotency_key("run"),
            ctx.trace.parent_span_id.to_string(),
        ));
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.fail_call.as_ref() == Some(&ctx.step) {
            return Err(StepFailure::Fatal("the host died here".into()));
        }
        let input: Value = serde_json::from_str(&input).unwrap_or_default();
        if let Some(why) = input["item"].get("fail") {
            return Err(StepFailure::Fatal(format!("element says {why}")));
        }
        Ok(serde_json::json!({"call": ctx.step, "step": step.name, "input": input}).to_string())
    }
}

/// The calls the executor of `sched` was asked to run, in order.
pub(super) fn called(sched: &Scheduler<Elements>) -> Vec<String> {
    let calls = sched.executor().calls.lock().expect("lock");
    calls.iter().map(|c| c.0.clone()).collect()
}

pub(super) fn load(text: &str) -> Arc<Workflow> {
    Arc::new(Workflow::from_toml(text, Path::new("map.toml")).expect("valid"))
}

fn step<'r>(report: &'r RunReport, name: &str) -> &'r crate::report::StepReport {
    report
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

pub(super) fn run_with(wf: Arc<Workflow>, input: Value) -> RunRequest {
    RunRequest {
        workflow: wf,
        input,
        trace: IncomingTrace::from_headers(None, None),
    }
}

const BRANCHES: &str = r#"
    name = "branches"
    result = "done"
    [inputs.x]
    [[steps]]
    name = "policy"
    component = "p"
    args.x = { input = "x" }
    [[steps]]
    name = "notify"
    component = "n"
    when = { step = "policy", pointer = "/input/x/allowed", equals = false }
    args.policy = { step = "policy" }
    [[steps]]
    name = "after_notify"
    component = "a"
    args.sent = { step = "notify" }
    [[steps]]
    name = "done"
    component = "d"
    args.notified = { step = "notify", pointer = "/call", optional = true }
    args.policy = { step = "policy", pointer = "/input/x" }
"#;

#[tokio::test]
async fn a_false_condition_skips_the_step_and_what_needs_it_but_not_an_optional_reader() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(
            load(BRANCHES),
            serde_json::json!({"x": {"allowed": true}}),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let notify = step(&report, "notify");
    assert_eq!(notify.outcome, "skipped");
    assert_eq!(
        notify.skipped_because.as_deref(),
        Some("condition false: step `policy/input/x/allowed` equals false")
    );
    let after = step(&report, "after_notify");
    assert_eq!(after.outcome, "skipped");
    assert_eq!(
        after.skipped_because.as_deref(),
        Some("step `notify` was skipped")
    );
    assert!(notify.attempts.is_empty() && after.attempts.is_empty());
    // `done` read `notify` as optional: it ran and saw null.
    let result = report.result.expect("result");
    assert_eq!(result["input"]["notified"], Value::Null);
    assert_eq!(called(&sched), ["policy", "done"]);
    let skipped_events = report
        .events
        .iter()
        .filter(|e| e.name == "step.skipped")
        .count();
    assert_eq!(skipped_events, 2);

    // Denied: the branch runs.
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(
            load(BRANCHES),
            serde_json::json!({"x": {"allowed": false}}),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(step(&report, "notify").outcome, "succeeded");
    assert_eq!(step(&report, "after_notify").outcome, "succeeded");
    assert_eq!(
        report.result.expect("result")["input"]["notified"],
        "notify"
    );
}

pub(super) fn mapped(max_parallel: u32, tolerance: &str) -> Arc<Workflow> {
    load(&format!(
        r#"
        name = "mapped"
        result = "sum"
        [inputs.xs]
        [[steps]]
        name = "first"
        component = "f"
        args.xs = {{ input = "xs" }}
        [[steps]]
        name = "each"
        component = "e"
        args.fixed = {{ value = "same for all" }}
        [steps.map]
        over = {{ step = "first", pointer = "/input/xs" }}
        max_parallel = {max_parallel}
        {tolerance}
        [[steps]]
        name = "sum"
        component = "s"
        args.all = {{ step = "each" }}
    "#
    ))
}

#[tokio::test]
async fn a_map_runs_each_element_with_its_own_key_and_span_at_most_max_parallel_at_once() {
    let exec = Elements {
        delay: Duration::from_millis(150),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 64);
    let xs: Vec<Value> = (0..6).map(|i| serde_json::json!(format!("x{i}"))).collect();
    let report = sched
        .run(run_with(mapped(2, ""), serde_json::json!({ "xs": xs })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let each = step(&report, "each");
    let map = each.map.as_ref().expect("a map report");
    assert_eq!((map.elements, map.succeeded, map.failed), (6, 6, 0));
    // The output is the results in input order, each with its element.
    let result = report.result.clone().expect("result");
    let all = &result["input"]["all"];
    for (i, x) in xs.iter().enumerate() {
        assert_eq!(all[i]["input"]["item"], *x, "{all}");
        assert_eq!(all[i]["input"]["fixed"], "same for all");
        assert_eq!(all[i]["call"], format!("each.{i}"));
    }
    let exec = sched.executor();
    assert_eq!(exec.max_in_flight.load(Ordering::SeqCst), 2);
    let calls = exec.calls.lock().expect("lock").clone();
    let elements: Vec<_> = calls.iter().filter(|c| c.0.starts_with("each.")).collect();
    assert_eq!(elements.len(), 6);
    let keys: HashSet<&String> = elements.iter().map(|c| &c.1).collect();
    assert_eq!(keys.len(), 6, "each element has its own key");
    assert!(
        elements
            .iter()
            .all(|c| c.1.starts_with(&format!("{}.{}.", report.run_id, c.0))),
        "{elements:?}"
    );
    assert!(
        elements.iter().all(|c| c.2 == map.span_id),
        "every element attempt is a child of the map's span"
    );
    assert_eq!(map.shown.len(), 6);
    assert!(map.shown.iter().all(|e| e.attempts.len() == 1));
    assert!(
        map.shown
            .iter()
            .all(|e| e.attempts[0].parent_span_id.as_deref() == Some(map.span_id.as_str())),
        "the report says whose child each element attempt is"
    );
    // Exported over OTLP: the map's span under the run's, the elements' under it.
    let spans = crate::otel::spans(&report, opentelemetry::trace::SpanKind::Server, false);
    let map_span = spans
        .iter()
        .find(|s| s.name == "map each")
        .expect("a span for the map");
    assert_eq!(map_span.span_context.span_id().to_string(), map.span_id);
    assert_eq!(map_span.parent_span_id.to_string(), report.span_id);
    let children = spans
        .iter()
        .filter(|s| s.parent_span_id == map_span.span_context.span_id())
        .count();
    assert_eq!(children, 6);
}

#[tokio::test]
async fn a_failed_element_fails_the_map_and_completed_elements_are_undone_newest_first() {
    let exec = Elements {
        reversible: true,
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let xs = serde_json::json!([1, 2, 3, {"fail": "no"}, 5]);
    let report = sched
        .run(run_with(mapped(1, ""), serde_json::json!({ "xs": xs })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    assert_eq!(
        report.error.as_deref(),
        Some(
            "step `each` failed: element 3 failed: fatal: element says \"no\" (1 failed, 0 tolerated)"
        )
    );
    let map = step(&report, "each").map.clone().expect("map");
    assert_eq!((map.succeeded, map.failed, map.not_started), (3, 1, 1));
    let undos = sched.executor().undos.lock().expect("lock").clone();
    assert_eq!(undos, ["each.2", "each.1", "each.0", "first"]);
    assert_eq!(step(&report, "sum").outcome, "skipped");
}

#[tokio::test]
async fn within_its_failure_budget_a_map_succeeds_with_a_partial_result() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let xs = serde_json::json!([1, {"fail": "no"}, 3]);
    let report = sched
        .run(run_with(
            mapped(3, "tolerated_failure_count = 1"),
            serde_json::json!({ "xs": xs }),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let result = report.result.clone().expect("result");
    let all = &result["input"]["all"];
    assert_eq!(all[0]["ok"], true);
    assert_eq!(all[0]["output"]["input"]["item"], 1);
    assert_eq!(
        all[1],
        serde_json::json!({"ok": false, "error": "fatal: element says \"no\""})
    );
    assert_eq!(all[2]["output"]["input"]["item"], 3);
    let map = step(&report, "each").map.clone().expect("map");
    assert_eq!((map.failed, map.tolerated_failures), (1, 1));
    assert_eq!(map.shown[1].outcome, "failed");

    // Two failures are past a budget of one.
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let xs = serde_json::json!([{"fail": 1}, {"fail": 2}, 3]);
    let report = sched
        .run(run_with(
            mapped(1, "tolerated_failure_percent = 50"),
            serde_json::json!({ "xs": xs }),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    assert!(
        report.error.as_deref().is_some_and(
            |e| e.contains("element 1 failed") && e.contains("(2 failed, 1 tolerated)")
        ),
        "{:?}",
        report.error
    );
}

#[tokio::test]
async fn a_map_over_something_else_than_a_bounded_list_fails_with_why() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(
            mapped(1, ""),
            serde_json::json!({ "xs": {"not": "a list"} }),
        ))
        .await
        .expect("input ok");
    assert_eq!(
        report.error.as_deref(),
        Some("step `each`: map.over: expected an array, got an object")
    );
    let long: Vec<u32> = (0..11).collect();
    let report = sched
        .run(run_with(
            mapped(1, "max_elements = 10"),
            serde_json::json!({ "xs": long }),
        ))
        .await
        .expect("input ok");
    assert_eq!(
        report.error.as_deref(),
        Some(
            "step `each`: map.over: 11 elements, more than step `each` allows (`map.max_elements` = 10)"
        )
    );
    // An empty list maps to an empty output.
    let report = sched
        .run(run_with(mapped(1, ""), serde_json::json!({ "xs": [] })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(
        report.result.expect("result")["input"]["all"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn a_large_map_keeps_its_report_bounded() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 64);
    let xs: Vec<u32> = (0..10_000).collect();
    let report = sched
        .run(run_with(
            mapped(50, "tolerated_failure_count = 0"),
            serde_json::json!({ "xs": xs }),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let map = step(&report, "each").map.clone().expect("map");
    assert_eq!(map.succeeded, 10_000);
    assert_eq!(map.shown.len(), crate::scheduler::MAX_REPORTED_ELEMENTS);
    assert_eq!(
        map.not_shown,
        10_000 - crate::scheduler::MAX_REPORTED_ELEMENTS
    );
    assert!(
        report.events.len() < 10,
        "one event for the map, not one per element: {}",
        report.events.len()
    );
    // Beside its result (the 10,000 outputs), the report holds 100
    // elements' detail: it stays small whatever the map's length.
    let mut slim = report.clone();
    slim.result = None;
    let size = serde_json::to_string(&slim).expect("json").len();
    assert!(size < 64 << 10, "report without its result: {size} bytes");
}

#[tokio::test]
async fn arguments_can_pick_parts_of_each_element() {
    let wf = load(
        r#"
        name = "parts"
        result = "each"
        [inputs.people]
        [[steps]]
        name = "each"
        component = "e"
        args.who = { element = "/name" }
        args.whole = { element = "" }
        [steps.map]
        over = { input = "people" }
        tolerated_failure_count = 1
    "#,
    );
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let people = serde_json::json!([{"name": "ada", "age": 36}, {"age": 1}]);
    let report = sched
        .run(run_with(wf, serde_json::json!({ "people": people })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let all = report.result.expect("result");
    assert_eq!(
        all[0]["output"]["input"],
        serde_json::json!({"who": "ada", "whole": {"name": "ada", "age": 36}}),
        "no `item` argument: the arguments pick what they need"
    );
    assert_eq!(
        all[1],
        serde_json::json!({"ok": false, "error": "argument `who`: pointer `/name` matches nothing in element 1"})
    );
}

#[tokio::test]
async fn a_map_whose_results_outgrow_the_bound_fails() {
    // 70 elements of 1 MiB each: past the 64 MiB a map's output may hold.
    let big = "x".repeat(1 << 20);
    let xs: Vec<&str> = vec![big.as_str(); 70];
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(mapped(4, ""), serde_json::json!({ "xs": xs })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    let error = report.error.expect("error");
    assert!(
        error
            .starts_with("step `each` failed: the elements' results hold more than 67108864 bytes"),
        "{error}"
    );
}

const COMPOSED: &str = r#"
    name = "outer"
    result = "after"
    [inputs.x]
    [inputs.go]
    default = true
    [[steps]]
    name = "first"
    component = "f"
    args.x = { input = "x" }
    [[steps]]
    name = "auth"
    compose = "inner"
    when = { input = "go", equals = true }
    args.who = { step = "first", pointer = "/input/x" }
    [[steps]]
    name = "after"
    component = "a"
    args.token = { step = "auth", pointer = "/input", optional = true }

    [compose_pinned]
    inner = '''
    name = "inner"
    result = "sign"
    [inputs.who]
    [inputs.mode]
    default = "fast"
    [[steps]]
    name = "sign"
    component = "s"
    when = { input = "mode", equals = "fast" }
    args.who = { input = "who" }
    args.mode = { input = "mode" }
    '''
"#;

#[tokio::test]
async fn a_composed_workflow_runs_as_one_step_under_its_span_and_is_undone_with_the_run() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(load(COMPOSED), serde_json::json!({ "x": "ada" })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let calls = called(&sched);
    assert_eq!(calls, ["first", "auth/sign", "after"]);
    // The sub-workflow's inputs read the compose step's arguments (and
    // their defaults); its result is the compose step's output.
    let result = report.result.clone().expect("result");
    assert_eq!(
        result["input"]["token"],
        serde_json::json!({"who": "ada", "mode": "fast"})
    );
    let auth = step(&report, "auth");
    let compose = auth.compose.as_ref().expect("a compose report");
    assert_eq!(compose.workflow, "inner");
    assert_eq!(compose.parent_span_id, report.span_id);
    let sign = step(&report, "auth/sign");
    assert_eq!(
        sign.attempts[0].parent_span_id.as_deref(),
        Some(compose.span_id.as_str()),
        "the sub-workflow's steps are children of the compose step's span"
    );
    assert!(
        report.steps.iter().all(|s| !s.name.ends_with('/')),
        "the start of a composed workflow is not a step of the report"
    );
    let spans = crate::otel::spans(&report, opentelemetry::trace::SpanKind::Server, false);
    assert!(spans.iter().any(
        |s| s.name == "compose auth" && s.span_context.span_id().to_string() == compose.span_id
    ));

    // A failure after it undoes its steps with the rest, newest first.
    let exec = Elements {
        reversible: true,
        fail_call: Some("after".into()),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let report = sched
        .run(run_with(load(COMPOSED), serde_json::json!({ "x": "ada" })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    let undos = sched.executor().undos.lock().expect("lock").clone();
    assert_eq!(undos, ["auth/sign", "first"]);
}

#[tokio::test]
async fn a_compose_step_whose_condition_is_false_skips_its_whole_workflow() {
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(
            load(COMPOSED),
            serde_json::json!({ "x": "ada", "go": false }),
        ))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    assert_eq!(
        step(&report, "auth").skipped_because.as_deref(),
        Some("condition false: input `go` equals true")
    );
    assert_eq!(
        step(&report, "auth/sign").skipped_because.as_deref(),
        Some("step `auth` was skipped")
    );
    // `after` read the compose step as optional: it ran with null.
    assert_eq!(
        report.result.expect("result")["input"]["token"],
        Value::Null
    );
    let calls = sched.executor().calls.lock().expect("lock").len();
    assert_eq!(calls, 2, "first and after");
}

#[tokio::test]
async fn a_failure_inside_a_composed_workflow_undoes_its_steps_then_the_runs() {
    let text = COMPOSED.replace(
        "    args.mode = { input = \"mode\" }\n    '''",
        "    args.mode = { input = \"mode\" }\n    [[steps]]\n    name = \"check\"\n    component = \"c\"\n    args.signed = { step = \"sign\" }\n    '''",
    );
    let exec = Elements {
        reversible: true,
        fail_call: Some("auth/check".into()),
        ..Default::default()
    };
    let sched = Scheduler::new(Arc::new(exec), 8);
    let report = sched
        .run(run_with(load(&text), serde_json::json!({ "x": "ada" })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "failed");
    assert_eq!(
        report.error.as_deref(),
        Some("step `auth/check` failed: fatal: the host died here")
    );
    let undos = sched.executor().undos.lock().expect("lock").clone();
    assert_eq!(
        undos,
        ["auth/sign", "first"],
        "its steps first, then the run's"
    );
    assert_eq!(step(&report, "auth").outcome, "skipped");
    assert_eq!(step(&report, "after").outcome, "skipped");
}

#[tokio::test]
async fn a_map_inside_a_composed_workflow_is_a_child_of_its_compose_span() {
    let text = r#"
        name = "outer"
        result = "all"
        [inputs.xs]
        [[steps]]
        name = "all"
        compose = "inner"
        args.xs = { input = "xs" }

        [compose_pinned]
        inner = '''
        name = "inner"
        result = "each"
        [inputs.xs]
        [[steps]]
        name = "each"
        component = "e"
        [steps.map]
        over = { input = "xs" }
        '''
    "#;
    let sched = Scheduler::new(Arc::new(Elements::default()), 8);
    let report = sched
        .run(run_with(load(text), serde_json::json!({ "xs": [1, 2] })))
        .await
        .expect("input ok");
    assert_eq!(report.outcome, "succeeded", "{:?}", report.error);
    let compose = step(&report, "all").compose.clone().expect("compose");
    let map = step(&report, "all/each").map.clone().expect("map");
    assert_eq!(map.parent_span_id, compose.span_id);
    assert_eq!(
        report.result.expect("result")[1]["input"]["item"],
        serde_json::json!(2)
    );
}
