//! Restarting an ended run from one of its steps (`POST
//! /v1/runs/ID/restart {"from": "STEP"}`, Temporal's reset): a new run,
//! with the old run's input, that reuses the journaled outputs of the old
//! run's steps that completed and were not undone, except STEP and every
//! step after it, which run again on the components live now (so does a
//! step that depends on one that runs again: its input would differ).
//!
//! A reused completion is journaled again as the new run's own, so a
//! resume after a crash reuses it too and a failure of the new run undoes
//! it (the new run carries the old one's work on). A step the old run
//! undid is not reused: what it did is gone, so it runs again.
//!
//! Must not know wasmtime or where components come from.

use crate::journal::JournalEntry;
use crate::report::RestartedFrom;
use crate::workflow::{StepKind, Workflow};
use std::collections::HashSet;

/// What a restarted run takes over from the run it restarts.
#[derive(Debug, Clone)]
pub struct Prior {
    /// How the report links the old run.
    pub from: RestartedFrom,
    /// The old run's completions the new run reuses, in journal order.
    pub reused: Vec<JournalEntry>,
}

/// Why a run cannot be restarted from a step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    #[error("workflow `{workflow}` has no step `{step}` to restart from (its steps: {known})")]
    UnknownStep {
        workflow: String,
        step: String,
        known: String,
    },
}

impl Prior {
    /// What restarting run `run_id` (of trace `trace_id`, its journal
    /// `entries`) from step `from` of `wf` (today's definition) reuses.
    pub fn of(
        wf: &Workflow,
        run_id: &str,
        trace_id: &str,
        from: &str,
        entries: &[JournalEntry],
    ) -> Result<Prior, RestartError> {
        if from.ends_with('/') || wf.step(from).is_none() {
            return Err(RestartError::UnknownStep {
                workflow: wf.name.clone(),
                step: from.to_string(),
                known: wf
                    .steps
                    .iter()
                    .filter(|s| !s.name.ends_with('/'))
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let again = run_again(wf, from);
        let undone: HashSet<&str> = entries
            .iter()
            .filter(|e| e.kind == "undo" && e.outcome == "undone")
            .map(|e| e.step.as_str())
            .collect();
        let completions: Vec<&JournalEntry> = entries
            .iter()
            .filter(|e| e.kind == "completed")
            .filter(|e| matches!(e.outcome.as_str(), "succeeded" | "compensated" | "mapped"))
            .filter(|e| wf.step_of_call(&e.step).is_some() && !undone.contains(e.step.as_str()))
            .collect();
        let kept = kept_steps(wf, &again, &completions, &undone);
        let mut seen = HashSet::new();
        let reused: Vec<JournalEntry> = completions
            .into_iter()
            .filter(|e| {
                wf.step_of_call(&e.step)
                    .is_some_and(|(step, _)| kept.contains(step.name.as_str()))
            })
            .filter(|e| seen.insert(e.step.clone()))
            .cloned()
            .collect();
        let reused_steps = reused
            .iter()
            .filter(|e| !e.step.contains('.'))
            .map(|e| e.step.clone())
            .collect();
        Ok(Prior {
            from: RestartedFrom {
                run_id: run_id.to_string(),
                step: from.to_string(),
                reused_steps,
                trace_id: trace_id.to_string(),
            },
            reused,
        })
    }
}

/// The steps whose completion a restart keeps: completed (a map: with
/// none of its elements undone), not to run again, and every step they
/// depend on kept too (a step whose input would change runs again).
fn kept_steps<'w>(
    wf: &'w Workflow,
    again: &HashSet<&str>,
    completions: &[&JournalEntry],
    undone: &HashSet<&str>,
) -> HashSet<&'w str> {
    let completed: HashSet<&str> = completions
        .iter()
        .filter(|e| !e.step.contains('.'))
        .map(|e| e.step.as_str())
        .collect();
    let map_undone = |name: &str| {
        undone
            .iter()
            .any(|u| u.split_once('.').is_some_and(|(s, _)| s == name))
    };
    let mut kept: HashSet<&str> = HashSet::new();
    loop {
        let before = kept.len();
        for s in &wf.steps {
            let name = s.name.as_str();
            if kept.contains(name)
                || again.contains(name)
                || !completed.contains(name)
                || map_undone(name)
            {
                continue;
            }
            if s.dependencies().iter().all(|d| kept.contains(d)) {
                kept.insert(name);
            }
        }
        if kept.len() == before {
            return kept;
        }
    }
}

/// Step `from` and every step that depends on it, at any distance (a
/// compose step: its workflow's steps too).
fn run_again<'w>(wf: &'w Workflow, from: &str) -> HashSet<&'w str> {
    let mut again: HashSet<&str> = wf
        .steps
        .iter()
        .filter(|s| s.name == from)
        .map(|s| s.name.as_str())
        .collect();
    if let Some(StepKind::Compose { .. }) = wf.step(from).map(|s| &s.kind) {
        let prefix = format!("{from}/");
        again.extend(
            wf.steps
                .iter()
                .filter(|s| s.name.starts_with(&prefix))
                .map(|s| s.name.as_str()),
        );
    }
    loop {
        let before = again.len();
        for s in &wf.steps {
            if !again.contains(s.name.as_str())
                && s.dependencies().iter().any(|d| again.contains(d))
            {
                again.insert(s.name.as_str());
            }
        }
        if again.len() == before {
            return again;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, step: &str, outcome: &str) -> JournalEntry {
        JournalEntry {
            kind: kind.into(),
            step: step.into(),
            outcome: outcome.into(),
            output: Some("{}".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_restart_reuses_what_completed_before_its_step_and_was_not_undone() {
        let text = r#"
            name = "chain"
            result = "d"
            [[steps]]
            name = "a"
            component = "a"
            [[steps]]
            name = "b"
            component = "b"
            wait_for = ["a"]
            [[steps]]
            name = "side"
            component = "side"
            wait_for = ["a"]
            [[steps]]
            name = "c"
            component = "c"
            wait_for = ["b"]
            [[steps]]
            name = "d"
            component = "d"
            wait_for = ["c", "side"]
        "#;
        let wf = Workflow::from_toml(text, std::path::Path::new("chain.toml")).expect("valid");
        let entries = vec![
            entry("completed", "a", "succeeded"),
            entry("completed", "side", "succeeded"),
            entry("completed", "b", "succeeded"),
            entry("completed", "c", "succeeded"),
            entry("completed", "d", "succeeded"),
            entry("undo", "side", "undone"),
            entry("completed", "gone", "succeeded"),
        ];
        let prior = Prior::of(&wf, "run-1", "t", "b", &entries).expect("known step");
        // `side` was undone: it runs again; b, c and d come after `b`.
        assert_eq!(prior.from.reused_steps, ["a"]);
        let from_c = Prior::of(&wf, "run-1", "t", "c", &entries).expect("known step");
        assert_eq!(from_c.from.reused_steps, ["a", "b"]);
        // `a` undone: everything after it runs again too (its input changes).
        let mut a_undone = entries.clone();
        a_undone.push(entry("undo", "a", "undone"));
        let prior = Prior::of(&wf, "run-1", "t", "d", &a_undone).expect("known step");
        assert!(prior.from.reused_steps.is_empty(), "{:?}", prior.from);
        let err = Prior::of(&wf, "run-1", "t", "nope", &entries).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "workflow `chain` has no step `nope` to restart from (its steps: a, b, side, c, d)"
        );
    }
}
