//! OpenTelemetry export over OTLP: every run becomes a tree of spans in the
//! user's tracing backend, each step attempt's part as the attempt ends.
//!
//! braid already gives every run, step attempt, compensation, undo and
//! outbound request its own W3C span id (the ids in the run report, the
//! journal and the `traceparent` headers sent upstream). Exported spans must
//! carry exactly those ids, so rather than re-creating spans through a
//! tracer (which would mint new ids), this module turns each finished
//! [`RunReport`] into OTLP span data and hands it to the OpenTelemetry SDK's
//! OTLP exporter. Trace context comes from braid's own strict W3C parser;
//! the SDK only sees the resulting ids.
//!
//! Live: given to a scheduler as its [`AttemptSink`] ([`OtlpExport::live_sink`]),
//! the exporter sends each step attempt's span, with its HTTP and claim
//! children, when the attempt ends, so a long or stuck run shows in the
//! backend while it runs; the run's own span, compensations and undo go when
//! the run ends, without the attempts already sent.
//!
//! Configured by the standard variables, off when no endpoint is set:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`, the default, or `grpc`),
//! `OTEL_SERVICE_NAME` (default `braid`), `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! Spans of a run:
//! - `run WORKFLOW` (server span in `braid serve`, internal in `braid run`),
//!   the child of the caller's span when a `traceparent` was continued;
//! - `step STEP` per attempt, `compensate STEP`, `undo STEP` per undo attempt,
//!   children of the run span;
//! - `HTTP METHOD` client spans, children of the attempt that sent them, whose
//!   span id is the parent id of the `traceparent` the API received;
//! - `claim`, `claim.release` for coordination calls, children of the attempt.

use crate::report::{
    AttemptEnded, AttemptReport, AttemptSink, EventRecord, HttpCallRecord, RunMeta, RunReport,
};
use crate::trace::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Why the exporter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("OTLP exporter: {0}")]
    Build(String),
}

/// Where runs are exported, if anywhere.
pub struct OtlpExport {
    shared: Arc<Shared>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What the export task and the live sink share.
struct Shared {
    tx: Mutex<Option<mpsc::Sender<Item>>>,
    /// Runs some of whose attempts were sent live (their run-end export
    /// leaves those out); at most [`MAX_LIVE_RUNS`].
    live_runs: Mutex<HashSet<String>>,
}

/// What the export task turns into spans.
enum Item {
    /// A finished run; `attempts_sent`: its step attempts went live.
    Run {
        report: Box<RunReport>,
        attempts_sent: bool,
    },
    /// A step attempt that just ended.
    Attempt {
        run: RunMeta,
        ended: Box<AttemptEnded>,
    },
}

/// Reports and attempts waiting to be exported; beyond this, they are
/// dropped (and logged) rather than slowing runs down.
const QUEUE: usize = 4096;
/// Spans per export call.
const BATCH: usize = 512;
/// Runs in flight whose attempts are sent live; past this, a run's
/// attempts go with its report instead.
const MAX_LIVE_RUNS: usize = 65_536;

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

impl OtlpExport {
    /// Starts exporting when `OTEL_EXPORTER_OTLP_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; `Ok(None)` otherwise.
    /// `root_kind` is the kind of the run span.
    pub fn from_env(root_kind: SpanKind) -> Result<Option<OtlpExport>, OtelError> {
        if !env_set("OTEL_EXPORTER_OTLP_ENDPOINT") && !env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        {
            return Ok(None);
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|e| OtelError::Build(e.to_string()))?;
        let mut resource = Resource::builder();
        if !env_set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name("braid");
        }
        exporter.set_resource(&resource.build());
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let spans_of = move |item: Item| match item {
            Item::Run {
                report,
                attempts_sent,
            } => spans(&report, root_kind.clone(), attempts_sent),
            Item::Attempt { run, ended } => attempt_spans(&run, &ended),
        };
        let task = tokio::spawn(async move {
            let mut batch: Vec<SpanData> = Vec::new();
            while let Some(item) = rx.recv().await {
                batch.extend(spans_of(item));
                // Take whatever else is queued, up to a batch.
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend(spans_of(more)),
                        Err(_) => break,
                    }
                }
                let n = batch.len();
                if let Err(e) = exporter.export(std::mem::take(&mut batch)).await {
                    tracing::warn!(spans = n, "OTLP export failed: {e}");
                }
            }
            if let Err(e) = exporter.shutdown() {
                tracing::debug!("OTLP exporter shutdown: {e}");
            }
        });
        Ok(Some(OtlpExport {
            shared: Arc::new(Shared {
                tx: Mutex::new(Some(tx)),
                live_runs: Mutex::new(HashSet::new()),
            }),
            task: Mutex::new(Some(task)),
        }))
    }

    /// The sink a scheduler tells of each attempt as it ends
    /// ([`crate::scheduler::Scheduler::with_attempt_sink`]).
    pub fn live_sink(&self) -> Arc<dyn AttemptSink> {
        Arc::clone(&self.shared) as Arc<dyn AttemptSink>
    }

    /// Queues a finished run's spans for export (never blocks the run);
    /// attempts already sent live are left out.
    pub fn export(&self, report: &RunReport) {
        let attempts_sent = self
            .shared
            .live_runs
            .lock()
            .is_ok_and(|mut live| live.remove(&report.run_id));
        let item = Item::Run {
            report: Box::new(report.clone()),
            attempts_sent,
        };
        if let Err(why) = self.shared.send(item) {
            tracing::warn!(run_id = %report.run_id, "run not exported over OTLP: {why}");
        }
    }

    /// Exports what is queued, waiting at most `limit`; later runs are not
    /// exported.
    pub async fn shutdown(&self, limit: Duration) {
        if let Ok(mut tx) = self.shared.tx.lock() {
            tx.take();
        }
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("OTLP export did not finish within {limit:?}; some spans are lost");
        }
    }
}

