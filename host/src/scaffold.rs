//! `braid new`: a new step or policy project in Rust, Python, JavaScript or
//! C that builds with one command (`make`) and passes `braid check`.
//!
//! A project is self-contained: it carries braid's WIT (the exact files this
//! binary was built with, embedded below), a one-step `workflow.toml` to try
//! it, a Makefile that installs the pinned toolchain on first use, and a
//! README. The templates live in `host/templates/`; `__NAME__`, `__WORLD__`,
//! `__KIND__`, `__LANG__` and `__TRY__` are filled in. A C project also gets
//! its bindings, generated from the same WIT ([`crate::toolchain`]).
//!
//! Nothing is half-written: the project is assembled in a temporary directory
//! beside the target and renamed into place, and an existing target is never
//! touched.

use std::fmt;
use std::path::{Path, PathBuf};

/// The language of a new project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
    C,
}

impl Lang {
    /// Parses `rust`, `python`, `js` (also `javascript`) or `c`.
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "rust" => Some(Lang::Rust),
            "python" => Some(Lang::Python),
            "js" | "javascript" => Some(Lang::Js),
            "c" => Some(Lang::C),
            _ => None,
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        })
    }
}

/// What a new project builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A step (world `step-component`).
    Step,
    /// A policy (world `policy-component`).
    Policy,
}

impl Kind {
    fn world(self) -> &'static str {
        match self {
            Kind::Step => "step-component",
            Kind::Policy => "policy-component",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Step => "step",
            Kind::Policy => "policy",
        })
    }
}

/// Why `braid new` made nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid name `{0}`: use a lowercase letter, then lowercase letters, digits or `_` \
         (it names the component, the crate or module, and the workflow step)"
    )]
    InvalidName(String),
    #[error("{0} already exists; choose another name or --dir (nothing was written)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source} (nothing was left behind)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} (nothing was left behind)")]
    Bindings(#[from] crate::toolchain::ToolchainError),
}

/// The files of a project (relative path, template), before substitution.
fn templates(lang: Lang, kind: Kind) -> Vec<(&'static str, &'static str)> {
    let mut files = vec![
        ("README.md", include_str!("../templates/README.md")),
        (".gitignore", include_str!("../templates/gitignore")),
        (
            "workflow.toml",
            match kind {
                Kind::Step => include_str!("../templates/workflow-step.toml"),
                Kind::Policy => include_str!("../templates/workflow-policy.toml"),
            },
        ),
    ];
    files.extend(match (lang, kind) {
        // A step also depends on wstd (its outbound HTTP); a policy has no
        // wasi:http, so its manifest and lock leave it out.
        (Lang::Rust, kind) => {
            let (manifest, lock, source) = match kind {
                Kind::Step => (
                    include_str!("../templates/rust/Cargo-step.toml"),
                    include_str!("../templates/rust/Cargo-step.lock"),
                    include_str!("../templates/rust/step.rs"),
                ),
                Kind::Policy => (
                    include_str!("../templates/rust/Cargo-policy.toml"),
                    include_str!("../templates/rust/Cargo-policy.lock"),
                    include_str!("../templates/rust/policy.rs"),
                ),
            };
            vec![
                ("Cargo.toml", manifest),
                ("Cargo.lock", lock),
                (
                    "rust-toolchain.toml",
                    include_str!("../templates/rust/rust-toolchain.toml"),
                ),
                ("Makefile", include_str!("../templates/rust/Makefile")),
                ("src/lib.rs", source),
            ]
        }
        (Lang::Python, Kind::Step) => vec![
            ("Makefile", include_str!("../templates/python/Makefile")),
            ("app.py", include_str!("../templates/python/step.py")),
            (
                "braid_http.py",
                include_str!("../templates/python/braid_http.py"),
            ),
        ],
        (Lang::Python, Kind::Policy) => vec![
            ("Makefile", include_str!("../templates/python/Makefile")),
            ("app.py", include_str!("../templates/python/policy.py")),
        ],
        // Steps use componentize-js (StarlingMonkey: fetch() over wasi:http);
        // policies the much smaller QuickJS build of componentize-qjs.
        (Lang::Js, Kind::Step) => vec![
            ("Makefile", include_str!("../templates/js/Makefile-step")),
            (
                "package.json",
                include_str!("../templates/js/package-step.json"),
            ),
            (
                "package-lock.json",
                include_str!("../templates/js/package-lock-step.json"),
            ),
            ("app.js", include_str!("../templates/js/step.js")),
        ],
        // C: clang and wasi-libc, then `braid componentize`; the helpers
        // read and write JSON (and, in a step, send HTTP over wasi:http).
        (Lang::C, kind) => {
            let mut files = vec![
                ("Makefile", include_str!("../templates/c/Makefile")),
                ("braid_json.h", include_str!("../templates/c/braid_json.h")),
                ("braid_json.c", include_str!("../templates/c/braid_json.c")),
                ("braid_text.h", include_str!("../templates/c/braid_text.h")),
                ("braid_text.c", include_str!("../templates/c/braid_text.c")),
            ];
            files.extend(match kind {
                Kind::Step => vec![
                    ("app.c", include_str!("../templates/c/step.c")),
                    ("braid_http.h", include_str!("../templates/c/braid_http.h")),
                    ("braid_http.c", include_str!("../templates/c/braid_http.c")),
                ],
                Kind::Policy => vec![("app.c", include_str!("../templates/c/policy.c"))],
            });
            files
        }
        (Lang::Js, Kind::Policy) => vec![
            ("Makefile", include_str!("../templates/js/Makefile-policy")),
            (
                "package.json",
                include_str!("../templates/js/package-policy.json"),
            ),
            (
                "package-lock.json",
                include_str!("../templates/js/package-lock-policy.json"),
            ),
            ("app.js", include_str!("../templates/js/policy.js")),
        ],
    });
    files.extend(crate::contract::WIT.iter().copied());
    files
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 64
}

