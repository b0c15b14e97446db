//! `braid runs`: lists journaled runs (running, succeeded, failed,
//! aborted); `braid runs prune` deletes finished ones past the retention.

use super::host::open_stores;
use super::{Exit, RetainArgs, StateArgs, print_json};
use clap::{Args, Subcommand};

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
}

pub async fn exec(args: RunsArgs) -> Result<u8, Exit> {
    let RunsArgs {
        action,
        json,
        state,
    } = args;
    if let Some(RunsAction::Prune {
        retain,
        json,
        state,
    }) = action
    {
        return prune(retain, json, &state).await;
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
