//! Compose steps (`compose = "NAME"`): another workflow run as one step.
//!
//! The composed workflow is loaded when the composing one is (from
//! `NAME.toml` beside it, or from the texts a run pinned), checked like any
//! workflow, and its steps become steps of the composing workflow, named
//! `STEP/SUB_STEP`: one DAG, one journal, one trace, one completion order
//! and one undo order for the whole run, and resume works inside a
//! sub-workflow as anywhere else. Three kinds of node stand for the step:
//! `STEP/` (a [`StepKind::SubflowStart`]) holds the step's condition and
//! dependencies and every sub-step waits for it; the sub-workflow's inputs
//! read the step's arguments; `STEP` (a [`StepKind::Compose`]) has the
//! sub-workflow's result as its output.
//!
//! Owns: finding and pinning composed workflows, cycles and depth, the
//! mapping of a sub-workflow's inputs, and the expansion. The only IO is
//! reading the composed workflows' files.

use super::raw::{RawStep, RawWorkflow};
use super::{
    ArgSource, Condition, DEFAULT_TIMEOUT, Problem, StepKind, StepLimits, StepSpec, ValueRef,
    Workflow,
};
use std::collections::BTreeMap;
use std::path::Path;

/// How deep compose steps may nest (a workflow composing one that composes
/// another ... ): deeper is refused by `braid check`.
pub const MAX_COMPOSE_DEPTH: usize = 4;

/// Where compose steps are resolved: the workflows being composed around
/// this one (for cycles and depth) and the texts a run pinned.
#[derive(Default, Clone)]
pub(super) struct Composing {
    /// The composing workflows, outermost first.
    stack: Vec<String>,
    /// Pinned definitions by name, used instead of the files.
    pinned: BTreeMap<String, String>,
}

/// A compose step as `validate` hands it over (its arguments and condition
/// already checked in the composing workflow).
pub(super) struct Sub<'r> {
    pub(super) step: &'r RawStep,
    pub(super) name: &'r str,
    pub(super) args: BTreeMap<String, ArgSource>,
    pub(super) when: Option<Condition>,
}

impl Composing {
    /// The context for the compose steps of `raw`, composed here.
    pub(super) fn within(&self, raw: &RawWorkflow) -> Composing {
        let mut next = self.clone();
        next.stack.push(raw.name.clone());
        for (name, text) in &raw.compose_pinned {
            next.pinned
                .entry(name.clone())
                .or_insert_with(|| text.clone());
        }
        next
    }

    /// The steps that stand for compose step `sub` of the workflow at
    /// `path`: its start, the sub-workflow's steps, and the step itself.
    /// Records the composed texts in `composed`; `None` with `problems`.
    pub(super) fn expand(
        &self,
        sub: Sub<'_>,
        path: &Path,
        composed: &mut BTreeMap<String, String>,
        problems: &mut Vec<Problem>,
    ) -> Option<Vec<StepSpec>> {
        let step = sub.step;
        let mine = |field: &str, message: String| Problem {
            file: path.to_path_buf(),
            step: Some(step.name.clone()),
            field: Some(field.to_string()),
            message,
        };
        let mut own = Vec::new();
        let mut bad = |field: &str, message: String| own.push(mine(field, message));
        if step.map.is_some() {
            bad("map", "a compose step cannot be a map (yet): map over a step inside the composed workflow".into());
        }
        if step.limits != Default::default() {
            bad("compose", "a compose step has no limits of its own: set them on the composed workflow's steps".into());
        }
        if let Some(at) = self.stack.iter().position(|w| w == sub.name) {
            let mut cycle = self.stack[at..].to_vec();
            cycle.push(sub.name.to_string());
            bad("compose", format!("compose cycle: {}", cycle.join(" -> ")));
            problems.extend(own);
            return None;
        }
        if self.stack.len() >= MAX_COMPOSE_DEPTH {
            bad(
                "compose",
                format!("composes deeper than {MAX_COMPOSE_DEPTH} workflows"),
            );
            problems.extend(own);
            return None;
        }
        let loaded = self.load(sub.name, path);
        let (wf, text) = match loaded {
            Ok(loaded) => loaded,
            Err((why, inner)) => {
                bad("compose", why);
                problems.extend(inner);
                problems.extend(own);
                return None;
            }
        };
        inputs_fit(&wf, &sub.args, &mut bad);
        composed.insert(wf.name.clone(), text);
        composed.extend(wf.composed.clone());
        if !own.is_empty() {
            problems.extend(own);
            return None;
        }
        Some(expanded(&wf, &step.name, sub))
    }

