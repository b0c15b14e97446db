//! The run report and the recorder that fills it.
//!
//! Owns: what a run tells its caller afterwards (steps, attempts, spans,
//! events, outbound calls). The scheduler fills in steps and attempts; the
//! capabilities append events and HTTP calls through a [`RunRecorder`].
//! No wasmtime, no IO.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything known about one finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    /// The run span (every step attempt is its child).
    pub span_id: String,
    /// The caller's span when the run continued an incoming trace.
    pub parent_span_id: Option<String>,
    /// `traceparent` of the run span, for the caller to continue.
    pub traceparent: String,
    pub tracestate: String,
    /// Whether the run continued an incoming `traceparent`.
    pub continued_trace: bool,
    pub started_at_ms: u64,
    pub duration_ms: f64,
    /// `succeeded`, `failed`, `cancelled`, `aborted` (a run whose host
    /// lost it, or that recovery undid after its host died; see `braid
    /// recover`), or `waiting` (parked; not a final report).
    pub outcome: String,
    /// True when a step's compensation substituted its output (`continue-with`).
    pub degraded: bool,
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    /// The run's input as JSON text, cut past [`MAX_SHOWN_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// In the order the steps started.
    pub steps: Vec<StepReport>,
    /// Guest telemetry events, guest log lines and host events, in order.
    pub events: Vec<EventRecord>,
    /// Every outbound HTTP request a step made (or tried to make).
    pub http_calls: Vec<HttpCallRecord>,
    /// After a failure: each completed reversible step's undo, in the order
    /// they ran (reverse completion order). Failed undos stay listed.
    pub undo: Vec<UndoReport>,
    /// Claims the host released for the failed run after its undo.
    pub released_claims: Vec<String>,
    /// What the host did not keep for this run, past its budgets.
    pub dropped: Dropped,
    /// Set when this host took the run over from a host that died and
    /// carried it on (`on_crash = "resume"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed: Option<Resumed>,
    /// Set when the run restarts an ended run from one of its steps
    /// (`POST /v1/runs/ID/restart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_from: Option<RestartedFrom>,
}

/// The run a restarted run restarts, and what it took over from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RestartedFrom {
    /// The run restarted.
    pub run_id: String,
    /// The step the restart ran again from (it, and every step after it).
    pub step: String,
    /// The old run's steps whose journaled outputs were used (not called
    /// again), in the order they completed.
    pub reused_steps: Vec<String>,
    /// The old run's trace: the restart is a new trace of its own.
    pub trace_id: String,
}

/// How a resumed run was taken over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Resumed {
    /// The host that started the run and died (`hostname:pid`).
    pub previous_owner: String,
    /// The host that carried it on.
    pub owner: String,
    /// Steps the journal recorded as completed: not run again, their
    /// journaled outputs used (in completion order).
    pub reused_steps: Vec<String>,
    /// If the run had already failed: its error (the new host only undid).
    pub failed_before: Option<String>,
    /// A suspended run's end of suspension: `resume`, `abort` or
    /// `deadline` (none: not suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsuspended: Option<String>,
    /// Steps whose component version differs from the one the run started
    /// with (a run resumed after a hot swap runs today's versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub component_changes: Vec<ComponentChange>,
}

/// A step of a resumed run that runs another component version than the
/// run started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ComponentChange {
    pub step: String,
    pub from_sha256: String,
    pub to_sha256: String,
}

/// What the host did not keep or print for a run: records past a step
/// attempt's telemetry budget or the run's report ceiling, and guest lines
/// not written to the host's log. docs/security.md lists the bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Dropped {
    /// Log lines, events and stdout/stderr lines not kept in the report.
    pub telemetry_records: u64,
    /// Their bytes.
    pub telemetry_bytes: u64,
    /// Outbound calls not listed in the report (they were still made or refused).
    pub http_calls: u64,
    /// Guest lines (logs, stdout/stderr, refused calls) not written to the host's log.
    pub host_log_lines: u64,
}

impl Dropped {
    pub fn is_empty(&self) -> bool {
        *self == Dropped::default()
    }

    pub fn add(&mut self, other: Dropped) {
        self.telemetry_records += other.telemetry_records;
        self.telemetry_bytes += other.telemetry_bytes;
        self.http_calls += other.http_calls;
        self.host_log_lines += other.host_log_lines;
    }
}

/// Longest error text the host keeps (a step's, an undo's, a policy's, a
/// trap's): past it the text is cut, saying how many bytes were cut.
pub const MAX_ERROR_BYTES: usize = 4 * 1024;

