//! The seam between the scheduler and whatever runs a step call: the
//! [`StepExecutor`] trait, the [`AttemptContext`] an executor gets, and the
//! typed [`StepFailure`]s it answers with. Must not know wasmtime.

use crate::report::RunRecorder;
use crate::trace::AttemptTrace;
use crate::workflow::StepSpec;
use std::future::Future;
use std::time::Duration;

/// Who is running: everything a host capability needs to tag and check a call.
#[derive(Clone)]
pub struct AttemptContext {
    pub run_id: String,
    pub workflow: String,
    pub step: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub trace: AttemptTrace,
    pub recorder: RunRecorder,
}

impl AttemptContext {
    /// The step's idempotency key for `call` (`run`, `compensate` or
    /// `undo`): the same on every attempt, retry and resume of the step in
    /// this run, different for another run or step. `run` calls get
    /// `RUN_ID.STEP`; the others `RUN_ID.STEP.CALL` (an undo must not
    /// replay the run's answer).
    pub fn idempotency_key(&self, call: &str) -> String {
        if call == "run" {
            format!("{}.{}", self.run_id, self.step)
        } else {
            format!("{}.{}.{call}", self.run_id, self.step)
        }
    }
}

/// Why a step call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepFailure {
    /// The step said it may succeed if tried again.
    #[error("{0}")]
    Retryable(String),
    /// The step said retrying cannot help.
    #[error("{0}")]
    Fatal(String),
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The guest trapped (panic, unreachable, out of bounds, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The output cannot be the step's (not JSON, or a policy decision
    /// that repeats an obligation); the text says which.
    #[error("{0}")]
    InvalidOutput(String),
    /// The attempt hit one of its limits.
    #[error("{kind}: {1}", kind = .0.as_str())]
    Limit(LimitKind, String),
    /// The host could not run the step at all (e.g. instantiation failed).
    #[error("host error: {0}")]
    Host(String),
}

/// Which limit an attempt hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// A linear memory tried to grow past `memory_limit_mb`.
    Memory,
    /// The output was larger than `max_output_bytes`.
    Output,
    /// The guest's call stack overflowed.
    Stack,
    /// A table tried to grow past the sandbox's limit.
    Table,
    /// The attempt used up its `fuel` (CPU budget).
    Fuel,
    /// The attempt made more refused calls than its `max_refusals`.
    Refusals,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory-limit",
            LimitKind::Output => "output-too-large",
            LimitKind::Stack => "stack-overflow",
            LimitKind::Table => "table-limit",
            LimitKind::Fuel => "fuel-exhausted",
            LimitKind::Refusals => "refusals",
        }
    }
}

impl StepFailure {
    /// Whether the retry policy may try again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepFailure::Retryable(_) | StepFailure::Timeout(_))
    }
    /// The attempt outcome as it appears in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            StepFailure::Retryable(_) => "retryable",
            StepFailure::Fatal(_) => "fatal",
            StepFailure::Timeout(_) => "timeout",
            StepFailure::Trap(_) => "trap",
            StepFailure::InvalidOutput(_) => "invalid-output",
            StepFailure::Limit(kind, _) => kind.as_str(),
            StepFailure::Host(_) => "host-error",
        }
    }
}

/// A reversible step's answer to its own failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compensation {
    Retry,
    ContinueWith(String),
    GiveUp,
}

/// Runs step calls. Implementations must enforce `step.timeout` on each call.
pub trait StepExecutor: Send + Sync + 'static {
    /// The component that runs `step`, and its sha256, for the report.
    fn component_of(&self, step: &str) -> (String, String);

    /// Whether `step` implements `compensate` and `undo`.
    fn is_reversible(&self, step: &str) -> bool;

    /// Runs one attempt and returns the step's output text (the scheduler
    /// checks that it is JSON).
    fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> impl Future<Output = Result<String, StepFailure>> + Send;

    /// Asks a reversible step what to do about its failure.
    fn compensate(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        error: StepFailure,
    ) -> impl Future<Output = Result<Compensation, StepFailure>> + Send;

    /// Reverts a completed step.
    fn undo(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        output: String,
    ) -> impl Future<Output = Result<(), StepFailure>> + Send;
}
