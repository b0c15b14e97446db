//! The `braid` command line. The only place that prints for humans.
//!
//! Exit codes: 0 ok, 1 the run failed, 2 bad input or definition.

use anyhow::{Context, Result};
use braid::journal::{RunJournal, SqliteJournal};
use braid::report::RunReport;
use braid::sample_api::{self, Latencies};
use braid::sandbox::{Sandbox, SandboxConfig};
use braid::scheduler::{RunRequest, Scheduler};
use braid::store::{ClaimStore, SqliteClaimStore};
use braid::trace::IncomingTrace;
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `println!` that ignores a closed stdout (`braid ... | head`): the reader
/// has gone, so there is no one left to tell; `println!` would panic.
macro_rules! println {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "braid",
    version,
    about = "Run workflows whose steps are sandboxed WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct StateArgs {
    /// Directory for the claim store and the compiled-component cache.
    #[arg(long, env = "BRAID_STATE_DIR", default_value = ".braid")]
    state_dir: PathBuf,
    /// Where claims and the run journal live: `sqlite` (files in the state
    /// directory, one machine) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
    /// (one database shared by several braid hosts; TLS with
    /// `?sslmode=verify-full&sslrootcert=CA.pem`; see docs/scaling.md).
    #[arg(long, env = "BRAID_STORE", default_value = "sqlite")]
    store: String,
    /// Where compiled components are cached (default: `<state-dir>/cache`).
    /// Entries are keyed by the component's sha256 and the engine's
    /// compatibility hash, so one cache may serve several state dirs.
    #[arg(long, env = "BRAID_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    no_cache: bool,
    /// Meter fuel so steps can set a CPU budget (`fuel` in the workflow).
    #[arg(long)]
    fuel: bool,
    /// Refuse allowlisted host names that resolve to loopback or private
    /// addresses (allowlist the IP itself to reach one).
    #[arg(long)]
    deny_private_networks: bool,
}

