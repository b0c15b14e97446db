//! `braid check`: validates workflow definitions and the components they name.

use super::host::open_sandbox;
use super::{Exit, StateArgs};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args)]
pub struct CheckArgs {
    #[arg(required = true)]
    workflows: Vec<PathBuf>,
    #[command(flatten)]
    state: StateArgs,
}

pub fn exec(args: CheckArgs) -> Result<u8, Exit> {
    let CheckArgs { workflows, state } = args;
    let state = &state;
    let sandbox = open_sandbox(state)?;
    let mut failed = false;
    for path in &workflows {
        match braid::check::load_and_prepare(path, Arc::clone(&sandbox)) {
            Ok((wf, _)) => {
                let composes: Vec<&str> = wf.composed.keys().map(String::as_str).collect();
                let composing = if composes.is_empty() {
                    String::new()
                } else {
                    format!(", composing {}", composes.join(", "))
                };
                println!(
                    "{}: ok (workflow `{}`, {} steps{composing})",
                    path.display(),
                    wf.name,
                    wf.outer_steps().count()
                );
            }
            Err(e) => {
                failed = true;
                eprint!("{e}");
            }
        }
    }
    Ok(if failed { 2 } else { 0 })
}
