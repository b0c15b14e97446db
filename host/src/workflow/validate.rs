//! Validation: a [`RawWorkflow`] becomes a [`Workflow`] or a
//! [`DefinitionError`] listing every problem with its file, step and field.
//! Split by concern: the top level, step names, each step's limits, its
//! arguments and pointers, its `wait_for`, and the graph (result, cycles).
//! Problems are listed in that order.
//!
//! Must not touch wasmtime or do IO (component files are `check`'s).

use super::compose::{self, Composing};
use super::raw::{RawArg, RawLimits, RawStep, RawWorkflow};
use super::{
    ArgSource, DEFAULT_TIMEOUT, DefinitionError, InputSpec, MAX_MEMORY_MB, Problem, StepLimits,
    StepSpec, Workflow,
};
use super::{Condition, ValueRef, condition, map, valid_name};
use super::{DEFAULT_IDEMPOTENCY_HEADER, OnCrash};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

/// Longest timeout a definition may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most records per attempt a definition may ask the report to keep.
const MAX_LOG_RECORDS: u32 = 100_000;
/// Most bytes of records per attempt a definition may ask for.
const MAX_LOG_BYTES: u64 = 16 << 20;
/// Most refused calls per attempt a definition may allow.
const MAX_REFUSALS: u32 = 10_000;
/// Most retries a definition may ask for.
const MAX_RETRIES: u32 = 100;

fn valid_host_pattern(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
}

struct Problems<'a> {
    file: &'a Path,
    list: Vec<Problem>,
}

impl Problems<'_> {
    fn add(&mut self, step: Option<&str>, field: Option<String>, message: String) {
        self.list.push(Problem {
            file: self.file.to_path_buf(),
            step: step.map(str::to_string),
            field,
            message,
        });
    }
}

/// Checks `raw` and builds the workflow it defines; compose steps are
/// resolved (and their sub-workflows' steps made this workflow's) in
/// `composing`'s context.
pub(super) fn validate(
    raw: RawWorkflow,
    path: &Path,
    composing: &Composing,
) -> Result<Workflow, DefinitionError> {
    let mut p = Problems {
        file: path,
        list: Vec::new(),
    };
    top_level(&raw, &mut p);
    let base = path.parent().unwrap_or(Path::new("."));
    let components_dir = base.join(raw.components_dir.as_deref().unwrap_or("."));
    let seen = step_names(&raw, &mut p);
    let composing = composing.within(&raw);
    let mut steps: Vec<StepSpec> = Vec::new();
    let mut composed = BTreeMap::new();
    for s in &raw.steps {
        if s.sleep.is_some() || s.signal.is_some() {
            steps.extend(wait_step(&raw, s, &seen, &mut p));
            continue;
        }
        match (&s.component, &s.compose) {
            (Some(c), None) => {
                let component = if c.ends_with(".wasm") || c.contains('/') {
                    base.join(c)
                } else {
                    components_dir.join(format!("{c}.wasm"))
                };
                steps.push(step(&raw, s, component, &seen, &mut p));
            }
            (None, Some(name)) => {
                let args = arguments(&raw, s, &seen, &mut p);
                let when = s.when.as_ref().and_then(|c| when(&raw, s, c, &seen, &mut p));
                let mut problems = Vec::new();
                let sub = compose::Sub {
                    step: s,
                    name,
                    args,
                    when,
                };
                if let Some(expanded) = composing.expand(sub, path, &mut composed, &mut problems) {
                    steps.extend(expanded);
                }
                p.list.extend(problems);
            }
            (c, _) => p.add(
                Some(&s.name),
                Some(if c.is_some() { "compose" } else { "component" }.into()),
                "set one of `component` (a component that runs) or `compose` (a workflow that runs as this step)"
                    .into(),
            ),
        }
    }
    graph(&raw, &steps, &seen, &mut p);
    let mut waits = Vec::new();
    super::wait::check(&steps, &mut waits);
    for (step, field, message) in waits {
        p.add(Some(&step), Some(field), message);
    }
    let on_crash = match raw.on_crash.as_deref() {
        None | Some("resume") => OnCrash::Resume,
        Some("undo") => OnCrash::Undo,
        Some(other) => {
            p.add(
                None,
                Some("on_crash".into()),
                format!("`{other}` is not `resume` or `undo`"),
            );
            OnCrash::Resume
        }
    };
    let on_failure = raw
        .on_failure
        .as_deref()
        .map_or(Ok(Default::default()), super::OnFailure::parse);
    let on_failure = on_failure.unwrap_or_else(|e| {
        p.add(None, Some("on_failure".into()), e);
        Default::default()
    });
    let suspend_for = super::failure::suspend_for(raw.suspend_for.as_deref()).unwrap_or_else(|e| {
        p.add(None, Some("suspend_for".into()), e);
        super::DEFAULT_SUSPEND_FOR
    });

    if !p.list.is_empty() {
        return Err(DefinitionError { problems: p.list });
    }
    let inputs = raw
        .inputs
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                InputSpec {
                    description: v.description,
                    default: v.default,
                },
            )
        })
        .collect();
    Ok(Workflow {
        name: raw.name,
        description: raw.description,
        source: path.to_path_buf(),
        inputs,
        steps,
        result: raw.result,
        on_crash,
        on_failure,
        suspend_for,
        definition: String::new(),
        composed,
    })
}