/// The Rust toolchain a new Rust project pins (`rust-toolchain.toml`): the
/// one braid and its own steps are built with.
pub const RUST_TOOLCHAIN: &str = "1.95.0";

/// What a project's `make` installs on first use, and from where.
fn toolchain_note(lang: Lang, kind: Kind) -> String {
    match (lang, kind) {
        (Lang::Rust, kind) => format!(
            "Rust {RUST_TOOLCHAIN} with the `wasm32-wasip2` target, pinned in \
             `rust-toolchain.toml` (rustup installs it on first use if it is missing; \
             that needs static.rust-lang.org). The crates are pinned in `Cargo.lock` \
             ({} and their dependencies) and fetched from crates.io on the first \
             build; after that `make` works offline. Needs `rustup` and `make`.",
            match kind {
                Kind::Step => "wit-bindgen 0.61.1, serde_json 1.0.154, wstd 0.6.8",
                Kind::Policy => "wit-bindgen 0.61.1, serde_json 1.0.154",
            }
        ),
        (Lang::Python, _) => "componentize-py 0.25.1 (an exact pin), into `.venv` from \
             PyPI on first use; after that `make` works offline. Needs `python3` \
             (with `venv`) and `make`."
            .to_string(),
        (Lang::C, _) => "clang, wasm-ld and wasi-libc for `wasm32-wasi`: Debian's `clang`, \
             `lld`, `wasi-libc` and `libclang-rt-dev-wasm32`, which `make` installs with \
             apt-get on first use if clang cannot build for wasm32-wasi (that needs \
             root or sudo, and Debian's package mirror). Nothing else is fetched: \
             `braid componentize` (this braid) embeds the world's types and adds the \
             WASI preview1 adapter, and `bindings/` was generated by this braid \
             (`make bindings` regenerates it). Needs `make`."
            .to_string(),
        (Lang::Js, kind) => format!(
            "`npm ci`: exactly the packages `package-lock.json` lists ({}, checked \
             against the lock's hashes), from the npm registry on first use; after \
             that `make` works offline. Needs Node.js 20.19 or newer and `make`.",
            match kind {
                Kind::Step =>
                    "componentize-js 0.23.0 and preview2-shim 0.25.0 with their dependencies",
                Kind::Policy => "componentize-qjs 0.4.5 and its platform binding",
            }
        ),
    }
}

