//! Conditions (`when = { ... }`): whether a step runs, decided on the run's
//! inputs and earlier steps' outputs when the step's dependencies have
//! settled. A small, closed language on purpose: a JSON pointer compared
//! with a value (`equals`, `one_of`, `greater_than`, `less_than`), `exists`,
//! and `not` / `all` / `any` around them. No expressions to evaluate, so a
//! definition cannot loop, allocate without bound or read anything but the
//! values it names.
//!
//! Owns: the model, its check (from the raw TOML), its evaluation and how
//! it is printed in a skipped step's reason. Must not do IO.

use super::raw::RawCondition;
use serde_json::Value;
use std::fmt;

/// Most tests one condition may hold (across `all`/`any`/`not`), and how
/// deep they may nest: a definition's conditions stay small to evaluate.
pub const MAX_CONDITION_TESTS: usize = 64;
pub const MAX_CONDITION_DEPTH: usize = 8;

/// Where a condition reads its value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef {
    /// A workflow input, optionally narrowed by a JSON pointer.
    Input {
        input: String,
        pointer: Option<String>,
    },
    /// A step's output, optionally narrowed by a JSON pointer. A step that
    /// was skipped has no value.
    Step {
        step: String,
        pointer: Option<String>,
    },
    /// A constant (`None`: no value): what a composed sub-workflow's input
    /// set to a constant, or left to its default, reads as.
    Const(Option<Value>),
}

/// What a condition checks of its value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// The value is there (`true`) or not (`false`): a pointer that matches
    /// nothing, or a step that was skipped, has no value.
    Exists(bool),
    Equals(Value),
    OneOf(Vec<Value>),
    /// A number greater than this one (false for anything else).
    GreaterThan(f64),
    LessThan(f64),
}

/// Whether a step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Test { source: ValueRef, test: Test },
    Not(Box<Condition>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

impl Condition {
    /// The steps the condition reads (the step waits for them).
    pub fn steps(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.visit(&mut |c| {
            if let Condition::Test {
                source: ValueRef::Step { step, .. },
                ..
            } = c
            {
                out.push(step.as_str());
            }
        });
        out
    }

    /// The same condition with every source replaced by `f`'s.
    pub fn map_sources(&self, f: &impl Fn(&ValueRef) -> ValueRef) -> Condition {
        match self {
            Condition::Test { source, test } => Condition::Test {
                source: f(source),
                test: test.clone(),
            },
            Condition::Not(c) => Condition::Not(Box::new(c.map_sources(f))),
            Condition::All(cs) => Condition::All(cs.iter().map(|c| c.map_sources(f)).collect()),
            Condition::Any(cs) => Condition::Any(cs.iter().map(|c| c.map_sources(f)).collect()),
        }
    }

    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a Condition)) {
        f(self);
        match self {
            Condition::Test { .. } => {}
            Condition::Not(c) => c.visit(f),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| c.visit(f)),
        }
    }

    /// Whether the condition holds; `value` finds what a source names
    /// (`None`: no value, e.g. a skipped step or a pointer matching nothing).
    /// A constant source is read here; `value` is not asked for it.
    pub fn holds<'v>(&self, value: &impl Fn(&ValueRef) -> Option<&'v Value>) -> bool {
        match self {
            Condition::Test { source, test } => {
                let v = match source {
                    ValueRef::Const(c) => c.as_ref(),
                    other => value(other),
                };
                match test {
                    Test::Exists(want) => v.is_some() == *want,
                    Test::Equals(x) => v == Some(x),
                    Test::OneOf(xs) => v.is_some_and(|v| xs.contains(v)),
                    Test::GreaterThan(n) => v.and_then(Value::as_f64).is_some_and(|v| v > *n),
                    Test::LessThan(n) => v.and_then(Value::as_f64).is_some_and(|v| v < *n),
                }
            }
            Condition::Not(c) => !c.holds(value),
            Condition::All(cs) => cs.iter().all(|c| c.holds(value)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(value)),
        }
    }
}

impl fmt::Display for ValueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name, pointer) = match self {
            ValueRef::Input { input, pointer } => ("input", input, pointer),
            ValueRef::Step { step, pointer } => ("step", step, pointer),
            ValueRef::Const(None) => return write!(f, "no value"),
            ValueRef::Const(Some(v)) => return write!(f, "{v}"),
        };
        write!(f, "{kind} `{name}{}`", pointer.as_deref().unwrap_or(""))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, word: &str, cs: &[Condition]| {
            write!(f, "{word}(")?;
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, ")")
        };
        match self {
            Condition::Test { source, test } => match test {
                Test::Exists(true) => write!(f, "{source} exists"),
                Test::Exists(false) => write!(f, "{source} does not exist"),
                Test::Equals(v) => write!(f, "{source} equals {v}"),
                Test::OneOf(vs) => write!(f, "{source} is one of {}", Value::from(vs.clone())),
                Test::GreaterThan(n) => write!(f, "{source} > {n}"),
                Test::LessThan(n) => write!(f, "{source} < {n}"),
            },
            Condition::Not(c) => write!(f, "not({c})"),
            Condition::All(cs) => list(f, "all", cs),
            Condition::Any(cs) => list(f, "any", cs),
        }
    }
}

/// A problem in a condition: the field (under `when`) and what is wrong.
pub(super) type ConditionProblem = (String, String);

