//! The run report and the recorder that fills it.
//!
//! Owns: what a run tells its caller afterwards (steps, attempts, spans,
//! events, outbound calls). The scheduler fills in steps and attempts; the
//! capabilities append events and HTTP calls through a [`RunRecorder`].
//! No wasmtime, no IO.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    /// `succeeded` or `failed`.
    pub outcome: String,
    pub error: Option<String>,
    pub result: Option<serde_json::Value>,
    /// In the order the steps started.
    pub steps: Vec<StepReport>,
    /// Guest telemetry events, guest log lines and host events, in order.
    pub events: Vec<EventRecord>,
    /// Every outbound HTTP request a step made (or tried to make).
    pub http_calls: Vec<HttpCallRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub name: String,
    pub component: String,
    pub component_sha256: String,
    /// `succeeded`, `failed` or `skipped` (not started because the run failed).
    pub outcome: String,
    /// Milliseconds from the run's start.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Steps whose execution overlapped this one's.
    pub parallel_with: Vec<String>,
    pub attempts: Vec<AttemptReport>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptReport {
    /// 1 for the first attempt.
    pub attempt: u32,
    pub span_id: String,
    pub start_ms: f64,
    pub duration_ms: f64,
    /// `succeeded`, `retryable`, `fatal`, `timeout`, `trap` or `invalid-output`.
    pub outcome: String,
    pub error: Option<String>,
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
    pub status: Option<u16>,
    pub error: Option<String>,
    pub start_ms: f64,
    pub duration_ms: f64,
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
    http_calls: Vec<HttpCallRecord>,
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

    pub fn event(&self, mut event: EventRecord) {
        event.at_ms = self.now_ms();
        if let Ok(mut r) = self.inner.lock() {
            r.events.push(event);
        }
    }

    pub fn http_call(&self, call: HttpCallRecord) {
        if let Ok(mut r) = self.inner.lock() {
            r.http_calls.push(call);
        }
    }

    /// Takes what was recorded (events and calls, in order).
    pub fn take(&self) -> (Vec<EventRecord>, Vec<HttpCallRecord>) {
        match self.inner.lock() {
            Ok(mut r) => (
                std::mem::take(&mut r.events),
                std::mem::take(&mut r.http_calls),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        }
    }
}
