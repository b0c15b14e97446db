//! One call into a component (`run`, `compensate`, `undo`, or a policy's
//! `evaluate`) in a fresh store and instance: the store's state and limits,
//! the deadline, and how the call's end (output, typed error, trap, limit,
//! timeout) becomes a [`StepFailure`]. Nothing survives the call.
//!
//! Must not know the DAG, retries or the journal.

use super::{ComponentKind, PreparedComponent, Sandbox};
use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::capabilities::Caller;
use crate::capabilities::coordination::CoordinationCtx;
use crate::capabilities::http::OutboundHttp;
use crate::capabilities::telemetry::TelemetryCtx;
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
            component: component.path.clone(),
            args: BTreeMap::new(),
            wait_for: Vec::new(),
            timeout,
            max_retries: 0,
            allowed_hosts: Vec::new(),
            limits: crate::workflow::StepLimits::default(),
        };
        let ctx = AttemptContext {
            run_id: "policy-eval".into(),
            workflow: String::new(),
            step: "policy".into(),
            attempt: 1,
            trace,
            recorder: crate::report::RunRecorder::new(),
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
        let caller = Arc::new(Caller {
            run_id: ctx.run_id,
            step: ctx.step,
            attempt: ctx.attempt,
            trace: ctx.trace,
            host_id: self.config.host_id.clone(),
            recorder: ctx.recorder,
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
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Err(Trap::Interrupt.into())
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
        // A language runtime reports an uncaught exception on stderr, then traps.
        let stderr_hint = if stderr.contents().is_empty() {
            ""
        } else {
            " (the guest's stderr, e.g. an exception, is in the log and the run's events)"
        };
        ending(result, step, stderr_hint)
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
                Ok(Ok(CallResult::Decision(out.map(|d| PolicyDecision {
                    allow: d.allow,
                    reasons: d.reasons,
                    obligations: d.obligations.into_iter().collect(),
                }))))
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
/// limit), its typed error, or the limit, trap or timeout that stopped it.
fn ending(
    result: Result<wasmtime::Result<Result<CallResult, WitStepError>>, tokio::time::error::Elapsed>,
    step: &StepSpec,
    stderr_hint: &str,
) -> Result<CallResult, StepFailure> {
    match result {
        Err(_elapsed) => Err(StepFailure::Timeout(step.timeout)),
        Ok(Ok(Ok(CallResult::Output(out)))) if out.len() as u64 > step.limits.max_output_bytes => {
            Err(StepFailure::Limit(
                LimitKind::Output,
                format!(
                    "{} bytes returned, the limit is {}",
                    out.len(),
                    step.limits.max_output_bytes
                ),
            ))
        }
        Ok(Ok(Ok(out))) => Ok(out),
        Ok(Ok(Err(WitStepError::Retryable(m)))) => Err(StepFailure::Retryable(m)),
        Ok(Ok(Err(WitStepError::Fatal(m)))) => Err(StepFailure::Fatal(m)),
        Ok(Err(e)) => Err(if let Some(hit) = e.downcast_ref::<LimitHit>() {
            StepFailure::Limit(hit.kind, hit.to_string())
        } else {
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
                Some(trap) => StepFailure::Trap(format!("{trap}{stderr_hint}")),
                None => StepFailure::Trap(format!("{}{stderr_hint}", root_cause(&e))),
            }
        }),
    }
}

fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
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