impl StateArgs {
    /// The compiled-component cache directory, unless `--no-cache`.
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        Some(
            self.cache_dir
                .clone()
                .unwrap_or_else(|| self.state_dir.join("cache")),
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow once and print its step tree (or, with --json, its report).
    Run {
        /// The workflow definition (TOML).
        workflow: PathBuf,
        /// The run's input: a JSON object, or @FILE to read it from a file.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Continue this W3C trace (an invalid value starts a new trace).
        #[arg(long)]
        traceparent: Option<String>,
        /// Vendor trace state to forward (ignored without a valid --traceparent).
        #[arg(long)]
        tracestate: Option<String>,
        /// Print the run report as JSON instead of the tree.
        #[arg(long)]
        json: bool,
        /// Most step attempts in flight at once.
        #[arg(long, default_value_t = 64)]
        max_concurrency: usize,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Validate workflow definitions and the components they name.
    Check {
        #[arg(required = true)]
        workflows: Vec<PathBuf>,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Serve the bundled sample API (token, profile, permissions).
    SampleApi {
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Latency of every endpoint in ms (overrides the seed-like defaults).
        #[arg(long)]
        latency_ms: Option<u64>,
        #[arg(long)]
        auth_latency_ms: Option<u64>,
        #[arg(long)]
        profile_latency_ms: Option<u64>,
        #[arg(long)]
        permissions_latency_ms: Option<u64>,
        /// Write the bound address (`127.0.0.1:PORT`) to this file once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Inject a fault: `ENDPOINT:key=value,...`, e.g. `profile:status=503,every=2`,
        /// `permissions:delay_ms=2000,probability=0.1`, `token:drop` (repeatable).
        #[arg(long = "fault", value_parser = sample_api::FaultRule::parse)]
        faults: Vec<sample_api::FaultRule>,
    },
    /// List coordination claims in the state directory.
    Claims {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Show which braid world a component implements, what it imports and
    /// exports, and why the host would refuse it (exit 2 if it would).
    Inspect {
        component: PathBuf,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Serve workflows over HTTP (see docs/serving.md): POST
    /// /v1/workflows/NAME/runs, GET /v1/runs/ID, /metrics, ...
    Serve {
        /// Workflow files to serve (default: every workflows/*.toml).
        workflows: Vec<PathBuf>,
        /// Address to listen on; port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Write the bound address here once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Largest accepted request body, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body_bytes: usize,
        /// On SIGTERM/ctrl-c, how long runs in flight may take to finish
        /// before they are aborted (undone, journaled), in ms.
        #[arg(long, default_value_t = 30_000)]
        grace_ms: u64,
        /// Step attempts in flight at once, per workflow.
        #[arg(long, default_value_t = 256)]
        max_concurrency: usize,
        /// Enables `PUT /v1/components/NAME` and rollback for callers that
        /// send `Authorization: Bearer TOKEN`.
        #[arg(long, env = "BRAID_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Watch the component files and hot-swap a changed one.
        #[arg(long)]
        watch: bool,
        /// How often `--watch` looks, in ms.
        #[arg(long, default_value_t = 500)]
        watch_interval_ms: u64,
        /// Largest accepted component upload, in bytes.
        #[arg(long, default_value_t = 64 << 20)]
        max_component_bytes: usize,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Start a new step or policy project (Rust, Python or JavaScript) that
    /// builds with `make` and passes `braid check` (see docs/writing-steps.md).
    New {
        /// `step` or `policy`.
        #[arg(value_parser = ["step", "policy"])]
        kind: String,
        /// The component's name: a lowercase letter, then lowercase letters,
        /// digits or `_`.
        name: String,
        /// `rust`, `python` or `js`.
        #[arg(long, value_parser = ["rust", "python", "js"])]
        lang: String,
        /// Where to create it (default: ./NAME); must not exist yet.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Load-test a workflow against the in-process sample API, sandboxed and
    /// natively (see docs/PERFORMANCE.md).
    Bench(BenchArgs),
    /// List journaled runs (running, succeeded, failed, aborted).
    Runs {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Undo and abort runs whose host died (also done at the start of `braid run`).
    Recover {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// The workflow to run (its steps must be the reference workflow's for the native baseline).
    #[arg(long, default_value = "workflows/api-orchestration.toml")]
    workflow: PathBuf,
    /// What to measure.
    #[arg(long, value_enum, default_value = "sequential")]
    mode: BenchMode,
    /// Sample API latencies: the seed's (~33/28/35 ms) or none.
    #[arg(long, value_enum, default_value = "zero")]
    latency: BenchLatency,
    /// Every sample API call answers after this many milliseconds (overrides --latency).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Which executors to run; with both, the table gives the sandbox/native ratio.
    #[arg(long, value_enum, default_value = "both")]
    executor: BenchExecutor,
    /// Runs per load (sequential, and per ladder rung at least).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Ladder rungs (runs in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20,100")]
    concurrency: Vec<usize>,
    /// Open-loop rates (runs started per second).
    #[arg(long, value_delimiter = ',', default_value = "5,15,30,300")]
    rate: Vec<f64>,
    /// How long each rate is held.
    #[arg(long, default_value_t = 5.0)]
    duration_s: f64,
    /// Scaling mode: chains of this many `noop` steps (100-byte payload).
    #[arg(long, value_delimiter = ',', default_value = "1,2,6,12,24")]
    steps: Vec<usize>,
    /// Scaling mode: payload sizes in bytes handed along a 6-step chain.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,10000,100000,1000000"
    )]
    payload_bytes: Vec<usize>,
    /// Claims mode: how many distinct work items the claimers pick from
    /// (few items: contended, many conflicts).
    #[arg(long, default_value_t = 100_000)]
    items: usize,
    /// Do not journal runs (measures the journal's cost when compared).
    #[arg(long)]
    no_journal: bool,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchMode {
    Sequential,
    Ladder,
    Rate,
    Attempt,
    /// Cost vs number of steps and payload size (generated chains of `noop`).
    Scaling,
    /// The claim store alone (`--store`: sqlite in a scratch directory, or a
    /// postgres:// URL): claim calls per second and latency, `--concurrency`
    /// claimers, `--runs` claim calls per rung, on `--items` work items.
    Claims,
    All,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchLatency {
    Seed,
    Zero,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchExecutor {
    Sandbox,
    Native,
    Both,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Evaluate a policy component once and print its decision (exit 0 allow, 1 deny).
    Eval {
        /// The policy component (.wasm).
        policy: PathBuf,
        /// The facts to decide on: a JSON object, or @FILE.
        #[arg(long)]
        input: String,
        /// Evaluate under this W3C trace (default: a new trace).
        #[arg(long)]
        traceparent: Option<String>,
        /// Wall-clock limit in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        #[command(flatten)]
        state: StateArgs,
    },
}

/// A failure with the exit code it maps to.
struct Exit(u8, anyhow::Error);

fn bad_input(e: impl Into<anyhow::Error>) -> Exit {
    Exit(2, e.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => ExitCode::from(code),
        Err(Exit(code, e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

async fn dispatch(command: Command) -> Result<u8, Exit> {
    match command {
        Command::Run {
            workflow,
            input,
            traceparent,
            tracestate,
            json,
            max_concurrency,
            state,
        } => {
            run(
                &workflow,
                &input,
                traceparent,
                tracestate,
                json,
                max_concurrency,
                &state,
            )
            .await
        }
        Command::Check { workflows, state } => check(&workflows, &state),
        Command::SampleApi {
            listen,
            latency_ms,
            auth_latency_ms,
            profile_latency_ms,
            permissions_latency_ms,
            addr_file,
            faults,
        } => {
            let d = Latencies::default();
            let pick = |specific: Option<u64>, default: Duration| {
                specific
                    .or(latency_ms)
                    .map_or(default, Duration::from_millis)
            };
            let latencies = Latencies {
                auth: pick(auth_latency_ms, d.auth),
                profile: pick(profile_latency_ms, d.profile),
                permissions: pick(permissions_latency_ms, d.permissions),
            };
            serve_sample_api(listen, latencies, faults, addr_file)
                .await
                .map_err(|e| Exit(1, e))
        }
        Command::Claims { json, state } => claims(json, &state).await,
        Command::Runs { json, state } => runs(json, &state).await,
        Command::Bench(args) => bench(args).await,
        Command::Serve {
            workflows,
            listen,
            addr_file,
            max_body_bytes,
            grace_ms,
            max_concurrency,
            admin_token,
            watch,
            watch_interval_ms,
            max_component_bytes,
            state,
        } => {
            serve(
                workflows,
                ServeOptions {
                    listen,
                    addr_file,
                    max_body_bytes,
                    grace: Duration::from_millis(grace_ms),
                    max_concurrency,
                    admin_token,
                    watch: watch.then(|| Duration::from_millis(watch_interval_ms.max(10))),
                    max_component_bytes,
                },
                &state,
            )
            .await
        }
        Command::New {
            kind,
            name,
            lang,
            dir,
        } => new_project(&kind, &name, &lang, dir),
        Command::Inspect {
            component,
            json,
            state,
        } => {
            let host = open_local_host(&state)?;
            let i = host.sandbox.inspect(&component).map_err(bad_input)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&i).map_err(|e| Exit(1, e.into()))?
                );
            } else {
                println!(
                    "{}  {} bytes  sha256 {}",
                    i.path.display(),
                    i.size_bytes,
                    i.sha256
                );
                println!(
                    "world: {}",
                    i.world.as_deref().unwrap_or("none the host runs")
                );
                println!(
                    "loaded in {:.1} ms ({})",
                    i.load_ms,
                    if i.from_cache {
                        "compiled code from the cache"
                    } else {
                        "compiled now"
                    }
                );
                println!("imports:");
                for name in &i.imports {
                    println!("  {name}");
                }
                println!("exports:");
                for name in &i.exports {
                    println!("  {name}");
                }
            }
            match &i.refused {
                Some(why) => {
                    eprintln!("error: refused: {why}");
                    Ok(2)
                }
                None => Ok(0),
            }
        }
        Command::Policy(PolicyCommand::Eval {
            policy,
            input,
            traceparent,
            timeout_ms,
            state,
        }) => policy_eval(&policy, &input, traceparent, timeout_ms, &state).await,
        Command::Recover { json, state } => {
            let host = open_host(&state).await?;
            let recovered = recover(&host).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&recovered).map_err(|e| Exit(1, e.into()))?
                );
            } else if recovered.is_empty() {
                println!("nothing to recover");
            } else {
                for r in &recovered {
                    let undone: Vec<String> = r
                        .undo
                        .iter()
                        .map(|u| format!("{} {}", u.step, u.outcome))
                        .collect();
                    println!(
                        "aborted run {} (trace {}, host {}): undo [{}], released claims [{}]",
                        r.run_id,
                        r.trace_id,
                        r.previous_owner,
                        undone.join(", "),
                        r.released_claims.join(", ")
                    );
                }
            }
            Ok(0)
        }
    }
}

/// What a command that runs steps needs: the sandbox and the stores.
struct Host {
    sandbox: Arc<Sandbox>,
    claims: Arc<dyn ClaimStore>,
    journal: Arc<dyn RunJournal>,
    owner: String,
    /// How recovery tells a run's host is gone (by the kind of store).
    liveness: braid::recovery::Liveness,
    /// The runs this host is executing (recovery leaves them alone).
    local: braid::journal::LocalRuns,
}

impl Host {
    fn recoverer(&self) -> braid::recovery::Recoverer {
        braid::recovery::Recoverer {
            sandbox: Arc::clone(&self.sandbox),
            journal: Arc::clone(&self.journal),
            claims: Arc::clone(&self.claims),
            owner: self.owner.clone(),
            liveness: self.liveness,
            local: self.local.clone(),
        }
    }
}

/// Connections to PostgreSQL a host keeps at most (`--store postgres://`).
const PG_CONNECTIONS: usize = 16;

/// What `--store` names.
enum StoreKind<'a> {
    /// SQLite files in the state directory (one machine).
    Sqlite,
    /// One PostgreSQL database shared by several hosts.
    Postgres(&'a str),
}

impl StateArgs {
    fn store_kind(&self) -> Result<StoreKind<'_>, Exit> {
        match self.store.trim() {
            "sqlite" => Ok(StoreKind::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreKind::Postgres(url))
            }
            other => Err(bad_input(anyhow::anyhow!(
                "--store (or BRAID_STORE) `{}`: expected `sqlite` or a postgres:// URL",
                braid::postgres::redact(other)
            ))),
        }
    }
}

/// The claim store and run journal `--store` names.
struct Stores {
    claims: Arc<dyn ClaimStore>,
    journal: Arc<dyn RunJournal>,
    /// Where they are, for messages (a PostgreSQL password is hidden).
    shown: String,
    /// How recovery tells a run's host is gone, by the kind of store.
    liveness: braid::recovery::Liveness,
}

/// The SQLite claim store and journal in `dir`.
fn open_sqlite_stores(dir: &Path) -> Result<Stores, Exit> {
    let claims = SqliteClaimStore::open(dir).map_err(bad_input)?;
    let journal = SqliteJournal::open(dir).map_err(bad_input)?;
    Ok(Stores {
        shown: claims.path().display().to_string(),
        claims: Arc::new(claims),
        journal: Arc::new(journal),
        liveness: braid::recovery::Liveness::ThisMachine,
    })
}

async fn open_stores(state: &StateArgs) -> Result<Stores, Exit> {
    let url = match state.store_kind()? {
        StoreKind::Sqlite => return open_sqlite_stores(&state.state_dir),
        StoreKind::Postgres(url) => url,
    };
    let pg = braid::postgres::PgPool::open(url, PG_CONNECTIONS)
        .await
        .map_err(|e| match e {
            braid::postgres::PostgresError::BadUrl { .. } => bad_input(e),
            other => Exit(1, other.into()),
        })?;
    Ok(Stores {
        shown: pg.shown_url().to_string(),
        claims: Arc::new(braid::postgres::PostgresClaimStore::new(pg.clone())),
        journal: Arc::new(braid::postgres::PostgresJournal::new(pg)),
        liveness: braid::recovery::Liveness::LeasesOnly,
    })
}

/// [`open_host_with`] on the stores `--store` names.
async fn open_host(state: &StateArgs) -> Result<Host, Exit> {
    open_host_with(state, open_stores(state).await?)
}

/// A host for commands that only load components (check, inspect, policy
/// eval): it never claims or journals, so it opens the local files rather
/// than connect to a shared database.
fn open_local_host(state: &StateArgs) -> Result<Host, Exit> {
    open_host_with(state, open_sqlite_stores(&state.state_dir)?)
}

fn open_host_with(state: &StateArgs, stores: Stores) -> Result<Host, Exit> {
    let Stores {
        claims,
        journal,
        liveness,
        ..
    } = stores;
    let config = SandboxConfig {
        cache_dir: state.cache_dir(),
        fuel: state.fuel,
        deny_private_networks: state.deny_private_networks,
        ..SandboxConfig::default()
    };
    let owner = config.host_id.clone();
    let sandbox = Sandbox::new(config, Arc::clone(&claims)).map_err(|e| Exit(2, e.into()))?;
    Ok(Host {
        sandbox: Arc::new(sandbox),
        claims,
        journal,
        owner,
        liveness,
        local: braid::journal::LocalRuns::default(),
    })
}

async fn recover(host: &Host) -> Result<Vec<braid::recovery::RecoveredRun>, Exit> {
    host.recoverer()
        .recover()
        .await
        .map_err(|e| Exit(1, e.into()))
}

fn read_input(input: &str) -> Result<serde_json::Value> {
    let text = match input.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--input: cannot read {path}"))?
        }
        None => input.to_string(),
    };
    serde_json::from_str(&text).context("--input is not valid JSON")
}

async fn run(
    workflow: &Path,
    input: &str,
    traceparent: Option<String>,
    tracestate: Option<String>,
    json: bool,
    max_concurrency: usize,
    state: &StateArgs,
) -> Result<u8, Exit> {
    let input = read_input(input).map_err(bad_input)?;
    let host = open_host(state).await?;
    let (workflow, executor) =
        braid::check::load_and_prepare(workflow, Arc::clone(&host.sandbox)).map_err(bad_input)?;
    // Runs left behind by a host that died are undone before new work starts.
    for r in recover(&host).await? {
        eprintln!(
            "recovered run {} (trace {}) left by {}: aborted",
            r.run_id, r.trace_id, r.previous_owner
        );
    }
    let scheduler = Scheduler::new(Arc::new(executor), max_concurrency)
        .with_journal(Arc::clone(&host.journal), host.owner.clone())
        .with_local_runs(host.local.clone())
        .with_claims(Arc::clone(&host.claims));
    let trace = IncomingTrace::from_headers(traceparent.as_deref(), tracestate.as_deref());
    let otel = braid::otel::OtlpExport::from_env(opentelemetry::trace::SpanKind::Internal)
        .map_err(bad_input)?;
    let report = scheduler
        .run(RunRequest {
            workflow,
            input,
            trace,
        })
        .await
        .map_err(|e| match e {
            braid::scheduler::RunError::Input(_) => bad_input(anyhow::anyhow!("{e}")),
            other => Exit(1, other.into()),
        })?;
    if let Some(otel) = otel {
        otel.export(&report);
        otel.shutdown(Duration::from_secs(10)).await;
    }
    let mut out = std::io::stdout().lock();
    let printed = if json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        print_tree(&mut out, &report)
    };
    printed.map_err(|e| Exit(1, e.into()))?;
    if report.outcome == "succeeded" {
        Ok(0)
    } else {
        if !json {
            eprintln!(
                "error: run {} {} (trace {}): {}",
                report.run_id,
                report.outcome,
                report.trace_id,
                report.error.as_deref().unwrap_or("unknown reason")
            );
        }
        Ok(1)
    }
}

/// The human view of a run: one line per step, like the seed's.
fn print_tree(out: &mut impl Write, r: &RunReport) -> std::io::Result<()> {
    let origin = if r.continued_trace {
        "continued"
    } else {
        "new"
    };
    writeln!(out, "workflow {}  run {}", r.workflow, r.run_id)?;
    writeln!(
        out,
        "trace {} ({origin} trace, run span {})",
        r.trace_id, r.span_id
    )?;
    let width = r.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, s) in r.steps.iter().enumerate() {
        let branch = if i + 1 == r.steps.len() {
            "└──"
        } else {
            "├──"
        };
        let mark = match s.outcome.as_str() {
            "succeeded" => "ok",
            "failed" => "FAILED",
            "compensated" => "COMPENSATED",
            "cancelled" => "CANCELLED",
            other => other,
        };
        let span = s.attempts.last().map_or("-", |a| a.span_id.as_str());
        let retries = if s.attempts.len() > 1 {
            format!("  {} attempts", s.attempts.len())
        } else {
            String::new()
        };
        let parallel = if s.parallel_with.is_empty() {
            String::new()
        } else {
            format!("  (parallel with {})", s.parallel_with.join(", "))
        };
        writeln!(
            out,
            "{branch} {:<width$}  {:>8.2} ms  {mark:<11}  span {span}{retries}{parallel}",
            s.name, s.duration_ms
        )?;
        let pipe = if i + 1 == r.steps.len() { " " } else { "│" };
        for c in &s.compensations {
            writeln!(
                out,
                "{pipe}       compensate after `{}`: {}",
                c.failure, c.decision
            )?;
        }
        if let Some(e) = &s.error {
            writeln!(out, "{pipe}       {e}")?;
        }
    }
    for u in &r.undo {
        let n = u.attempts.len();
        let error = u
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "undo {} ({n} attempt{}): {}{error}",
            u.step,
            if n == 1 { "" } else { "s" },
            u.outcome
        )?;
    }
    if !r.released_claims.is_empty() {
        writeln!(out, "released claims: {}", r.released_claims.join(", "))?;
    }
    let foreign = r.events.iter().filter(|e| e.trace_id != r.trace_id).count()
        + r.http_calls
            .iter()
            .filter(|c| {
                c.traceparent
                    .as_ref()
                    .is_some_and(|t| !t.contains(&r.trace_id))
            })
            .count();
    let claims = r
        .events
        .iter()
        .filter(|e| e.name == "claim.granted")
        .count();
    writeln!(
        out,
        "total {:.2} ms  {}{}  {} API calls, {} claim{}, {} events: {}",
        r.duration_ms,
        r.outcome,
        if r.degraded { " (degraded)" } else { "" },
        r.http_calls.len(),
        claims,
        if claims == 1 { "" } else { "s" },
        r.events.len(),
        if foreign == 0 {
            format!("all on trace {}", r.trace_id)
        } else {
            format!("{foreign} NOT on this trace")
        }
    )?;
    if let Some(result) = &r.result {
        let pretty = serde_json::to_string_pretty(result).map_err(std::io::Error::other)?;
        writeln!(out, "result: {pretty}")?;
    }
    Ok(())
}

fn check(workflows: &[PathBuf], state: &StateArgs) -> Result<u8, Exit> {
    let host = open_local_host(state)?;
    let mut failed = false;
    for path in workflows {
        match braid::check::load_and_prepare(path, Arc::clone(&host.sandbox)) {
            Ok((wf, _)) => println!(
                "{}: ok (workflow `{}`, {} steps)",
                path.display(),
                wf.name,
                wf.steps.len()
            ),
            Err(e) => {
                failed = true;
                eprint!("{e}");
            }
        }
    }
    Ok(if failed { 2 } else { 0 })
}

async fn serve_sample_api(
    listen: SocketAddr,
    latencies: Latencies,
    faults: Vec<sample_api::FaultRule>,
    addr_file: Option<PathBuf>,
) -> Result<u8> {
    let (addr, server, _log) = sample_api::bind(listen, latencies, faults)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(file) = &addr_file {
        // Write then rename, so a reader never sees a half-written address.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    }
    println!("sample API listening on http://{addr}");
    std::io::stdout().flush()?;
    tokio::select! {
        r = server => r.context("sample API server")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}

struct ServeOptions {
    listen: SocketAddr,
    addr_file: Option<PathBuf>,
    max_body_bytes: usize,
    grace: Duration,
    max_concurrency: usize,
    admin_token: Option<String>,
    watch: Option<Duration>,
    max_component_bytes: usize,
}

async fn serve(mut files: Vec<PathBuf>, opts: ServeOptions, state: &StateArgs) -> Result<u8, Exit> {
    let ServeOptions {
        listen,
        addr_file,
        max_body_bytes,
        grace,
        max_concurrency,
        admin_token,
        watch,
        max_component_bytes,
    } = opts;
    use braid::registry::Served;
    use braid::serve::{ServeConfig, Server};
    if files.is_empty() {
        let dir = Path::new("workflows");
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("no workflow files given and cannot read {}", dir.display()))
            .map_err(bad_input)?;
        files = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
    }
    let host = open_host(state).await?;
    // Every workflow is checked and its components compiled before the
    // server listens; all problems are reported together.
    let mut served = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match braid::check::load_and_prepare(file, Arc::clone(&host.sandbox)) {
            Ok((workflow, executor)) => {
                let scheduler = Scheduler::new(Arc::new(executor), max_concurrency)
                    .with_journal(Arc::clone(&host.journal), host.owner.clone())
                    .with_local_runs(host.local.clone())
                    .with_claims(Arc::clone(&host.claims));
                served.push(Served::new(workflow, scheduler));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(bad_input(anyhow::anyhow!("{}", problems.join("\n"))));
    }
    for r in recover(&host).await? {
        eprintln!(
            "recovered run {} (trace {}) left by {}: aborted",
            r.run_id, r.trace_id, r.previous_owner
        );
    }
    // Runs of hosts that die later (other hosts on a shared store, or
    // another process on this machine) are found while serving.
    let recovery = host.recoverer().spawn_loop();
    let names: Vec<String> = served.iter().map(|s| s.workflow.name.clone()).collect();
    let server = Server::start(
        listen,
        ServeConfig {
            workflows: served,
            journal: Arc::clone(&host.journal),
            sandbox: Arc::clone(&host.sandbox),
            state_dir: state.state_dir.clone(),
            admin_token,
            watch,
            max_component_bytes,
            max_body_bytes,
            grace,
            otel: braid::otel::OtlpExport::from_env(opentelemetry::trace::SpanKind::Server)
                .map_err(bad_input)?,
        },
    )
    .await
    .map_err(bad_input)?;
    eprintln!(
        "braid serving {} on http://{} (owner {})",
        names.join(", "),
        server.addr,
        host.owner
    );
    if let Some(path) = addr_file {
        std::fs::write(&path, server.addr.to_string())
            .with_context(|| format!("writing {}", path.display()))
            .map_err(|e| Exit(1, e))?;
    }
    braid::serve::shutdown_signal().await;
    eprintln!(
        "shutting down: finishing runs in flight (grace {} ms)",
        grace.as_millis()
    );
    recovery.abort();
    server.shutdown().await.map_err(|e| Exit(1, e.into()))?;
    eprintln!("stopped");
    Ok(0)
}

fn new_project(kind: &str, name: &str, lang: &str, dir: Option<PathBuf>) -> Result<u8, Exit> {
    use braid::scaffold::{Kind, Lang};
    let kind = if kind == "policy" {
        Kind::Policy
    } else {
        Kind::Step
    };
    let lang =
        Lang::parse(lang).ok_or_else(|| bad_input(anyhow::anyhow!("unknown language `{lang}`")))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = braid::scaffold::create(&dir, name, lang, kind).map_err(bad_input)?;
    println!(
        "created a {lang} {kind} `{name}` in {} ({} files)",
        dir.display(),
        files.len()
    );
    println!(
        "next:\n  cd {}\n  make          # builds {name}.wasm\n  make check    # braid check workflow.toml",
        dir.display()
    );
    Ok(0)
}

async fn policy_eval(
    policy: &Path,
    input: &str,
    traceparent: Option<String>,
    timeout_ms: u64,
    state: &StateArgs,
) -> Result<u8, Exit> {
    let input = read_input(input).map_err(bad_input)?;
    if !input.is_object() {
        return Err(bad_input(anyhow::anyhow!("--input must be a JSON object")));
    }
    let host = open_local_host(state)?;
    let component = host.sandbox.load(policy).map_err(bad_input)?;
    if !component.is_policy() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: not a policy: it implements {}, not braid:workflow/policy-component",
            policy.display(),
            component.world()
        )));
    }
    let incoming = IncomingTrace::from_headers(traceparent.as_deref(), None);
    let trace = braid::trace::AttemptTrace {
        trace_id: incoming.parent.trace_id,
        span_id: braid::trace::SpanId::random(),
        parent_span_id: incoming.parent.parent_id,
        flags: incoming.parent.flags,
        state: incoming.state,
    };
    let trace_id = trace.trace_id.to_string();
    let decision = host
        .sandbox
        .evaluate_policy(
            &component,
            trace,
            input.to_string(),
            Duration::from_millis(timeout_ms),
        )
        .await
        .map_err(|e| Exit(1, anyhow::anyhow!("policy failed ({}): {e}", e.kind())))?;
    match decision {
        Ok(d) => {
            let out = serde_json::json!({
                "trace_id": trace_id,
                "allow": d.allow,
                "reasons": d.reasons,
                "obligations": d.obligations,
                "policy_sha256": component.sha256,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| Exit(1, e.into()))?
            );
            Ok(if d.allow { 0 } else { 1 })
        }
        Err(e) => Err(bad_input(anyhow::anyhow!(
            "the policy could not decide: {e}"
        ))),
    }
}

