//! One call into a component (`run`, `compensate`, `undo`, or a policy's
//! `evaluate`) in a fresh store and instance: the store's state and limits,
//! the deadline, and how the call's end (output, typed error, trap, limit,
//! timeout) becomes a [`StepFailure`]. Nothing survives the call.
//!
//! Must not know the DAG, retries or the journal.

use super::{ComponentKind, PreparedComponent, Sandbox};
use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::capabilities::Caller;
use crate::capabilities::budget::{AttemptBudget, BudgetLimits, RefusalsExceeded};
use crate::capabilities::coordination::CoordinationCtx;
use crate::capabilities::http::OutboundHttp;
use crate::capabilities::invocation::InvocationCtx;
use crate::capabilities::telemetry::TelemetryCtx;
use crate::report::{MAX_ERROR_BYTES, bounded};
use crate::scheduler::{AttemptContext, Compensation, LimitKind, StepFailure};
use crate::workflow::StepSpec;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::bindings::step::braid::workflow::types::StepError as WitStepError;
use crate::bindings::step::exports::braid::workflow::reversible::Compensation as WitCompensation;

/// The store data of one step attempt.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    pub(super) coordination: CoordinationCtx,
    pub(super) telemetry: TelemetryCtx,
    pub(super) invocation: InvocationCtx,
    limiter: AttemptLimiter,
}

/// A limit an attempt hit; raised as the trap that ends the attempt.
#[derive(Debug, thiserror::Error)]
#[error("{what}: wanted {wanted} bytes/elements, the limit is {limit}")]
pub struct LimitHit {
    pub kind: LimitKind,
    pub what: &'static str,
    pub wanted: usize,
    pub limit: usize,
}

/// Per-attempt memory and table limits. Growing past one traps at once
/// (rather than returning -1 to the guest) so the attempt fails with a clear
/// `memory-limit` instead of a guest-specific out-of-memory crash.
struct AttemptLimiter {
    memory_bytes: usize,
    table_elements: usize,
}

impl wasmtime::ResourceLimiter for AttemptLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(LimitHit {
                kind: LimitKind::Memory,
                what: "linear memory",
                wanted: desired,
                limit: self.memory_bytes,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(LimitHit {
                kind: LimitKind::Table,
                what: "table",
                wanted: desired,
                limit: self.table_elements,
            }
            .into());
        }
        Ok(true)
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StepState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// A value the guest returned that cannot be its output; raised as the
/// error that ends the attempt (`invalid-output`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InvalidOutput(String);

/// A policy's obligations as a map: each key at most once.
fn obligations(list: Vec<(String, String)>) -> wasmtime::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for (key, value) in list {
        if map.contains_key(&key) {
            let key = crate::report::bounded(key, 256);
            return Err(InvalidOutput(format!(
                "invalid output: the policy's obligations name `{key}` more than once"
            ))
            .into());
        }
        map.insert(key, value);
    }
    Ok(map)
}

/// A policy's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyDecision {
    pub allow: bool,
    pub reasons: Vec<String>,
    pub obligations: BTreeMap<String, String>,
}

/// One call into a step: the three functions a step can export.
pub enum StepCall {
    Run { input: String },
    Compensate { input: String, error: StepFailure },
    Undo { input: String, output: String },
}

/// What a call returned.
pub enum CallResult {
    Output(String),
    /// A policy's decision, or why it could not decide.
    Decision(Result<PolicyDecision, String>),
    Compensation(Compensation),
    Undone,
}

