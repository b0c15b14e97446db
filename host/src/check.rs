//! `braid check`: a workflow definition plus everything it points at.
//!
//! Structural rules come from [`crate::workflow`]; this adds what needs the
//! sandbox: every component file exists, is a component, and implements the
//! step world with imports the host provides.

use crate::sandbox::{Sandbox, SandboxError, SandboxExecutor};
use crate::workflow::{DefinitionError, Problem, Workflow};
use std::path::Path;
use std::sync::Arc;

fn component_problem(workflow: &Workflow, step: String, e: SandboxError) -> Problem {
    Problem {
        file: workflow.source.clone(),
        step: Some(step),
        field: Some("component".into()),
        message: e.to_string(),
    }
}

/// Loads a workflow and prepares every component it names; every problem
/// found is reported together.
pub fn load_and_prepare(
    path: &Path,
    sandbox: Arc<Sandbox>,
) -> Result<(Arc<Workflow>, SandboxExecutor), DefinitionError> {
    let workflow = Arc::new(Workflow::load(path)?);
    let executor =
        SandboxExecutor::prepare(sandbox, &workflow).map_err(|errors| DefinitionError {
            problems: errors
                .into_iter()
                .map(|(step, e)| component_problem(&workflow, step, e))
                .collect(),
        })?;
    Ok((workflow, executor))
}