/// Longest input or output (JSON text) a report shows of a run or a step;
/// past it the text is cut like an error's.
pub const MAX_SHOWN_BYTES: usize = 4 * 1024;

/// `text`, cut to at most `max` bytes (on a character boundary) with a note
/// of how many bytes were cut.
pub fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &text[..end], text.len() - end)
}

/// Most of a guest's own records (logs, events, stdout/stderr lines) one
/// run's report keeps, and their bytes; past either, they are counted in
/// [`RunReport::dropped`] instead (see [`RunRecorder::event`]).
pub const MAX_RUN_EVENTS: usize = 10_000;
pub const MAX_RUN_EVENT_BYTES: usize = 1 << 20;
/// Most outbound calls one run's report lists.
pub const MAX_RUN_HTTP_CALLS: usize = 2_000;
/// Longest URL kept in a call's record (or an event's metadata).
pub const MAX_URL_BYTES: usize = 2 * 1024;

/// One `compensate` call.
#[derive(Debug, Clone, Serialize)]
pub struct CompensationReport {
    pub span_id: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    /// The failure being compensated.
    pub failure: String,
    /// `retry`, `continue-with`, `give-up`, or `error` (compensate itself failed).
    pub decision: String,
    pub error: Option<String>,
}

/// The undo of one completed step.
#[derive(Debug, Clone, Serialize)]
pub struct UndoReport {
    pub step: String,
    /// `undone` or `failed`.
    pub outcome: String,
    pub attempts: Vec<AttemptReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub component: String,
    pub component_sha256: String,
    /// `succeeded`, `compensated` (continued with a substitute output),
    /// `failed`, `cancelled` (stopped because another step failed) or
    /// `skipped` (not run: see `skipped_because`).
    pub outcome: String,
    /// Why a skipped step did not run: its condition was false (`condition
    /// false: ...`), a step it needs was skipped, or the run had failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped_because: Option<String>,
    /// A map step's elements (absent for other steps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map: Option<MapReport>,
    /// A compose step's workflow; its steps are reported as `STEP/SUB_STEP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<ComposeReport>,
    /// A `sleep` or `signal` step: what it waits for, until when, and the
    /// signal that ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<WaitReport>,
    /// The step's input and output as JSON text, each cut past
    /// [`MAX_SHOWN_BYTES`]; a wait token in its input is hidden.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Milliseconds from the run's start.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Steps whose execution overlapped this one's.
    pub parallel_with: Vec<String>,
    pub attempts: Vec<AttemptReport>,
    pub compensations: Vec<CompensationReport>,
    pub error: Option<String>,
}

/// What a wait step waits for (`sleep` or `signal`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WaitReport {
    /// `sleep` or `signal`.
    pub kind: String,
    /// The wait's span (a child of the run span), derived from the run's
    /// span and the step like a compose step's.
    #[serde(default)]
    pub span_id: String,
    /// The signal's name (a signal step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// When the sleep ends, or the signal times out (ms since the epoch).
    pub until_ms: u64,
    /// The signal that came: who sent it (`traceparent` of its request,
    /// linking its trace to the run's) and when.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal_at_ms: Option<u64>,
}

/// How a map step's elements ended: counted, and the first ones (by index,
/// then failed ones) one by one, at most `MAX_REPORTED_ELEMENTS` each.
#[derive(Debug, Clone, Serialize)]
pub struct MapReport {
    /// The map's span: every element attempt's parent.
    pub span_id: String,
    /// The map's own parent: the run's span, or its compose step's.
    pub parent_span_id: String,
    pub elements: usize,
    pub succeeded: usize,
    pub compensated: usize,
    pub failed: usize,
    pub cancelled: usize,
    /// Completed before the run was resumed (not run again).
    pub reused: usize,
    pub not_started: usize,
    pub tolerated_failures: usize,
    pub max_parallel: u32,
    pub shown: Vec<ElementReport>,
    /// Elements counted above but not in `shown`.
    pub not_shown: usize,
}

/// A compose step: the workflow it runs, and its span (every step of that
/// workflow is its child).
#[derive(Debug, Clone, Serialize)]
pub struct ComposeReport {
    pub workflow: String,
    pub span_id: String,
    /// The span of the compose step around this one, or the run's.
    pub parent_span_id: String,
}