/// `braid bench --mode claims`: the claim store alone, one rung per
/// `--concurrency` value.
async fn bench_claims(args: &BenchArgs) -> Result<u8, Exit> {
    let (store, label): (Arc<dyn ClaimStore>, &str) = match args.state.store_kind()? {
        StoreKind::Sqlite => {
            let scratch = std::env::temp_dir().join(format!(
                "braid-bench-{}",
                hex::encode(rand::random::<[u8; 6]>())
            ));
            let store = SqliteClaimStore::open(&scratch).map_err(|e| Exit(1, e.into()))?;
            (Arc::new(store), "sqlite")
        }
        StoreKind::Postgres(_) => (open_stores(&args.state).await?.claims, "postgres"),
    };
    let mut rungs = Vec::new();
    for &claimers in &args.concurrency {
        let rung =
            braid::bench::claim_rung(Arc::clone(&store), label, claimers, args.runs, args.items)
                .await
                .map_err(|e| Exit(1, e.into()))?;
        if !args.json {
            println!(
                "{:<9} {:>4} claimers {:>7} items: {:>8.0} claims/s  claim p50 {:>7.0} us p99 {:>7.0} us  release p50 {:>7.0} us  {} conflicts",
                rung.store,
                rung.claimers,
                rung.items,
                rung.claims_per_s,
                rung.claim_p50_us,
                rung.claim_p99_us,
                rung.release_p50_us,
                rung.conflicts
            );
        }
        rungs.push(rung);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rungs).map_err(|e| Exit(1, e.into()))?
        );
    }
    Ok(0)
}

