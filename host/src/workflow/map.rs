//! Map steps (`[steps.map]`): a step run once per element of a JSON array
//! taken from an input, another step's output or a constant, each element
//! an attempt-and-retry unit of its own, at most `max_parallel` at once.
//!
//! Owns: the model and its check (from the raw TOML), and the failure
//! budget's arithmetic. Must not do IO; running the elements is the
//! scheduler's (`scheduler::map`).

use super::ArgSource;
use super::raw::RawMap;
use std::collections::BTreeMap;

/// Elements of one map running at once, unless `max_parallel` says otherwise.
pub const DEFAULT_MAX_PARALLEL: u32 = 10;
/// Most elements of one map running at once a definition may ask for.
pub const MAX_PARALLEL: u32 = 1000;
/// Most elements one map takes, unless `max_elements` says otherwise: a
/// longer list fails the step (its report and journal stay bounded).
pub const DEFAULT_MAX_ELEMENTS: u32 = 10_000;
/// Most elements a definition may allow one map.
pub const MAX_ELEMENTS: u32 = 100_000;
/// The argument an element goes in, unless `as` names another.
pub const DEFAULT_ELEMENT_ARG: &str = "item";

/// How a map step runs its elements.
#[derive(Debug, Clone, PartialEq)]
pub struct MapSpec {
    /// Where the list comes from.
    pub over: ArgSource,
    /// The argument of the step's input that holds the whole element
    /// (`as`; `item` unless arguments pick parts of it with `element`).
    pub element_arg: Option<String>,
    pub max_parallel: u32,
    pub max_elements: u32,
    /// How many elements may fail before the step does (`None`: none may,
    /// and the output is the plain array of results).
    pub tolerance: Option<Tolerance>,
}

/// A map's failure budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    Count(u32),
    /// Of the list's length, rounded down.
    Percent(f64),
}

impl MapSpec {
    /// How many of `len` elements may fail with the step still succeeding.
    pub fn tolerated_failures(&self, len: usize) -> usize {
        match self.tolerance {
            None => 0,
            Some(Tolerance::Count(n)) => n as usize,
            Some(Tolerance::Percent(p)) => ((len as f64) * p / 100.0).floor() as usize,
        }
    }

    /// The step it reads the list from, if any.
    pub fn step(&self) -> Option<&str> {
        match &self.over {
            ArgSource::Step { step, .. } => Some(step),
            _ => None,
        }
    }
}

/// Checks `[steps.map]` and builds it; `over` is checked by the caller
/// like an argument (it is one, in form). Problems: (field, message).
pub(super) fn check(
    raw: &RawMap,
    over: Option<ArgSource>,
    args: &BTreeMap<String, ArgSource>,
    problems: &mut Vec<(String, String)>,
) -> Option<MapSpec> {
    let mut bad = |field: &str, message: String| problems.push((format!("map.{field}"), message));
    let picks_parts = args
        .values()
        .any(|a| matches!(a, ArgSource::Element { .. }));
    let element_arg = match (&raw.element, picks_parts) {
        (Some(a), _) => Some(a.clone()),
        (None, false) => Some(DEFAULT_ELEMENT_ARG.to_string()),
        (None, true) => None,
    };
    let Some(name) = &element_arg else {
        return finish(raw, over, None, &mut bad);
    };
    if !super::valid_name(name) {
        bad(
            "as",
            format!("`{name}` is not a valid argument name (use a-z, 0-9, '_' and '-')"),
        );
    } else if args.contains_key(name) {
        bad(
            "as",
            format!("the element goes in argument `{name}`, which `args` sets too"),
        );
    }
    finish(raw, over, element_arg, &mut bad)
}

/// The rest of `check`: bounds and the failure budget.
fn finish(
    raw: &RawMap,
    over: Option<ArgSource>,
    element_arg: Option<String>,
    bad: &mut impl FnMut(&str, String),
) -> Option<MapSpec> {
    let max_parallel = raw.max_parallel.unwrap_or(DEFAULT_MAX_PARALLEL);
    if max_parallel == 0 || max_parallel > MAX_PARALLEL {
        bad(
            "max_parallel",
            format!("must be between 1 and {MAX_PARALLEL}"),
        );
    }
    let max_elements = raw.max_elements.unwrap_or(DEFAULT_MAX_ELEMENTS);
    if max_elements == 0 || max_elements > MAX_ELEMENTS {
        bad(
            "max_elements",
            format!("must be between 1 and {MAX_ELEMENTS}"),
        );
    }
    let tolerance = match (raw.tolerated_failure_count, raw.tolerated_failure_percent) {
        (None, None) => None,
        (Some(n), None) => Some(Tolerance::Count(n)),
        (None, Some(p)) if (0.0..=100.0).contains(&p) => Some(Tolerance::Percent(p)),
        (None, Some(_)) => {
            bad(
                "tolerated_failure_percent",
                "must be between 0 and 100".into(),
            );
            None
        }
        (Some(_), Some(_)) => {
            bad(
                "tolerated_failure_count",
                "set `tolerated_failure_count` or `tolerated_failure_percent`, not both".into(),
            );
            None
        }
    };
    Some(MapSpec {
        over: over?,
        element_arg,
        max_parallel,
        max_elements,
        tolerance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_budget_is_a_count_or_a_share_rounded_down() {
        let mut map = MapSpec {
            over: ArgSource::Input("xs".into()),
            element_arg: Some("item".into()),
            max_parallel: 4,
            max_elements: 100,
            tolerance: None,
        };
        assert_eq!(map.tolerated_failures(50), 0);
        map.tolerance = Some(Tolerance::Count(3));
        assert_eq!(map.tolerated_failures(50), 3);
        map.tolerance = Some(Tolerance::Percent(10.0));
        assert_eq!(map.tolerated_failures(50), 5);
        assert_eq!(map.tolerated_failures(9), 0);
    }
}