/// The workflow's name, its inputs' names, and that it has steps.
fn top_level(raw: &RawWorkflow, p: &mut Problems<'_>) {
    if !valid_name(&raw.name) {
        p.add(
            None,
            Some("name".into()),
            format!(
                "`{}` is not a valid name (use a-z, 0-9, '_' and '-')",
                raw.name
            ),
        );
    }
    for name in raw.inputs.keys() {
        if !valid_name(name) {
            p.add(
                None,
                Some(format!("inputs.{name}")),
                "not a valid input name (use a-z, 0-9, '_' and '-')".into(),
            );
        }
    }
    if raw.steps.is_empty() {
        p.add(
            None,
            Some("steps".into()),
            "the workflow has no steps".into(),
        );
    }
}

/// Step names: valid and unique. Returns each name's index.
fn step_names<'r>(raw: &'r RawWorkflow, p: &mut Problems<'_>) -> HashMap<&'r str, usize> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, s) in raw.steps.iter().enumerate() {
        if !valid_name(&s.name) {
            p.add(
                Some(&s.name),
                Some("name".into()),
                "not a valid step name (use a-z, 0-9, '_' and '-')".into(),
            );
        }
        if let Some(first) = seen.insert(&s.name, i) {
            p.add(
                Some(&s.name),
                Some("name".into()),
                format!("duplicate step name (also step #{})", first + 1),
            );
        }
    }

    seen
}

