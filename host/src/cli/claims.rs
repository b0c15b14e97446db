//! `braid claims`: lists coordination claims, live or expired by the store's clock.

use super::host::{Stores, open_stores};
use super::{Exit, StateArgs, print_json};
use clap::Args;

#[derive(Args)]
pub struct ClaimsArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: ClaimsArgs) -> Result<u8, Exit> {
    let ClaimsArgs { json, state } = args;
    let Stores { claims, shown, .. } = open_stores(&state).await?;
    let list = claims.list().await.map_err(|e| Exit(1, e.into()))?;
    if json {
        print_json(&list)?;
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
