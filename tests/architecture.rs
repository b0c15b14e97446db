//! The code map's rules, checked on the source: no import circle between
//! host modules, and rooms that stay small (ARCHITECTURE.md, "Invariants").
//!
//! A module is a file or folder under `host/src/` (`scheduler`,
//! `scheduler::saga`, ...). Module A depends on B when A's code names a path
//! into B (`crate::b::...`, `super::b::...`, `braid::b::...`). A module may
//! always use its ancestors (a folder's `mod.rs` is its rooms' shared
//! vocabulary) and its own rooms; every other dependency must leave the
//! graph without a circle.

use crate::support::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Largest host source file, in lines before its `#[cfg(test)]` section.
const MAX_FILE_LINES: usize = 800;
/// Largest `main.rs`: it parses and dispatches, nothing more.
const MAX_MAIN_LINES: usize = 200;

/// Every `.rs` file under `dir`, with its module path (`scheduler::saga`).
fn modules(dir: &Path, prefix: &[String], out: &mut Vec<(Vec<String>, PathBuf)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read host/src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        if path.is_dir() {
            let mut inner = prefix.to_vec();
            inner.push(name);
            modules(&path, &inner, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let mut module = prefix.to_vec();
            if !matches!(name.as_str(), "mod" | "lib" | "main") {
                module.push(name);
            }
            out.push((module, path));
        }
    }
}

/// The code of a file without its `#[cfg(test)]` section and comments.
fn code_of(text: &str) -> String {
    let code = match text.find("\n#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module paths that `code` (in module `at`) names.
fn named_paths(code: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "braid::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let i = from + i;
            from = i + start.len();
            // Only whole path starts (`xcrate::` is not `crate::`).
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let rest: String = code[i + start.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let tail: Vec<String> = rest
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let mut path = match start {
                "super::" => {
                    // `super` is the parent module (`scheduler` for `scheduler::saga`).
                    let mut base = at[..at.len().saturating_sub(1)].to_vec();
                    let mut tail = tail.as_slice();
                    while tail.first().is_some_and(|s| s == "super") {
                        base.pop();
                        tail = &tail[1..];
                    }
                    base.extend(tail.iter().cloned());
                    base
                }
                _ => tail,
            };
            // `super::{a, b}` groups: each member may be a module.
            if let Some(group) = code[i..].split_once('{').filter(|(head, _)| {
                head.len() <= start.len() + rest.len() && head.trim_end().ends_with("::")
            }) {
                let inner = group.1.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let item = item.trim().split("::").next().unwrap_or("").trim();
                    if !item.is_empty() {
                        let mut p = path.clone();
                        p.push(item.to_string());
                        found.push(p);
                    }
                }
            }
            path.retain(|s| !s.is_empty());
            found.push(path);
        }
    }
    found
}

#[test]
fn no_import_circle_between_host_modules() {
    let src = root().join("host/src");
    let mut files = Vec::new();
    modules(&src, &[], &mut files);
    // `main.rs` and `cli/` are the binary: they depend on the library, not
    // the other way round, so they are left out.
    files.retain(|(m, p)| !p.ends_with("main.rs") && m.first().is_none_or(|f| f != "cli"));
    let known: BTreeSet<Vec<String>> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut deps: Deps = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("read source");
        let entry = deps.entry(module.clone()).or_default();
        for named in named_paths(&code_of(&text), module) {
            // The longest known module the path names.
            let Some(target) = (1..=named.len())
                .rev()
                .map(|n| named[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            let is_ancestor = module.starts_with(&target);
            let is_own_room = target.starts_with(module);
            if !is_ancestor && !is_own_room {
                entry.insert(target);
            }
        }
    }
    // Circles between rooms, and between top-level modules (a folder and
    // all its rooms as one).
    let mut top: Deps = BTreeMap::new();
    for (from, to) in &deps {
        let entry = top.entry(from[..from.len().min(1)].to_vec()).or_default();
        entry.extend(
            to.iter()
                .map(|t| t[..1].to_vec())
                .filter(|t| from.first() != t.first()),
        );
    }
    for graph in [&deps, &top] {
        if let Some(circle) = find_circle(graph) {
            let shown: Vec<String> = circle.iter().map(|m| m.join("::")).collect();
            panic!("import circle: {}", shown.join(" -> "));
        }
    }
    // The check sees real edges (it would be vacuous otherwise).
    let edge = |from: &[&str], to: &[&str]| {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
        deps.get(&from).is_some_and(|d| d.contains(&to))
    };
    assert!(
        edge(&["sandbox", "executor"], &["scheduler"]),
        "the sandbox implements the scheduler's StepExecutor: {deps:?}"
    );
    assert!(
        edge(&["scheduler", "dag"], &["scheduler", "attempt"]),
        "the DAG starts attempts: {deps:?}"
    );
}

type Deps = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

/// One circle in `deps`, as the path `a -> b -> ... -> a`, if there is one.
fn find_circle(deps: &Deps) -> Option<Vec<Vec<String>>> {
    fn visit(
        m: &Vec<String>,
        deps: &Deps,
        state: &mut BTreeMap<Vec<String>, u8>,
        path: &mut Vec<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        state.insert(m.clone(), 1);
        path.push(m.clone());
        for d in deps.get(m).into_iter().flatten() {
            match state.get(d).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == d).unwrap_or(0);
                    let mut circle = path[start..].to_vec();
                    circle.push(d.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(d, deps, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in deps.keys() {
        if state.get(m).copied().unwrap_or(0) == 0
            && let Some(circle) = visit(m, deps, &mut state, &mut Vec::new())
        {
            return Some(circle);
        }
    }
    None
}

#[test]
fn a_circle_is_found() {
    let m = |s: &str| vec![s.to_string()];
    let mut deps: Deps = BTreeMap::new();
    deps.entry(m("a")).or_default().insert(m("b"));
    deps.entry(m("b")).or_default().insert(m("c"));
    assert_eq!(find_circle(&deps), None);
    deps.entry(m("c")).or_default().insert(m("a"));
    assert_eq!(
        find_circle(&deps),
        Some(vec![m("a"), m("b"), m("c"), m("a")])
    );
}

#[test]
fn the_named_paths_of_a_file_are_found() {
    let at = vec!["scheduler".to_string(), "saga".to_string()];
    let code = "use super::dag::RunState;\nuse super::{Scheduler, lease::X};\nlet x = crate::journal::JournalEntry::default();";
    let found = named_paths(code, &at);
    let has = |p: &[&str]| found.iter().any(|f| f == p);
    assert!(has(&["scheduler", "dag", "RunState"]), "{found:?}");
    assert!(has(&["scheduler", "lease"]), "{found:?}");
    assert!(has(&["journal", "JournalEntry", "default"]), "{found:?}");
}

#[test]
fn host_rooms_stay_small() {
    let src = root().join("host/src");
    let mut files = Vec::new();
    modules(&src, &[], &mut files);
    let mut too_big = Vec::new();
    for (_, path) in &files {
        let text = std::fs::read_to_string(path).expect("read source");
        let code = match text.find("\n#[cfg(test)]") {
            Some(i) => &text[..i],
            None => &text,
        };
        let lines = code.lines().count();
        let limit = if path.ends_with("main.rs") {
            MAX_MAIN_LINES
        } else {
            MAX_FILE_LINES
        };
        if lines > limit {
            too_big.push(format!("{} ({lines} > {limit} lines)", path.display()));
        }
    }
    assert!(
        too_big.is_empty(),
        "split these rooms (or give the reason in ARCHITECTURE.md and raise the bound here): {too_big:?}"
    );
}
