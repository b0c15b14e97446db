//! The `braid bench` suite: builds the sandboxed and native schedulers on
//! scratch stores, warms them up, applies each load, and adds the scaling
//! chains and per-attempt timings when asked. The CLI turns its flags into a
//! [`Plan`] and prints the [`Outcome`]; nothing here prints for humans
//! (progress bars come from the caller).

use super::{BenchApi, Load, LoadResult, NativeExecutor};
use crate::db::Durability;
use crate::journal::{RunJournal, SqliteJournal};
use crate::sample_api::Latencies;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::{Scheduler, StepExecutor};
use crate::store::{ClaimStore, SqliteClaimStore};
use crate::workflow::Workflow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Any error a suite passes on, as it was raised.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a suite could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// The workflow, or a component it names, cannot be used.
    #[error(transparent)]
    Input(BoxError),
    /// The engine or the native executor could not be set up.
    #[error(transparent)]
    Setup(BoxError),
    /// Something failed while measuring (scratch stores, the sample API, a timed step).
    #[error(transparent)]
    Run(BoxError),
}

/// What to measure.
pub struct Plan {
    /// The workflow to run (its steps must be the reference workflow's for the native baseline).
    pub workflow: PathBuf,
    pub latencies: Latencies,
    /// The compiled-component cache (a bench measures warm starts).
    pub cache_dir: Option<PathBuf>,
    /// How durable the scratch stores' commits are (`--durability`).
    pub durability: Durability,
    /// Journal runs (off measures the journal's cost when compared).
    pub journal: bool,
    /// Stores shared with other hosts (PostgreSQL, `--store`) to claim and
    /// journal in, instead of scratch SQLite files.
    pub shared: Option<SharedStores>,
    pub sandbox: bool,
    pub native: bool,
    /// Loads of the workflow itself, in order.
    pub loads: Vec<Load>,
    /// Cost vs steps and payload, when asked.
    pub scaling: Option<Scaling>,
    /// Time this many single attempts of `noop` and `aggregate`, when asked.
    pub attempt_calls: Option<usize>,
    /// Time this step of the workflow instead, called with this input.
    pub attempt_step: Option<(String, String)>,
}

/// A claim store and a run journal that outlive the bench (PostgreSQL).
#[derive(Clone)]
pub struct SharedStores {
    pub claims: Arc<dyn ClaimStore>,
    pub journal: Arc<dyn RunJournal>,
}

/// Generated chains of `noop` steps: cost vs number of steps (100-byte
/// payload) and vs payload size (a 6-step chain).
pub struct Scaling {
    pub steps: Vec<usize>,
    pub payload_bytes: Vec<usize>,
    /// Maps of `noop` over this many elements (100-byte elements), one run
    /// at a time; fewer runs of the larger maps, about as many elements
    /// as `runs` runs of a 24-step chain make steps.
    pub map_elements: Vec<usize>,
    /// Runs per chain.
    pub runs: usize,
}

/// What a suite measured.
pub struct Outcome {
    pub loads: Vec<LoadResult>,
    /// Per-attempt timings (`noop`, then `aggregate`), when asked.
    pub attempt: Option<Vec<serde_json::Value>>,
}

/// Makes a progress bar for a load and an executor (`sandbox`, `native`), or none.
pub type ProgressFn<'a> = dyn Fn(&Load, &str) -> Option<indicatif::ProgressBar> + 'a;

pub(super) fn run_error(e: impl Into<BoxError>) -> SuiteError {
    SuiteError::Run(e.into())
}

/// A measurement's scratch stores (SQLite, in a directory of their own,
/// removed when dropped) and a sandbox over them; the compiled-component
/// cache is the usual one.
pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    pub(super) claims: Arc<dyn ClaimStore>,
    pub(super) journal: Arc<dyn RunJournal>,
    pub(super) sandbox: Arc<Sandbox>,
    /// The writes made through `claims` and `journal`.
    pub(super) writes: Arc<super::counting::Writes>,
}

impl Scratch {
    pub(super) fn open(
        cache_dir: Option<PathBuf>,
        durability: Durability,
    ) -> Result<Scratch, SuiteError> {
        Self::open_on(cache_dir, durability, None)
    }

