//! Workflow definitions: the TOML model, loading and validation.
//!
//! Owns: what a workflow is (inputs, steps, arguments, dependencies, limits)
//! and every structural rule (unknown steps or inputs, cycles, bad pointers,
//! bad limits). Must not touch wasmtime; the only IO is reading the
//! definition file and the workflows it composes.
//! Whether a component file exists and implements the step world is checked
//! by [`crate::check`], which has a sandbox.
//!
//! Rooms: this file holds the model (what a validated workflow is) and
//! binding a run's input; `raw` the file format; `validate` the rules;
//! `condition` and `map` the model and rules of `when` and `[steps.map]`;
//! `compose` finding composed workflows and making their steps this one's.

mod compose;
mod condition;
mod failure;
mod map;
mod raw;
mod validate;
mod wait;

pub use compose::MAX_COMPOSE_DEPTH;
pub use condition::{Condition, MAX_CONDITION_DEPTH, MAX_CONDITION_TESTS, Test, ValueRef};
pub use failure::{DEFAULT_SUSPEND_FOR, MIN_SUSPEND_FOR, OnFailure};
pub use map::{
    DEFAULT_ELEMENT_ARG, DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_PARALLEL, MAX_ELEMENTS, MAX_PARALLEL,
    MapSpec, Tolerance,
};
pub use wait::{
    DEFAULT_SIGNAL_TIMEOUT, MAX_WAIT, OnTimeout, SignalSpec, SleepSpec, parse_duration,
};

use raw::RawWorkflow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One problem found in a definition, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The definition file.
    pub file: PathBuf,
    /// The step the problem is in, if it is in one.
    pub step: Option<String>,
    /// The field (e.g. `args.token.step`), if one is at fault.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(step) = &self.step {
            write!(f, ": step `{step}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a definition (never just the first).
#[derive(Debug, Clone, thiserror::Error)]
pub struct DefinitionError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{n} problem{} in the workflow definition:",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Where a step argument's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ArgSource {
    /// A workflow input, by name.
    Input(String),
    /// Another step's output, optionally narrowed by a JSON pointer (RFC 6901).
    /// `optional`: `null` when that step was skipped (otherwise this step
    /// is skipped too).
    Step {
        step: String,
        pointer: Option<String>,
        optional: bool,
    },
    /// A constant.
    Value(serde_json::Value),
    /// In a map step: the element, optionally narrowed by a JSON pointer.
    Element { pointer: Option<String> },
    /// The token that may send the signal that signal step `step` waits
    /// for (`POST /v1/runs/ID/signals/NAME`), so a step before the wait can
    /// hand it on (in an approval link, a webhook URL).
    WaitToken { step: String },
}

/// A workflow input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub description: Option<String>,
    /// Used when the run does not supply the input; an input without a
    /// default is required.
    pub default: Option<serde_json::Value>,
}

/// What a step is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StepKind {
    /// Runs its component (once, or once per element with `map`).
    #[default]
    Call,
    /// Where a composed sub-workflow starts (`COMPOSE/`): holds the compose
    /// step's condition and dependencies, runs nothing, journals nothing.
    SubflowStart,
    /// A compose step: its output is its sub-workflow's result, the output
    /// of step `of` (`COMPOSE/RESULT`); runs nothing itself. It ends once
    /// every step of its workflow (`steps`) has, as a run would (a skipped
    /// one too: only the result is needed).
    Compose {
        workflow: String,
        of: String,
        steps: Vec<String>,
    },
    /// Waits until a time (`for` a duration from when it starts, or
    /// `until` the time its `until` argument gives), then succeeds with
    /// `{"slept_until_ms": ...}`. Runs nothing; the run holds nothing while
    /// it waits (see `scheduler::wait`).
    Sleep(SleepSpec),
    /// Waits for signal `name` (`POST /v1/runs/ID/signals/NAME`), whose
    /// JSON body is its output; at `timeout`, fails or goes on with a
    /// default, as `on_timeout` says.
    Signal(SignalSpec),
}