/// One step: its limits, arguments and `wait_for`.
fn step(
    raw: &RawWorkflow,
    s: &RawStep,
    component: std::path::PathBuf,
    seen: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> StepSpec {
    let step = Some(s.name.as_str());
    let (timeout, max_retries, allowed_hosts, step_limits) = limits(raw, s, p);
    let idempotency_header = idempotency(raw, s, p);
    let args = arguments(raw, s, seen, p);
    let when = s.when.as_ref().and_then(|c| when(raw, s, c, seen, p));
    let map = s.map.as_ref().and_then(|m| {
        let over = argument(raw, s, "map.over", &m.over, seen, p);
        let mut problems = Vec::new();
        let spec = map::check(m, over, &args, &mut problems);
        for (field, message) in problems {
            p.add(step, Some(field), message);
        }
        spec
    });
    for (i, w) in s.wait_for.iter().enumerate() {
        if !seen.contains_key(w.as_str()) {
            p.add(
                step,
                Some(format!("wait_for[{i}]")),
                format!("unknown step `{w}`"),
            );
        } else if w == &s.name {
            p.add(
                step,
                Some(format!("wait_for[{i}]")),
                "a step cannot wait for itself".into(),
            );
        }
    }
    StepSpec {
        name: s.name.clone(),
        kind: super::StepKind::Call,
        component,
        args,
        wait_for: s.wait_for.clone(),
        when,
        map,
        deny_continues: match s.on_deny.as_deref() {
            None | Some("fail") => false,
            Some("continue") => true,
            Some(other) => {
                p.add(
                    step,
                    Some("on_deny".into()),
                    format!("`{other}` is not `fail` or `continue`"),
                );
                false
            }
        },
        on_failure: s.on_failure.as_deref().and_then(|text| {
            super::OnFailure::parse(text)
                .map_err(|e| p.add(step, Some("on_failure".into()), e))
                .ok()
        }),
        timeout,
        max_retries,
        allowed_hosts,
        limits: step_limits,
        idempotency_header,
    }
}

/// A `sleep` or `signal` step: its kind (see `wait`), its condition and
/// `wait_for`, and a sleep's `until` argument.
fn wait_step(
    raw: &RawWorkflow,
    s: &RawStep,
    seen: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> Option<StepSpec> {
    let mut problems = Vec::new();
    let kind = super::wait::kind(s, &mut problems);
    for (field, message) in problems {
        p.add(Some(&s.name), Some(field), message);
    }
    let mut spec = step(raw, s, std::path::PathBuf::new(), seen, p);
    spec.kind = kind?;
    spec.args = BTreeMap::new();
    if let Some(until) = s.sleep.as_ref().and_then(|sl| sl.until.as_ref())
        && let Some(source) = argument(raw, s, "sleep.until", until, seen, p)
    {
        spec.args.insert("until".into(), source);
    }
    Some(spec)
}

/// Headers a step's idempotency key may not be sent in: the host sets or
/// the HTTP layer owns them.
const RESERVED_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
];

/// The header a step's idempotency key goes in, if the step opted in.
fn idempotency(raw: &RawWorkflow, s: &RawStep, p: &mut Problems<'_>) -> Option<String> {
    let step = Some(s.name.as_str());
    let on = s
        .limits
        .idempotency_key
        .or(raw.defaults.idempotency_key)
        .unwrap_or(false);
    let header = s
        .limits
        .idempotency_header
        .clone()
        .or_else(|| raw.defaults.idempotency_header.clone());
    if let Some(h) = &header {
        let token = !h.is_empty()
            && h.len() <= 64
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            p.add(
                step,
                Some("idempotency_header".into()),
                format!(
                    "`{h}` is not an HTTP header name (1 to 64 of a-z, A-Z, 0-9, !#$%&'*+-.^_`|~)"
                ),
            );
        } else if RESERVED_HEADERS.contains(&h.to_ascii_lowercase().as_str()) {
            p.add(
                step,
                Some("idempotency_header".into()),
                format!("`{h}` is a header the host or HTTP itself sets"),
            );
        }
        if !on && s.limits.idempotency_header.is_some() {
            p.add(
                step,
                Some("idempotency_header".into()),
                "set, but the step does not send its key: add `idempotency_key = true`".into(),
            );
        }
    }
    on.then(|| header.unwrap_or_else(|| DEFAULT_IDEMPOTENCY_HEADER.to_string()))
}