/// Checks a raw condition at `field` (`when`, `when.all[1]`, ...) and
/// builds it; every problem is pushed to `problems`. `known` says whether
/// a source's input or step exists (and why not).
pub(super) fn check(
    raw: &RawCondition,
    field: &str,
    depth: usize,
    known: &dyn Fn(&ValueRef) -> Result<(), String>,
    problems: &mut Vec<ConditionProblem>,
) -> Option<Condition> {
    let mut bad = |sub: &str, message: String| problems.push((format!("{field}{sub}"), message));
    if depth > MAX_CONDITION_DEPTH {
        bad("", format!("nested deeper than {MAX_CONDITION_DEPTH}"));
        return None;
    }
    let combinators = [raw.not.is_some(), raw.all.is_some(), raw.any.is_some()];
    let has_source = raw.input.is_some() || raw.step.is_some();
    match combinators.iter().filter(|x| **x).count() {
        0 => test(raw, field, known, problems),
        1 if !has_source && !raw.has_test() => {
            if let Some(inner) = &raw.not {
                let c = check(inner, &format!("{field}.not"), depth + 1, known, problems)?;
                return Some(Condition::Not(Box::new(c)));
            }
            let (word, list) = match (&raw.all, &raw.any) {
                (Some(l), _) => ("all", l),
                (_, Some(l)) => ("any", l),
                _ => return None,
            };
            if list.is_empty() {
                bad(&format!(".{word}"), "needs at least one condition".into());
                return None;
            }
            let cs: Vec<Condition> = list
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    check(
                        c,
                        &format!("{field}.{word}[{i}]"),
                        depth + 1,
                        known,
                        problems,
                    )
                })
                .collect();
            let complete = cs.len() == list.len();
            let c = if word == "all" {
                Condition::All(cs)
            } else {
                Condition::Any(cs)
            };
            (complete).then_some(c)
        }
        _ => {
            bad(
                "",
                "set one of `not`, `all` or `any`, or a source (`input`/`step`) with one test"
                    .into(),
            );
            None
        }
    }
}

/// A leaf: one source and one test.
fn test(
    raw: &RawCondition,
    field: &str,
    known: &dyn Fn(&ValueRef) -> Result<(), String>,
    problems: &mut Vec<ConditionProblem>,
) -> Option<Condition> {
    let mut bad = |sub: &str, message: String| problems.push((format!("{field}{sub}"), message));
    let pointer = raw.pointer.clone().filter(|p| !p.is_empty());
    if let Some(p) = &pointer
        && !p.starts_with('/')
    {
        bad(
            ".pointer",
            format!("`{p}` is not a JSON pointer (it must start with '/')"),
        );
    }
    let source = match (&raw.input, &raw.step) {
        (Some(input), None) => ValueRef::Input {
            input: input.clone(),
            pointer,
        },
        (None, Some(step)) => ValueRef::Step {
            step: step.clone(),
            pointer,
        },
        _ => {
            bad(
                "",
                "set exactly one of `input` or `step` (or `not`, `all`, `any`)".into(),
            );
            return None;
        }
    };
    if let Err(why) = known(&source) {
        let sub = match source {
            ValueRef::Input { .. } => ".input",
            _ => ".step",
        };
        bad(sub, why);
    }
    let tests = [
        raw.exists.map(Test::Exists),
        raw.equals.clone().map(Test::Equals),
        raw.one_of.clone().map(Test::OneOf),
        raw.greater_than.map(Test::GreaterThan),
        raw.less_than.map(Test::LessThan),
    ];
    let mut tests = tests.into_iter().flatten();
    match (tests.next(), tests.next()) {
        (Some(test), None) => Some(Condition::Test { source, test }),
        _ => {
            bad(
                "",
                "set exactly one test: `exists`, `equals`, `one_of`, `greater_than` or `less_than`"
                    .into(),
            );
            None
        }
    }
}

/// How many tests a condition holds.
pub(super) fn size(c: &Condition) -> usize {
    let mut n = 0;
    c.visit(&mut |c| n += usize::from(matches!(c, Condition::Test { .. })));
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(step: &str, pointer: &str, test: Test) -> Condition {
        Condition::Test {
            source: ValueRef::Step {
                step: step.into(),
                pointer: Some(pointer.into()),
            },
            test,
        }
    }

    #[test]
    fn conditions_hold_on_the_values_they_name() {
        let out = json!({"allowed": false, "score": 7, "tier": "gold"});
        let value = |r: &ValueRef| match r {
            ValueRef::Step { step, pointer } if step == "policy" => {
                out.pointer(pointer.as_deref().unwrap_or(""))
            }
            _ => None,
        };
        let denied = step("policy", "/allowed", Test::Equals(json!(false)));
        assert!(denied.holds(&value));
        assert!(!Condition::Not(Box::new(denied.clone())).holds(&value));
        assert!(step("policy", "/score", Test::GreaterThan(5.0)).holds(&value));
        assert!(!step("policy", "/tier", Test::GreaterThan(5.0)).holds(&value));
        assert!(step("policy", "/tier", Test::OneOf(vec![json!("gold")])).holds(&value));
        assert!(step("policy", "/missing", Test::Exists(false)).holds(&value));
        // A skipped step has no value: it does not exist and equals nothing.
        assert!(step("skipped", "/allowed", Test::Exists(false)).holds(&value));
        assert!(!step("skipped", "/allowed", Test::Equals(json!(null))).holds(&value));
        let both = Condition::All(vec![
            denied.clone(),
            step("policy", "/score", Test::LessThan(5.0)),
        ]);
        assert!(!both.holds(&value));
        let either = Condition::Any(vec![denied, step("policy", "/score", Test::LessThan(5.0))]);
        assert!(either.holds(&value));
        assert_eq!(
            either.to_string(),
            "any(step `policy/allowed` equals false, step `policy/score` < 5)"
        );
        assert_eq!(either.steps(), vec!["policy", "policy"]);
    }
}
