//! `braid runs`: lists journaled runs (running, succeeded, failed,
//! cancelled, aborted); `braid runs prune` deletes finished ones past the
//! retention; `show`, `wait`, `signal` and `cancel` act on one run
//! (`control`), `resume` and `abort` on a suspended one (`suspended`),
//! through a server (`remote`) or the journal.

mod control;
mod remote;
mod suspended;

use super::host::open_stores;
use super::{Exit, RetainArgs, StateArgs, print_json};
use braid::journal::Unsuspend;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RunsArgs {
    #[command(subcommand)]
    action: Option<RunsAction>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

#[derive(Subcommand)]
enum RunsAction {
    /// Delete finished runs past the retention (their reports, journal
    /// entries and Idempotency-Keys); running runs are never touched.
    Prune {
        #[command(flatten)]
        retain: RetainArgs,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// One run: its report if it ended, else what it is doing.
    Show {
        run_id: String,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Waits for a run to end and shows it. Exit 0: it succeeded; 1: it
    /// ended otherwise; 3: still running when `--timeout` passed.
    Wait {
        run_id: String,
        /// How long to wait (e.g. 30s, 5m).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Sends a run the signal its signal step waits for: `--data` (JSON)
    /// becomes the step's output.
    Signal {
        run_id: String,
        name: String,
        /// The signal's body (JSON; default `null`).
        #[arg(long)]
        data: Option<String>,
        /// The wait's token (else the admin token), through a server.
        #[arg(long)]
        token: Option<String>,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Cancels a running run: its steps stop, what it completed is undone,
    /// and it ends `cancelled` (on whichever host owns it).
    Cancel {
        run_id: String,
        /// Why (kept in the run's error and report).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Resumes a suspended run: its failed step runs again, on the
    /// components live now (a hot-swapped fix), and the run goes on.
    Resume {
        run_id: String,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Restarts an ended run from a step (through a server): a new run
    /// with its input reuses what the old run's steps before STEP did and
    /// runs STEP and what follows on the components served now.
    Restart {
        run_id: String,
        /// The step to run again from.
        #[arg(long)]
        from: String,
        #[command(flatten)]
        reach: control::Reach,
    },
    /// Aborts a suspended run: what it completed is undone, its claims
    /// released, and it ends `aborted`.
    Abort {
        run_id: String,
        /// Why (kept in the run's error and report).
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        reach: control::Reach,
    },
}

pub async fn exec(args: RunsArgs) -> Result<u8, Exit> {
    let RunsArgs {
        action,
        json,
        state,
    } = args;
    match action {
        Some(RunsAction::Prune {
            retain,
            json,
            state,
        }) => return prune(retain, json, &state).await,
        Some(RunsAction::Show { run_id, reach }) => return control::show(run_id, reach).await,
        Some(RunsAction::Wait {
            run_id,
            timeout,
            reach,
        }) => return control::wait(run_id, timeout, reach).await,
        Some(RunsAction::Signal {
            run_id,
            name,
            data,
            token,
            reach,
        }) => return control::signal(run_id, name, data, token, reach).await,
        Some(RunsAction::Cancel {
            run_id,
            reason,
            reach,
        }) => return control::cancel(run_id, reason, reach).await,
        Some(RunsAction::Resume { run_id, reach }) => {
            return suspended::unsuspend(run_id, Unsuspend::Resume, reach).await;
        }
        Some(RunsAction::Restart {
            run_id,
            from,
            reach,
        }) => return suspended::restart(run_id, from, reach).await,
        Some(RunsAction::Abort {
            run_id,
            reason,
            reach,
        }) => return suspended::unsuspend(run_id, Unsuspend::Abort { reason }, reach).await,
        None => {}
    }
    let list = open_stores(&state)
        .await?
        .journal
        .runs()
        .await
        .map_err(|e| Exit(1, e.into()))?;
    if json {
        print_json(&list)?;
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

async fn prune(retain: RetainArgs, json: bool, state: &StateArgs) -> Result<u8, Exit> {
    let stores = open_stores(state).await?;
    let pruned = braid::journal::prune_all(
        stores.journal.as_ref(),
        stores.claims.as_ref(),
        retain.retention(),
    )
    .await
    .map_err(|e| Exit(1, e.into()))?;
    if json {
        print_json(&pruned)?;
    } else {
        println!(
            "pruned {} runs ({} journal entries, {} reports, {} idempotency keys) and {} expired claims",
            pruned.runs, pruned.entries, pruned.reports, pruned.idempotency_keys, pruned.claims
        );
    }
    Ok(0)
}
