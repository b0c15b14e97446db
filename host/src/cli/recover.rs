//! `braid recover`: takes over runs whose host died and resumes them (or
//! undoes and aborts them: `on_crash = "undo"`); also done at the start of
//! `braid run` and by `braid serve`.

use super::host::{open_host, recover, recovered_line};
use super::{Exit, StateArgs, print_json};
use clap::Args;

#[derive(Args)]
pub struct RecoverArgs {
    #[arg(long)]
    json: bool,
    /// Most step calls in flight at once across the runs resumed.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn exec(args: RecoverArgs) -> Result<u8, Exit> {
    let RecoverArgs {
        json,
        max_concurrency,
        state,
    } = args;
    let host = open_host(&state).await?;
    let recovered = recover(&host, &state, max_concurrency).await?;
    if json {
        print_json(&recovered)?;
    } else if recovered.is_empty() {
        println!("nothing to recover");
    } else {
        for r in &recovered {
            println!("{}", recovered_line(r));
        }
    }
    Ok(0)
}