/// What the try-out workflow adds for a step, whose template shows an
/// outbound call: its optional `url` input, and the step's argument and
/// allowed hosts.
fn http_example() -> (&'static str, &'static str) {
    (
        "\n[inputs.url]\n\
             description = \"A JSON API to POST the greeting to (with its scheme: http://...); empty: none\"\n\
             default = \"\"\n",
        "\nargs.url = { input = \"url\" }\n\
             # Where the step may send HTTP requests (host, host:port or *.domain).\n\
             allowed_hosts = [\"127.0.0.1\", \"localhost\"]",
    )
}

fn fill(template: &str, name: &str, lang: Lang, kind: Kind) -> String {
    let try_it = match (kind, lang) {
        // The step POSTs its greeting to `url` (the sample API answers 401:
        // it wants a client and a user; its /_requests shows the traceparent).
        (Kind::Step, _) => "    braid run workflow.toml --input '{\"name\": \"world\"}'\n    \
             braid sample-api --listen 127.0.0.1:8080 &\n    \
             braid run workflow.toml --input '{\"name\": \"world\", \"url\": \"http://127.0.0.1:8080/oauth/token\"}'"
            .to_string(),
        (Kind::Policy, _) => format!(
            "    braid run workflow.toml --input '{{\"action\": \"read\"}}'\n    \
             braid policy eval {name}.wasm --input '{{\"action\": \"write\", \"resource\": \"reports/q3\"}}'"
        ),
    };
    template
        .replace("__NAME__", name)
        .replace("__WORLD__", kind.world())
        .replace("__KIND__", &kind.to_string())
        .replace("__LANG__", &lang.to_string())
        .replace("__TRY__", &try_it)
        .replace("__HTTP_INPUT__", http_example().0)
        .replace("__HTTP_ARGS__", http_example().1)
        .replace("__TOOLCHAIN__", &toolchain_note(lang, kind))
        .replace("__RUST_TOOLCHAIN__", RUST_TOOLCHAIN)
}