    /// Composed workflow `name`: its pinned text, or `NAME.toml` beside
    /// `path`. `Err`: why, and the composed workflow's own problems.
    fn load(&self, name: &str, path: &Path) -> Result<(Workflow, String), (String, Vec<Problem>)> {
        let file = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{name}.toml"));
        let text = match self.pinned.get(name) {
            Some(text) => text.clone(),
            None => std::fs::read_to_string(&file).map_err(|e| {
                let why = format!(
                    "unknown workflow `{name}`: cannot read {}: {e}",
                    file.display()
                );
                (why, Vec::new())
            })?,
        };
        let wf = Workflow::from_text_composed(&text, &file, self).map_err(|e| {
            let why = format!("workflow `{name}` ({}) has problems", file.display());
            (why, e.problems)
        })?;
        if wf.name != name {
            let why = format!(
                "{} defines workflow `{}`, not `{name}`",
                file.display(),
                wf.name
            );
            return Err((why, Vec::new()));
        }
        Ok((wf, text))
    }
}

/// The compose step's arguments set the composed workflow's inputs: each
/// one names an input, and every input without a default is set.
fn inputs_fit(
    wf: &Workflow,
    args: &BTreeMap<String, ArgSource>,
    bad: &mut impl FnMut(&str, String),
) {
    for arg in args.keys() {
        if !wf.inputs.contains_key(arg) {
            let known: Vec<&str> = wf.inputs.keys().map(String::as_str).collect();
            bad(
                &format!("args.{arg}"),
                format!(
                    "workflow `{}` has no input `{arg}` (it takes: {})",
                    wf.name,
                    known.join(", ")
                ),
            );
        }
    }
    for (input, spec) in &wf.inputs {
        if spec.default.is_none() && !args.contains_key(input) {
            bad(
                "args",
                format!(
                    "workflow `{}` needs input `{input}`: set `args.{input}`",
                    wf.name
                ),
            );
        }
    }
}

/// The steps standing for compose step `name` of sub-workflow `wf`.
fn expanded(wf: &Workflow, name: &str, sub: Sub<'_>) -> Vec<StepSpec> {
    let prefix = format!("{name}/");
    let node = |name: String, kind: StepKind| StepSpec {
        name,
        kind,
        component: Default::default(),
        args: BTreeMap::new(),
        wait_for: Vec::new(),
        when: None,
        map: None,
        timeout: DEFAULT_TIMEOUT,
        max_retries: 0,
        allowed_hosts: Vec::new(),
        limits: StepLimits::default(),
        idempotency_header: None,
        deny_continues: false,
        on_failure: None,
    };
    let mut start = node(prefix.clone(), StepKind::SubflowStart);
    start.wait_for = sub.step.wait_for.clone();
    start.when = sub.when.clone();
    let rename = Rename {
        prefix: &prefix,
        wf,
        args: &sub.args,
    };
    let mut steps = vec![start];
    for s in &wf.steps {
        let mut s = rename.step(s);
        s.wait_for.push(prefix.clone());
        steps.push(s);
    }
    // The start holds the arguments too: a skipped step they read skips
    // the whole sub-workflow (unless the argument is optional).
    steps[0].args = sub.args;
    let result = format!("{prefix}{}", wf.result);
    let mut end = node(
        name.to_string(),
        StepKind::Compose {
            workflow: wf.name.clone(),
            of: result.clone(),
            steps: steps.iter().map(|s| s.name.clone()).collect(),
        },
    );
    end.wait_for = vec![result];
    steps.push(end);
    steps
}