/// One element of a map step.
#[derive(Debug, Clone, Serialize)]
pub struct ElementReport {
    pub index: usize,
    /// `succeeded`, `compensated`, `failed`, `cancelled`, `reused`,
    /// `running` or `not-started`.
    pub outcome: String,
    pub error: Option<String>,
    pub attempts: Vec<AttemptReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub span_id: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    /// How long the attempt waited for a place to run (the workflow's
    /// `--max-concurrency` attempts in flight) before `start_ms`.
    pub queued_ms: f64,
    /// `succeeded`, `retryable`, `fatal`, `timeout`, `trap`, `invalid-output`,
    /// `host-error`, or `cancelled` (still running when the run failed).
    pub outcome: String,
    pub error: Option<String>,
    /// The span the attempt is a child of when it is not the run's: a map
    /// element's attempt is its map step's child.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

/// A telemetry event or log line, tagged by the host with who sent it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    /// `event` (guest telemetry event), `log` (guest log line or stdout/stderr)
    /// or `host` (the host's own, e.g. a step outcome or a refused call).
    pub kind: String,
    pub name: String,
    pub level: String,
    pub message: String,
    pub trace_id: String,
    pub span_id: String,
    pub step: String,
    pub at_ms: f64,
    pub measurements: BTreeMap<String, f64>,
    pub metadata: BTreeMap<String, String>,
}

