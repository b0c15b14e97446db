//! `braid new`: a step or policy project (Rust, Python, JavaScript or C)
//! that builds with `make` and passes `braid check`.

use super::{Exit, bad_input};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct NewArgs {
    /// `step` or `policy`.
    #[arg(value_parser = ["step", "policy"])]
    kind: String,
    /// The component's name: a lowercase letter, then lowercase letters,
    /// digits or `_`.
    name: String,
    /// `rust`, `python`, `js` or `c`.
    #[arg(long, value_parser = ["rust", "python", "js", "c"])]
    lang: String,
    /// Where to create it (default: ./NAME); must not exist yet.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub fn exec(args: NewArgs) -> Result<u8, Exit> {
    let NewArgs {
        kind,
        name,
        lang,
        dir,
    } = args;
    let (kind, name, lang) = (kind.as_str(), name.as_str(), lang.as_str());
    use braid::scaffold::{Kind, Lang};
    let kind = if kind == "policy" {
        Kind::Policy
    } else {
        Kind::Step
    };
    let lang =
        Lang::parse(lang).ok_or_else(|| bad_input(anyhow::anyhow!("unknown language `{lang}`")))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let files = braid::scaffold::create(&dir, name, lang, kind).map_err(bad_input)?;
    println!(
        "created a {lang} {kind} `{name}` in {} ({} files)",
        dir.display(),
        files.len()
    );
    println!(
        "next:\n  cd {}\n  make          # builds {name}.wasm\n  make check    # braid check workflow.toml",
        dir.display()
    );
    Ok(0)
}
