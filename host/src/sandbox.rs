//! The sandbox: wasmtime configuration, component loading and checking, and
//! running one step attempt in a fresh store and instance.
//!
//! Owns: the one `Engine` (pooling allocator, epoch interruption), the
//! `Linker` (WASI with nothing granted, wasi:http behind the outbound policy,
//! the braid interfaces), the on-disk cache of compiled components, the
//! per-attempt limits (timeout, memory), and the mapping of traps and timeouts
//! to [`StepFailure`]s. A guest's misbehaviour ends its attempt, never the host.

use crate::capabilities::Caller;
use crate::capabilities::coordination::CoordinationCtx;
use crate::capabilities::http::OutboundHttp;
use crate::capabilities::http_client::HttpClient;
use crate::capabilities::telemetry::TelemetryCtx;
use crate::scheduler::{AttemptContext, Compensation, LimitKind, StepExecutor, StepFailure};
use crate::store::ClaimStore;
use crate::workflow::{StepSpec, Workflow};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, types::ComponentItem};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bindings generated from `wit/`. The `reversible-step-component` world
/// includes `step-component`, so its export indices serve both kinds of step.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "braid:workflow/reversible-step-component",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// Bindings for the `policy-component` world, sharing the step bindings' types.
pub mod policy_bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "braid:workflow/policy-component",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "braid:workflow/types": super::bindings::braid::workflow::types,
            "braid:workflow/telemetry": super::bindings::braid::workflow::telemetry,
        },
    });
}

use bindings::braid::workflow::types::StepError as WitStepError;
use bindings::exports::braid::workflow::reversible::{
    Compensation as WitCompensation, GuestIndices as ReversibleIndices,
};
use bindings::exports::braid::workflow::step::GuestIndices as StepIndices;
use policy_bindings::exports::braid::workflow::policy::GuestIndices as PolicyIndices;
use wasmtime::component::InstancePre;

/// The interface every step exports (any 0.1.x version).
pub const STEP_EXPORT: &str = "braid:workflow/step@0.1";
/// The interface a reversible step exports as well.
pub const REVERSIBLE_EXPORT: &str = "braid:workflow/reversible@0.1";
/// The interface a policy exports.
pub const POLICY_EXPORT: &str = "braid:workflow/policy@0.1";

/// Why the sandbox could not start or load a component.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("configuring wasmtime: {0}")]
    Engine(String),
    #[error(
        "{path}: file not found (build it first: `make guests` in the braid repository, `make` in a `braid new` project)"
    )]
    Missing { path: PathBuf },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid WebAssembly component: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: does not implement the braid step world: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
}

/// Tunables of the sandbox; defaults suit a single host.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Most step instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// The largest linear memory any step may be granted, in bytes (sizes
    /// the pooling allocator's slots; each step's own cap comes from its
    /// `memory_limit_mb`).
    pub max_memory: usize,
    /// Most table elements a step instance may grow a table to.
    pub max_table_elements: usize,
    /// Cap on what a step may write to stdout and to stderr per attempt.
    pub max_stdio_bytes: usize,
    /// Where compiled components are cached (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Names this process as a claim owner.
    pub host_id: String,
    /// Meter fuel, so steps can have a CPU budget (`fuel`). Off by default:
    /// epochs bound wall-clock time at lower cost.
    pub fuel: bool,
    /// Refuse allowlisted host names that resolve to private addresses.
    pub deny_private_networks: bool,
}

/// This machine's name for run and claim owners: `HOSTNAME` if set, else
/// the kernel's host name, else `braid`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "braid".into())
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            max_instances: 1000,
            max_memory: (crate::workflow::MAX_MEMORY_MB << 20) as usize,
            max_table_elements: 100_000,
            max_stdio_bytes: 64 << 10,
            cache_dir: None,
            host_id: format!("{}:{}", host_name(), std::process::id()),
            fuel: false,
            deny_private_networks: false,
        }
    }
}

/// Bytes of each linear memory (and table) kept resident between attempts
/// that reuse a pooling-allocator slot (see `Sandbox::new`).
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// How often the epoch advances; the granularity of step timeouts.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advances the engine's epoch from a dedicated OS thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("braid-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                tracing::error!("cannot start the epoch thread, timeouts fall back to tokio: {e}")
            });
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The store data of one step attempt.
pub struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outbound: OutboundHttp,
    coordination: CoordinationCtx,
    telemetry: TelemetryCtx,
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

