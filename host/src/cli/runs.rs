//! `braid runs`: lists journaled runs (running, succeeded, failed, aborted).

use super::host::open_stores;
use super::{Exit, StateArgs, print_json};
use clap::Args;

#[derive(Args)]
pub struct RunsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: RunsArgs) -> Result<u8, Exit> {
    let RunsArgs { json, state } = args;
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
