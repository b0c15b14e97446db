//! Prometheus metrics for `braid serve`, derived from finished run reports
//! (so every number has a report behind it). Exposed at `GET /metrics` in
//! the OpenMetrics text format.

use crate::report::RunReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    workflow: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabels {
    workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    workflow: String,
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepKey {
    workflow: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    workflow: String,
    step: String,
    limit: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// 1 ms to ~33 s, doubling.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 10 us to ~20 s, doubling (most attempts wait for no place at all).
fn queue_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 2.0, 22))
}

/// Attempt outcomes that mean a sandbox limit stopped the guest.
const LIMIT_OUTCOMES: [&str; 7] = [
    "timeout",
    "memory-limit",
    "output-too-large",
    "stack-overflow",
    "table-limit",
    "fuel-exhausted",
    "refusals",
];

pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_seconds: Histograms<WorkflowLabels>,
    steps: Family<StepLabels, Counter>,
    step_seconds: Histograms<StepKey>,
    step_queue_seconds: Histograms<StepKey>,
    attempts: Family<StepLabels, Counter>,
    claims: Family<WorkflowLabels, Counter>,
    limit_hits: Family<LimitLabels, Counter>,
    telemetry_dropped: Family<WorkflowLabels, Counter>,
    host_log_suppressed: Family<WorkflowLabels, Counter>,
    runs_refused: Family<WorkflowLabels, Counter>,
    in_flight: Gauge,
    waiting: Gauge,
    parked: Family<WorkflowLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            runs: Family::default(),
            run_seconds: Family::new_with_constructor(seconds_histogram),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(seconds_histogram),
            step_queue_seconds: Family::new_with_constructor(queue_histogram),
            attempts: Family::default(),
            claims: Family::default(),
            limit_hits: Family::default(),
            telemetry_dropped: Family::default(),
            host_log_suppressed: Family::default(),
            runs_refused: Family::default(),
            in_flight: Gauge::default(),
            waiting: Gauge::default(),
            parked: Family::default(),
            registry: Registry::with_prefix("braid"),
        };
        m.registry.register(
            "runs",
            "Finished runs by workflow and outcome",
            m.runs.clone(),
        );
        m.registry.register(
            "run_duration_seconds",
            "Run wall time",
            m.run_seconds.clone(),
        );
        m.registry.register(
            "steps",
            "Steps by workflow, step and outcome (succeeded, compensated, failed, cancelled, skipped)",
            m.steps.clone(),
        );
        m.registry.register(
            "step_duration_seconds",
            "Step wall time, all attempts included",
            m.step_seconds.clone(),
        );
        m.registry.register(
            "step_queue_seconds",
            "Time each step attempt waited for a place to run (--max-concurrency attempts in flight per workflow)",
            m.step_queue_seconds.clone(),
        );
        m.registry.register(
            "step_attempts",
            "Step attempts by workflow, step and outcome (succeeded, retryable, fatal, timeout, trap, ...)",
            m.attempts.clone(),
        );
        m.registry.register(
            "claims_granted",
            "Work claims granted to runs",
            m.claims.clone(),
        );
        m.registry.register(
            "sandbox_limit_hits",
            "Attempts stopped by a sandbox limit (timeout, memory, output, stack, table, fuel, refusals)",
            m.limit_hits.clone(),
        );
        m.registry.register(
            "telemetry_dropped",
            "Guest records (logs, events, stdout/stderr lines) and outbound call records not kept, past an attempt's budget or a run report's ceiling",
            m.telemetry_dropped.clone(),
        );
        m.registry.register(
            "host_log_suppressed",
            "Guest lines not written to the host's log, past an attempt's budget",
            m.host_log_suppressed.clone(),
        );
        m.registry.register(
            "runs_refused",
            "Runs refused (503) because the server or the workflow had its most runs in flight (and no place came free within --admission-wait-ms, or too many waited)",
            m.runs_refused.clone(),
        );
        m.registry
            .register("runs_in_flight", "Runs executing now", m.in_flight.clone());
        m.registry.register(
            "runs_waiting",
            "Runs waiting for a place among the runs in flight (--admission-wait-ms)",
            m.waiting.clone(),
        );
        m.registry.register(
            "runs_parked",
            "Times a run left this host to wait in the journal for a time or a signal (sleep and signal steps)",
            m.parked.clone(),
        );
        m
    }

    /// A run this host started left it to wait in the journal: it is no
    /// longer in flight here (the host that wakes it counts it again).
    pub fn run_parked(&self, workflow: &str) {
        self.in_flight.dec();
        self.parked
            .get_or_create(&WorkflowLabels {
                workflow: workflow.to_string(),
            })
            .inc();
    }

    /// One more (`true`) or one less run waiting for a place.
    pub fn run_waiting(&self, more: bool) {
        if more {
            self.waiting.inc();
        } else {
            self.waiting.dec();
        }
    }

    /// Counts a run refused because too many were in flight.
    pub fn run_refused(&self, workflow: &str) {
        self.runs_refused
            .get_or_create(&WorkflowLabels {
                workflow: workflow.to_string(),
            })
            .inc();
    }

    pub fn run_started(&self) {
        self.in_flight.inc();
    }

    /// Counts a finished run (every run started is finished exactly once).
    pub fn run_finished(&self, report: &RunReport) {
        self.in_flight.dec();
        let workflow = report.workflow.clone();
        self.runs
            .get_or_create(&RunLabels {
                workflow: workflow.clone(),
                outcome: report.outcome.clone(),
            })
            .inc();
        self.run_seconds
            .get_or_create(&WorkflowLabels {
                workflow: workflow.clone(),
            })
            .observe(report.duration_ms / 1000.0);
        for step in &report.steps {
            self.steps
                .get_or_create(&StepLabels {
                    workflow: workflow.clone(),
                    step: step.name.clone(),
                    outcome: step.outcome.clone(),
                })
                .inc();
            if !step.attempts.is_empty() {
                self.step_seconds
                    .get_or_create(&StepKey {
                        workflow: workflow.clone(),
                        step: step.name.clone(),
                    })
                    .observe(step.duration_ms / 1000.0);
            }
            for attempt in &step.attempts {
                self.step_queue_seconds
                    .get_or_create(&StepKey {
                        workflow: workflow.clone(),
                        step: step.name.clone(),
                    })
                    .observe(attempt.queued_ms / 1000.0);
                self.attempts
                    .get_or_create(&StepLabels {
                        workflow: workflow.clone(),
                        step: step.name.clone(),
                        outcome: attempt.outcome.clone(),
                    })
                    .inc();
                if LIMIT_OUTCOMES.contains(&attempt.outcome.as_str()) {
                    self.limit_hits
                        .get_or_create(&LimitLabels {
                            workflow: workflow.clone(),
                            step: step.name.clone(),
                            limit: attempt.outcome.clone(),
                        })
                        .inc();
                }
            }
        }
        let granted = report
            .events
            .iter()
            .filter(|e| e.name == "claim.granted")
            .count();
        self.claims
            .get_or_create(&WorkflowLabels {
                workflow: workflow.clone(),
            })
            .inc_by(granted as u64);
        let d = &report.dropped;
        self.telemetry_dropped
            .get_or_create(&WorkflowLabels {
                workflow: workflow.clone(),
            })
            .inc_by(d.telemetry_records + d.http_calls);
        self.host_log_suppressed
            .get_or_create(&WorkflowLabels { workflow })
            .inc_by(d.host_log_lines);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