impl Shared {
    fn send(&self, item: Item) -> Result<(), &'static str> {
        let tx = self.tx.lock().map_err(|_| "exporter broken")?;
        let tx = tx.as_ref().ok_or("export already shut down")?;
        tx.try_send(item).map_err(|_| "export queue full")
    }
}

impl AttemptSink for Shared {
    fn attempt_ended(&self, run: &RunMeta, ended: AttemptEnded) {
        // Marked first: the run's report must leave out an attempt sent
        // now. Past the bound, the attempt goes with the report instead.
        let marked = self.live_runs.lock().is_ok_and(|mut live| {
            live.contains(&run.run_id)
                || (live.len() < MAX_LIVE_RUNS && live.insert(run.run_id.clone()))
        });
        if !marked {
            return;
        }
        let item = Item::Attempt {
            run: run.clone(),
            ended: Box::new(ended),
        };
        if let Err(why) = self.send(item) {
            tracing::warn!(run_id = %run.run_id, "attempt span not exported over OTLP: {why}");
        }
    }
}

/// Makes the spans of one run: its trace, flags, state, run span and start.
struct Factory {
    trace_id: TraceId,
    flags: TraceFlags,
    state: TraceState,
    run_span: SpanId,
    started: SystemTime,
    scope: InstrumentationScope,
}

fn span_id(hex: &str) -> SpanId {
    crate::trace::SpanId::parse(hex)
        .map(|s| SpanId::from_bytes(s.to_bytes()))
        .unwrap_or(SpanId::INVALID)
}

fn outcome_status(outcome: &str, error: Option<&String>) -> Status {
    match outcome {
        "succeeded" | "undone" | "retry" | "continue-with" | "give-up" => Status::Ok,
        _ => Status::error(error.cloned().unwrap_or_else(|| outcome.to_string())),
    }
}

impl Factory {
    /// `None` if the run's ids do not parse (they always do for runs braid made).
    fn new(traceparent: &str, tracestate: &str, started_at_ms: u64) -> Option<Factory> {
        let tp = TraceParent::parse(traceparent).ok()?;
        Some(Factory {
            trace_id: TraceId::from_bytes(tp.trace_id.to_bytes()),
            flags: TraceFlags::new(tp.flags.bits()),
            state: if tracestate.is_empty() {
                TraceState::default()
            } else {
                tracestate.parse().unwrap_or_default()
            },
            run_span: SpanId::from_bytes(tp.parent_id.to_bytes()),
            started: SystemTime::UNIX_EPOCH + Duration::from_millis(started_at_ms),
            scope: InstrumentationScope::builder("braid")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        })
    }

