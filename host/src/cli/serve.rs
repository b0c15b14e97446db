//! `braid serve`: serves workflows over HTTP (see docs/serving.md), with
//! recovery of abandoned runs and graceful shutdown.

use super::host::open_host;
use super::{Exit, PruneEvery, RetainArgs, StateArgs, bad_input};
use anyhow::Context;
use braid::scheduler::Scheduler;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Workflow files, or directories of them (their *.toml), to serve
    /// (default: the directory workflows/).
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
    /// Most runs in flight on this server: one more waits up to
    /// --admission-wait-ms for a place, then is refused with 503 and
    /// Retry-After.
    #[arg(long, default_value_t = braid::serve::DEFAULT_MAX_RUNS_IN_FLIGHT)]
    max_runs_in_flight: usize,
    /// Most runs in flight of one workflow (one busy workflow cannot take
    /// every place); at most --max-runs-in-flight, which is the default.
    #[arg(long)]
    max_runs_in_flight_per_workflow: Option<usize>,
    /// How long a run past a bound waits for a place before it is refused
    /// (503), in ms; 0 refuses at once. Waiting, a client resending on
    /// every 503 does not resend.
    #[arg(long, default_value_t = braid::serve::DEFAULT_ADMISSION_WAIT.as_millis() as u64)]
    admission_wait_ms: u64,
    /// Most runs waiting for a place at once; one more is refused at once.
    #[arg(long, default_value_t = braid::serve::DEFAULT_MAX_RUNS_WAITING)]
    max_runs_waiting: usize,
    /// Close a connection that sends no complete request head for this
    /// long, in ms (idle between keep-alive requests, or slow headers).
    #[arg(long, default_value_t = braid::serve::DEFAULT_IDLE_TIMEOUT.as_millis() as u64)]
    idle_timeout_ms: u64,
    /// Close a new connection whose first request head is not complete
    /// this long after it opened, in ms (at most --idle-timeout-ms): a
    /// socket opened and left silent goes sooner than a keep-alive one.
    #[arg(long, default_value_t = braid::serve::DEFAULT_FIRST_REQUEST_TIMEOUT.as_millis() as u64)]
    first_request_timeout_ms: u64,
    /// Most connections open at once: past it a new connection takes the
    /// place of the longest-idle one (closed), or is closed itself when
    /// every open one is busy.
    #[arg(long, default_value_t = braid::serve::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most connections open at once from one address, likewise.
    #[arg(long, default_value_t = braid::serve::DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    max_connections_per_peer: usize,
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
    /// The run viewer links each trace to this page of your tracing
    /// backend; `{trace_id}` is replaced, e.g.
    /// http://localhost:16686/trace/{trace_id} (Jaeger).
    #[arg(long, env = "BRAID_TRACE_URL", value_name = "TEMPLATE")]
    trace_url: Option<braid::serve::TraceUrl>,
    /// A host name this server answers to (the `Host` of a request; repeat
    /// for several). Default: localhost, 127.0.0.1 and ::1 when listening
    /// on loopback, any name otherwise. Other names get 421 (a DNS
    /// rebinding page reaches the server under its own name).
    #[arg(
        long = "public-name",
        env = "BRAID_PUBLIC_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    public_names: Vec<String>,
    /// A browser origin (scheme://host[:port]) whose pages may call the
    /// API besides the server's own (repeat for several; `*`: any). Other
    /// cross-origin requests get 403.
    #[arg(
        long = "allow-origin",
        env = "BRAID_ALLOW_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    allow_origins: Vec<String>,
    #[command(flatten)]
    retain: RetainArgs,
    #[command(flatten)]
    prune: PruneEvery,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: ServeArgs) -> Result<u8, Exit> {
    let ServeArgs {
        workflows: mut files,
        listen,
        addr_file,
        max_body_bytes,
        grace_ms,
        max_concurrency,
        max_runs_in_flight,
        max_runs_in_flight_per_workflow,
        admission_wait_ms,
        max_runs_waiting,
        idle_timeout_ms,
        first_request_timeout_ms,
        max_connections,
        max_connections_per_peer,
        admin_token,
        watch,
        watch_interval_ms,
        max_component_bytes,
        trace_url,
        public_names,
        allow_origins,
        retain,
        prune,
        state,
    } = args;
    let max_runs_in_flight_per_workflow =
        max_runs_in_flight_per_workflow.unwrap_or(max_runs_in_flight);
    let audience = braid::serve::Audience::new(listen, &public_names, &allow_origins)
        .map_err(|e| bad_input(anyhow::anyhow!(e)))?;
    if public_names.is_empty() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "listening beyond loopback without --public-name: any Host is answered (name the server to refuse DNS-rebinding pages)");
    }
    let state = &state;
    let grace = Duration::from_millis(grace_ms);
    let watch = watch.then(|| Duration::from_millis(watch_interval_ms.max(10)));
    use braid::registry::Served;
    use braid::serve::{ServeConfig, Server};
    if files.is_empty() {
        files.push(PathBuf::from("workflows"));
    }
    let files = workflow_files(&files)?;
    let host = open_host(state).await?;
    let otel = braid::otel::OtlpExport::from_env(opentelemetry::trace::SpanKind::Server)
        .map_err(bad_input)?;
    // Every workflow is checked and its components compiled before the
    // server listens; all problems are reported together.
    let mut served = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match braid::check::load_and_prepare(file, Arc::clone(&host.sandbox)) {
            Ok((workflow, executor)) => {
                let mut scheduler = Scheduler::new(Arc::new(executor), max_concurrency)
                    .with_journal(Arc::clone(&host.journal), host.owner.clone())
                    .with_local_runs(host.local.clone())
                    .with_claims(Arc::clone(&host.claims))
                    .with_reports();
                if let Some(otel) = &otel {
                    // Each attempt's span goes out as the attempt ends.
                    scheduler = scheduler.with_attempt_sink(otel.live_sink());
                }
                served.push(Served::new(workflow, scheduler));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(bad_input(anyhow::anyhow!("{}", problems.join("\n"))));
    }
    // Finished runs past the retention are pruned now and every
    // `--prune-interval-s` (a minute).
    let pruning = braid::journal::spawn_pruning(
        Arc::clone(&host.journal),
        Arc::clone(&host.claims),
        retain.retention(),
        Duration::from_secs(prune.prune_interval_s),
    );
    let names: Vec<String> = served.iter().map(|s| s.workflow.name.clone()).collect();
    let server = Server::start(
        listen,
        ServeConfig {
            workflows: served,
            journal: Arc::clone(&host.journal),
            local: host.local.clone(),
            sandbox: Arc::clone(&host.sandbox),
            state_dir: state.state_dir.clone(),
            admin_token,
            watch,
            max_component_bytes,
            max_body_bytes,
            grace,
            otel,
            admission: braid::serve::Admission {
                max_runs: max_runs_in_flight,
                max_runs_per_workflow: max_runs_in_flight_per_workflow,
                wait: Duration::from_millis(admission_wait_ms),
                max_waiting: max_runs_waiting,
            },
            idle_timeout: Duration::from_millis(idle_timeout_ms.max(1)),
            first_request_timeout: Duration::from_millis(
                first_request_timeout_ms.clamp(1, idle_timeout_ms.max(1)),
            ),
            max_connections,
            max_connections_per_peer,
            trace_url,
            audience,
        },
    )
    .await
    .map_err(bad_input)?;
    // Runs this host (or another on the store) left when it stopped are
    // carried on in the background from now on, while the server answers
    // (a repeated Idempotency-Key of such a run waits for its end); so are
    // those of hosts that die later. Resumed runs count in /metrics and are
    // exported like the server's own.
    let mut recoverer = host.recoverer(&state.state_dir, max_concurrency);
    recoverer.on_resumed = Some(server.resumed_hook());
    recoverer.live = Some(server.live_components());
    // Waiting runs whose time, signal or cancel has come are woken and
    // carried on here (or by another host of the store, whichever looks first).
    let waking = recoverer.clone().spawn_wake_loop();
    let recovery = recoverer.spawn_loop();
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
    waking.abort();
    pruning.abort();
    server.shutdown().await.map_err(|e| Exit(1, e.into()))?;
    eprintln!("stopped");
    Ok(0)
}

/// The workflow files of `given`: each file as given, each directory's
/// `*.toml` files (sorted). A directory without any is an error naming it.
fn workflow_files(given: &[PathBuf]) -> Result<Vec<PathBuf>, Exit> {
    let mut files = Vec::new();
    for path in given {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the directory {}", path.display()))
            .map_err(bad_input)?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
            .collect();
        if found.is_empty() {
            return Err(bad_input(anyhow::anyhow!(
                "{}: no workflow files (*.toml) in this directory",
                path.display()
            )));
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}