    /// [`Scratch::open`], claiming and journaling in `shared` if given
    /// (the scratch directory then holds only what the sandbox writes).
    pub(super) fn open_on(
        cache_dir: Option<PathBuf>,
        durability: Durability,
        shared: Option<&SharedStores>,
    ) -> Result<Scratch, SuiteError> {
        let dir = std::env::temp_dir().join(format!(
            "braid-bench-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let writes = Arc::new(super::counting::Writes::default());
        let opened = (|| {
            let (claims, journal): (Arc<dyn ClaimStore>, Arc<dyn RunJournal>) = match shared {
                Some(s) => (Arc::clone(&s.claims), Arc::clone(&s.journal)),
                None => (
                    Arc::new(SqliteClaimStore::open_with(&dir, durability).map_err(run_error)?),
                    Arc::new(SqliteJournal::open_with(&dir, durability).map_err(run_error)?),
                ),
            };
            let claims: Arc<dyn ClaimStore> = Arc::new(super::counting::CountedClaims {
                inner: claims,
                writes: Arc::clone(&writes),
            });
            let journal: Arc<dyn RunJournal> = Arc::new(super::counting::CountedJournal {
                inner: journal,
                writes: Arc::clone(&writes),
            });
            let config = SandboxConfig {
                cache_dir,
                ..SandboxConfig::default()
            };
            let sandbox = Sandbox::new(config, Arc::clone(&claims))
                .map_err(|e| SuiteError::Setup(e.into()))?;
            Ok((claims, journal, Arc::new(sandbox)))
        })();
        match opened {
            Ok((claims, journal, sandbox)) => Ok(Scratch {
                dir,
                claims,
                journal,
                sandbox,
                writes,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `plan` on `Scratch` stores.
pub async fn run(plan: &Plan, progress: &ProgressFn<'_>) -> Result<Outcome, SuiteError> {
    let scratch = Scratch::open_on(
        plan.cache_dir.clone(),
        plan.durability,
        plan.shared.as_ref(),
    )?;
    run_in(plan, progress, &scratch).await
}

async fn run_in(
    plan: &Plan,
    progress: &ProgressFn<'_>,
    scratch: &Scratch,
) -> Result<Outcome, SuiteError> {
    use super::drive;
    let claims = Arc::clone(&scratch.claims);
    let journal = Arc::clone(&scratch.journal);
    let sandbox = Arc::clone(&scratch.sandbox);
    let (workflow, executor) = crate::check::load_and_prepare(&plan.workflow, Arc::clone(&sandbox))
        .map_err(|e| SuiteError::Input(e.into()))?;
    let journaled = plan.journal.then_some(&journal);
    let sandboxed = Arc::new(bench_stores(
        Scheduler::new(Arc::new(executor), 4096),
        &claims,
        journaled,
    ));
    let native = Arc::new(bench_stores(
        Scheduler::new(
            Arc::new(
                NativeExecutor::new(Arc::clone(&claims), "bench".into())
                    .map_err(|e| SuiteError::Setup(e.into()))?,
            ),
            4096,
        ),
        &claims,
        journaled,
    ));
    let api = BenchApi::start(plan.latencies).await.map_err(run_error)?;

    let reference = |i: usize, tag: &str| super::reference_input(&api.addr, i, tag);
    // Warm up both paths (connections, pools, caches).
    for _ in 0..3 {
        let warm = Load::Sequential { runs: 5 };
        if plan.sandbox {
            drive(
                Arc::clone(&sandboxed),
                Arc::clone(&workflow),
                &api,
                warm,
                "sandbox",
                &reference,
                None,
            )
            .await;
        }
        if plan.native {
            drive(
                Arc::clone(&native),
                Arc::clone(&workflow),
                &api,
                warm,
                "native",
                &reference,
                None,
            )
            .await;
        }
    }
    let mut results: Vec<LoadResult> = Vec::new();
    let counted = |mut result: LoadResult, before: super::counting::WriteCount| {
        let count = scratch.writes.now().since(before);
        result.writes_per_run = Some(super::WritesPerRun::of(count, result.runs));
        result
    };
    for load in &plan.loads {
        if plan.sandbox {
            let before = scratch.writes.now();
            let result = drive(
                Arc::clone(&sandboxed),
                Arc::clone(&workflow),
                &api,
                *load,
                "sandbox",
                &reference,
                progress(load, "sandbox"),
            )
            .await;
            results.push(counted(result, before));
        }
        if plan.native {
            let before = scratch.writes.now();
            let result = drive(
                Arc::clone(&native),
                Arc::clone(&workflow),
                &api,
                *load,
                "native",
                &reference,
                progress(load, "native"),
            )
            .await;
            results.push(counted(result, before));
        }
    }
    if let Some(scaling) = &plan.scaling {
        let stores = BenchStores {
            sandbox: &sandbox,
            claims: &claims,
            journal: journaled,
            scratch: &scratch.dir,
            api: &api,
        };
        results.extend(bench_scaling(plan, scaling, &stores).await?);
    }
    let attempt = match plan.attempt_calls {
        Some(calls) => {
            Some(bench_attempts(&plan.workflow, &sandbox, calls, plan.attempt_step.as_ref()).await?)
        }
        None => None,
    };
    Ok(Outcome {
        loads: results,
        attempt,
    })
}

/// A bench scheduler: the bench's claim store, and its journal unless `--no-journal`.
fn bench_stores<E: StepExecutor>(
    scheduler: Scheduler<E>,
    claims: &Arc<dyn ClaimStore>,
    journal: Option<&Arc<dyn RunJournal>>,
) -> Scheduler<E> {
    let scheduler = scheduler.with_claims(Arc::clone(claims));
    match journal {
        Some(j) => scheduler.with_journal(Arc::clone(j), "bench".into()),
        None => scheduler,
    }
}

/// What the scaling chains share with the rest of the suite.
struct BenchStores<'a> {
    sandbox: &'a Arc<Sandbox>,
    claims: &'a Arc<dyn ClaimStore>,
    journal: Option<&'a Arc<dyn RunJournal>>,
    scratch: &'a Path,
    api: &'a BenchApi,
}

/// Runs in flight for each scaling load.
const SCALING_IN_FLIGHT: usize = 20;

/// Cost vs number of steps (chains of `noop`, 100-byte payload) and vs
/// payload size (a 6-step chain), each at [`SCALING_IN_FLIGHT`] runs in flight.
async fn bench_scaling(
    plan: &Plan,
    scaling: &Scaling,
    at: &BenchStores<'_>,
) -> Result<Vec<LoadResult>, SuiteError> {
    use super::{chain_workflow, drive};
    let reference = Workflow::load(&plan.workflow).map_err(|e| SuiteError::Input(e.into()))?;
    let components = reference
        .step("aggregate")
        .and_then(|s| s.component.parent())
        .and_then(|dir| std::path::absolute(dir).ok())
        .ok_or_else(|| SuiteError::Input("the workflow has no `aggregate` step".into()))?;
    let mut configs: Vec<(usize, usize)> = scaling.steps.iter().map(|&n| (n.max(1), 100)).collect();
    configs.extend(scaling.payload_bytes.iter().map(|&p| (6, p)));
    let mut seen = std::collections::HashSet::new();
    configs.retain(|c| seen.insert(*c));
    // One native executor (and its HTTP client) serves every chain.
    let native = Arc::new(
        NativeExecutor::new(Arc::clone(at.claims), "bench".into())
            .map_err(|e| SuiteError::Setup(e.into()))?,
    );
    let mut results = Vec::new();
    for &elements in &scaling.map_elements {
        results.extend(bench_map(plan, scaling, at, &components, &native, elements).await?);
    }
    for (steps, payload_bytes) in configs {
        let path = chain_workflow(&components, steps, at.scratch).map_err(run_error)?;
        let (workflow, executor) = crate::check::load_and_prepare(&path, Arc::clone(at.sandbox))
            .map_err(|e| SuiteError::Input(e.into()))?;
        let payload = "x".repeat(payload_bytes);
        let input = |_: usize, _: &str| serde_json::json!({ "payload": payload });
        let load = Load::Concurrent {
            in_flight: SCALING_IN_FLIGHT,
            runs: scaling.runs,
        };
        let label = format!("{steps} steps, {payload_bytes} B");
        if plan.sandbox {
            let s = Arc::new(bench_stores(
                Scheduler::new(Arc::new(executor), 4096),
                at.claims,
                at.journal,
            ));
            let mut r = drive(
                s,
                Arc::clone(&workflow),
                at.api,
                load,
                "sandbox",
                &input,
                None,
            )
            .await;
            r.load = label.clone();
            results.push(r);
        }
        if plan.native {
            let s = Arc::new(bench_stores(
                Scheduler::new(Arc::clone(&native), 4096),
                at.claims,
                at.journal,
            ));
            let mut r = drive(
                s,
                Arc::clone(&workflow),
                at.api,
                load,
                "native",
                &input,
                None,
            )
            .await;
            r.load = label;
            results.push(r);
        }
    }
    Ok(results)
}

/// One map of `noop` over `elements` 100-byte elements, one run at a time
/// (its elements [`super::MAP_PARALLEL`] at once), sandboxed and native.
async fn bench_map(
    plan: &Plan,
    scaling: &Scaling,
    at: &BenchStores<'_>,
    components: &Path,
    native: &Arc<NativeExecutor>,
    elements: usize,
) -> Result<Vec<LoadResult>, SuiteError> {
    use super::{drive, map_workflow};
    let path = map_workflow(components, elements.max(1), at.scratch).map_err(run_error)?;
    let (workflow, executor) = crate::check::load_and_prepare(&path, Arc::clone(at.sandbox))
        .map_err(|e| SuiteError::Input(e.into()))?;
    let items: Vec<String> = (0..elements).map(|i| format!("{i:0>100}")).collect();
    let input = |_: usize, _: &str| serde_json::json!({ "items": items });
    let load = Load::Concurrent {
        in_flight: 1,
        runs: (scaling.runs * 24 / elements.max(1)).clamp(2, scaling.runs.max(2)),
    };
    let label = format!("map of {elements}");
    let mut results = Vec::new();
    if plan.sandbox {
        let s = Arc::new(bench_stores(
            Scheduler::new(Arc::new(executor), 4096),
            at.claims,
            at.journal,
        ));
        let wf = Arc::clone(&workflow);
        let mut r = drive(s, wf, at.api, load, "sandbox", &input, None).await;
        r.load = label.clone();
        results.push(r);
    }
    if plan.native {
        let s = Arc::new(bench_stores(
            Scheduler::new(Arc::clone(native), 4096),
            at.claims,
            at.journal,
        ));
        let mut r = drive(s, workflow, at.api, load, "native", &input, None).await;
        r.load = label;
        results.push(r);
    }
    Ok(results)
}

/// Per-attempt cost (a fresh store, instance, call and teardown),
/// sequentially, in microseconds: of the minimal step (`noop.wasm` beside the
/// workflow's components: returns its input, calls no host function), then of
/// the workflow's `aggregate` (parses JSON, emits an event, returns JSON).
/// With `only` (a step's name and input): of that step alone.
async fn bench_attempts(
    workflow: &Path,
    sandbox: &Sandbox,
    calls: usize,
    only: Option<&(String, String)>,
) -> Result<Vec<serde_json::Value>, SuiteError> {
    let workflow = Workflow::load(workflow).map_err(|e| SuiteError::Input(e.into()))?;
    if let Some((name, input)) = only {
        let step = workflow.step(name).cloned().ok_or_else(|| {
            SuiteError::Input(format!("the workflow has no step `{name}` to time").into())
        })?;
        return Ok(vec![
            time_attempts(sandbox, &workflow.name, &step, calls, input).await?,
        ]);
    }
    let aggregate = workflow
        .step("aggregate")
        .cloned()
        .ok_or_else(|| SuiteError::Input("the workflow has no `aggregate` step to time".into()))?;
    let mut noop = aggregate.clone();
    noop.name = "noop".into();
    noop.component = aggregate.component.with_file_name("noop.wasm");
    let mut out = Vec::new();
    for step in [noop, aggregate] {
        out.push(time_attempts(sandbox, &workflow.name, &step, calls, "{}").await?);
    }
    Ok(out)
}

/// Times `n` sequential attempts of `step` with `input` (after 100
/// unrecorded warm-up calls).
async fn time_attempts(
    sandbox: &Sandbox,
    workflow: &str,
    step: &crate::workflow::StepSpec,
    n: usize,
    input: &str,
) -> Result<serde_json::Value, SuiteError> {
    use crate::trace::{AttemptTrace, SpanId, TraceFlags, TraceId, TraceState};
    let component = sandbox
        .load(&step.component)
        .map_err(|e| SuiteError::Input(e.into()))?;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| run_error(e.to_string()))?;
    for i in 0..n + 100 {
        let ctx = crate::scheduler::AttemptContext {
            run_id: "bench".into(),
            workflow: workflow.to_string(),
            step: step.name.clone(),
            attempt: 1,
            trace: AttemptTrace {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_span_id: SpanId::random(),
                flags: TraceFlags::from_bits(3),
                state: TraceState::default(),
            },
            recorder: crate::report::RunRecorder::new(),
            keys: crate::scheduler::KeySecret::random(),
        };
        let t0 = std::time::Instant::now();
        let out = sandbox
            .call(
                &component,
                step,
                ctx,
                crate::sandbox::StepCall::Run {
                    input: input.into(),
                },
            )
            .await;
        let us = t0.elapsed().as_micros().max(1) as u64;
        if let Err(e) = out {
            return Err(run_error(format!(
                "the timed step `{}` failed: {e}",
                step.name
            )));
        }
        if i >= 100 {
            let _ = hist.record(us);
        }
    }
    Ok(serde_json::json!({
        "step": step.name,
        "component": step.component,
        "calls": n,
        "p50_us": hist.value_at_quantile(0.5),
        "p90_us": hist.value_at_quantile(0.9),
        "p99_us": hist.value_at_quantile(0.99),
        "max_us": hist.max(),
    }))
}
