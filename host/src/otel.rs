//! OpenTelemetry export over OTLP: every finished run becomes a tree of spans
//! in the user's tracing backend.
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

use crate::report::RunReport;
use crate::trace::TraceParent;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::borrow::Cow;
use std::sync::Mutex;
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
    tx: Mutex<Option<mpsc::Sender<RunReport>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Reports waiting to be exported; beyond this, reports are dropped (and
/// logged) rather than slowing runs down.
const QUEUE: usize = 4096;
/// Spans per export call.
const BATCH: usize = 512;

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
        let (tx, mut rx) = mpsc::channel::<RunReport>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch: Vec<SpanData> = Vec::new();
            while let Some(report) = rx.recv().await {
                batch.extend(spans(&report, root_kind.clone()));
                // Take whatever else is queued, up to a batch.
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(more) => batch.extend(spans(&more, root_kind.clone())),
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
            tx: Mutex::new(Some(tx)),
            task: Mutex::new(Some(task)),
        }))
    }

    /// Queues a finished run's spans for export (never blocks the run).
    pub fn export(&self, report: &RunReport) {
        let Ok(tx) = self.tx.lock() else { return };
        let Some(tx) = tx.as_ref() else {
            tracing::warn!(run_id = %report.run_id, "OTLP export already shut down, run not exported");
            return;
        };
        if let Err(e) = tx.try_send(report.clone()) {
            tracing::warn!(run_id = %report.run_id, "OTLP export queue full, run not exported: {e}");
        }
    }

    /// Exports what is queued, waiting at most `limit`; later runs are not
    /// exported.
    pub async fn shutdown(&self, limit: Duration) {
        if let Ok(mut tx) = self.tx.lock() {
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

/// The spans of one finished run. Empty if its ids do not parse (they always
/// do for reports braid made).
pub fn spans(report: &RunReport, root_kind: SpanKind) -> Vec<SpanData> {
    let Ok(tp) = TraceParent::parse(&report.traceparent) else {
        return Vec::new();
    };
    let trace_id = TraceId::from_bytes(tp.trace_id.to_bytes());
    let flags = TraceFlags::new(tp.flags.bits());
    let state = if report.tracestate.is_empty() {
        TraceState::default()
    } else {
        report.tracestate.parse().unwrap_or_default()
    };
    let span_id = |hex: &str| {
        crate::trace::SpanId::parse(hex)
            .map(|s| SpanId::from_bytes(s.to_bytes()))
            .unwrap_or(SpanId::INVALID)
    };
    let run_span = SpanId::from_bytes(tp.parent_id.to_bytes());
    let started = SystemTime::UNIX_EPOCH + Duration::from_millis(report.started_at_ms);
    let at = |offset_ms: f64| started + Duration::from_secs_f64(offset_ms.max(0.0) / 1000.0);
    let scope = InstrumentationScope::builder("braid")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let make = |id: SpanId,
                parent: SpanId,
                parent_remote: bool,
                kind: SpanKind,
                name: String,
                (start, end): (SystemTime, SystemTime),
                attributes: Vec<KeyValue>,
                status: Status| SpanData {
        span_context: SpanContext::new(trace_id, id, flags, false, state.clone()),
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
        instrumentation_scope: scope.clone(),
    };
    let outcome_status = |outcome: &str, error: Option<&String>| match outcome {
        "succeeded" | "undone" | "retry" | "continue-with" | "give-up" => Status::Ok,
        _ => Status::error(error.cloned().unwrap_or_else(|| outcome.to_string())),
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
    out.push(make(
        run_span,
        caller_span,
        continued,
        root_kind,
        format!("run {}", report.workflow),
        (started, at(report.duration_ms)),
        run_attrs,
        outcome_status(&report.outcome, report.error.as_ref()),
    ));

    for step in &report.steps {
        for a in &step.attempts {
            let mut attrs = vec![
                KeyValue::new("braid.workflow", report.workflow.clone()),
                KeyValue::new("braid.run_id", report.run_id.clone()),
                KeyValue::new("braid.step", step.name.clone()),
                KeyValue::new("braid.attempt", i64::from(a.attempt)),
                KeyValue::new("braid.outcome", a.outcome.clone()),
                KeyValue::new("braid.component", step.component.clone()),
                KeyValue::new("braid.component.sha256", step.component_sha256.clone()),
            ];
            if let Some(e) = &a.error {
                attrs.push(KeyValue::new("braid.error", e.clone()));
            }
            out.push(make(
                span_id(&a.span_id),
                run_span,
                false,
                SpanKind::Internal,
                format!("step {}", step.name),
                (at(a.start_ms), at(a.start_ms + a.duration_ms)),
                attrs,
                outcome_status(&a.outcome, a.error.as_ref()),
            ));
        }
        for c in &step.compensations {
            out.push(make(
                span_id(&c.span_id),
                run_span,
                false,
                SpanKind::Internal,
                format!("compensate {}", step.name),
                (at(c.start_ms), at(c.start_ms + c.duration_ms)),
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
            out.push(make(
                span_id(&a.span_id),
                run_span,
                false,
                SpanKind::Internal,
                format!("undo {}", u.step),
                (at(a.start_ms), at(a.start_ms + a.duration_ms)),
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
        out.push(make(
            span_id(&call.span_id),
            span_id(&call.attempt_span_id),
            false,
            SpanKind::Client,
            call.method.clone(),
            (at(call.start_ms), at(call.start_ms + call.duration_ms)),
            attrs,
            status,
        ));
    }
    // Coordination calls, from their events (the event is recorded when the
    // call returns; `duration_ms` says how long it took).
    for e in &report.events {
        let name = match e.name.as_str() {
            "claim.granted" | "claim.conflict" => "claim",
            "claim.released" => "claim.release",
            _ => continue,
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
        out.push(make(
            SpanId::from_bytes(crate::trace::SpanId::random().to_bytes()),
            span_id(&e.span_id),
            false,
            SpanKind::Internal,
            name.to_string(),
            (at(e.at_ms - took), at(e.at_ms)),
            attrs,
            Status::Unset,
        ));
    }
    out
}