/// One step: which component runs it, what it receives, and its limits.
/// A composed sub-workflow's steps are steps of the workflow that composes
/// it, named `COMPOSE/STEP`.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    pub name: String,
    pub kind: StepKind,
    /// The component file (resolved against the components directory).
    pub component: PathBuf,
    /// The step's input object: argument name -> source.
    pub args: BTreeMap<String, ArgSource>,
    /// Steps this one waits for beyond those its arguments name.
    pub wait_for: Vec<String>,
    /// Runs only when this holds (`None`: always); otherwise `skipped`.
    pub when: Option<Condition>,
    /// Runs once per element of a list instead of once.
    pub map: Option<MapSpec>,
    /// Wall-clock limit of one attempt.
    pub timeout: Duration,
    /// Attempts after the first, on a retryable error or a timeout.
    pub max_retries: u32,
    /// Hosts the step may send HTTP requests to (`host`, `host:port` or `*.suffix`).
    pub allowed_hosts: Vec<String>,
    /// What one attempt may use.
    pub limits: StepLimits,
    /// The header that carries the step's idempotency key on each of its
    /// outbound requests (`idempotency_key = true`; `Idempotency-Key`
    /// unless `idempotency_header` names another). `None`: not sent.
    pub idempotency_header: Option<String>,
    /// A policy step's deny is its output (`{"allowed": false, ...}`)
    /// instead of its failure (`on_deny = "continue"`).
    pub deny_continues: bool,
    /// What the run does when this step fails for good (`None`: what the
    /// workflow's `on_failure` says).
    pub on_failure: Option<OnFailure>,
}

/// The header an opted-in step's requests carry its idempotency key in,
/// unless `idempotency_header` says otherwise.
pub const DEFAULT_IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// What the host that takes over a run whose host died does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCrash {
    /// Carry the run on: completed steps are not run again (their journaled
    /// outputs are used), steps in flight run again with the same
    /// idempotency keys, and the run ends as it would have.
    #[default]
    Resume,
    /// Undo the completed steps and record the run `aborted`.
    Undo,
}

impl OnCrash {
    pub fn as_str(self) -> &'static str {
        match self {
            OnCrash::Resume => "resume",
            OnCrash::Undo => "undo",
        }
    }
}

/// Per-attempt resource limits of a step. Hitting one fails the attempt with
/// a typed reason (`memory-limit`, `output-too-large`, ...) or, for requests
/// and claims, refuses the call with a typed error the step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLimits {
    /// Cap on each linear memory, in bytes.
    pub memory_bytes: u64,
    /// Largest output a step may return, in bytes.
    pub max_output_bytes: u64,
    /// Most outbound HTTP requests per attempt.
    pub max_requests: u32,
    /// Most claims per attempt.
    pub max_claims: u32,
    /// Largest body of one HTTP response, in bytes.
    pub max_response_bytes: u64,
    /// CPU budget of one attempt in wasmtime fuel units (roughly one per
    /// instruction); needs a sandbox with fuel metering (`braid run --fuel`).
    pub fuel: Option<u64>,
    /// Most records (log lines, events, stdout/stderr lines) the run report
    /// keeps for one attempt; more are dropped and counted.
    pub max_log_records: u32,
    /// Most bytes of those records per attempt.
    pub max_log_bytes: u64,
    /// Most refused calls (bad trace context, denied or over-limit HTTP,
    /// claim errors, invalid arguments) before the attempt ends (`refusals`).
    pub max_refusals: u32,
}

impl Default for StepLimits {
    fn default() -> Self {
        StepLimits {
            memory_bytes: 64 << 20,
            max_output_bytes: 1 << 20,
            max_requests: 32,
            max_claims: 16,
            max_response_bytes: 8 << 20,
            fuel: None,
            max_log_records: 1000,
            max_log_bytes: 256 << 10,
            max_refusals: 64,
        }
    }
}

