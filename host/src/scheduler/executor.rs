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
    /// The run's secret its idempotency keys are made with.
    pub keys: KeySecret,
}

/// A run's idempotency-key secret: 32 random bytes made when the run starts
/// and journaled with its start (so a host that resumes the run, this one
/// or another sharing the journal, makes the same keys). A key is
/// `RUN_ID.STEP[.CALL].MAC`, where MAC is the first 128 bits (hex) of
/// HMAC-SHA256(secret, `RUN_ID.STEP[.CALL]`): readable, stable, and not to
/// be guessed by another run's step, which never sees this run's secret.
/// A run journaled by a braid before these secrets has none: its keys stay
/// `RUN_ID.STEP[.CALL]`, as they were when it started.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KeySecret(Option<std::sync::Arc<[u8; 32]>>);

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: it is what makes the keys unguessable.
        f.write_str(if self.0.is_some() {
            "KeySecret(..)"
        } else {
            "KeySecret(none)"
        })
    }
}

impl KeySecret {
    /// A new random secret, for a run starting now.
    pub fn random() -> KeySecret {
        KeySecret(Some(std::sync::Arc::new(rand::random())))
    }

    /// The secret as journaled (64 hex digits; empty: none, the legacy keys).
    pub fn to_hex(&self) -> String {
        self.0.as_deref().map(hex::encode).unwrap_or_default()
    }

    /// The secret journaled as `text` ([`KeySecret::to_hex`]); anything but
    /// 64 hex digits is no secret (a run journaled by an older braid).
    pub fn from_hex(text: &str) -> KeySecret {
        let mut bytes = [0u8; 32];
        match hex::decode_to_slice(text, &mut bytes) {
            Ok(()) => KeySecret(Some(std::sync::Arc::new(bytes))),
            Err(_) => KeySecret(None),
        }
    }

    /// The key of `call` (`run`: none named) of `step` in run `run_id`.
    pub fn key(&self, run_id: &str, step: &str, call: &str) -> String {
        use hmac::Mac;
        let name = if call == "run" {
            format!("{run_id}.{step}")
        } else {
            format!("{run_id}.{step}.{call}")
        };
        let Some(secret) = &self.0 else {
            return name;
        };
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_slice()) else {
            // HMAC takes a key of any length: not reached.
            return name;
        };
        mac.update(name.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{name}.{}", hex::encode(&tag[..16]))
    }
}

impl AttemptContext {
    /// The step's idempotency key for `call` (`run`, `compensate` or
    /// `undo`): the same on every attempt, retry and resume of the step in
    /// this run, different for another run or step, and not computable by
    /// anyone without the run's secret ([`KeySecret`]).
    pub fn idempotency_key(&self, call: &str) -> String {
        self.keys.key(&self.run_id, &self.step, call)
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
    /// The attempt hit one of its limits. Shown without the limit's name,
    /// as every failure is: whoever shows it adds [`StepFailure::kind`]
    /// once (`fuel-exhausted: ...`), not twice.
    #[error("{1}")]
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

#[cfg(test)]
mod tests {
    use super::KeySecret;

    #[test]
    fn keys_are_stable_per_secret_and_unguessable_without_it() {
        let secret = KeySecret::random();
        let key = secret.key("run-1", "authenticate", "run");
        // The same secret (journaled, read back by a resuming host): the same key.
        let again = KeySecret::from_hex(&secret.to_hex());
        assert_eq!(again.key("run-1", "authenticate", "run"), key);
        let mac = key.strip_prefix("run-1.authenticate.").expect("named");
        assert_eq!(mac.len(), 32);
        // Another run's secret, step or call: another key.
        assert_ne!(KeySecret::random().key("run-1", "authenticate", "run"), key);
        assert_ne!(secret.key("run-1", "fetch", "run"), key);
        let undo = secret.key("run-1", "authenticate", "undo");
        assert!(undo.starts_with("run-1.authenticate.undo."), "{undo}");
        // A run journaled before secrets keeps the keys it started with.
        let legacy = KeySecret::from_hex("");
        assert_eq!(
            legacy.key("run-1", "authenticate", "run"),
            "run-1.authenticate"
        );
        assert_eq!(legacy.to_hex(), "");
        // Never printed.
        assert_eq!(format!("{secret:?}"), "KeySecret(..)");
    }
}
