//! `braid componentize`: a WASI preview1 reactor module (clang with
//! wasi-libc, for one) into a component of one of braid's worlds.

use super::{Exit, bad_input, write_atomically};
use braid::toolchain::World;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ComponentizeArgs {
    /// The core module (`clang --target=wasm32-wasi -mexec-model=reactor`).
    module: PathBuf,
    /// The world it implements: `step-component`,
    /// `reversible-step-component` or `policy-component`.
    #[arg(long, default_value = "step-component", value_parser = World::ALL.map(World::name))]
    world: String,
    /// Where to write the component (written whole or not at all).
    #[arg(short, long)]
    output: PathBuf,
}

pub fn exec(args: ComponentizeArgs) -> Result<u8, Exit> {
    let ComponentizeArgs {
        module,
        world,
        output,
    } = args;
    let world = World::parse(&world)
        .ok_or_else(|| bad_input(anyhow::anyhow!("unknown world `{world}`")))?;
    let core = std::fs::read(&module)
        .map_err(|e| bad_input(anyhow::anyhow!("reading {}: {e}", module.display())))?;
    let component = braid::toolchain::componentize(&core, world)
        .map_err(|e| bad_input(anyhow::anyhow!("{}: {e}", module.display())))?;
    write_atomically(&output, &component).map_err(bad_input)?;
    println!(
        "{}: a `{}` component, {} bytes",
        output.display(),
        world.name(),
        component.len()
    );
    Ok(0)
}
