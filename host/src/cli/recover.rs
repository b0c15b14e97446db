//! `braid recover`: undoes and aborts runs whose host died (also done at the
//! start of `braid run` and by `braid serve`).

use super::host::{open_host, recover};
use super::{Exit, StateArgs, print_json};
use clap::Args;

#[derive(Args)]
pub struct RecoverArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: RecoverArgs) -> Result<u8, Exit> {
    let RecoverArgs { json, state } = args;
    let host = open_host(&state).await?;
    let recovered = recover(&host).await?;
    if json {
        print_json(&recovered)?;
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
