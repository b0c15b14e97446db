//! `braid policy`: policy tools (`eval`).

use super::host::open_sandbox;
use super::{Exit, StateArgs, bad_input, read_input};
use braid::trace::IncomingTrace;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a policy component once and print its decision (exit 0 allow, 1 deny).
    Eval {
        /// The policy component (.wasm).
        policy: PathBuf,
        /// The facts to decide on: a JSON object, or @FILE.
        #[arg(long)]
        input: String,
        /// Evaluate under this W3C trace (default: a new trace).
        #[arg(long)]
        traceparent: Option<String>,
        /// Wall-clock limit in ms.
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        #[command(flatten)]
        state: StateArgs,
    },
}

pub async fn exec(command: PolicyCommand) -> Result<u8, Exit> {
    match command {
        PolicyCommand::Eval {
            policy,
            input,
            traceparent,
            timeout_ms,
            state,
        } => eval(&policy, &input, traceparent, timeout_ms, &state).await,
    }
}

async fn eval(
    policy: &std::path::Path,
    input: &str,
    traceparent: Option<String>,
    timeout_ms: u64,
    state: &StateArgs,
) -> Result<u8, Exit> {
    let input = read_input(input).map_err(bad_input)?;
    if !input.is_object() {
        return Err(bad_input(anyhow::anyhow!("--input must be a JSON object")));
    }
    let sandbox = open_sandbox(state)?;
    let component = sandbox.load(policy).map_err(bad_input)?;
    if !component.is_policy() {
        return Err(bad_input(anyhow::anyhow!(
            "{}: not a policy: it implements {}, not braid:workflow/policy-component",
            policy.display(),
            component.world()
        )));
    }
    let incoming = IncomingTrace::from_headers(traceparent.as_deref(), None);
    let trace = braid::trace::AttemptTrace {
        trace_id: incoming.parent.trace_id,
        span_id: braid::trace::SpanId::random(),
        parent_span_id: incoming.parent.parent_id,
        flags: incoming.parent.flags,
        state: incoming.state,
    };
    let trace_id = trace.trace_id.to_string();
    let decision = sandbox
        .evaluate_policy(
            &component,
            trace,
            input.to_string(),
            Duration::from_millis(timeout_ms),
        )
        .await
        .map_err(|e| Exit(1, anyhow::anyhow!("policy failed ({}): {e}", e.kind())))?;
    match decision {
        Ok(d) => {
            let out = serde_json::json!({
                "trace_id": trace_id,
                "allow": d.allow,
                "reasons": d.reasons,
                "obligations": d.obligations,
                "policy_sha256": component.sha256,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&out).map_err(|e| Exit(1, e.into()))?
            );
            Ok(if d.allow { 0 } else { 1 })
        }
        Err(e) => Err(bad_input(anyhow::anyhow!(
            "the policy could not decide: {e}"
        ))),
    }
}