/// Creates a new project for a `kind` named `name` in `lang` at `dir`, and
/// returns the files written (relative to `dir`).
pub fn create(
    dir: &Path,
    name: &str,
    lang: Lang,
    kind: Kind,
) -> Result<Vec<String>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::InvalidName(name.to_string()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ScaffoldError::Io { path, source }
    };
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".braid-new-{name}-{}", std::process::id()));
    let written = write_all(&staging, name, lang, kind).and_then(|files| {
        std::fs::rename(&staging, dir)
            .map(|()| files)
            .map_err(io(dir))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    written
}

fn write_all(
    staging: &Path,
    name: &str,
    lang: Lang,
    kind: Kind,
) -> Result<Vec<String>, ScaffoldError> {
    let mut files = Vec::new();
    if lang == Lang::C {
        let world = match kind {
            Kind::Step => crate::toolchain::World::Step,
            Kind::Policy => crate::toolchain::World::Policy,
        };
        for (name, bytes) in crate::toolchain::c_bindings(world)? {
            let relative = format!("bindings/{name}");
            let path = staging.join(&relative);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&path, bytes).map_err(|source| ScaffoldError::Io { path, source })?;
            files.push(relative);
        }
    }
    for (relative, template) in templates(lang, kind) {
        let path = staging.join(relative);
        let err = |source| ScaffoldError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let text = if relative.starts_with("wit/") {
            template.to_string()
        } else {
            fill(template, name, lang, kind)
        };
        std::fs::write(&path, text).map_err(err)?;
        files.push(relative.to_string());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_identifiers_in_every_language() {
        for ok in ["greet", "a", "fetch_orders2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Greet", "2fast", "my-step", "a b", "../x", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_project_is_complete_and_filled_in() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for lang in [Lang::Rust, Lang::Python, Lang::Js, Lang::C] {
            for kind in [Kind::Step, Kind::Policy] {
                let dir = tmp.path().join(format!("{lang}-{kind}"));
                let files = create(&dir, "greet", lang, kind).expect("create");
                assert!(files.contains(&"wit/braid.wit".to_string()));
                if lang == Lang::C {
                    let header = std::fs::read_to_string(dir.join("bindings/braid.h"))
                        .expect("a C project has its bindings");
                    let export = match kind {
                        Kind::Step => "exports_braid_workflow_step_run(",
                        Kind::Policy => "exports_braid_workflow_policy_evaluate(",
                    };
                    assert!(header.contains(export), "{kind}: {export}");
                    assert_eq!(
                        files.contains(&"braid_http.c".to_string()),
                        kind == Kind::Step,
                        "only a step has HTTP"
                    );
                }
                assert!(files.contains(&"workflow.toml".to_string()));
                for f in &files {
                    let text = std::fs::read_to_string(dir.join(f)).expect("read");
                    for placeholder in [
                        "__NAME__",
                        "__WORLD__",
                        "__KIND__",
                        "__LANG__",
                        "__TRY__",
                        "__TOOLCHAIN__",
                        "__RUST_TOOLCHAIN__",
                    ] {
                        assert!(
                            !text.contains(placeholder),
                            "{lang} {kind} {f}: {placeholder} left"
                        );
                    }
                }
                let makefile = std::fs::read_to_string(dir.join("Makefile")).expect("Makefile");
                assert!(makefile.contains(kind.world()), "{lang} {kind}");
                assert!(makefile.contains("greet.wasm"));
            }
        }
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".braid-new"))
            .collect();
        assert!(left.is_empty());
    }

    /// Every project pins what it builds with: Rust its toolchain, target
    /// and crates; JavaScript its packages (installed with `npm ci`, which
    /// installs the lock or fails); Python an exact componentize-py. The
    /// README says what `make` fetches.
    #[test]
    fn every_project_pins_its_toolchain_and_says_what_make_installs() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let read = |dir: &Path, f: &str| {
            std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
        };
        for kind in [Kind::Step, Kind::Policy] {
            let dir = tmp.path().join(format!("rust-{kind}"));
            create(&dir, "greet", Lang::Rust, kind).expect("create");
            let toolchain = read(&dir, "rust-toolchain.toml");
            assert!(toolchain.contains(&format!("channel = \"{RUST_TOOLCHAIN}\"")));
            assert!(toolchain.contains("wasm32-wasip2"));
            let lock = read(&dir, "Cargo.lock");
            assert!(
                lock.contains("name = \"greet\""),
                "the lock is the project's"
            );
            assert!(lock.contains("name = \"wit-bindgen\"\nversion = \"0.61.1\""));
            assert_eq!(
                lock.contains("name = \"wstd\"\nversion = \"0.6.8\""),
                kind == Kind::Step,
                "a step's lock pins wstd, a policy's has none"
            );
            assert_eq!(
                read(&dir, "Cargo.toml").contains("wstd = "),
                kind == Kind::Step
            );
            assert!(read(&dir, "README.md").contains("crates.io"));

            let dir = tmp.path().join(format!("js-{kind}"));
            create(&dir, "greet", Lang::Js, kind).expect("create");
            let lock: serde_json::Value =
                serde_json::from_str(&read(&dir, "package-lock.json")).expect("lock is JSON");
            let package: serde_json::Value =
                serde_json::from_str(&read(&dir, "package.json")).expect("package is JSON");
            assert_eq!(lock["name"], "greet");
            assert_eq!(
                lock["packages"][""]["devDependencies"], package["devDependencies"],
                "the lock matches package.json ({kind})"
            );
            assert!(read(&dir, "Makefile").contains("npm ci"));
            assert!(read(&dir, "README.md").contains("package-lock.json"));

            let dir = tmp.path().join(format!("python-{kind}"));
            create(&dir, "greet", Lang::Python, kind).expect("create");
            assert!(read(&dir, "Makefile").contains("componentize-py=="));
            assert!(read(&dir, "README.md").contains("PyPI"));
        }
    }

    #[test]
    fn an_existing_directory_is_never_touched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("keep.txt"), "mine").expect("write");
        let err = create(tmp.path(), "greet", Lang::Python, Kind::Step).expect_err("exists");
        assert!(matches!(err, ScaffoldError::Exists(_)), "{err}");
        let entries: Vec<_> = std::fs::read_dir(tmp.path()).expect("read_dir").collect();
        assert_eq!(entries.len(), 1);
        assert!(matches!(
            create(&tmp.path().join("x"), "Bad-Name", Lang::Rust, Kind::Step),
            Err(ScaffoldError::InvalidName(_))
        ));
        assert!(!tmp.path().join("x").exists());
    }
}
