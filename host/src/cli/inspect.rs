//! `braid inspect`: which braid world a component implements, what it
//! imports and exports, and why the host would refuse it (exit 2 if it would).

use super::host::open_sandbox;
use super::{Exit, StateArgs, bad_input, print_json};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    component: PathBuf,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

pub fn exec(args: InspectArgs) -> Result<u8, Exit> {
    let InspectArgs {
        component,
        json,
        state,
    } = args;
    let sandbox = open_sandbox(&state)?;
    let i = sandbox.inspect(&component).map_err(bad_input)?;
    if json {
        print_json(&i)?;
    } else {
        println!(
            "{}  {} bytes  sha256 {}",
            i.path.display(),
            i.size_bytes,
            i.sha256
        );
        println!(
            "world: {}",
            i.world.as_deref().unwrap_or("none the host runs")
        );
        println!(
            "loaded in {:.1} ms ({})",
            i.load_ms,
            if i.from_cache {
                "compiled code from the cache"
            } else {
                "compiled now"
            }
        );
        println!("imports:");
        for name in &i.imports {
            println!("  {name}");
        }
        println!("exports:");
        for name in &i.exports {
            println!("  {name}");
        }
    }
    match &i.refused {
        Some(why) => {
            eprintln!("error: refused: {why}");
            Ok(2)
        }
        None => Ok(0),
    }
}