impl Sandbox {
    /// Evaluates a policy once, outside any workflow (`braid policy eval`).
    pub async fn evaluate_policy(
        &self,
        component: &PreparedComponent,
        trace: crate::trace::AttemptTrace,
        input: String,
        timeout: Duration,
    ) -> Result<Result<PolicyDecision, String>, StepFailure> {
        let spec = StepSpec {
            name: "policy".into(),
            kind: Default::default(),
            component: component.path.clone(),
            args: BTreeMap::new(),
            wait_for: Vec::new(),
            when: None,
            map: None,
            timeout,
            max_retries: 0,
            allowed_hosts: Vec::new(),
            limits: crate::workflow::StepLimits::default(),
            idempotency_header: None,
            deny_continues: false,
            on_failure: None,
        };
        let ctx = AttemptContext {
            run_id: "policy-eval".into(),
            workflow: String::new(),
            step: "policy".into(),
            attempt: 1,
            trace,
            recorder: crate::report::RunRecorder::new(),
            keys: crate::scheduler::KeySecret::random(),
        };
        match self
            .call(component, &spec, ctx, StepCall::Run { input })
            .await?
        {
            CallResult::Decision(d) => Ok(d),
            _ => Err(StepFailure::Host(format!(
                "{} is not a policy",
                component.path.display()
            ))),
        }
    }

    /// Makes one call (`run`, `compensate` or `undo`) of `step` in a fresh
    /// store and instance.
    pub async fn call(
        &self,
        component: &PreparedComponent,
        step: &StepSpec,
        ctx: AttemptContext,
        call: StepCall,
    ) -> Result<CallResult, StepFailure> {
        let kind = match &call {
            StepCall::Run { .. } => "run",
            StepCall::Compensate { .. } => "compensate",
            StepCall::Undo { .. } => "undo",
        };
        let caller = Arc::new(Caller {
            idempotency_key: ctx.idempotency_key(kind),
            idempotency_header: step.idempotency_header.clone(),
            run_id: ctx.run_id,
            workflow: ctx.workflow,
            step: ctx.step,
            attempt: ctx.attempt,
            trace: ctx.trace,
            host_id: self.config.host_id.clone(),
            recorder: ctx.recorder,
            budget: AttemptBudget::new(self.budget_of(step)),
            denied: std::sync::OnceLock::new(),
        });
        let stdout = MemoryOutputPipe::new(self.config.max_stdio_bytes);
        let stderr = MemoryOutputPipe::new(self.config.max_stdio_bytes);
        let state = self.step_state(step, &caller, &stdout, &stderr);
        // Held until the store is dropped: the instance's pool slot is ours.
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| StepFailure::Host("the sandbox is shutting down".into()))?;
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        if self.config.fuel {
            store
                .set_fuel(step.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| StepFailure::Host(format!("setting fuel: {e:#}")))?;
        }
        let deadline = Instant::now() + step.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |store| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
            } else if let Some(refused) = store.data().telemetry.caller.budget.exceeded() {
                // Too many refused calls: the attempt ends at the next tick.
                Err(refused.into())
            } else {
                // Let other tasks run, then check again at the next tick.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });

        let trace_context = caller.trace_context();
        // Epochs interrupt guest code only; a guest blocked in a host call
        // (a slow HTTP response) is stopped by this timeout.
        let result: Result<wasmtime::Result<Result<CallResult, WitStepError>>, _> =
            tokio::time::timeout(
                step.timeout,
                invoke(component, &mut store, call, &trace_context),
            )
            .await;
        let telemetry = TelemetryCtx {
            caller: Arc::clone(&caller),
        };
        forward_stdio(&telemetry, "stdout", &stdout);
        forward_stdio(&telemetry, "stderr", &stderr);
        drop(store);
        caller.report_dropped();
        // A language runtime reports an uncaught exception on stderr, then
        // traps: the end of stderr (the exception's text) goes into the error.
        let stderr_hint = stderr_tail(&stderr.contents(), STDERR_IN_ERROR_BYTES)
            .map(|tail| {
                format!("; the guest's stderr ends: {tail} (all of it is in the run's events)")
            })
            .unwrap_or_default();
        not_retried_if_denied(ending(result, step, &stderr_hint), &caller)
    }

    /// An attempt's budget: the step's limits, capped by the host's ceilings.
    fn budget_of(&self, step: &StepSpec) -> BudgetLimits {
        let (l, c) = (&step.limits, &self.config.ceilings);
        BudgetLimits {
            log_records: l.max_log_records.min(c.log_records),
            log_bytes: l.max_log_bytes.min(c.log_bytes),
            refusals: l.max_refusals.min(c.refusals),
            host_log_lines: c.host_log_lines,
        }
    }

    /// The store data of one call: WASI granting nothing, outbound HTTP
    /// behind the step's policy, claims and telemetry as `caller`, and the
    /// step's memory and table limits.
    fn step_state(
        &self,
        step: &StepSpec,
        caller: &Arc<Caller>,
        stdout: &MemoryOutputPipe,
        stderr: &MemoryOutputPipe,
    ) -> StepState {
        // Nothing is granted: no preopened directories, no environment, no
        // arguments, empty stdin, no sockets or name lookups.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StepState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp {
                caller: Arc::clone(caller),
                allowed_hosts: step.allowed_hosts.clone().into(),
                requests_left: step.limits.max_requests,
                max_response_bytes: step.limits.max_response_bytes,
                deny_private_networks: self.config.deny_private_networks,
                client: Arc::clone(&self.http_client),
            },
            coordination: CoordinationCtx {
                caller: Arc::clone(caller),
                store: Arc::clone(&self.claims),
                claims_left: step.limits.max_claims,
            },
            telemetry: TelemetryCtx {
                caller: Arc::clone(caller),
            },
            invocation: InvocationCtx {
                caller: Arc::clone(caller),
            },
            limiter: AttemptLimiter {
                memory_bytes: usize::try_from(step.limits.memory_bytes)
                    .unwrap_or(usize::MAX)
                    .min(self.config.max_memory),
                table_elements: self.config.max_table_elements,
            },
        }
    }
}

