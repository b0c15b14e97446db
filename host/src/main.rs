//! The `braid` command line: parses the arguments and hands each command to
//! its module in `cli/` (one per subcommand, as cargo's `commands/`). The
//! CLI is the only place that prints for humans.
//!
//! Exit codes: 0 ok, 1 the run failed, 2 bad input or definition.

mod cli;

use clap::{Parser, Subcommand};
use cli::Exit;
use std::process::ExitCode;

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

#[derive(Subcommand)]
enum Command {
    /// Run a workflow once and print its step tree (or, with --json, its report). Exit 0: it succeeded; 1: it failed; 3: it was suspended (`on_failure = "suspend"`).
    Run(cli::run::RunArgs),
    /// Validate workflow definitions and the components they name.
    Check(cli::check::CheckArgs),
    /// Serve the bundled sample API (token, profile, permissions).
    SampleApi(cli::sample_api::SampleApiArgs),
    /// List coordination claims in the state directory.
    Claims(cli::claims::ClaimsArgs),
    /// Show which braid world a component implements, what it imports and
    /// exports, and why the host would refuse it (exit 2 if it would).
    Inspect(cli::inspect::InspectArgs),
    /// Serve workflows over HTTP (see docs/serving.md): POST
    /// /v1/workflows/NAME/runs, GET /v1/runs/ID, /metrics, ...
    Serve(cli::serve::ServeArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Start a new step or policy project (Rust, Python, JavaScript or C) that
    /// builds with `make` and passes `braid check` (see docs/writing-steps.md).
    New(cli::new::NewArgs),
    /// Generate bindings for a language without component tooling of its
    /// own (C), from the WIT this binary was built with.
    Bindings(cli::bindings::BindingsArgs),
    /// Make a component of a braid world from a WASI preview1 reactor
    /// module (what clang with wasi-libc builds).
    Componentize(cli::componentize::ComponentizeArgs),
    /// Load-test a workflow against the in-process sample API, sandboxed and
    /// natively (see docs/PERFORMANCE.md).
    Bench(cli::bench::BenchArgs),
    /// List journaled runs (running, succeeded, failed, aborted).
    Runs(cli::runs::RunsArgs),
    /// Take over runs whose host died and resume them, or undo and abort them (`on_crash`); also done by `braid run` and `braid serve`.
    Recover(cli::recover::RecoverArgs),
}

/// mimalloc instead of glibc's malloc: allocation is a quarter of `braid
/// serve`'s CPU under load with glibc, and glibc keeps a burst's memory
/// (ARCHITECTURE.md, the `main.rs` row of the code map).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("BRAID_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only for a person at a terminal, and never with NO_COLOR set
    // (https://no-color.org): a log file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
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
        Command::Run(args) => cli::run::exec(args).await,
        Command::Check(args) => cli::check::exec(args),
        Command::SampleApi(args) => cli::sample_api::exec(args).await,
        Command::Claims(args) => cli::claims::exec(args).await,
        Command::Runs(args) => cli::runs::exec(args).await,
        Command::Bench(args) => cli::bench::exec(args).await,
        Command::Serve(args) => cli::serve::exec(args).await,
        Command::New(args) => cli::new::exec(args),
        Command::Inspect(args) => cli::inspect::exec(args),
        Command::Bindings(args) => cli::bindings::exec(args),
        Command::Componentize(args) => cli::componentize::exec(args),
        Command::Policy(command) => cli::policy::exec(command).await,
        Command::Recover(args) => cli::recover::exec(args).await,
    }
}