/// The step (by name, or `#N` if it has none) and the field a
/// deserialization error at `at` (`steps[1].timeout_ms`, `defaults.fuel`, ...)
/// is about; an unknown field is named by `message`.
fn locate(text: &str, at: &str, message: &str) -> (Option<String>, Option<String>) {
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
        .map(|(f, _)| f.to_string());
    let doc = text.parse::<toml::Table>().ok();
    let step_at = at
        .strip_prefix("steps[")
        .and_then(|r| r.split_once(']'))
        .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
    let (step, table, rest) = match step_at {
        Some((i, rest)) => {
            let table = doc
                .as_ref()
                .and_then(|d| d.get("steps")?.as_array()?.get(i)?.as_table().cloned());
            let name = table
                .as_ref()
                .and_then(|t| t.get("name")?.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("#{}", i + 1));
            (Some(name), table, rest.trim_start_matches('.'))
        }
        None => (None, None, at),
    };
    let rest = if rest == "." { "" } else { rest };
    let field = match (rest.is_empty(), unknown) {
        (true, Some(f)) => Some(f),
        // A step's limits are flattened into it, which hides the field from
        // the path: find it by reading the step's limits alone.
        (true, None) => table.and_then(limit_at_fault),
        (false, Some(f)) => Some(format!("{rest}.{f}")),
        (false, None) => Some(rest.to_string()),
    };
    (step, field)
}

/// The field of a step's limits whose value does not deserialize, if one.
fn limit_at_fault(mut step: toml::Table) -> Option<String> {
    for own in [
        "name",
        "component",
        "compose",
        "on_deny",
        "args",
        "wait_for",
        "when",
        "map",
    ] {
        step.remove(own);
    }
    let err =
        serde_path_to_error::deserialize::<_, raw::RawLimits>(toml::Value::Table(step)).err()?;
    let at = err.path().to_string();
    (at != ".").then_some(at)
}

/// Whether `name` is a valid workflow, input, step or argument name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Largest memory a definition may grant a step, in MiB (the sandbox's pool is sized for it).
pub const MAX_MEMORY_MB: u64 = 1024;