/// A step's limits, its own or `[defaults]`, each within its range.
fn limits(
    raw: &RawWorkflow,
    s: &RawStep,
    p: &mut Problems<'_>,
) -> (Duration, u32, Vec<String>, StepLimits) {
    let step = Some(s.name.as_str());
    let limits = |f: fn(&RawLimits) -> Option<u64>| f(&s.limits).or(f(&raw.defaults));
    let limits32 = |f: fn(&RawLimits) -> Option<u32>| f(&s.limits).or(f(&raw.defaults));
    let timeout = limits(|l| l.timeout_ms).map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        p.add(
            step,
            Some("timeout_ms".into()),
            format!("must be between 1 and {} ms", MAX_TIMEOUT.as_millis()),
        );
    }
    let max_retries = s
        .limits
        .max_retries
        .or(raw.defaults.max_retries)
        .unwrap_or(0);
    if max_retries > MAX_RETRIES {
        p.add(
            step,
            Some("max_retries".into()),
            format!("must be at most {MAX_RETRIES}"),
        );
    }
    let allowed_hosts = s
        .limits
        .allowed_hosts
        .clone()
        .or_else(|| raw.defaults.allowed_hosts.clone())
        .unwrap_or_default();
    for h in &allowed_hosts {
        if !valid_host_pattern(h) {
            p.add(
                step,
                Some("allowed_hosts".into()),
                format!("`{h}` is not `host`, `host:port` or `*.domain`"),
            );
        }
    }
    let d = StepLimits::default();
    let memory_mb = limits(|l| l.memory_limit_mb).unwrap_or(d.memory_bytes >> 20);
    if memory_mb == 0 || memory_mb > MAX_MEMORY_MB {
        p.add(
            step,
            Some("memory_limit_mb".into()),
            format!("must be between 1 and {MAX_MEMORY_MB}"),
        );
    }
    let max_output_bytes = limits(|l| l.max_output_bytes).unwrap_or(d.max_output_bytes);
    if max_output_bytes == 0 || max_output_bytes > 64 << 20 {
        p.add(
            step,
            Some("max_output_bytes".into()),
            "must be between 1 and 67108864".into(),
        );
    }
    let step_limits = StepLimits {
        memory_bytes: memory_mb << 20,
        max_output_bytes,
        max_requests: limits32(|l| l.max_requests).unwrap_or(d.max_requests),
        max_claims: limits32(|l| l.max_claims).unwrap_or(d.max_claims),
        max_response_bytes: limits(|l| l.max_response_bytes).unwrap_or(d.max_response_bytes),
        fuel: limits(|l| l.fuel),
        max_log_records: limits32(|l| l.max_log_records).unwrap_or(d.max_log_records),
        max_log_bytes: limits(|l| l.max_log_bytes).unwrap_or(d.max_log_bytes),
        max_refusals: limits32(|l| l.max_refusals).unwrap_or(d.max_refusals),
    };
    if step_limits.fuel == Some(0) {
        p.add(step, Some("fuel".into()), "must be at least 1".into());
    }
    let l = &step_limits;
    for (field, value, max) in [
        (
            "max_log_records",
            u64::from(l.max_log_records),
            u64::from(MAX_LOG_RECORDS),
        ),
        ("max_log_bytes", l.max_log_bytes, MAX_LOG_BYTES),
        (
            "max_refusals",
            u64::from(l.max_refusals),
            u64::from(MAX_REFUSALS),
        ),
    ] {
        if value > max {
            p.add(step, Some(field.into()), format!("must be at most {max}"));
        }
    }
    (timeout, max_retries, allowed_hosts, step_limits)
}

