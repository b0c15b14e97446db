//! What braid builds from its WIT for languages without component tooling
//! of their own (C first):
//!
//! - [`c_bindings`]: C bindings for one of braid's worlds, from wit-bindgen's
//!   C generator (`braid bindings c`), the world renamed `braid` so every
//!   world's files are `braid.h`/`braid.c` and helpers work with any of them.
//! - [`componentize`]: a WASI preview1 reactor module (what clang with
//!   Debian's wasi-libc makes) into a component of one of braid's worlds:
//!   the world's types are embedded and the module wrapped with the preview1
//!   reactor adapter made for this wasmtime (`braid componentize`). That is
//!   `wasm-tools component embed` + `component new --adapt`, done with the
//!   same library (wit-component), so a C author needs clang and braid, not
//!   a Rust toolchain.
//!
//! Knows the embedded WIT ([`crate::contract`]); nothing of the host.

use crate::contract::WIT;
use wit_parser::{PackageId, Resolve, WorldId};

/// A braid world a component can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `step-component`: a step.
    Step,
    /// `reversible-step-component`: a step that also exports
    /// `compensate` and `undo`.
    ReversibleStep,
    /// `policy-component`: a policy.
    Policy,
}

impl World {
    /// Every world, in the order `--world` lists them.
    pub const ALL: [World; 3] = [World::Step, World::ReversibleStep, World::Policy];

    /// The world's name in `wit/braid.wit`.
    pub fn name(self) -> &'static str {
        match self {
            World::Step => "step-component",
            World::ReversibleStep => "reversible-step-component",
            World::Policy => "policy-component",
        }
    }

    /// Parses a world's name (`step-component`, ...; also `step`,
    /// `reversible-step` and `policy`).
    pub fn parse(s: &str) -> Option<World> {
        World::ALL
            .into_iter()
            .find(|w| s == w.name() || Some(s) == w.name().strip_suffix("-component"))
    }
}

/// Why bindings or a component could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// The embedded WIT did not resolve (a build of braid with a broken
    /// `wit/`; the tests catch it).
    #[error("braid's embedded WIT does not resolve: {0:#}")]
    Wit(anyhow::Error),
    /// wit-bindgen's C generator failed.
    #[error("generating C bindings for world `{world}`: {source:#}")]
    Bindings {
        world: &'static str,
        source: anyhow::Error,
    },
    /// The input is not a core module this world's component can be made
    /// from (not WebAssembly, already a component, an export the world does
    /// not have, an import nobody provides, ...).
    #[error("making a `{world}` component: {source:#}")]
    Componentize {
        world: &'static str,
        source: anyhow::Error,
    },
}

/// Resolves the embedded WIT and picks `world` from braid's package.
fn resolve(world: World) -> Result<(Resolve, WorldId), ToolchainError> {
    let mut resolve = Resolve::default();
    // Dependencies before the packages that use them; braid's own last.
    let order = [
        "wit/deps/io/io.wit",
        "wit/deps/clocks/clocks.wit",
        "wit/deps/random/random.wit",
        "wit/deps/filesystem/filesystem.wit",
        "wit/deps/sockets/sockets.wit",
        "wit/deps/cli/cli.wit",
        "wit/deps/http/http.wit",
        "wit/braid.wit",
    ];
    let mut braid: Option<PackageId> = None;
    for path in order {
        let (_, text) = WIT
            .iter()
            .find(|(p, _)| *p == path)
            .ok_or_else(|| ToolchainError::Wit(anyhow::anyhow!("{path} is not embedded")))?;
        braid = Some(resolve.push_str(path, text).map_err(ToolchainError::Wit)?);
    }
    let braid = braid.ok_or_else(|| ToolchainError::Wit(anyhow::anyhow!("no WIT embedded")))?;
    let id = resolve
        .select_world(&[braid], Some(world.name()))
        .map_err(ToolchainError::Wit)?;
    Ok((resolve, id))
}