/// Instantiates `component` in `store` and makes `call`.
async fn invoke(
    component: &PreparedComponent,
    store: &mut Store<StepState>,
    call: StepCall,
    trace_context: &TraceContext,
) -> wasmtime::Result<Result<CallResult, WitStepError>> {
    let instance = component.pre.instantiate_async(&mut *store).await?;
    let wit_error = |e: &StepFailure| match e {
        StepFailure::Retryable(_) | StepFailure::Timeout(_) => {
            WitStepError::Retryable(e.to_string())
        }
        _ => WitStepError::Fatal(e.to_string()),
    };
    match call {
        StepCall::Run { input } => match &component.kind {
            ComponentKind::Step { step, .. } => {
                let guest = step.load(&mut *store, &instance)?;
                let out = guest.call_run(&mut *store, trace_context, &input).await?;
                Ok(out.map(CallResult::Output))
            }
            ComponentKind::Policy(policy) => {
                let guest = policy.load(&mut *store, &instance)?;
                let out = guest
                    .call_evaluate(&mut *store, trace_context, &input)
                    .await?;
                let decision = match out {
                    Ok(d) => Ok(PolicyDecision {
                        allow: d.allow,
                        obligations: obligations(d.obligations)?,
                        reasons: d.reasons,
                    }),
                    Err(e) => Err(e),
                };
                Ok(Ok(CallResult::Decision(decision)))
            }
        },
        StepCall::Compensate { input, error } => {
            let ComponentKind::Step {
                reversible: Some(indices),
                ..
            } = &component.kind
            else {
                return Ok(Ok(CallResult::Compensation(Compensation::GiveUp)));
            };
            let guest = indices.load(&mut *store, &instance)?;
            let out = guest
                .call_compensate(&mut *store, trace_context, &input, &wit_error(&error))
                .await?;
            Ok(Ok(CallResult::Compensation(match out {
                WitCompensation::Retry => Compensation::Retry,
                WitCompensation::ContinueWith(v) => Compensation::ContinueWith(v),
                WitCompensation::GiveUp => Compensation::GiveUp,
            })))
        }
        StepCall::Undo { input, output } => {
            let ComponentKind::Step {
                reversible: Some(indices),
                ..
            } = &component.kind
            else {
                return Ok(Ok(CallResult::Undone));
            };
            let guest = indices.load(&mut *store, &instance)?;
            let out = guest
                .call_undo(&mut *store, trace_context, &input, &output)
                .await?;
            Ok(out.map(|()| CallResult::Undone))
        }
    }
}

