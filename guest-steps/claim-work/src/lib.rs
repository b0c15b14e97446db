//! Step `claim_work`: claims the work item through the host's coordination
//! interface, so no other run works on it while the lease lasts.
//!
//! Input: `{ "work_item": "...", "lease_ms": 30000, "user_id": "...", "resource", "action", "decision": {...} }`.
//! Output: the granted claim (claim id, work item, run id, trace id, lease expiry).
//! A conflict is fatal and names the holder's run and trace id.
//!
//! Reversible: `undo` releases the claim (a claim already gone is fine, so
//! undo is idempotent); `compensate` gives up, never stealing a held item.

use braid_step::{ClaimError, StepError, TraceContext, WorkClaim, coordination, str_field};
use braid_step_reversible::Compensation;
use serde_json::json;

struct ClaimWork;

const DEFAULT_LEASE_MS: u64 = 30_000;

fn claim_json(claim: &WorkClaim) -> serde_json::Value {
    json!({
        "claim_id": claim.claim_id,
        "work_item": claim.work_item,
        "run_id": claim.run_id,
        "trace_id": claim.trace_id,
        "span_id": claim.span_id,
        "step": claim.step,
        "owner": claim.owner,
        "claimed_at_ms": claim.claimed_at_ms,
        "expires_at_ms": claim.expires_at_ms,
    })
}

impl braid_step_reversible::Step for ClaimWork {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input = braid_step::parse_input(&input)?;
        let work_item = str_field(&input, "work_item")?;
        let lease_ms = input
            .get("lease_ms")
            .and_then(|v| v.as_u64())
            .unwrap_or(DEFAULT_LEASE_MS);
        let metadata = json!({
            "user_id": input.get("user_id"),
            "resource": input.get("resource"),
            "action": input.get("action"),
            "obligations": input.pointer("/decision/obligations"),
        });

        match coordination::claim(&ctx, work_item, lease_ms, &metadata.to_string()) {
            Ok(claim) => {
                braid_step::event(
                    &ctx,
                    "coordination.claimed",
                    &[("lease_ms", lease_ms as f64)],
                    &[("work_item", work_item), ("claim_id", &claim.claim_id)],
                );
                Ok(claim_json(&claim).to_string())
            }
            Err(ClaimError::Conflict(holder)) => {
                braid_step::event(
                    &ctx,
                    "coordination.conflict",
                    &[],
                    &[
                        ("work_item", work_item),
                        ("holder_trace_id", &holder.trace_id),
                    ],
                );
                // A holder of another workflow is not named (the host
                // tells only that the item is held, and until when).
                Err(StepError::Fatal(if holder.run_id.is_empty() {
                    format!(
                        "work item `{work_item}` is already claimed by a run of another workflow until {} ms",
                        holder.expires_at_ms
                    )
                } else {
                    format!(
                        "work item `{work_item}` is already claimed by run {} (trace {}, step `{}`) until {} ms",
                        holder.run_id, holder.trace_id, holder.step, holder.expires_at_ms
                    )
                }))
            }
            Err(ClaimError::Unavailable(reason)) => Err(StepError::Retryable(format!(
                "claim store unavailable: {reason}"
            ))),
            Err(other) => Err(StepError::Fatal(format!("claim refused: {other:?}"))),
        }
    }
}

impl braid_step_reversible::Reversible for ClaimWork {
    fn compensate(_ctx: TraceContext, _input: String, _error: StepError) -> Compensation {
        Compensation::GiveUp
    }

    fn undo(ctx: TraceContext, _input: String, output: String) -> Result<(), StepError> {
        let output = braid_step::parse_input(&output)?;
        let claim_id = str_field(&output, "claim_id")?;
        match coordination::release(&ctx, claim_id) {
            Ok(()) | Err(ClaimError::NotHeld(_)) => {
                braid_step::event(
                    &ctx,
                    "coordination.released",
                    &[],
                    &[("claim_id", claim_id)],
                );
                Ok(())
            }
            Err(ClaimError::Unavailable(reason)) => Err(StepError::Retryable(format!(
                "claim store unavailable: {reason}"
            ))),
            Err(other) => Err(StepError::Fatal(format!("release refused: {other:?}"))),
        }
    }
}

braid_step_reversible::export!(ClaimWork with_types_in braid_step_reversible::bindings);
