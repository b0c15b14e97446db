//! The sandbox: wasmtime configuration, component loading and checking, and
//! running one step attempt in a fresh store and instance.
//!
//! Owns: the one `Engine` (pooling allocator, epoch interruption), the
//! `Linker` (WASI with nothing granted, wasi:http behind the outbound policy,
//! the braid interfaces), the on-disk cache of compiled components, the
//! per-attempt limits (timeout, memory), and the mapping of traps and timeouts
//! to [`StepFailure`](crate::scheduler::StepFailure)s. A guest's misbehaviour ends its attempt, never the host.
//!
//! Rooms: this file holds the [`Sandbox`] (engine, linkers, loading,
//! checking, the cache); `call` one call in a fresh store (its state, limits
//! and the mapping of its end to a [`StepFailure`](crate::scheduler::StepFailure)); `executor` the
//! [`SandboxExecutor`] the scheduler talks to.

mod call;
mod executor;

use crate::capabilities::budget::BudgetLimits;
pub use call::{CallResult, LimitHit, PolicyDecision, StepCall, StepState};
pub use executor::SandboxExecutor;

use crate::capabilities::coordination::CoordinationCtx;
use crate::capabilities::http_client::HttpClient;
use crate::capabilities::invocation::InvocationCtx;
use crate::capabilities::telemetry::TelemetryCtx;
use crate::store::ClaimStore;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::policy::exports::braid::workflow::policy::GuestIndices as PolicyIndices;
use crate::bindings::step::exports::braid::workflow::reversible::GuestIndices as ReversibleIndices;
use crate::bindings::step::exports::braid::workflow::step::GuestIndices as StepIndices;
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
    #[error(
        "{path}: a policy (it exports `braid:workflow/policy`) may import only `braid:workflow/telemetry` and the inert WASI interfaces, so that untrusted policy code cannot reach the network or take claims; it imports {forbidden}: refused"
    )]
    PolicyImports { path: PathBuf, forbidden: String },
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
    /// Host-wide ceilings on every attempt's budget (a step's own
    /// `max_log_records`, `max_log_bytes` and `max_refusals` are capped by
    /// these), and the lines an attempt may write to the host's log.
    pub ceilings: BudgetLimits,
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
            ceilings: BudgetLimits::CEILINGS,
        }
    }
}

/// Bytes of each linear memory (and table) kept resident between attempts
/// that reuse a pooling-allocator slot (see `Sandbox::new`).
const KEEP_RESIDENT_MEMORY: usize = 256 << 10;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// Bytes of each async (fiber) stack kept resident between attempts.
const KEEP_RESIDENT_STACK: usize = 32 << 10;

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
            // Twice the stores (`slots`): a store holds one fiber stack at
            // a time, but beside a CPU hog with 1,000 attempts in flight
            // the pool once ran out of stacks with every slot taken ("maximum
            // concurrent limit of 1000 for fibers", cause not pinned down);
            // spare stacks cost address space only, and the slots still
            // bound what runs.
            .total_stacks(n.saturating_mul(2))
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
            .pagemap_scan(wasmtime::Enabled::Auto)
            // A released fiber stack keeps its first KEEP_RESIDENT_STACK
            // bytes (memset to zero) and gives the rest back: without this
            // every stack slot a burst touched stayed resident for good
            // (tens of MiB after 256 attempts in flight).
            .async_stack_keep_resident(KEEP_RESIDENT_STACK);
        let mut wasm = Config::new();
        wasm.async_stack_zeroing(true);
        wasm.wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(config.fuel)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(engine_err)?;

        let mut linker: Linker<StepState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        use crate::bindings::step::braid::workflow::{coordination, invocation, telemetry, types};
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
        invocation::add_to_linker::<StepState, HasSelf<InvocationCtx>>(&mut linker, |s| {
            &mut s.invocation
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
            // Absolute: the journal names the file, and the host that
            // resumes or undoes a run may run from another directory.
            path: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
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
            // A policy importing a step's capability is refused for what it
            // is, not reported as a broken step.
            let granted_to_steps_only: Vec<&str> = imports
                .iter()
                .map(String::as_str)
                .filter(|i| {
                    [
                        "braid:workflow/coordination",
                        "braid:workflow/invocation",
                        "wasi:http/",
                    ]
                    .iter()
                    .any(|p| i.starts_with(p))
                })
                .collect();
            if is_policy && !granted_to_steps_only.is_empty() {
                return SandboxError::PolicyImports {
                    path: path.to_path_buf(),
                    forbidden: granted_to_steps_only.join(", "),
                };
            }
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