/// What a call's end means for the step: its output (within the output
/// limit), its typed error (cut to [`MAX_ERROR_BYTES`]), or the limit, trap
/// or timeout that stopped it.
fn ending(
    result: Result<wasmtime::Result<Result<CallResult, WitStepError>>, tokio::time::error::Elapsed>,
    step: &StepSpec,
    stderr_hint: &str,
) -> Result<CallResult, StepFailure> {
    let cut = |m: String| bounded(m, MAX_ERROR_BYTES);
    match result {
        Err(_elapsed) => Err(StepFailure::Timeout(step.timeout)),
        Ok(Ok(Ok(out))) => within_output_limit(out, step),
        Ok(Ok(Err(WitStepError::Retryable(m)))) => Err(StepFailure::Retryable(cut(m))),
        Ok(Ok(Err(WitStepError::Fatal(m)))) => Err(StepFailure::Fatal(cut(m))),
        Ok(Err(e)) => Err(trap_failure(&e, step, stderr_hint)),
    }
}

/// Every value that becomes a step's output is held to its
/// `max_output_bytes`: `run`'s result, a `continue-with` substitute, and a
/// policy's decision (reasons and obligations). A policy's error is cut.
fn within_output_limit(out: CallResult, step: &StepSpec) -> Result<CallResult, StepFailure> {
    let limit = step.limits.max_output_bytes;
    let too_large = |what: &str, bytes: usize| {
        StepFailure::Limit(
            LimitKind::Output,
            format!("{what}: {bytes} bytes, the limit is {limit}"),
        )
    };
    match out {
        CallResult::Output(out) if out.len() as u64 > limit => Err(StepFailure::Limit(
            LimitKind::Output,
            format!("{} bytes returned, the limit is {limit}", out.len()),
        )),
        CallResult::Compensation(Compensation::ContinueWith(v)) if v.len() as u64 > limit => {
            Err(too_large("continue-with value", v.len()))
        }
        CallResult::Decision(Ok(d)) => {
            let bytes = d.reasons.iter().map(String::len).sum::<usize>()
                + d.obligations
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            if bytes as u64 > limit {
                return Err(too_large(
                    "policy decision (reasons and obligations)",
                    bytes,
                ));
            }
            Ok(CallResult::Decision(Ok(d)))
        }
        CallResult::Decision(Err(e)) => Ok(CallResult::Decision(Err(bounded(e, MAX_ERROR_BYTES)))),
        other => Ok(other),
    }
}

/// The failure an error that ended a call stands for: a limit (the
/// sandbox's or the attempt's budget), an invalid output, or a trap.
fn trap_failure(e: &wasmtime::Error, step: &StepSpec, stderr_hint: &str) -> StepFailure {
    if let Some(hit) = e.downcast_ref::<LimitHit>() {
        return StepFailure::Limit(hit.kind, hit.to_string());
    }
    if let Some(refused) = e.downcast_ref::<RefusalsExceeded>() {
        return StepFailure::Limit(LimitKind::Refusals, refused.to_string());
    }
    if let Some(InvalidOutput(why)) = e.downcast_ref::<InvalidOutput>() {
        return StepFailure::InvalidOutput(why.clone());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => StepFailure::Timeout(step.timeout),
        Some(Trap::StackOverflow) => {
            StepFailure::Limit(LimitKind::Stack, "call stack exhausted".into())
        }
        Some(Trap::OutOfFuel) => StepFailure::Limit(
            LimitKind::Fuel,
            format!(
                "the budget of {} fuel is spent",
                step.limits.fuel.unwrap_or(u64::MAX)
            ),
        ),
        Some(trap) => StepFailure::Trap(bounded(format!("{trap}{stderr_hint}"), MAX_ERROR_BYTES)),
        None => StepFailure::Trap(bounded(
            format!("{}{stderr_hint}", root_cause(e)),
            MAX_ERROR_BYTES,
        )),
    }
}