impl bindings::braid::workflow::types::Host for CoordinationCtx {}
impl bindings::braid::workflow::types::Host for TelemetryCtx {}

/// A component compiled, checked against the step world and pre-instantiated.
pub struct PreparedComponent {
    pub path: PathBuf,
    pub sha256: String,
    /// Whether it came from the compiled-component cache.
    pub from_cache: bool,
    pre: InstancePre<StepState>,
    kind: ComponentKind,
}

/// Which braid world a component implements.
enum ComponentKind {
    /// `step-component`, or `reversible-step-component` when `reversible` is set.
    Step {
        step: StepIndices,
        reversible: Option<ReversibleIndices>,
    },
    /// `policy-component`: linked with telemetry only.
    Policy(PolicyIndices),
}

impl PreparedComponent {
    pub fn is_reversible(&self) -> bool {
        matches!(
            self.kind,
            ComponentKind::Step {
                reversible: Some(_),
                ..
            }
        )
    }

    pub fn is_policy(&self) -> bool {
        matches!(self.kind, ComponentKind::Policy(_))
    }

    /// The world it implements, for people.
    pub fn world(&self) -> &'static str {
        Self::world_of(&self.kind)
    }

    fn world_of(kind: &ComponentKind) -> &'static str {
        match kind {
            ComponentKind::Step {
                reversible: None, ..
            } => "braid:workflow/step-component",
            ComponentKind::Step {
                reversible: Some(_),
                ..
            } => "braid:workflow/reversible-step-component",
            ComponentKind::Policy(_) => "braid:workflow/policy-component",
        }
    }
}

/// What a component file is, for `braid inspect`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    /// The braid world it implements, if any.
    pub world: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Why the host would refuse it, if it would.
    pub refused: Option<String>,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time to compile (or load from the cache) and check it, in ms.
    pub load_ms: f64,
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

/// The process-wide sandbox: one engine, one linker, shared by every run.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<StepState>,
    /// For policies: inert WASI and telemetry, nothing else.
    policy_linker: Linker<StepState>,
    claims: Arc<dyn ClaimStore>,
    config: SandboxConfig,
    /// One permit per pooling-allocator instance slot: a call waits for a
    /// free slot instead of failing when every slot is in use.
    slots: Arc<tokio::sync::Semaphore>,
    /// Outbound connections, kept open and shared by every attempt.
    http_client: Arc<HttpClient>,
    _ticker: EpochTicker,
}

impl Sandbox {
    pub fn new(config: SandboxConfig, claims: Arc<dyn ClaimStore>) -> Result<Self, SandboxError> {
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.max(1);
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(config.max_memory)
            .table_elements(config.max_table_elements);
        // Reuse instance slots warm: on release, reset the pages an instance
        // touched (found with Linux's PAGEMAP_SCAN where the kernel has it,
        // 6.7+) with memset, up to these sizes, instead of madvise-ing the
        // whole slot away and faulting it back in on the next attempt. This
        // halves the cost of a minimal attempt (docs/PERFORMANCE.md); the
        // price is up to KEEP_RESIDENT_* bytes of resident memory per slot
        // that has been used.
        pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(engine_err)?;

        let mut linker: Linker<StepState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        use bindings::braid::workflow::{coordination, telemetry, types};
        types::add_to_linker::<StepState, HasSelf<CoordinationCtx>>(&mut linker, |s| {
            &mut s.coordination
        })
        .map_err(engine_err)?;
        coordination::add_to_linker::<StepState, HasSelf<CoordinationCtx>>(&mut linker, |s| {
            &mut s.coordination
        })
        .map_err(engine_err)?;
        telemetry::add_to_linker::<StepState, HasSelf<TelemetryCtx>>(&mut linker, |s| {
            &mut s.telemetry
        })
        .map_err(engine_err)?;

        let mut policy_linker: Linker<StepState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut policy_linker).map_err(engine_err)?;
        types::add_to_linker::<StepState, HasSelf<CoordinationCtx>>(&mut policy_linker, |s| {
            &mut s.coordination
        })
        .map_err(engine_err)?;
        telemetry::add_to_linker::<StepState, HasSelf<TelemetryCtx>>(&mut policy_linker, |s| {
            &mut s.telemetry
        })
        .map_err(engine_err)?;

