//! The `braid` command line. The only place that prints for humans.
//!
//! Exit codes: 0 ok, 1 the run failed, 2 bad input or definition.

use anyhow::{Context, Result};
use braid::journal::SqliteJournal;
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
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
        Command::Policy(PolicyCommand::Eval {
            policy,
            input,
            traceparent,
            timeout_ms,
            state,
        }) => policy_eval(&policy, &input, traceparent, timeout_ms, &state).await,
        Command::Recover { json, state } => {
            let host = open_host(&state)?;
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
    journal: Arc<SqliteJournal>,
    owner: String,
}

fn open_host(state: &StateArgs) -> Result<Host, Exit> {
    let claims: Arc<dyn ClaimStore> =
        Arc::new(SqliteClaimStore::open(&state.state_dir).map_err(bad_input)?);
    let journal = Arc::new(SqliteJournal::open(&state.state_dir).map_err(bad_input)?);
    let config = SandboxConfig {
        cache_dir: (!state.no_cache).then(|| state.state_dir.join("cache")),
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
    })
}

async fn recover(host: &Host) -> Result<Vec<braid::recovery::RecoveredRun>, Exit> {
    braid::recovery::recover(
        Arc::clone(&host.sandbox),
        Arc::clone(&host.journal),
        Arc::clone(&host.claims),
        &host.owner,
    )
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
    let host = open_host(state)?;
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
        .with_claims(Arc::clone(&host.claims));
    let trace = IncomingTrace::from_headers(traceparent.as_deref(), tracestate.as_deref());
    let report = scheduler
        .run(RunRequest {
            workflow,
            input,
            trace,
        })
        .await
        .map_err(|e| bad_input(anyhow::anyhow!("{e}")))?;
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
                "error: run {} failed (trace {}): {}",
                report.run_id,
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
    let host = open_host(state)?;
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
    let (addr, server) = sample_api::bind(listen, latencies, faults)
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
    let host = open_host(state)?;
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

async fn runs(json: bool, state: &StateArgs) -> Result<u8, Exit> {
    let journal = SqliteJournal::open(&state.state_dir).map_err(bad_input)?;
    let list = journal.runs().await.map_err(|e| Exit(1, e.into()))?;
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
    let store = SqliteClaimStore::open(&state.state_dir).map_err(bad_input)?;
    let list = store.list().await.map_err(|e| Exit(1, e.into()))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).map_err(|e| Exit(1, e.into()))?
        );
        return Ok(0);
    }
    if list.is_empty() {
        println!("no claims in {}", store.path().display());
    }
    let now = braid::store::now_ms();
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