/// C bindings for `world`: `braid.h` and `braid.c`, from wit-bindgen's C
/// generator. The component type is not emitted as an
/// object file: [`componentize`] embeds it.
pub fn c_bindings(world: World) -> Result<Vec<(String, Vec<u8>)>, ToolchainError> {
    let (mut resolve, id) = resolve(world)?;
    let opts = wit_bindgen_c::Opts {
        no_object_file: true,
        rename_world: Some("braid".into()),
        ..Default::default()
    };
    let mut files = wit_bindgen_core::Files::default();
    opts.build()
        .generate(&mut resolve, id, &mut files)
        .map_err(|source| ToolchainError::Bindings {
            world: world.name(),
            source,
        })?;
    Ok(files
        .iter()
        .map(|(name, bytes)| {
            let mut bytes = bytes.to_vec();
            if name == "braid.c" {
                bytes.extend_from_slice(FORCE_LINK_STUB.as_bytes());
            }
            (name.to_string(), bytes)
        })
        .collect())
}

/// The generated `braid.c` references a symbol of the component-type object
/// file to make the linker keep it; [`componentize`] embeds the types
/// instead, so the symbol is defined here, doing nothing.
const FORCE_LINK_STUB: &str = "
// Added by braid: `braid componentize` embeds the world's types, so there is
// no braid_component_type.o to link; this is the symbol the code above uses
// to pull that object in.
void __component_type_object_force_link_braid(void) {}
";

/// A component of `world` from a WASI preview1 reactor module: embeds the
/// world's types and adapts `wasi_snapshot_preview1` imports to WASI 0.2
/// with the adapter built for this wasmtime. The result is validated.
pub fn componentize(core: &[u8], world: World) -> Result<Vec<u8>, ToolchainError> {
    let failed = |source: anyhow::Error| ToolchainError::Componentize {
        world: world.name(),
        source,
    };
    if wasmparser::Parser::is_component(core) {
        return Err(failed(anyhow::anyhow!(
            "the input is already a component, not a core module"
        )));
    }
    let (resolve, id) = resolve(world)?;
    let mut module = core.to_vec();
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        id,
        wit_component::StringEncoding::UTF8,
    )
    .map_err(failed)?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .and_then(|mut e| e.encode())
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worlds_parse_by_full_and_short_name() {
        assert_eq!(World::parse("step-component"), Some(World::Step));
        assert_eq!(World::parse("step"), Some(World::Step));
        assert_eq!(World::parse("reversible-step"), Some(World::ReversibleStep));
        assert_eq!(World::parse("policy-component"), Some(World::Policy));
        assert_eq!(World::parse("steps"), None);
    }

    /// Every world resolves from the embedded WIT, and its C bindings
    /// declare what a C author implements and link without an object file.
    #[test]
    fn every_world_gets_c_bindings_declaring_its_exports() {
        for (world, exports) in [
            (World::Step, &["exports_braid_workflow_step_run("][..]),
            (
                World::ReversibleStep,
                &[
                    "exports_braid_workflow_step_run(",
                    "exports_braid_workflow_reversible_undo(",
                    "exports_braid_workflow_reversible_compensate(",
                ],
            ),
            (World::Policy, &["exports_braid_workflow_policy_evaluate("]),
        ] {
            let files = c_bindings(world).expect("bindings");
            let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["braid.c", "braid.h"], "{world:?}");
            let header = String::from_utf8_lossy(&files[1].1);
            for export in exports {
                assert!(header.contains(export), "{world:?}: {export}");
            }
            let source = String::from_utf8_lossy(&files[0].1);
            assert!(source.ends_with(FORCE_LINK_STUB), "{world:?}");
            // A policy has no HTTP.
            assert_eq!(
                header.contains("wasi_http_outgoing_handler_handle("),
                world != World::Policy,
                "{world:?}"
            );
        }
    }

    #[test]
    fn componentize_refuses_what_is_not_a_core_module_naming_the_world() {
        let error = componentize(b"not wasm at all", World::Step)
            .expect_err("not wasm")
            .to_string();
        assert!(
            error.starts_with("making a `step-component` component: "),
            "{error}"
        );
        // The smallest component: magic, then the component layer's version.
        let component = b"\0asm\x0d\0\x01\0";
        let error = componentize(component, World::Policy)
            .expect_err("a component")
            .to_string();
        assert!(error.contains("already a component"), "{error}");
    }
}