/// A step's arguments: one source each, known inputs and steps, JSON pointers.
fn arguments(
    raw: &RawWorkflow,
    s: &RawStep,
    seen: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> BTreeMap<String, ArgSource> {
    s.args
        .iter()
        .filter_map(|(arg, a)| {
            let source = argument(raw, s, &format!("args.{arg}"), a, seen, p)?;
            Some((arg.clone(), source))
        })
        .collect()
}

/// One argument (or a map's `over`) at `at`: one source, a known input or
/// step, a JSON pointer. `None`: it has no single source.
fn argument(
    raw: &RawWorkflow,
    s: &RawStep,
    at: &str,
    a: &RawArg,
    seen: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> Option<ArgSource> {
    let step = Some(s.name.as_str());
    let field = |sub: &str| Some(format!("{at}{sub}"));
    let sources = [
        a.input.is_some(),
        a.step.is_some(),
        a.value.is_some(),
        a.element.is_some(),
        a.wait_token.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        p.add(
            step,
            field(""),
            "set exactly one of `input`, `step`, `value`, `element` or `wait_token`".into(),
        );
        return None;
    }
    if let Some(ptr) = &a.element {
        if s.map.is_none() || at == "map.over" {
            p.add(
                step,
                field(".element"),
                "`element` only applies to an argument of a map step".into(),
            );
        }
        if !ptr.is_empty() && !ptr.starts_with('/') {
            p.add(
                step,
                field(".element"),
                format!("`{ptr}` is not a JSON pointer (it must start with '/', or be \"\" for the whole element)"),
            );
        }
    }
    if a.pointer.is_some() && a.step.is_none() {
        p.add(
            step,
            field(".pointer"),
            "`pointer` only applies to a `step` argument".into(),
        );
    }
    if a.optional.is_some() && a.step.is_none() {
        p.add(
            step,
            field(".optional"),
            "`optional` only applies to a `step` argument".into(),
        );
    }
    Some(if let Some(input) = &a.input {
        if !raw.inputs.contains_key(input) {
            p.add(step, field(".input"), format!("unknown input `{input}`"));
        }
        ArgSource::Input(input.clone())
    } else if let Some(dep) = &a.step {
        if !seen.contains_key(dep.as_str()) {
            p.add(step, field(".step"), format!("unknown step `{dep}`"));
        } else if dep == &s.name {
            p.add(
                step,
                field(".step"),
                "a step cannot read its own output".into(),
            );
        }
        if let Some(ptr) = &a.pointer
            && !ptr.is_empty()
            && !ptr.starts_with('/')
        {
            p.add(
                step,
                field(".pointer"),
                format!("`{ptr}` is not a JSON pointer (it must start with '/')"),
            );
        }
        ArgSource::Step {
            step: dep.clone(),
            pointer: a.pointer.clone().filter(|p| !p.is_empty()),
            optional: a.optional.unwrap_or(false),
        }
    } else if let Some(ptr) = &a.element {
        ArgSource::Element {
            pointer: Some(ptr.clone()).filter(|p| !p.is_empty()),
        }
    } else if let Some(wait) = &a.wait_token {
        // That it names a signal step is checked once every step is known.
        ArgSource::WaitToken { step: wait.clone() }
    } else {
        ArgSource::Value(a.value.clone().unwrap_or(serde_json::Value::Null))
    })
}

/// A step's `when`: well formed, known inputs and steps, bounded in size.
fn when(
    raw: &RawWorkflow,
    s: &RawStep,
    c: &super::raw::RawCondition,
    seen: &HashMap<&str, usize>,
    p: &mut Problems<'_>,
) -> Option<Condition> {
    let known = |r: &ValueRef| match r {
        ValueRef::Input { input, .. } if !raw.inputs.contains_key(input) => {
            Err(format!("unknown input `{input}`"))
        }
        ValueRef::Step { step, .. } if !seen.contains_key(step.as_str()) => {
            Err(format!("unknown step `{step}`"))
        }
        ValueRef::Step { step, .. } if step == &s.name => {
            Err("a step's condition cannot read its own output".into())
        }
        _ => Ok(()),
    };
    let mut problems = Vec::new();
    let built = condition::check(c, "when", 0, &known, &mut problems);
    if let Some(c) = &built
        && condition::size(c) > super::MAX_CONDITION_TESTS
    {
        problems.push((
            "when".into(),
            format!("more than {} tests", super::MAX_CONDITION_TESTS),
        ));
    }
    let ok = problems.is_empty();
    for (field, message) in problems {
        p.add(Some(&s.name), Some(field), message);
    }
    built.filter(|_| ok)
}

/// The graph: the result step exists, and no dependency cycle.
fn graph(raw: &RawWorkflow, steps: &[StepSpec], seen: &HashMap<&str, usize>, p: &mut Problems<'_>) {
    if !seen.contains_key(raw.result.as_str()) {
        p.add(
            None,
            Some("result".into()),
            format!("unknown step `{}`", raw.result),
        );
    }
    if let Some(cycle) = find_cycle(steps) {
        p.add(
            Some(&cycle[0]),
            None,
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
}

/// Finds one dependency cycle, returned as the path `a -> b -> ... -> a`.
/// Self-references and unknown steps are reported elsewhere and skipped here.
fn find_cycle(steps: &[StepSpec]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            s.dependencies()
                .into_iter()
                .filter(|d| *d != s.name)
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done
    let mut state = vec![0u8; steps.len()];
    let mut path: Vec<usize> = Vec::new();
    fn visit(
        n: usize,
        deps: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[n] = 1;
        path.push(n);
        for &d in &deps[n] {
            if state[d] == 1 {
                let start = path.iter().position(|&x| x == d).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(d);
                return Some(cycle);
            }
            if state[d] == 0
                && let Some(c) = visit(d, deps, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state[n] = 2;
        None
    }
    for n in 0..steps.len() {
        if state[n] == 0
            && let Some(cycle) = visit(n, &deps, &mut state, &mut path)
        {
            // `visit` follows dependencies; print in execution order.
            return Some(
                cycle
                    .into_iter()
                    .rev()
                    .map(|i| steps[i].name.clone())
                    .collect(),
            );
        }
    }
    None
}