/// What ended a call, in a line: the error, and what caused it when that
/// says more (a host call's own error under wasmtime's backtrace context).
fn root_cause(e: &wasmtime::Error) -> String {
    let first = |text: String| text.lines().next().unwrap_or_default().trim().to_string();
    let top = first(format!("{e}"));
    let root = first(e.root_cause().to_string());
    // A host call's error under wasmtime's generic context (a host-side
    // limit: a field size, the store's handle limit, ...): the error itself.
    let generic = top.trim_end_matches(':') == "error while executing at wasm backtrace";
    if root.is_empty() || top.contains(&root) {
        top
    } else if generic {
        root
    } else {
        format!("{top}: {root}")
    }
}

/// Most of a guest's stderr a trap's error quotes (its last lines).
const STDERR_IN_ERROR_BYTES: usize = 600;

/// The last non-empty lines of a guest's stderr, oldest first, joined with
/// ` | `, within `max` bytes (a longer last line keeps its end): where
/// Python's traceback and JavaScript's uncaught error say what went wrong.
/// `None` when the guest wrote nothing.
fn stderr_tail(contents: &[u8], max: usize) -> Option<String> {
    let text = String::from_utf8_lossy(contents);
    let mut lines: Vec<&str> = Vec::new();
    let mut used = 0;
    for line in text.lines().rev().map(str::trim).filter(|l| !l.is_empty()) {
        let cost = line.len() + if lines.is_empty() { 0 } else { 3 };
        if used + cost > max {
            if lines.is_empty() {
                // One long line: its end, cut on a character boundary.
                let mut start = line.len() - max.min(line.len());
                while !line.is_char_boundary(start) {
                    start += 1;
                }
                lines.push(&line[start..]);
            }
            break;
        }
        used += cost;
        lines.push(line);
    }
    if lines.is_empty() {
        return None;
    }
    lines.reverse();
    Some(lines.join(" | "))
}

fn forward_stdio(telemetry: &TelemetryCtx, source: &str, pipe: &MemoryOutputPipe) {
    let contents = pipe.contents();
    if contents.is_empty() {
        return;
    }
    let text = String::from_utf8_lossy(&contents);
    let level = if source == "stderr" { "warn" } else { "info" };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        telemetry.guest_log(level, source, line);
    }
}

/// An attempt that failed retryably after the allowlist refused one of its
/// requests fails for good instead: the same request would be refused again
/// (whatever the guest's SDK made of the refusal: a JavaScript `fetch` sees
/// only a network error), and the error says which host and what decides.
fn not_retried_if_denied(
    ended: Result<CallResult, StepFailure>,
    caller: &Caller,
) -> Result<CallResult, StepFailure> {
    match (ended, caller.denied.get()) {
        (Err(StepFailure::Retryable(message)), Some(denied)) => Err(StepFailure::Fatal(format!(
            "{message} (not retried: {denied}; the workflow's allowed_hosts decides where a step may connect)"
        ))),
        (ended, _) => ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trap_quotes_the_end_of_the_guests_stderr() {
        let traceback = b"Traceback (most recent call last):\n  File \"app.py\", line 9, in run\n    raise ValueError('no such user: 42')\nValueError: no such user: 42\n\n";
        assert_eq!(
            stderr_tail(traceback, 600).as_deref(),
            Some(
                "Traceback (most recent call last): | File \"app.py\", line 9, in run | raise ValueError('no such user: 42') | ValueError: no such user: 42"
            )
        );
        // Within the bound: the newest lines are kept.
        assert_eq!(
            stderr_tail(traceback, 40).as_deref(),
            Some("ValueError: no such user: 42")
        );
        // One line longer than the bound: its end, on a character boundary.
        let long = format!("{}é!", "x".repeat(100));
        let tail = stderr_tail(long.as_bytes(), 2).expect("tail");
        assert!(tail.len() <= 2 && long.ends_with(&tail), "{tail}");
        assert_eq!(stderr_tail(b"", 600), None);
        assert_eq!(stderr_tail(b"\n  \n", 600), None);
    }
}