impl EventRecord {
    /// Bytes this event takes in a report, roughly: its texts and a fixed
    /// share for its ids and numbers.
    pub fn size(&self) -> usize {
        const FIXED: usize = 160;
        FIXED
            + self.kind.len()
            + self.name.len()
            + self.level.len()
            + self.message.len()
            + self.step.len()
            + self
                .measurements
                .keys()
                .map(|k| k.len() + 24)
                .sum::<usize>()
            + self
                .metadata
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpCallRecord {
    pub step: String,
    /// The step attempt that made the request.
    pub attempt_span_id: String,
    /// The request's own span (the `parent-id` of the `traceparent` sent).
    pub span_id: String,
    pub method: String,
    pub url: String,
    /// The `traceparent` the host sent, or None when the request was denied.
    pub traceparent: Option<String>,
    /// The idempotency key the host sent (steps with `idempotency_key = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// The run a step attempt belongs to, as a live exporter needs it.
#[derive(Debug, Clone)]
pub struct RunMeta {
    pub run_id: String,
    pub workflow: String,
    /// `traceparent` of the run span (its trace, flags and span id).
    pub traceparent: String,
    pub tracestate: String,
    /// When the run started (Unix ms); attempts' `start_ms` count from it.
    pub started_at_ms: u64,
}

/// A step attempt that has just ended, with what it did under its span:
/// its outbound calls and its coordination calls (their `claim.*` events).
#[derive(Debug, Clone)]
pub struct AttemptEnded {
    pub step: String,
    pub component: String,
    pub component_sha256: String,
    pub attempt: AttemptReport,
    pub http_calls: Vec<HttpCallRecord>,
    pub claims: Vec<EventRecord>,
}

/// Told of every step attempt as it starts and ends: the OTLP exporter,
/// which sends an attempt's span when it ends rather than when its run
/// ends, and `braid serve`'s runs in flight. Must not block.
pub trait AttemptSink: Send + Sync {
    /// Attempt `attempt` (from 1) of `step` has begun running.
    fn attempt_started(&self, _run: &RunMeta, _step: &str, _attempt: u32) {}
    /// Whether [`AttemptSink::attempt_ended`] needs the attempt's outbound
    /// calls and claims (finding them scans the run's records); without,
    /// they come empty.
    fn wants_calls_and_claims(&self) -> bool {
        true
    }
    fn attempt_ended(&self, run: &RunMeta, ended: AttemptEnded);
}

/// Collects a run's events and outbound calls while it executes. Cheap to
/// clone; every step attempt of the run shares one.
#[derive(Clone)]
pub struct RunRecorder {
    started: Instant,
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    events: Vec<EventRecord>,
    /// Bytes of `events`, as [`EventRecord::size`] counts them.
    event_bytes: usize,
    http_calls: Vec<HttpCallRecord>,
    steps: BTreeMap<String, StepTimeline>,
    dropped: Dropped,
}

/// What happened to one step, as it happens (so a cancelled step keeps its history).
#[derive(Default, Clone)]
pub struct StepTimeline {
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    /// Attempts; `None` duration while one is still running.
    pub attempts: Vec<(AttemptReport, bool)>,
    pub compensations: Vec<CompensationReport>,
}

impl Default for RunRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl RunRecorder {
    pub fn new() -> Self {
        RunRecorder {
            started: Instant::now(),
            inner: Arc::new(Mutex::new(Recorded::default())),
        }
    }

    /// Milliseconds since the run started.
    pub fn offset_ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }

    pub fn now_ms(&self) -> f64 {
        self.offset_ms(Instant::now())
    }

    /// Keeps `event`. A guest's own records (`log`, `event`) past the run's
    /// ceiling ([`MAX_RUN_EVENTS`], [`MAX_RUN_EVENT_BYTES`]) are counted as
    /// dropped instead; the host's (`host`: step outcomes, claims, refusals,
    /// undo) are always kept, being bounded by the step budgets that cause them.
    pub fn event(&self, mut event: EventRecord) {
        event.at_ms = self.now_ms();
        let size = event.size();
        if let Ok(mut r) = self.inner.lock() {
            let full =
                r.events.len() >= MAX_RUN_EVENTS || r.event_bytes + size > MAX_RUN_EVENT_BYTES;
            if full && event.kind != "host" {
                r.dropped.telemetry_records += 1;
                r.dropped.telemetry_bytes += size as u64;
                return;
            }
            r.event_bytes += size;
            r.events.push(event);
        }
    }

    /// Records an outbound call as it is sent; returns its index for
    /// `http_call_done` (`usize::MAX`, which matches nothing, once
    /// [`MAX_RUN_HTTP_CALLS`] are listed: then the call is only counted).
    pub fn http_call(&self, mut call: HttpCallRecord) -> usize {
        if call.url.len() > MAX_URL_BYTES {
            call.url = bounded(std::mem::take(&mut call.url), MAX_URL_BYTES);
        }
        match self.inner.lock() {
            Ok(mut r) if r.http_calls.len() >= MAX_RUN_HTTP_CALLS => {
                r.dropped.http_calls += 1;
                usize::MAX
            }
            Ok(mut r) => {
                r.http_calls.push(call);
                r.http_calls.len() - 1
            }
            Err(_) => usize::MAX,
        }
    }

    /// Counts what a step attempt's budget did not keep.
    pub fn dropped(&self, dropped: Dropped) {
        if let Ok(mut r) = self.inner.lock() {
            r.dropped.add(dropped);
        }
    }

    /// Completes a call recorded by `http_call`.
    pub fn http_call_done(
        &self,
        index: usize,
        status: Option<u16>,
        error: Option<String>,
        duration_ms: f64,
    ) {
        if let Ok(mut r) = self.inner.lock()
            && let Some(call) = r.http_calls.get_mut(index)
        {
            call.status = status;
            call.error = error;
            call.duration_ms = duration_ms;
        }
    }

    fn with_step(&self, step: &str, f: impl FnOnce(&mut StepTimeline)) {
        if let Ok(mut r) = self.inner.lock() {
            f(r.steps.entry(step.to_string()).or_default());
        }
    }

    pub fn step_started(&self, step: &str, at: Instant) {
        self.with_step(step, |t| t.started = Some(at));
    }

    pub fn step_finished(&self, step: &str, at: Instant) {
        self.with_step(step, |t| t.finished = Some(at));
    }

    /// Records an attempt that has started; returns its index for `attempt_finished`.
    pub fn attempt_started(
        &self,
        step: &str,
        attempt: u32,
        (span_id, parent_span_id): (String, Option<String>),
        at: Instant,
        queued: Duration,
    ) -> usize {
        let start_ms = self.offset_ms(at);
        let queued_ms = queued.as_secs_f64() * 1000.0;
        let mut index = 0;
        self.with_step(step, |t| {
            index = t.attempts.len();
            t.attempts.push((
                AttemptReport {
                    attempt,
                    span_id,
                    start_ms,
                    duration_ms: 0.0,
                    queued_ms,
                    outcome: "cancelled".into(),
                    error: None,
                    parent_span_id,
                },
                false,
            ));
        });
        index
    }

    pub fn attempt_finished(&self, step: &str, index: usize, outcome: &str, error: Option<String>) {
        let now = self.now_ms();
        self.with_step(step, |t| {
            if let Some((a, done)) = t.attempts.get_mut(index) {
                a.duration_ms = now - a.start_ms;
                a.outcome = outcome.to_string();
                a.error = error;
                *done = true;
            }
        });
    }

    pub fn compensation(&self, step: &str, report: CompensationReport) {
        self.with_step(step, |t| t.compensations.push(report));
    }

    /// The number and span id of a step's attempt that succeeded, if one did.
    pub fn succeeded_attempt(&self, step: &str) -> Option<(u32, String)> {
        let r = self.inner.lock().ok()?;
        r.steps
            .get(step)?
            .attempts
            .iter()
            .find(|(a, _)| a.outcome == "succeeded")
            .map(|(a, _)| (a.attempt, a.span_id.clone()))
    }

    /// A step's timeline so far (attempts still running read as `cancelled`).
    pub fn timeline(&self, step: &str) -> StepTimeline {
        self.inner
            .lock()
            .ok()
            .and_then(|r| r.steps.get(step).cloned())
            .unwrap_or_default()
    }

    /// Attempt `index` of `step`, once ended, with (if
    /// `with_calls_and_claims`) the outbound calls and `claim.*` events
    /// recorded under its span (copies: the run's report still gets them all).
    pub fn ended_attempt(
        &self,
        step: &str,
        index: usize,
        with_calls_and_claims: bool,
    ) -> Option<(AttemptReport, Vec<HttpCallRecord>, Vec<EventRecord>)> {
        let r = self.inner.lock().ok()?;
        let (attempt, done) = r.steps.get(step)?.attempts.get(index)?;
        if !done {
            return None;
        }
        if !with_calls_and_claims {
            return Some((attempt.clone(), Vec::new(), Vec::new()));
        }
        let calls = r
            .http_calls
            .iter()
            .filter(|c| c.attempt_span_id == attempt.span_id)
            .cloned()
            .collect();
        let events = r
            .events
            .iter()
            .filter(|e| e.span_id == attempt.span_id && e.name.starts_with("claim."))
            .cloned()
            .collect();
        Some((attempt.clone(), calls, events))
    }

    /// Takes what was recorded (events and calls, in order).
    /// The run's events, outbound calls and what was dropped, for its report.
    pub fn take(&self) -> (Vec<EventRecord>, Vec<HttpCallRecord>, Dropped) {
        match self.inner.lock() {
            Ok(mut r) => (
                std::mem::take(&mut r.events),
                std::mem::take(&mut r.http_calls),
                std::mem::take(&mut r.dropped),
            ),
            Err(_) => (Vec::new(), Vec::new(), Dropped::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(attempt_span_id: &str) -> HttpCallRecord {
        HttpCallRecord {
            step: "fetch".into(),
            attempt_span_id: attempt_span_id.into(),
            span_id: format!("call-of-{attempt_span_id}"),
            method: "GET".into(),
            url: "http://api.test/".into(),
            traceparent: None,
            idempotency_key: None,
            status: Some(200),
            error: None,
            start_ms: 0.0,
            duration_ms: 1.0,
        }
    }

    fn event(name: &str, span_id: &str) -> EventRecord {
        EventRecord {
            kind: "host".into(),
            name: name.into(),
            level: "info".into(),
            message: String::new(),
            trace_id: "t".into(),
            span_id: span_id.into(),
            step: "fetch".into(),
            at_ms: 0.0,
            measurements: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn an_ended_attempt_comes_with_its_own_calls_and_claims_when_asked() {
        let r = RunRecorder::new();
        let i = r.attempt_started(
            "fetch",
            1,
            ("span-1".into(), None),
            Instant::now(),
            Duration::ZERO,
        );
        r.http_call(call("span-1"));
        r.http_call(call("span-2"));
        r.event(event("claim.granted", "span-1"));
        r.event(event("tick", "span-1"));
        r.event(event("claim.granted", "span-2"));
        assert!(r.ended_attempt("fetch", i, true).is_none(), "still running");
        r.attempt_finished("fetch", i, "succeeded", None);
        let (attempt, calls, claims) = r.ended_attempt("fetch", i, true).expect("ended");
        assert_eq!(
            (attempt.attempt, attempt.outcome.as_str()),
            (1, "succeeded")
        );
        let calls: Vec<&str> = calls.iter().map(|c| c.span_id.as_str()).collect();
        assert_eq!(calls, ["call-of-span-1"]);
        let claims: Vec<(&str, &str)> = claims
            .iter()
            .map(|e| (e.name.as_str(), e.span_id.as_str()))
            .collect();
        assert_eq!(claims, [("claim.granted", "span-1")]);
        // A sink that shows only outcomes is spared the scan.
        let (attempt, calls, claims) = r.ended_attempt("fetch", i, false).expect("ended");
        assert_eq!(attempt.outcome, "succeeded");
        assert!(calls.is_empty() && claims.is_empty());
    }
}