async fn bench(args: BenchArgs) -> Result<u8, Exit> {
    use braid::bench::{self, BenchApi, Load, LoadResult, NativeExecutor};
    if args.mode == BenchMode::Claims {
        return bench_claims(&args).await;
    }
    let (latencies, latency_label) = match (args.latency_ms, args.latency) {
        (Some(ms), _) => (
            Latencies::uniform(Duration::from_millis(ms)),
            format!("{ms} ms per call"),
        ),
        (None, BenchLatency::Seed) => (Latencies::default(), "seed (33/28/35 ms)".to_string()),
        (None, BenchLatency::Zero) => (Latencies::uniform(Duration::ZERO), "zero".to_string()),
    };
    // Claims and the journal go to a scratch directory; the compiled-component
    // cache is the usual one, so a bench measures warm starts.
    let scratch = std::env::temp_dir().join(format!(
        "braid-bench-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let claims: Arc<dyn ClaimStore> =
        Arc::new(SqliteClaimStore::open(&scratch).map_err(|e| Exit(1, e.into()))?);
    let journal: Arc<dyn RunJournal> =
        Arc::new(SqliteJournal::open(&scratch).map_err(|e| Exit(1, e.into()))?);
    let sandbox = Arc::new(
        Sandbox::new(
            SandboxConfig {
                cache_dir: args.state.cache_dir(),
                ..SandboxConfig::default()
            },
            Arc::clone(&claims),
        )
        .map_err(|e| Exit(2, e.into()))?,
    );
    let (workflow, executor) =
        braid::check::load_and_prepare(&args.workflow, Arc::clone(&sandbox)).map_err(bad_input)?;
    let journaled = (!args.no_journal).then_some(&journal);
    let sandboxed = Arc::new(bench_stores(
        Scheduler::new(Arc::new(executor), 4096),
        &claims,
        journaled,
    ));
    let native = Arc::new(bench_stores(
        Scheduler::new(
            Arc::new(
                NativeExecutor::new(Arc::clone(&claims), "bench".into())
                    .map_err(|e| Exit(2, anyhow::anyhow!(e)))?,
            ),
            4096,
        ),
        &claims,
        journaled,
    ));
    let api = BenchApi::start(latencies)
        .await
        .map_err(|e| Exit(1, e.into()))?;

    let mut loads = Vec::new();
    let (seq, ladder, rate) = match args.mode {
        BenchMode::Sequential => (true, false, false),
        BenchMode::Ladder => (false, true, false),
        BenchMode::Rate => (false, false, true),
        BenchMode::Attempt | BenchMode::Scaling | BenchMode::Claims => (false, false, false),
        BenchMode::All => (true, true, true),
    };
    if seq {
        loads.push(Load::Sequential { runs: args.runs });
    }
    if ladder {
        for &c in &args.concurrency {
            loads.push(Load::Concurrent {
                in_flight: c,
                runs: args.runs.max(c * 3),
            });
        }
    }
    if rate {
        for &r in &args.rate {
            loads.push(Load::Rate {
                per_sec: r,
                duration: Duration::from_secs_f64(args.duration_s),
            });
        }
    }
    let reference = |i: usize, tag: &str| bench::reference_input(&api.addr, i, tag);
    let run_sandbox = args.executor != BenchExecutor::Native;
    let run_native = args.executor != BenchExecutor::Sandbox;
    // Warm up both paths (connections, pools, caches).
    for _ in 0..3 {
        let warm = Load::Sequential { runs: 5 };
        if run_sandbox {
            bench::drive(
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
        if run_native {
            bench::drive(
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
    let progress = |load: &Load, who: &str| {
        let total = match load {
            Load::Sequential { runs } | Load::Concurrent { runs, .. } => *runs as u64,
            Load::Rate { per_sec, duration } => (per_sec * duration.as_secs_f64()).round() as u64,
        };
        let bar = indicatif::ProgressBar::new(total);
        bar.set_message(format!("{} · {who}", load.label()));
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg:28} {bar:40} {pos}/{len} {per_sec}")
        {
            bar.set_style(style);
        }
        Some(bar)
    };
    let mut results: Vec<LoadResult> = Vec::new();
    for load in &loads {
        if run_sandbox {
            results.push(
                bench::drive(
                    Arc::clone(&sandboxed),
                    Arc::clone(&workflow),
                    &api,
                    *load,
                    "sandbox",
                    &reference,
                    progress(load, "sandbox"),
                )
                .await,
            );
        }
        if run_native {
            results.push(
                bench::drive(
                    Arc::clone(&native),
                    Arc::clone(&workflow),
                    &api,
                    *load,
                    "native",
                    &reference,
                    progress(load, "native"),
                )
                .await,
            );
        }
    }
    if matches!(args.mode, BenchMode::Scaling | BenchMode::All) {
        results.extend(bench_scaling(&args, &sandbox, &claims, &journal, &scratch, &api).await?);
    }
    let attempt = if matches!(args.mode, BenchMode::Attempt | BenchMode::All) {
        Some(bench_attempts(&args, &sandbox).await?)
    } else {
        None
    };
    let violations: usize = results.iter().map(|r| r.trace_violations.len()).sum();
    if args.json {
        let out = serde_json::json!({ "loads": results, "attempt": attempt, "trace_violations": violations });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| Exit(1, e.into()))?
        );
    } else {
        print_bench(
            &results,
            attempt.as_deref(),
            &latency_label,
            !args.no_journal,
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    for r in &results {
        for v in r.trace_violations.iter().take(5) {
            eprintln!("trace check failed ({} · {}): {v}", r.load, r.executor);
        }
    }
    Ok(if violations == 0 { 0 } else { 1 })
}

/// A bench scheduler: the bench's claim store, and its journal unless `--no-journal`.
fn bench_stores<E: braid::scheduler::StepExecutor>(
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

/// Runs in flight for each scaling load.
const SCALING_IN_FLIGHT: usize = 20;

/// Cost vs number of steps (chains of `noop`, 100-byte payload) and vs
/// payload size (a 6-step chain), each at [`SCALING_IN_FLIGHT`] runs in flight.
async fn bench_scaling(
    args: &BenchArgs,
    sandbox: &Arc<Sandbox>,
    claims: &Arc<dyn ClaimStore>,
    journal: &Arc<dyn RunJournal>,
    scratch: &std::path::Path,
    api: &braid::bench::BenchApi,
) -> Result<Vec<braid::bench::LoadResult>, Exit> {
    use braid::bench::{self, Load, NativeExecutor};
    let reference = braid::workflow::Workflow::load(&args.workflow).map_err(bad_input)?;
    let components = reference
        .step("aggregate")
        .and_then(|s| s.component.parent())
        .and_then(|dir| std::path::absolute(dir).ok())
        .ok_or_else(|| bad_input(anyhow::anyhow!("the workflow has no `aggregate` step")))?;
    let mut configs: Vec<(usize, usize)> = args.steps.iter().map(|&n| (n.max(1), 100)).collect();
    configs.extend(args.payload_bytes.iter().map(|&p| (6, p)));
    let mut seen = std::collections::HashSet::new();
    configs.retain(|c| seen.insert(*c));
    // One native executor (and its HTTP client) serves every chain.
    let native = Arc::new(
        NativeExecutor::new(Arc::clone(claims), "bench".into())
            .map_err(|e| Exit(2, anyhow::anyhow!(e)))?,
    );
    let mut results = Vec::new();
    for (steps, payload_bytes) in configs {
        let path =
            bench::chain_workflow(&components, steps, scratch).map_err(|e| Exit(1, e.into()))?;
        let (workflow, executor) =
            braid::check::load_and_prepare(&path, Arc::clone(sandbox)).map_err(bad_input)?;
        let journal = (!args.no_journal).then_some(journal);
        let payload = "x".repeat(payload_bytes);
        let input = |_: usize, _: &str| serde_json::json!({ "payload": payload });
        let load = Load::Concurrent {
            in_flight: SCALING_IN_FLIGHT,
            runs: args.runs,
        };
        let label = format!("{steps} steps, {payload_bytes} B");
        if args.executor != BenchExecutor::Native {
            let s = Arc::new(bench_stores(
                Scheduler::new(Arc::new(executor), 4096),
                claims,
                journal,
            ));
            let mut r =
                bench::drive(s, Arc::clone(&workflow), api, load, "sandbox", &input, None).await;
            r.load = label.clone();
            results.push(r);
        }
        if args.executor != BenchExecutor::Sandbox {
            let s = Arc::new(bench_stores(
                Scheduler::new(Arc::clone(&native), 4096),
                claims,
                journal,
            ));
            let mut r =
                bench::drive(s, Arc::clone(&workflow), api, load, "native", &input, None).await;
            r.load = label;
            results.push(r);
        }
    }
    Ok(results)
}

/// Per-attempt cost (a fresh store, instance, call and teardown),
/// sequentially, in microseconds: of the minimal step (`noop.wasm` beside the
/// workflow's components: returns its input, calls no host function), then of
/// the workflow's `aggregate` (parses JSON, emits an event, returns JSON).
async fn bench_attempts(
    args: &BenchArgs,
    sandbox: &Sandbox,
) -> Result<Vec<serde_json::Value>, Exit> {
    let workflow = braid::workflow::Workflow::load(&args.workflow).map_err(bad_input)?;
    let aggregate = workflow.step("aggregate").cloned().ok_or_else(|| {
        bad_input(anyhow::anyhow!(
            "the workflow has no `aggregate` step to time"
        ))
    })?;
    let mut noop = aggregate.clone();
    noop.name = "noop".into();
    noop.component = aggregate.component.with_file_name("noop.wasm");
    let mut out = Vec::new();
    for step in [noop, aggregate] {
        out.push(time_attempts(sandbox, &workflow.name, &step, args.runs.max(1000)).await?);
    }
    Ok(out)
}

/// Times `n` sequential attempts of `step` (after 100 unrecorded warm-up calls).
async fn time_attempts(
    sandbox: &Sandbox,
    workflow: &str,
    step: &braid::workflow::StepSpec,
    n: usize,
) -> Result<serde_json::Value, Exit> {
    let component = sandbox.load(&step.component).map_err(bad_input)?;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|e| Exit(1, anyhow::anyhow!("{e}")))?;
    for i in 0..n + 100 {
        let ctx = braid::scheduler::AttemptContext {
            run_id: "bench".into(),
            workflow: workflow.to_string(),
            step: step.name.clone(),
            attempt: 1,
            trace: braid::trace::AttemptTrace {
                trace_id: braid::trace::TraceId::random(),
                span_id: braid::trace::SpanId::random(),
                parent_span_id: braid::trace::SpanId::random(),
                flags: braid::trace::TraceFlags::from_bits(3),
                state: braid::trace::TraceState::default(),
            },
            recorder: braid::report::RunRecorder::new(),
        };
        let t0 = std::time::Instant::now();
        let out = sandbox
            .call(
                &component,
                step,
                ctx,
                braid::sandbox::StepCall::Run { input: "{}".into() },
            )
            .await;
        let us = t0.elapsed().as_micros().max(1) as u64;
        if let Err(e) = out {
            return Err(Exit(
                1,
                anyhow::anyhow!("the timed step `{}` failed: {e}", step.name),
            ));
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

fn print_bench(
    results: &[braid::bench::LoadResult],
    attempt: Option<&[serde_json::Value]>,
    latency: &str,
    journal: bool,
) {
    println!(
        "API latency: {latency}; journal: {}; peak RSS {:.0} MiB",
        if journal { "on" } else { "off" },
        braid::bench::peak_rss_mib()
    );
    if results.is_empty() {
        print_attempt(attempt);
        return;
    }
    println!();
    println!(
        "| load | executor | runs | ok | runs/s | p50 ms | p90 ms | p99 ms | max ms | traces | sandbox/native |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in results {
        let ratio = results
            .iter()
            .find(|o| o.load == r.load && o.executor == "native")
            .filter(|_| r.executor == "sandbox")
            .map_or(String::new(), |n| {
                format!("{:.2}", r.throughput_per_s / n.throughput_per_s.max(1e-9))
            });
        println!(
            "| {} | {} | {} | {:.1}% | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            r.load,
            r.executor,
            r.runs,
            100.0 * r.succeeded as f64 / r.runs.max(1) as f64,
            r.throughput_per_s,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            if r.trace_violations.is_empty() {
                "intact".to_string()
            } else {
                format!("{} violations", r.trace_violations.len())
            },
            ratio
        );
    }
    print_attempt(attempt);
}

fn print_attempt(attempt: Option<&[serde_json::Value]>) {
    let Some(timed) = attempt else { return };
    println!(
        "\nper step attempt (fresh store + instance + call + teardown), sequential, after 100 warm-up calls:\n"
    );
    println!("| step | calls | p50 us | p90 us | p99 us | max us |");
    println!("|---|---:|---:|---:|---:|---:|");
    for a in timed {
        println!(
            "| `{}` | {} | {} | {} | {} | {} |",
            a["step"].as_str().unwrap_or(""),
            a["calls"],
            a["p50_us"],
            a["p90_us"],
            a["p99_us"],
            a["max_us"]
        );
    }
}

async fn runs(json: bool, state: &StateArgs) -> Result<u8, Exit> {
    let list = open_stores(state)
        .await?
        .journal
        .runs()
        .await
        .map_err(|e| Exit(1, e.into()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| Exit(1, e.into()))?
        );
        return Ok(0);
    }
    for r in list {
        println!(
            "{}  {:<9}{}  workflow {}  trace {}  {} journal entries{}",
            r.run_id,
            r.status,
            if r.degraded { " (degraded)" } else { "" },
            r.workflow,
            r.trace_id,
            r.entries,
            r.error.map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    Ok(0)
}

async fn claims(json: bool, state: &StateArgs) -> Result<u8, Exit> {
    let Stores { claims, shown, .. } = open_stores(state).await?;
    let list = claims.list().await.map_err(|e| Exit(1, e.into()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| Exit(1, e.into()))?
        );
        return Ok(0);
    }
    if list.is_empty() {
        println!("no claims in {shown}");
    }
    // Leases are measured by the store's clock (the database's, when shared).
    let now = claims.clock_ms().await.map_err(|e| Exit(1, e.into()))?;
    for c in list {
        let state = if c.expires_at_ms > now {
            "live"
        } else {
            "expired"
        };
        println!(
            "{}  {state}  run {}  trace {}  step {}  claim {}  expires {}",
            c.work_item, c.run_id, c.trace_id, c.step, c.claim_id, c.expires_at_ms
        );
    }
    Ok(0)
}