impl StepSpec {
    /// The steps this one depends on: those its arguments, its condition
    /// and its map's list read, plus `wait_for`, without duplicates, in a
    /// stable order.
    pub fn dependencies(&self) -> Vec<&str> {
        let mut deps: Vec<&str> = self
            .args
            .values()
            .filter_map(|a| match a {
                ArgSource::Step { step, .. } => Some(step.as_str()),
                _ => None,
            })
            .chain(self.wait_for.iter().map(String::as_str))
            .chain(self.when.iter().flat_map(Condition::steps))
            .chain(self.map.as_ref().and_then(MapSpec::step))
            .chain(match &self.kind {
                StepKind::Compose { steps, .. } => steps.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }

    /// The dependencies that, skipped, skip this step too: all but those
    /// only its condition reads and its optional arguments.
    pub fn required_dependencies(&self) -> Vec<&str> {
        let mut deps: Vec<&str> = self
            .args
            .values()
            .chain(self.map.as_ref().map(|m| &m.over))
            .filter_map(|a| match a {
                ArgSource::Step {
                    step,
                    optional: false,
                    ..
                } => Some(step.as_str()),
                _ => None,
            })
            .chain(self.wait_for.iter().map(String::as_str))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// A validated workflow: every reference resolves and the steps form a DAG.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    /// The file it was loaded from.
    pub source: PathBuf,
    pub inputs: BTreeMap<String, InputSpec>,
    /// Steps in definition order.
    pub steps: Vec<StepSpec>,
    /// The step whose output is the run's result.
    pub result: String,
    /// What recovery does with a run whose host died (`on_crash`).
    pub on_crash: OnCrash,
    /// What a run does when a step fails for good, unless the step says.
    pub on_failure: OnFailure,
    /// How long a suspended run waits for `resume` or `abort`.
    pub suspend_for: Duration,
    /// The definition's text, as loaded: journaled with each run, so the
    /// host that resumes a run runs the definition the run started with.
    /// With compose steps, it carries the composed workflows' texts too
    /// (`[compose_pinned]`), so a resumed run composes the same versions.
    pub definition: String,
    /// The workflows this one composes (at any depth): name -> definition text.
    pub composed: BTreeMap<String, String>,
}

/// Why a run's input does not fit the workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("run input must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("missing required input{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    Missing(Vec<String>),
    #[error("unknown input{}: {} (the workflow takes: {})", if .0.len() == 1 { "" } else { "s" }, .0.join(", "), .1)]
    Unknown(Vec<String>, String),
}

impl Workflow {
    /// Reads and validates a definition file.
    pub fn load(path: &Path) -> Result<Workflow, DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|e| DefinitionError {
            problems: vec![Problem {
                file: path.to_path_buf(),
                step: None,
                field: None,
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::from_toml(&text, path)
    }

    /// Whether a run is suspended (not undone) when step `name` (a map's
    /// element: its map step) fails for good.
    pub fn suspends(&self, name: &str) -> bool {
        let step = self.step_of_call(name).map(|(s, _)| s);
        step.and_then(|s| s.on_failure).unwrap_or(self.on_failure) == OnFailure::Suspend
    }

    /// The signal step waiting for signal `name`, if one does.
    pub fn signal_step(&self, name: &str) -> Option<&StepSpec> {
        self.steps
            .iter()
            .find(|s| matches!(&s.kind, StepKind::Signal(sig) if sig.name == name))
    }

    /// The step a call name (`STEP`, or `STEP.INDEX` for an element of a
    /// map step) belongs to, with the element's index.
    pub fn step_of_call(&self, call: &str) -> Option<(&StepSpec, Option<usize>)> {
        match call.split_once('.') {
            None => self.step(call).map(|s| (s, None)),
            Some((name, index)) => {
                let step = self.step(name).filter(|s| s.map.is_some())?;
                Some((step, Some(index.parse().ok()?)))
            }
        }
    }

    /// Parses and validates a definition; `path` names it in errors and
    /// anchors relative component paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Workflow, DefinitionError> {
        Self::from_text_composed(text, path, &compose::Composing::default())
    }

    /// [`Workflow::from_toml`] for a workflow composed in `composing`.
    fn from_text_composed(
        text: &str,
        path: &Path,
        composing: &compose::Composing,
    ) -> Result<Workflow, DefinitionError> {
        let problem =
            |step: Option<String>, field: Option<String>, message: String| DefinitionError {
                problems: vec![Problem {
                    file: path.to_path_buf(),
                    step,
                    field,
                    message,
                }],
            };
        let invalid = |e: &toml::de::Error| format!("invalid TOML: {}", e.to_string().trim_end());
        let de = toml::Deserializer::parse(text).map_err(|e| problem(None, None, invalid(&e)))?;
        // The path to what failed (`steps[1].timeout_ms`) names the step and
        // the field of a value of the wrong type or range.
        let raw: RawWorkflow = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            match locate(text, &at, inner.message()) {
                (None, None) => problem(None, None, invalid(&inner)),
                (step, field) => problem(step, field, inner.message().to_string()),
            }
        })?;
        Self::from_raw(raw, text, path, composing)
    }

    /// A parsed definition validated, its compose steps resolved in
    /// `composing`'s context, its text kept (with what it composes pinned).
    fn from_raw(
        raw: RawWorkflow,
        text: &str,
        path: &Path,
        composing: &compose::Composing,
    ) -> Result<Workflow, DefinitionError> {
        let pinned_already = !raw.compose_pinned.is_empty();
        let mut workflow = validate::validate(raw, path, composing)?;
        workflow.definition = if pinned_already || workflow.composed.is_empty() {
            text.to_string()
        } else {
            compose::with_pinned(text, &workflow.composed)
        };
        Ok(workflow)
    }

    pub fn step(&self, name: &str) -> Option<&StepSpec> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The steps as the definition names them: without the steps of
    /// composed workflows (`STEP/...`), a compose step standing for them.
    pub fn outer_steps(&self) -> impl Iterator<Item = &StepSpec> {
        self.steps.iter().filter(|s| !s.name.contains('/'))
    }

    /// The outer steps `step` depends on (a compose step: those its
    /// workflow's start waits for).
    pub fn outer_dependencies<'a>(&'a self, step: &'a StepSpec) -> Vec<&'a str> {
        let deps = match &step.kind {
            StepKind::Compose { .. } => self
                .step(&format!("{}/", step.name))
                .map(StepSpec::dependencies)
                .unwrap_or_default(),
            _ => step.dependencies(),
        };
        deps.into_iter().filter(|d| !d.contains('/')).collect()
    }

    /// Checks a run's input against the declared inputs and fills in defaults.
    pub fn bind_inputs(
        &self,
        input: &serde_json::Value,
    ) -> Result<serde_json::Map<String, serde_json::Value>, InputError> {
        let obj = input
            .as_object()
            .ok_or_else(|| InputError::NotAnObject(json_kind(input).to_string()))?;
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !self.inputs.contains_key(*k))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let known = self.inputs.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(InputError::Unknown(unknown, known));
        }
        let mut bound = serde_json::Map::new();
        let mut missing = Vec::new();
        for (name, spec) in &self.inputs {
            match (obj.get(name), &spec.default) {
                (Some(v), _) => {
                    bound.insert(name.clone(), v.clone());
                }
                (None, Some(d)) => {
                    bound.insert(name.clone(), d.clone());
                }
                (None, None) => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(InputError::Missing(missing));
        }
        Ok(bound)
    }
}

