//! [`SandboxExecutor`]: the scheduler's [`StepExecutor`] in production, one
//! prepared component per step of a workflow, each call made by the
//! [`Sandbox`].
//!
//! Must not know the DAG.

use super::call::{CallResult, StepCall};
use super::{PreparedComponent, Sandbox, SandboxError};
use crate::scheduler::{AttemptContext, Compensation, StepExecutor, StepFailure};
use crate::workflow::{StepSpec, Workflow};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Executes a workflow's steps in the sandbox: one prepared component per step.
pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    components: HashMap<String, Arc<PreparedComponent>>,
}

impl SandboxExecutor {
    /// An executor for already prepared components, by step name.
    pub fn from_components(
        sandbox: Arc<Sandbox>,
        components: impl IntoIterator<Item = (String, PreparedComponent)>,
    ) -> Self {
        SandboxExecutor {
            sandbox,
            components: components
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        }
    }

    /// An executor for components already shared elsewhere, by step name.
    pub fn from_shared(
        sandbox: Arc<Sandbox>,
        components: impl IntoIterator<Item = (String, Arc<PreparedComponent>)>,
    ) -> Self {
        SandboxExecutor {
            sandbox,
            components: components.into_iter().collect(),
        }
    }

    /// This executor with `component` serving `steps` instead of what they
    /// had; every other step keeps its component.
    pub fn with_component(&self, steps: &[String], component: Arc<PreparedComponent>) -> Self {
        let mut components = self.components.clone();
        for step in steps {
            components.insert(step.clone(), Arc::clone(&component));
        }
        SandboxExecutor {
            sandbox: Arc::clone(&self.sandbox),
            components,
        }
    }

    /// Each step's prepared component, by step name.
    pub fn components(&self) -> BTreeMap<&str, &PreparedComponent> {
        self.components
            .iter()
            .map(|(step, c)| (step.as_str(), c.as_ref()))
            .collect()
    }

    /// Loads every step's component (each distinct file once). Reports every
    /// component that fails, not just the first.
    pub fn prepare(
        sandbox: Arc<Sandbox>,
        workflow: &Workflow,
    ) -> Result<Self, Vec<(String, SandboxError)>> {
        let mut by_path: HashMap<PathBuf, Arc<PreparedComponent>> = HashMap::new();
        let mut components = HashMap::new();
        let mut errors = Vec::new();
        // Compose steps run no component of their own (their workflow's
        // steps are among these).
        let calls = workflow
            .steps
            .iter()
            .filter(|s| s.kind == crate::workflow::StepKind::Call);
        for step in calls {
            if step.limits.fuel.is_some() && !sandbox.config.fuel {
                errors.push((
                    step.name.clone(),
                    SandboxError::Engine("the step sets `fuel` but the sandbox runs without fuel metering (use --fuel)".into()),
                ));
                continue;
            }
            if let Some(c) = by_path.get(&step.component) {
                components.insert(step.name.clone(), Arc::clone(c));
                continue;
            }
            let started = Instant::now();
            match sandbox.load(&step.component) {
                Ok(c) => {
                    tracing::debug!(step = %step.name, component = %c.path.display(), sha256 = %c.sha256,
                        cached = c.from_cache, ms = started.elapsed().as_secs_f64() * 1000.0, "component loaded");
                    let c = Arc::new(c);
                    by_path.insert(step.component.clone(), Arc::clone(&c));
                    components.insert(step.name.clone(), c);
                }
                Err(e) => errors.push((step.name.clone(), e)),
            }
        }
        if errors.is_empty() {
            Ok(SandboxExecutor {
                sandbox,
                components,
            })
        } else {
            Err(errors)
        }
    }
}

impl SandboxExecutor {
    async fn call(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        call: StepCall,
    ) -> Result<CallResult, StepFailure> {
        let Some(component) = self.components.get(&step.name) else {
            return Err(StepFailure::Host(format!(
                "no component loaded for step `{}`",
                step.name
            )));
        };
        self.sandbox.call(component, step, ctx, call).await
    }
}

fn unexpected(what: &str) -> StepFailure {
    StepFailure::Host(format!(
        "the sandbox answered {what} with the wrong kind of result"
    ))
}

impl StepExecutor for SandboxExecutor {
    fn component_of(&self, step: &str) -> (String, String) {
        self.components
            .get(step)
            .map(|c| (c.path.display().to_string(), c.sha256.clone()))
            .unwrap_or_default()
    }

    fn is_reversible(&self, step: &str) -> bool {
        self.components.get(step).is_some_and(|c| c.is_reversible())
    }

    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        let recorder = ctx.recorder.clone();
        let (trace_id, span_id) = (
            ctx.trace.trace_id.to_string(),
            ctx.trace.span_id.to_string(),
        );
        match self.call(step, ctx, StepCall::Run { input }).await? {
            CallResult::Output(out) => Ok(out),
            // A policy step: its decision is the step's output; a deny fails it.
            CallResult::Decision(decision) => {
                let (verdict, reasons) = match &decision {
                    Ok(d) => (if d.allow { "allow" } else { "deny" }, d.reasons.join("; ")),
                    Err(e) => ("error", e.clone()),
                };
                tracing::info!(step = %step.name, %trace_id, %span_id, decision = verdict, reasons = %reasons, "policy decision");
                recorder.event(crate::report::EventRecord {
                    kind: "host".into(),
                    name: "policy.decision".into(),
                    level: "info".into(),
                    message: reasons.clone(),
                    trace_id,
                    span_id,
                    step: step.name.clone(),
                    at_ms: 0.0,
                    measurements: BTreeMap::new(),
                    metadata: [("decision".to_string(), verdict.to_string())].into(),
                });
                match decision {
                    Ok(d) if d.allow => Ok(serde_json::json!({
                        "allowed": true,
                        "reasons": d.reasons,
                        "obligations": d.obligations,
                    })
                    .to_string()),
                    // `on_deny = "continue"`: the deny is the output, for
                    // later steps' conditions to branch on.
                    Ok(d) if step.deny_continues => Ok(serde_json::json!({
                        "allowed": false,
                        "reasons": d.reasons,
                        "obligations": d.obligations,
                    })
                    .to_string()),
                    Ok(d) => Err(StepFailure::Fatal(format!(
                        "denied by policy: {}",
                        d.reasons.join("; ")
                    ))),
                    Err(e) => Err(StepFailure::Fatal(format!("policy could not decide: {e}"))),
                }
            }
            _ => Err(unexpected("run")),
        }
    }

    async fn compensate(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        error: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        match self
            .call(step, ctx, StepCall::Compensate { input, error })
            .await?
        {
            CallResult::Compensation(c) => Ok(c),
            _ => Err(unexpected("compensate")),
        }
    }

    async fn undo(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
        output: String,
    ) -> Result<(), StepFailure> {
        match self
            .call(step, ctx, StepCall::Undo { input, output })
            .await?
        {
            CallResult::Undone => Ok(()),
            _ => Err(unexpected("undo")),
        }
    }
}