    /// The time `offset_ms` after the run started.
    fn at(&self, offset_ms: f64) -> SystemTime {
        self.started + Duration::from_secs_f64(offset_ms.max(0.0) / 1000.0)
    }

    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        id: SpanId,
        parent: SpanId,
        parent_remote: bool,
        kind: SpanKind,
        name: String,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                id,
                self.flags,
                false,
                self.state.clone(),
            ),
            parent_span_id: parent,
            parent_span_is_remote: parent_remote,
            span_kind: kind,
            name: Cow::Owned(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// `step STEP`: one attempt, a child of the run span.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        workflow: &str,
        run_id: &str,
        step: &str,
        component: &str,
        sha256: &str,
        a: &AttemptReport,
    ) -> SpanData {
        let mut attrs = vec![
            KeyValue::new("braid.workflow", workflow.to_string()),
            KeyValue::new("braid.run_id", run_id.to_string()),
            KeyValue::new("braid.step", step.to_string()),
            KeyValue::new("braid.attempt", i64::from(a.attempt)),
            KeyValue::new("braid.outcome", a.outcome.clone()),
            KeyValue::new("braid.component", component.to_string()),
            KeyValue::new("braid.component.sha256", sha256.to_string()),
        ];
        if let Some(e) = &a.error {
            attrs.push(KeyValue::new("braid.error", e.clone()));
        }
        let parent = a.parent_span_id.as_deref().map_or(self.run_span, span_id);
        self.make(
            span_id(&a.span_id),
            parent,
            false,
            SpanKind::Internal,
            format!("step {step}"),
            (self.at(a.start_ms), self.at(a.start_ms + a.duration_ms)),
            attrs,
            outcome_status(&a.outcome, a.error.as_ref()),
        )
    }

    /// `METHOD`: an outbound call, a client span under the attempt that sent it.
    fn http(&self, call: &HttpCallRecord) -> SpanData {
        let mut attrs = vec![
            KeyValue::new("http.request.method", call.method.clone()),
            KeyValue::new("url.full", call.url.clone()),
            KeyValue::new("braid.step", call.step.clone()),
        ];
        if let Some(status) = call.status {
            attrs.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        if let Some(e) = &call.error {
            attrs.push(KeyValue::new("error.type", e.clone()));
        }
        let status = match (call.status, &call.error) {
            (_, Some(e)) => Status::error(e.clone()),
            (Some(s), None) if s >= 500 => Status::error(format!("HTTP {s}")),
            _ => Status::Unset,
        };
        self.make(
            span_id(&call.span_id),
            span_id(&call.attempt_span_id),
            false,
            SpanKind::Client,
            call.method.clone(),
            (
                self.at(call.start_ms),
                self.at(call.start_ms + call.duration_ms),
            ),
            attrs,
            status,
        )
    }

    /// `claim` or `claim.release`, from the coordination call's event (the
    /// event is recorded when the call returns; `duration_ms` says how long
    /// it took). `None` for any other event.
    fn claim(&self, e: &EventRecord) -> Option<SpanData> {
        let name = match e.name.as_str() {
            "claim.granted" | "claim.conflict" => "claim",
            "claim.released" => "claim.release",
            _ => return None,
        };
        let took = e
            .metadata
            .get("duration_ms")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        let mut attrs = vec![
            KeyValue::new("braid.step", e.step.clone()),
            KeyValue::new("braid.claim.outcome", e.name.clone()),
        ];
        for (k, v) in &e.metadata {
            if k != "duration_ms" {
                attrs.push(KeyValue::new(format!("braid.claim.{k}"), v.clone()));
            }
        }
        Some(self.make(
            SpanId::from_bytes(crate::trace::SpanId::random().to_bytes()),
            span_id(&e.span_id),
            false,
            SpanKind::Internal,
            name.to_string(),
            (self.at(e.at_ms - took), self.at(e.at_ms)),
            attrs,
            Status::Unset,
        ))
    }
}