/// How a composed workflow's references read in the composing one.
struct Rename<'a> {
    prefix: &'a str,
    wf: &'a Workflow,
    /// The compose step's arguments: what each input reads.
    args: &'a BTreeMap<String, ArgSource>,
}

impl Rename<'_> {
    fn step(&self, s: &StepSpec) -> StepSpec {
        let mut s = s.clone();
        s.name = format!("{}{}", self.prefix, s.name);
        s.args = s
            .args
            .iter()
            .map(|(k, a)| (k.clone(), self.arg(a)))
            .collect();
        s.wait_for = s
            .wait_for
            .iter()
            .map(|w| format!("{}{w}", self.prefix))
            .collect();
        s.when = s.when.map(|c| c.map_sources(&|r| self.value(r)));
        if let Some(map) = &mut s.map {
            map.over = self.arg(&map.over);
        }
        if let StepKind::Compose { of, steps, .. } = &mut s.kind {
            *of = format!("{}{of}", self.prefix);
            for step in steps {
                *step = format!("{}{step}", self.prefix);
            }
        }
        s
    }

    /// An argument source: an input becomes what the compose step's
    /// argument of that name reads (or the input's default); a step is
    /// renamed.
    fn arg(&self, a: &ArgSource) -> ArgSource {
        match a {
            ArgSource::Input(i) => self.args.get(i).cloned().unwrap_or_else(|| {
                let default = self.wf.inputs.get(i).and_then(|s| s.default.clone());
                ArgSource::Value(default.unwrap_or_default())
            }),
            ArgSource::Step {
                step,
                pointer,
                optional,
            } => ArgSource::Step {
                step: format!("{}{step}", self.prefix),
                pointer: pointer.clone(),
                optional: *optional,
            },
            ArgSource::WaitToken { step } => ArgSource::WaitToken {
                step: format!("{}{step}", self.prefix),
            },
            other => other.clone(),
        }
    }

    /// A condition's source, renamed like an argument.
    fn value(&self, r: &ValueRef) -> ValueRef {
        match r {
            ValueRef::Input { input, pointer } => {
                match self.arg(&ArgSource::Input(input.clone())) {
                    ArgSource::Input(i) => ValueRef::Input {
                        input: i,
                        pointer: pointer.clone(),
                    },
                    ArgSource::Step {
                        step, pointer: p0, ..
                    } => ValueRef::Step {
                        step,
                        pointer: join(p0.as_deref(), pointer.as_deref()),
                    },
                    ArgSource::Value(v) => ValueRef::Const(match pointer {
                        None => Some(v),
                        Some(p) => v.pointer(p).cloned(),
                    }),
                    ArgSource::Element { .. } | ArgSource::WaitToken { .. } => {
                        ValueRef::Const(None)
                    }
                }
            }
            ValueRef::Step { step, pointer } => ValueRef::Step {
                step: format!("{}{step}", self.prefix),
                pointer: pointer.clone(),
            },
            other => other.clone(),
        }
    }
}

/// Two JSON pointers, one after the other.
fn join(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(format!("{}{}", a.unwrap_or(""), b.unwrap_or(""))),
    }
}

/// `text` with the composed workflows' texts pinned in it, so the run's
/// journaled definition composes the same versions when it is resumed.
pub(super) fn with_pinned(text: &str, composed: &BTreeMap<String, String>) -> String {
    let mut table = toml::Table::new();
    let pinned: toml::Table = composed
        .iter()
        .map(|(k, v)| (k.clone(), toml::Value::String(v.clone())))
        .collect();
    table.insert("compose_pinned".into(), toml::Value::Table(pinned));
    let appendix = toml::to_string(&table).unwrap_or_default();
    format!(
        "{text}\n\n# Pinned by braid: the workflows this run composes, as it started.\n{appendix}"
    )
}