        let ticker = EpochTicker::start(engine.clone());
        let slots = Arc::new(tokio::sync::Semaphore::new(n as usize));
        let http_client = Arc::new(HttpClient::new().map_err(SandboxError::Engine)?);
        Ok(Sandbox {
            slots,
            http_client,
            engine,
            linker,
            policy_linker,
            claims,
            config,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Identifies this engine build and configuration, so cached compiled
    /// code is never loaded into an engine that cannot run it.
    fn engine_hash(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Describes a component: its world, imports and exports, and whether
    /// (and why not) the host would run it.
    pub fn inspect(&self, path: &Path) -> Result<Inspection, SandboxError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                SandboxError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                SandboxError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let started = std::time::Instant::now();
        let (component, from_cache) = self.compile(path, &bytes, &sha256)?;
        let checked = self.check(path, &component);
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        let ty = component.component_type();
        let names = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>();
        let imports = names(&mut ty.imports(&self.engine).map(|(n, _)| n.to_string()));
        let exports = names(&mut ty.exports(&self.engine).map(|(n, _)| n.to_string()));
        let (world, refused) = match checked {
            Ok((_, kind)) => (Some(PreparedComponent::world_of(&kind).to_string()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Inspection {
            path: path.to_path_buf(),
            sha256,
            size_bytes: bytes.len() as u64,
            world,
            imports,
            exports,
            refused,
            from_cache,
            load_ms,
        })
    }

    /// Reads, compiles (or loads from the cache), checks and pre-instantiates
    /// a step component.
    pub fn load(&self, path: &Path) -> Result<PreparedComponent, SandboxError> {
        if !path.exists() {
            return Err(SandboxError::Missing {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| SandboxError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, from_cache) = self.compile(path, &bytes, &sha256)?;
        let (pre, kind) = self.check(path, &component)?;
        Ok(PreparedComponent {
            path: path.to_path_buf(),
            sha256,
            from_cache,
            pre,
            kind,
        })
    }

    fn compile(
        &self,
        path: &Path,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, bool), SandboxError> {
        let invalid = |e: wasmtime::Error| SandboxError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let Some(dir) = &self.config.cache_dir else {
            return Ok((Component::new(&self.engine, bytes).map_err(invalid)?, false));
        };
        let cached = dir.join(format!("{sha256}-{}.cwasm", self.engine_hash()));
        if cached.exists() {
            // SAFETY: files in the cache directory are written only by
            // `Component::serialize` below (to a temporary name, then renamed
            // into place, so never half-written), and their name carries the
            // engine's compatibility hash; wasmtime also checks the header.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(c) => return Ok((c, true)),
                Err(e) => {
                    tracing::warn!("ignoring unusable cache entry {}: {e:#}", cached.display())
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(invalid)?;
        if let Err(e) = write_cache_entry(dir, &cached, &component) {
            tracing::warn!("cannot cache compiled component {}: {e}", path.display());
        }
        Ok((component, false))
    }

    fn check(
        &self,
        path: &Path,
        component: &Component,
    ) -> Result<(InstancePre<StepState>, ComponentKind), SandboxError> {
        let wrong_world = |reason: String| SandboxError::WrongWorld {
            path: path.to_path_buf(),
            reason,
        };
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports_instance = |prefix: &str| {
            ty.exports(&self.engine).any(|(name, item)| {
                name.starts_with(prefix) && matches!(item.ty, ComponentItem::ComponentInstance(_))
            })
        };
        let is_policy = exports_instance(POLICY_EXPORT);
        if !exports_instance(STEP_EXPORT) && !is_policy {
            return Err(wrong_world(format!(
                "it does not export `{STEP_EXPORT}.x` or `{POLICY_EXPORT}.x` (its exports: {})",
                if exports.is_empty() {
                    "none".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        }
        // A policy gets the policy linker: telemetry and inert WASI only.
        let linker = if is_policy {
            &self.policy_linker
        } else {
            &self.linker
        };
        let instance_pre = linker.instantiate_pre(component).map_err(|e| {
            let imports: Vec<String> = ty
                .imports(&self.engine)
                .map(|(name, _)| name.to_string())
                .collect();
            wrong_world(format!(
                "it imports something the host does not provide ({e:#}); its imports: {}",
                imports.join(", ")
            ))
        })?;
        let wrong = |e: wasmtime::Error| wrong_world(format!("{e:#}"));
        let kind = if is_policy {
            ComponentKind::Policy(PolicyIndices::new(&instance_pre).map_err(wrong)?)
        } else {
            let step = StepIndices::new(&instance_pre).map_err(wrong)?;
            let reversible = if exports.iter().any(|e| e.starts_with(REVERSIBLE_EXPORT)) {
                Some(ReversibleIndices::new(&instance_pre).map_err(wrong)?)
            } else {
                None
            };
            ComponentKind::Step { step, reversible }
        };
        Ok((instance_pre, kind))
    }

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
        // Nothing is granted: no preopened directories, no environment, no
        // arguments, empty stdin, no sockets or name lookups.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = StepState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outbound: OutboundHttp {
                caller: Arc::clone(&caller),
                allowed_hosts: step.allowed_hosts.clone().into(),
                requests_left: step.limits.max_requests,
                max_response_bytes: step.limits.max_response_bytes,
                deny_private_networks: self.config.deny_private_networks,
                client: Arc::clone(&self.http_client),
            },
            coordination: CoordinationCtx {
                caller: Arc::clone(&caller),
                store: Arc::clone(&self.claims),
                claims_left: step.limits.max_claims,
            },
            telemetry: TelemetryCtx {
                caller: Arc::clone(&caller),
            },
            limiter: AttemptLimiter {
                memory_bytes: usize::try_from(step.limits.memory_bytes)
                    .unwrap_or(usize::MAX)
                    .min(self.config.max_memory),
                table_elements: self.config.max_table_elements,
            },
        };
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
        let invoke = async {
            let instance = component.pre.instantiate_async(&mut store).await?;
            let wit_error = |e: &StepFailure| match e {
                StepFailure::Retryable(_) | StepFailure::Timeout(_) => {
                    WitStepError::Retryable(e.to_string())
                }
                _ => WitStepError::Fatal(e.to_string()),
            };
            match call {
                StepCall::Run { input } => match &component.kind {
                    ComponentKind::Step { step, .. } => {
                        let guest = step.load(&mut store, &instance)?;
                        let out = guest.call_run(&mut store, &trace_context, &input).await?;
                        Ok(out.map(CallResult::Output))
                    }
                    ComponentKind::Policy(policy) => {
                        let guest = policy.load(&mut store, &instance)?;
                        let out = guest
                            .call_evaluate(&mut store, &trace_context, &input)
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
                    let guest = indices.load(&mut store, &instance)?;
                    let out = guest
                        .call_compensate(&mut store, &trace_context, &input, &wit_error(&error))
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
                    let guest = indices.load(&mut store, &instance)?;
                    let out = guest
                        .call_undo(&mut store, &trace_context, &input, &output)
                        .await?;
                    Ok(out.map(|()| CallResult::Undone))
                }
            }
        };
        // Epochs interrupt guest code only; a guest blocked in a host call
        // (a slow HTTP response) is stopped by this timeout.
        let result: Result<wasmtime::Result<Result<CallResult, WitStepError>>, _> =
            tokio::time::timeout(step.timeout, invoke).await;
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

        match result {
            Err(_elapsed) => Err(StepFailure::Timeout(step.timeout)),
            Ok(Ok(Ok(CallResult::Output(out))))
                if out.len() as u64 > step.limits.max_output_bytes =>
            {
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

fn write_cache_entry(dir: &Path, target: &Path, component: &Component) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component
        .serialize()
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, target)
}

/// Executes a workflow's steps in the sandbox: one prepared component per step.
pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    components: HashMap<String, Arc<PreparedComponent>>,
}

impl SandboxExecutor {
    /// An executor for already prepared components, by step name.
    pub fn from_components(
        sandbox: Arc<Sandbox>,
        components: impl IntoIterator<Item = (String, PreparedComponent)>,
    ) -> Self {
        SandboxExecutor {
            sandbox,
            components: components
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        }
    }

    /// This executor with `component` serving `steps` instead of what they
    /// had; every other step keeps its component.
    pub fn with_component(&self, steps: &[String], component: Arc<PreparedComponent>) -> Self {
        let mut components = self.components.clone();
        for step in steps {
            components.insert(step.clone(), Arc::clone(&component));
        }
        SandboxExecutor {
            sandbox: Arc::clone(&self.sandbox),
            components,
        }
    }

    /// Each step's prepared component, by step name.
    pub fn components(&self) -> BTreeMap<&str, &PreparedComponent> {
        self.components
            .iter()
            .map(|(step, c)| (step.as_str(), c.as_ref()))
            .collect()
    }

    /// Loads every step's component (each distinct file once). Reports every
    /// component that fails, not just the first.
    pub fn prepare(
        sandbox: Arc<Sandbox>,
        workflow: &Workflow,
    ) -> Result<Self, Vec<(String, SandboxError)>> {
        let mut by_path: HashMap<PathBuf, Arc<PreparedComponent>> = HashMap::new();
        let mut components = HashMap::new();
        let mut errors = Vec::new();
        for step in &workflow.steps {
            if step.limits.fuel.is_some() && !sandbox.config.fuel {
                errors.push((
                    step.name.clone(),
                    SandboxError::Engine("the step sets `fuel` but the sandbox runs without fuel metering (use --fuel)".into()),
                ));
                continue;
            }
            if let Some(c) = by_path.get(&step.component) {
                components.insert(step.name.clone(), Arc::clone(c));
                continue;
            }
            let started = Instant::now();
            match sandbox.load(&step.component) {
                Ok(c) => {
                    tracing::debug!(step = %step.name, component = %c.path.display(), sha256 = %c.sha256,
                        cached = c.from_cache, ms = started.elapsed().as_secs_f64() * 1000.0, "component loaded");
                    let c = Arc::new(c);
                    by_path.insert(step.component.clone(), Arc::clone(&c));
                    components.insert(step.name.clone(), c);
                }
                Err(e) => errors.push((step.name.clone(), e)),
            }
        }
        if errors.is_empty() {
            Ok(SandboxExecutor {
                sandbox,
                components,
            })
        } else {
            Err(errors)
        }
    }
}

impl SandboxExecutor {
    async fn call(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        call: StepCall,
    ) -> Result<CallResult, StepFailure> {
        let Some(component) = self.components.get(&step.name) else {
            return Err(StepFailure::Host(format!(
                "no component loaded for step `{}`",
                step.name
            )));
        };
        self.sandbox.call(component, step, ctx, call).await
    }
}

fn unexpected(what: &str) -> StepFailure {
    StepFailure::Host(format!(
        "the sandbox answered {what} with the wrong kind of result"
    ))
}

impl StepExecutor for SandboxExecutor {
    fn component_of(&self, step: &str) -> (String, String) {
        self.components
            .get(step)
            .map(|c| (c.path.display().to_string(), c.sha256.clone()))
            .unwrap_or_default()
    }

    fn is_reversible(&self, step: &str) -> bool {
        self.components.get(step).is_some_and(|c| c.is_reversible())
    }

    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        let recorder = ctx.recorder.clone();
        let (trace_id, span_id) = (
            ctx.trace.trace_id.to_string(),
            ctx.trace.span_id.to_string(),
        );
        match self.call(step, ctx, StepCall::Run { input }).await? {
            CallResult::Output(out) => Ok(out),
            // A policy step: its decision is the step's output; a deny fails it.
            CallResult::Decision(decision) => {
                let (verdict, reasons) = match &decision {
                    Ok(d) => (if d.allow { "allow" } else { "deny" }, d.reasons.join("; ")),
                    Err(e) => ("error", e.clone()),
                };
                tracing::info!(step = %step.name, %trace_id, %span_id, decision = verdict, reasons = %reasons, "policy decision");
                recorder.event(crate::report::EventRecord {
                    kind: "host".into(),
                    name: "policy.decision".into(),
                    level: "info".into(),
                    message: reasons.clone(),
                    trace_id,
                    span_id,
                    step: step.name.clone(),
                    at_ms: 0.0,
                    measurements: BTreeMap::new(),
                    metadata: [("decision".to_string(), verdict.to_string())].into(),
                });
                match decision {
                    Ok(d) if d.allow => Ok(serde_json::json!({
                        "allowed": true,
                        "reasons": d.reasons,
                        "obligations": d.obligations,
                    })
                    .to_string()),
                    Ok(d) => Err(StepFailure::Fatal(format!(
                        "denied by policy: {}",
                        d.reasons.join("; ")
                    ))),
                    Err(e) => Err(StepFailure::Fatal(format!("policy could not decide: {e}"))),
                }
            }
            _ => Err(unexpected("run")),
        }
    }

    async fn compensate(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        error: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        match self
            .call(step, ctx, StepCall::Compensate { input, error })
            .await?
        {
            CallResult::Compensation(c) => Ok(c),
            _ => Err(unexpected("compensate")),
        }
    }

    async fn undo(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        output: String,
    ) -> Result<(), StepFailure> {
        match self
            .call(step, ctx, StepCall::Undo { input, output })
            .await?
        {
            CallResult::Undone => Ok(()),
            _ => Err(unexpected("undo")),
        }
    }
}