/// The spans of one step attempt that just ended: its own, and its
/// outbound calls' and claims' under it.
pub fn attempt_spans(run: &RunMeta, ended: &AttemptEnded) -> Vec<SpanData> {
    let Some(f) = Factory::new(&run.traceparent, &run.tracestate, run.started_at_ms) else {
        return Vec::new();
    };
    let mut out = vec![f.attempt(
        &run.workflow,
        &run.run_id,
        &ended.step,
        &ended.component,
        &ended.component_sha256,
        &ended.attempt,
    )];
    out.extend(ended.http_calls.iter().map(|c| f.http(c)));
    out.extend(ended.claims.iter().filter_map(|e| f.claim(e)));
    out
}

/// The span of a step that groups others (`map STEP`, `compose STEP`):
/// `(kind, span, parent)`, over the step's time, with `extra` attributes.
fn group_span(
    f: &Factory,
    report: &RunReport,
    step: &crate::report::StepReport,
    (kind, span, parent): (&str, &str, &str),
    extra: Vec<KeyValue>,
) -> SpanData {
    let mut attrs = vec![
        KeyValue::new("braid.workflow", report.workflow.clone()),
        KeyValue::new("braid.run_id", report.run_id.clone()),
        KeyValue::new("braid.step", step.name.clone()),
        KeyValue::new("braid.outcome", step.outcome.clone()),
    ];
    attrs.extend(extra);
    f.make(
        span_id(span),
        span_id(parent),
        false,
        SpanKind::Internal,
        format!("{kind} {}", step.name),
        (f.at(step.start_ms), f.at(step.start_ms + step.duration_ms)),
        attrs,
        outcome_status(&step.outcome, step.error.as_ref()),
    )
}

/// A wait step's span (`sleep STEP` or `signal STEP`, a child of the run
/// span over the wait, its id the report's); a
/// signal step's is linked to the span of the request that sent the
/// signal (its `traceparent`), tying the sender's trace to the run's.
fn wait_span(
    f: &Factory,
    report: &RunReport,
    step: &crate::report::StepReport,
    wait: &crate::report::WaitReport,
) -> SpanData {
    let mut attrs = vec![KeyValue::new("braid.wait.kind", wait.kind.clone())];
    if let Some(name) = &wait.signal {
        attrs.push(KeyValue::new("braid.signal", name.clone()));
    }
    let mut span = group_span(
        f,
        report,
        step,
        (&wait.kind, &wait.span_id, &report.span_id),
        attrs,
    );
    let sender = wait.signal_traceparent.as_deref().map(TraceParent::parse);
    if let Some(Ok(tp)) = sender {
        let context = SpanContext::new(
            TraceId::from_bytes(tp.trace_id.to_bytes()),
            SpanId::from_bytes(tp.parent_id.to_bytes()),
            TraceFlags::new(tp.flags.bits()),
            true,
            TraceState::default(),
        );
        let attrs = vec![KeyValue::new("braid.link", "signal sender")];
        span.links
            .links
            .push(opentelemetry::trace::Link::new(context, attrs, 0));
    }
    span
}

/// A map step's span and, unless they were sent live, the attempts of the
/// elements its report shows (the others are only counted).
fn map_spans<'r>(
    f: &Factory,
    report: &RunReport,
    step: &'r crate::report::StepReport,
    map: &'r crate::report::MapReport,
    attempts_sent: bool,
    sent: &mut HashSet<&'r str>,
) -> Vec<SpanData> {
    let mut out = vec![group_span(
        f,
        report,
        step,
        ("map", &map.span_id, &map.parent_span_id),
        vec![
            KeyValue::new("braid.map.elements", map.elements as i64),
            KeyValue::new("braid.map.failed", map.failed as i64),
        ],
    )];
    for element in &map.shown {
        for a in &element.attempts {
            if attempts_sent {
                sent.insert(&a.span_id);
            } else {
                out.push(f.attempt(
                    &report.workflow,
                    &report.run_id,
                    &format!("{}.{}", step.name, element.index),
                    &step.component,
                    &step.component_sha256,
                    a,
                ));
            }
        }
    }
    out
}