/// How a JSON value's kind reads in an error (`an array`, `null`, ...).
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Default per-attempt timeout when neither the step nor `[defaults]` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Workflow, DefinitionError> {
        Workflow::from_toml(text, Path::new("wf/test.toml"))
    }

    const GOOD: &str = r#"
        name = "demo"
        result = "b"
        components_dir = "../components"
        [inputs.user]
        [inputs.n]
        default = 3
        [defaults]
        timeout_ms = 500
        max_retries = 2
        allowed_hosts = ["127.0.0.1"]
        [[steps]]
        name = "a"
        component = "step_a"
        args.user = { input = "user" }
        [[steps]]
        name = "b"
        component = "other/b.wasm"
        timeout_ms = 100
        args.token = { step = "a", pointer = "/token" }
        args.fixed = { value = [1, 2] }
    "#;

    #[test]
    fn loads_a_good_definition() {
        let wf = load(GOOD).expect("valid");
        assert_eq!(wf.steps.len(), 2);
        let a = wf.step("a").expect("a");
        assert_eq!(a.component, Path::new("wf/../components/step_a.wasm"));
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.max_retries, 2);
        let b = wf.step("b").expect("b");
        assert_eq!(b.component, Path::new("wf/other/b.wasm"));
        assert_eq!(b.timeout, Duration::from_millis(100));
        assert_eq!(b.dependencies(), vec!["a"]);
        assert_eq!(b.args["fixed"], ArgSource::Value(serde_json::json!([1, 2])));
    }

    #[test]
    fn binds_inputs_with_defaults_and_rejects_missing_or_unknown() {
        let wf = load(GOOD).expect("valid");
        let bound = wf
            .bind_inputs(&serde_json::json!({"user": "u1"}))
            .expect("binds");
        assert_eq!(bound["n"], 3);
        assert_eq!(
            wf.bind_inputs(&serde_json::json!({}))
                .unwrap_err()
                .to_string(),
            "missing required input: user"
        );
        let unknown = wf
            .bind_inputs(&serde_json::json!({"user": "u", "usr": 1}))
            .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown input: usr"),
            "{unknown}"
        );
        assert!(wf.bind_inputs(&serde_json::json!([1])).is_err());
    }

    fn messages(err: DefinitionError) -> Vec<String> {
        err.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reports_a_cycle_with_its_path() {
        let text = r#"
            name = "c"
            result = "a"
            [[steps]]
            name = "a"
            component = "x"
            args.v = { step = "c" }
            [[steps]]
            name = "b"
            component = "x"
            args.v = { step = "a" }
            [[steps]]
            name = "c"
            component = "x"
            wait_for = ["b"]
        "#;
        let msgs = messages(load(text).unwrap_err());
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("dependency cycle: a -> b -> c -> a"),
            "{msgs:?}"
        );
    }

    #[test]
    fn reports_every_problem_with_step_and_field() {
        let text = r#"
            name = "bad"
            result = "nope"
            [inputs.user]
            [[steps]]
            name = "a"
            component = "x"
            timeout_ms = 0
            allowed_hosts = ["bad host"]
            args.u = { input = "usr" }
            args.t = { step = "ghost" }
            args.both = { input = "user", value = 1 }
            args.p = { step = "a", pointer = "token" }
            wait_for = ["phantom"]
            [[steps]]
            name = "a"
            component = "y"
        "#;
        let msgs = messages(load(text).unwrap_err());
        let expect = [
            "wf/test.toml: step `a`: field `name`: duplicate step name (also step #1)",
            "wf/test.toml: step `a`: field `timeout_ms`: must be between 1 and 3600000 ms",
            "wf/test.toml: step `a`: field `allowed_hosts`: `bad host` is not `host`, `host:port` or `*.domain`",
            "wf/test.toml: step `a`: field `args.u.input`: unknown input `usr`",
            "wf/test.toml: step `a`: field `args.t.step`: unknown step `ghost`",
            "wf/test.toml: step `a`: field `args.both`: set exactly one of `input`, `step`, `value`, `element` or `wait_token`",
            "wf/test.toml: step `a`: field `args.p.step`: a step cannot read its own output",
            "wf/test.toml: step `a`: field `args.p.pointer`: `token` is not a JSON pointer (it must start with '/')",
            "wf/test.toml: step `a`: field `wait_for[0]`: unknown step `phantom`",
            "wf/test.toml: field `result`: unknown step `nope`",
        ];
        for e in expect {
            assert!(msgs.iter().any(|m| m == e), "missing {e:?} in {msgs:#?}");
        }
    }

    #[test]
    fn conditions_and_maps_are_read_and_every_mistake_named() {
        let good = r#"
            name = "forms"
            result = "b"
            [inputs.xs]
            [[steps]]
            name = "a"
            component = "x"
            [[steps]]
            name = "b"
            component = "x"
            when = { any = [{ step = "a", pointer = "/ok", equals = true }, { not = { input = "xs", exists = true } }] }
            args.opt = { step = "a", optional = true }
            [steps.map]
            over = { input = "xs" }
            as = "x"
            max_parallel = 4
            tolerated_failure_percent = 10
        "#;
        let wf = load(good).expect("valid");
        let b = wf.step("b").expect("b");
        assert_eq!(b.dependencies(), vec!["a"]);
        assert!(
            b.required_dependencies().is_empty(),
            "optional and condition reads"
        );
        let map = b.map.as_ref().expect("map");
        assert_eq!(
            (map.element_arg.as_deref(), map.max_parallel),
            (Some("x"), 4)
        );
        assert_eq!(map.tolerance, Some(Tolerance::Percent(10.0)));
        assert_eq!(
            b.when.as_ref().expect("when").to_string(),
            "any(step `a/ok` equals true, not(input `xs` exists))"
        );
        assert_eq!(
            wf.step_of_call("b.12").map(|(s, i)| (s.name.as_str(), i)),
            Some(("b", Some(12)))
        );
        assert!(wf.step_of_call("a.1").is_none(), "a is not a map");

        let bad = r#"
            name = "forms"
            result = "b"
            [inputs.xs]
            [[steps]]
            name = "a"
            component = "x"
            when = { step = "b", exists = true }
            [[steps]]
            name = "b"
            component = "x"
            when = { all = [{ step = "ghost", equals = 1 }, { input = "xs", pointer = "nope", exists = true, equals = 2 }, { step = "b", exists = false }] }
            args.x = { value = 1 }
            args.o = { input = "xs", optional = true }
            [steps.map]
            over = { step = "b", pointer = "list" }
            as = "x"
            max_parallel = 0
            tolerated_failure_count = 1
            tolerated_failure_percent = 5
        "#;
        let msgs = messages(load(bad).unwrap_err());
        let expect = [
            "wf/test.toml: step `b`: field `args.o.optional`: `optional` only applies to a `step` argument",
            "wf/test.toml: step `b`: field `when.all[0].step`: unknown step `ghost`",
            "wf/test.toml: step `b`: field `when.all[1].pointer`: `nope` is not a JSON pointer (it must start with '/')",
            "wf/test.toml: step `b`: field `when.all[1]`: set exactly one test: `exists`, `equals`, `one_of`, `greater_than` or `less_than`",
            "wf/test.toml: step `b`: field `when.all[2].step`: a step's condition cannot read its own output",
            "wf/test.toml: step `b`: field `map.over.step`: a step cannot read its own output",
            "wf/test.toml: step `b`: field `map.over.pointer`: `list` is not a JSON pointer (it must start with '/')",
            "wf/test.toml: step `b`: field `map.as`: the element goes in argument `x`, which `args` sets too",
            "wf/test.toml: step `b`: field `map.max_parallel`: must be between 1 and 1000",
            "wf/test.toml: step `b`: field `map.tolerated_failure_count`: set `tolerated_failure_count` or `tolerated_failure_percent`, not both",
        ];
        for e in expect {
            assert!(msgs.iter().any(|m| m == e), "missing {e:?} in {msgs:#?}");
        }
        // A condition is a dependency: reading each other is a cycle.
        let cycle = bad.replace("when = { all", "when = { step = \"a\", exists = true }\n#");
        let msgs = messages(load(&cycle).unwrap_err());
        assert!(
            msgs.iter()
                .any(|m| m.contains("dependency cycle: a -> b -> a")
                    || m.contains("dependency cycle: b -> a -> b")),
            "{msgs:#?}"
        );
        // Unknown fields in the new tables are named.
        let typo = good.replace("max_parallel = 4", "max_paralel = 4");
        let msgs = messages(load(&typo).unwrap_err());
        assert!(msgs[0].contains("unknown field `max_paralel`"), "{msgs:?}");
    }

    #[test]
    fn compose_finds_pins_and_checks_the_workflows_it_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(format!("{name}.toml")), text).expect("write");
        };
        write(
            "inner",
            "name = \"inner\"\nresult = \"s\"\n[inputs.who]\n[[steps]]\nname = \"s\"\ncomponent = \"x\"\nargs.who = { input = \"who\" }\n",
        );
        let outer = "name = \"outer\"\nresult = \"c\"\n[[steps]]\nname = \"c\"\ncompose = \"inner\"\nargs.who = { value = \"ada\" }\n";
        write("outer", outer);
        let wf = Workflow::load(&dir.path().join("outer.toml")).expect("valid");
        let names: Vec<&str> = wf.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c/", "c/s", "c"]);
        assert_eq!(
            wf.step("c/s").map(|s| s.args["who"].clone()),
            Some(ArgSource::Value(serde_json::json!("ada")))
        );
        assert!(wf.composed.contains_key("inner"));
        // The journaled text carries what it composes: with the file
        // changed (or gone), the run's definition composes as it started.
        assert!(
            wf.definition.contains("[compose_pinned]"),
            "{}",
            wf.definition
        );
        std::fs::remove_file(dir.path().join("inner.toml")).expect("rm");
        let again = Workflow::from_toml(&wf.definition, &dir.path().join("outer.toml"))
            .expect("the pinned definition stands alone");
        assert_eq!(again.steps, wf.steps);
        assert_eq!(again.definition, wf.definition, "pinned once, not twice");

        // Every mistake is named.
        write(
            "inner",
            "name = \"inner\"\nresult = \"s\"\n[inputs.who]\n[[steps]]\nname = \"s\"\ncompose = \"outer\"\n",
        );
        let msgs = messages(Workflow::load(&dir.path().join("outer.toml")).unwrap_err());
        assert!(
            msgs.iter()
                .any(|m| m.contains("field `compose`: compose cycle: outer -> inner -> outer")),
            "{msgs:#?}"
        );
        let bad = "name = \"outer\"\nresult = \"c\"\n[[steps]]\nname = \"c\"\ncompose = \"nowhere\"\n[[steps]]\nname = \"d\"\ncompose = \"inner2\"\nargs.whom = { value = 1 }\ntimeout_ms = 5\n[[steps]]\nname = \"e\"\ncomponent = \"x\"\ncompose = \"inner2\"\n";
        write(
            "inner2",
            "name = \"inner2\"\nresult = \"s\"\n[inputs.who]\n[[steps]]\nname = \"s\"\ncomponent = \"x\"\n",
        );
        write("outer", bad);
        let msgs = messages(Workflow::load(&dir.path().join("outer.toml")).unwrap_err());
        for want in [
            "step `c`: field `compose`: unknown workflow `nowhere`: cannot read",
            "step `d`: field `args.whom`: workflow `inner2` has no input `whom` (it takes: who)",
            "step `d`: field `args`: workflow `inner2` needs input `who`: set `args.who`",
            "step `d`: field `compose`: a compose step has no limits of its own",
            "step `e`: field `compose`: set one of `component` (a component that runs) or `compose`",
        ] {
            assert!(
                msgs.iter().any(|m| m.contains(want)),
                "missing {want:?} in {msgs:#?}"
            );
        }
    }

    #[test]
    fn budgets_are_bounded_and_default_from_defaults() {
        let good = r#"
            name = "budgets"
            result = "a"
            [defaults]
            max_log_records = 10
            max_refusals = 5
            [[steps]]
            name = "a"
            component = "x"
            max_log_bytes = 4096
        "#;
        let a = load(good).expect("valid").steps[0].limits;
        assert_eq!(
            (a.max_log_records, a.max_log_bytes, a.max_refusals),
            (10, 4096, 5)
        );
        let bad = format!(
            "{good}\n[[steps]]\nname = \"b\"\ncomponent = \"x\"\nmax_log_records = 1000000\nmax_log_bytes = 1000000000\nmax_refusals = 20000\n"
        );
        assert_eq!(
            messages(load(&bad).unwrap_err()),
            [
                "wf/test.toml: step `b`: field `max_log_records`: must be at most 100000",
                "wf/test.toml: step `b`: field `max_log_bytes`: must be at most 16777216",
                "wf/test.toml: step `b`: field `max_refusals`: must be at most 10000",
            ]
        );
    }

    #[test]
    fn rejects_unknown_fields_and_bad_toml() {
        let msgs = messages(load("name = \"x\"\nresult = \"a\"\n[[steps]]\nname = \"a\"\ncomponent = \"x\"\ntimeout = 5\n").unwrap_err());
        assert!(msgs[0].contains("unknown field `timeout`"), "{msgs:?}");
        let msgs = messages(load("name = ").unwrap_err());
        assert!(
            msgs[0].starts_with("wf/test.toml: invalid TOML"),
            "{msgs:?}"
        );
    }

    #[test]
    fn on_crash_and_idempotency_keys_are_read_and_checked() {
        let wf = load(GOOD).expect("valid");
        assert_eq!(wf.on_crash, OnCrash::Resume, "resume is the default");
        assert_eq!(wf.definition, GOOD, "the text is kept for resume");
        assert!(wf.steps.iter().all(|s| s.idempotency_header.is_none()));

        let text = GOOD.replace(
            "allowed_hosts = [\"127.0.0.1\"]",
            "allowed_hosts = [\"127.0.0.1\"]\nidempotency_key = true",
        );
        let text = text.replace(
            "timeout_ms = 100",
            "timeout_ms = 100\nidempotency_header = \"X-Request-Id\"",
        );
        let wf = load(&format!("on_crash = \"undo\"\n{text}")).expect("valid");
        assert_eq!(wf.on_crash, OnCrash::Undo);
        let header = |s: &str| wf.step(s).and_then(|s| s.idempotency_header.clone());
        assert_eq!(header("a").as_deref(), Some(DEFAULT_IDEMPOTENCY_HEADER));
        assert_eq!(header("b").as_deref(), Some("X-Request-Id"));

        let bad = GOOD.replace(
            "timeout_ms = 100",
            "timeout_ms = 100\nidempotency_header = \"traceparent\"",
        );
        let err = load(&format!("on_crash = \"retry\"\n{bad}")).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("field `on_crash`: `retry` is not `resume` or `undo`"),
            "{text}"
        );
        assert!(
            text.contains(
                "step `b`: field `idempotency_header`: `traceparent` is a header the host"
            ),
            "{text}"
        );
        assert!(
            text.contains("set, but the step does not send its key: add `idempotency_key = true`"),
            "{text}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_step_and_field() {
        let cases = [
            (
                GOOD.replace("timeout_ms = 100", "timeout_ms = \"fast\""),
                "wf/test.toml: step `b`: field `timeout_ms`: invalid type: string \"fast\", expected u64",
            ),
            (
                GOOD.replace("timeout_ms = 100", "max_retries = -1"),
                "wf/test.toml: step `b`: field `max_retries`: invalid value: integer `-1`, expected u32",
            ),
            (
                GOOD.replace("timeout_ms = 100", "colour = \"red\""),
                "wf/test.toml: step `b`: field `colour`: unknown field `colour`",
            ),
            (
                GOOD.replace("max_retries = 2", "max_retries = \"two\""),
                "wf/test.toml: field `defaults.max_retries`: invalid type: string \"two\"",
            ),
        ];
        for (text, want) in cases {
            let err = load(&text).expect_err("invalid").to_string();
            assert!(err.contains(want), "{err}\nshould contain\n{want}");
        }
        // Broken TOML itself still says where.
        let err = load("name = \"x\"\n[[steps]\n")
            .expect_err("invalid")
            .to_string();
        assert!(
            err.contains("invalid TOML") && err.contains("line 2"),
            "{err}"
        );
    }
}
