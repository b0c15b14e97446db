//! `braid bindings c`: C bindings for one of braid's worlds (`braid.h`,
//! `braid.c`), generated from the WIT this binary was built with.

use super::{Exit, bad_input, write_atomically};
use braid::toolchain::World;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BindingsArgs {
    /// The language: `c`.
    #[arg(value_parser = ["c"])]
    lang: String,
    /// The world: `step-component`, `reversible-step-component` or
    /// `policy-component`.
    #[arg(long, default_value = "step-component", value_parser = World::ALL.map(World::name))]
    world: String,
    /// The directory to write `braid.h` and `braid.c` to (made if missing;
    /// files there of the same name are replaced).
    #[arg(long)]
    out: PathBuf,
}

pub fn exec(args: BindingsArgs) -> Result<u8, Exit> {
    let BindingsArgs {
        lang: _,
        world,
        out,
    } = args;
    let world = World::parse(&world)
        .ok_or_else(|| bad_input(anyhow::anyhow!("unknown world `{world}`")))?;
    let files = braid::toolchain::c_bindings(world).map_err(bad_input)?;
    std::fs::create_dir_all(&out)
        .map_err(|e| bad_input(anyhow::anyhow!("creating {}: {e}", out.display())))?;
    for (name, bytes) in &files {
        write_atomically(&out.join(name), bytes).map_err(bad_input)?;
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    println!(
        "C bindings for world `{}` in {}: {}",
        world.name(),
        out.display(),
        names.join(", ")
    );
    Ok(0)
}