/// The spans of one finished run; with `attempts_sent`, without its step
/// attempts and what they did (sent live as each attempt ended). Empty if
/// its ids do not parse (they always do for reports braid made).
pub fn spans(report: &RunReport, root_kind: SpanKind, attempts_sent: bool) -> Vec<SpanData> {
    let Some(f) = Factory::new(
        &report.traceparent,
        &report.tracestate,
        report.started_at_ms,
    ) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (caller_span, continued) = match report.parent_span_id.as_deref() {
        Some(p) if report.continued_trace => (span_id(p), true),
        _ => (SpanId::INVALID, false),
    };
    let mut run_attrs = vec![
        KeyValue::new("braid.workflow", report.workflow.clone()),
        KeyValue::new("braid.run_id", report.run_id.clone()),
        KeyValue::new("braid.outcome", report.outcome.clone()),
        KeyValue::new("braid.degraded", report.degraded),
    ];
    if let Some(e) = &report.error {
        run_attrs.push(KeyValue::new("braid.error", e.clone()));
    }
    out.push(f.make(
        f.run_span,
        caller_span,
        continued,
        root_kind,
        format!("run {}", report.workflow),
        (f.started, f.at(report.duration_ms)),
        run_attrs,
        outcome_status(&report.outcome, report.error.as_ref()),
    ));

    // The step attempts' spans, unless they were sent as each ended.
    let mut sent: HashSet<&str> = HashSet::new();
    for step in &report.steps {
        if let Some(map) = &step.map {
            out.extend(map_spans(&f, report, step, map, attempts_sent, &mut sent));
        }
        if let Some(wait) = step.wait.as_ref().filter(|_| step.outcome != "skipped") {
            out.push(wait_span(&f, report, step, wait));
        }
        if let Some(c) = &step.compose {
            let attrs = vec![KeyValue::new("braid.compose.workflow", c.workflow.clone())];
            let ids = ("compose", c.span_id.as_str(), c.parent_span_id.as_str());
            out.push(group_span(&f, report, step, ids, attrs));
        }
        for a in &step.attempts {
            if attempts_sent {
                sent.insert(&a.span_id);
            } else {
                out.push(f.attempt(
                    &report.workflow,
                    &report.run_id,
                    &step.name,
                    &step.component,
                    &step.component_sha256,
                    a,
                ));
            }
        }
        for c in &step.compensations {
            out.push(f.make(
                span_id(&c.span_id),
                f.run_span,
                false,
                SpanKind::Internal,
                format!("compensate {}", step.name),
                (f.at(c.start_ms), f.at(c.start_ms + c.duration_ms)),
                vec![
                    KeyValue::new("braid.step", step.name.clone()),
                    KeyValue::new("braid.compensation", c.decision.clone()),
                    KeyValue::new("braid.failure", c.failure.clone()),
                ],
                outcome_status(&c.decision, c.error.as_ref()),
            ));
        }
    }
    for u in &report.undo {
        for a in &u.attempts {
            out.push(f.make(
                span_id(&a.span_id),
                f.run_span,
                false,
                SpanKind::Internal,
                format!("undo {}", u.step),
                (f.at(a.start_ms), f.at(a.start_ms + a.duration_ms)),
                vec![
                    KeyValue::new("braid.step", u.step.clone()),
                    KeyValue::new("braid.attempt", i64::from(a.attempt)),
                    KeyValue::new("braid.outcome", a.outcome.clone()),
                ],
                outcome_status(&a.outcome, a.error.as_ref()),
            ));
        }
    }
    for call in &report.http_calls {
        if !sent.contains(call.attempt_span_id.as_str()) {
            out.push(f.http(call));
        }
    }
    for e in &report.events {
        if !sent.contains(e.span_id.as_str())
            && let Some(span) = f.claim(e)
        {
            out.push(span);
        }
    }
    out
}
