//! `braid:workflow/coordination`: atomic work claims with leases, for the
//! calling step, stamped with its run id, trace id and span id.

use super::Caller;
use crate::bindings::step::braid::workflow::coordination::{ClaimError, Host, WorkClaim};
use crate::bindings::step::braid::workflow::types::TraceContext;
use crate::store::{ClaimRecord, ClaimRequest, ClaimStore, ClaimStoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest lease a step may ask for.
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// Longest work item name.
const MAX_WORK_ITEM_LEN: usize = 256;
/// Largest metadata document.
const MAX_METADATA_LEN: usize = 16 * 1024;

/// Per-attempt state of the coordination interface.
pub struct CoordinationCtx {
    pub caller: Arc<Caller>,
    pub store: Arc<dyn ClaimStore>,
    /// Claims this attempt may still take (`max_claims`).
    pub claims_left: u32,
}

fn to_wit(c: ClaimRecord) -> WorkClaim {
    WorkClaim {
        claim_id: c.claim_id,
        work_item: c.work_item,
        run_id: c.run_id,
        trace_id: c.trace_id,
        span_id: c.span_id,
        step: c.step,
        owner: c.owner,
        claimed_at_ms: c.claimed_at_ms,
        expires_at_ms: c.expires_at_ms,
        metadata: c.metadata,
    }
}

fn store_error(e: ClaimStoreError) -> ClaimError {
    match e {
        ClaimStoreError::Conflict(holder) => ClaimError::Conflict(to_wit(*holder)),
        ClaimStoreError::NotHeld(id) => {
            ClaimError::NotHeld(format!("claim `{id}` is not held by this run"))
        }
        ClaimStoreError::Unavailable(why) => ClaimError::Unavailable(why),
    }
}

/// A claim error as a step of `workflow` may see it: a conflict with a run
/// of another workflow says only that the item is held and until when
/// (its run, trace, span, claim id, host and metadata are that run's
/// business); within one workflow the holder is named, so a step can tell
/// which of its own runs has the item.
fn seen_from(e: ClaimStoreError, workflow: &str) -> ClaimStoreError {
    match e {
        ClaimStoreError::Conflict(holder) if holder.workflow != workflow => {
            ClaimStoreError::Conflict(Box::new(ClaimRecord {
                claim_id: String::new(),
                work_item: holder.work_item,
                run_id: String::new(),
                trace_id: String::new(),
                span_id: String::new(),
                step: String::new(),
                owner: String::new(),
                claimed_at_ms: holder.claimed_at_ms,
                expires_at_ms: holder.expires_at_ms,
                metadata: String::new(),
                workflow: String::new(),
            }))
        }
        other => other,
    }
}

/// A lease within bounds, or why not (the text of an `invalid-argument`).
fn lease(ms: u64) -> Result<Duration, String> {
    let lease = Duration::from_millis(ms);
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(format!(
            "lease-ms must be between 1 and {}",
            MAX_LEASE.as_millis()
        ));
    }
    Ok(lease)
}

impl CoordinationCtx {
    fn outcome_event(&self, name: &str, item: &str, detail: BTreeMap<String, String>) {
        let mut metadata = detail;
        metadata.insert("work_item".into(), item.into());
        self.caller.effect_event(name, metadata);
    }
}

/// Milliseconds since `started`, as event metadata (the OTLP export turns a
/// coordination event into a span that long).
fn elapsed_ms(started: std::time::Instant) -> String {
    format!("{:.3}", started.elapsed().as_secs_f64() * 1000.0)
}

/// `types` declares no functions; the generated trait only needs an impl.
impl crate::bindings::step::braid::workflow::types::Host for CoordinationCtx {}

impl Host for CoordinationCtx {
    async fn claim(
        &mut self,
        ctx: TraceContext,
        work_item: String,
        lease_ms: u64,
        metadata: String,
    ) -> wasmtime::Result<Result<WorkClaim, ClaimError>> {
        self.caller.within_refusals()?;
        let result = self.take(ctx, work_item, lease_ms, metadata).await;
        Ok(self.counted("coordination.claim", result))
    }

    async fn renew(
        &mut self,
        ctx: TraceContext,
        claim_id: String,
        lease_ms: u64,
    ) -> wasmtime::Result<Result<WorkClaim, ClaimError>> {
        self.caller.within_refusals()?;
        let result = self.extend(ctx, claim_id, lease_ms).await;
        Ok(self.counted("coordination.renew", result))
    }

    async fn release(
        &mut self,
        ctx: TraceContext,
        claim_id: String,
    ) -> wasmtime::Result<Result<(), ClaimError>> {
        self.caller.within_refusals()?;
        let result = self.give_back(ctx, claim_id).await;
        Ok(self.counted("coordination.release", result))
    }
}

impl CoordinationCtx {
    /// Counts a refused call in the attempt's budget: any claim error but a
    /// conflict (an item another run holds is an answer, and claims are
    /// bounded by `max_claims`) and a refused context (counted when refused).
    // The error type is the WIT's (`claim-error` carries a whole claim).
    #[allow(clippy::result_large_err)]
    fn counted<T>(&self, call: &str, result: Result<T, ClaimError>) -> Result<T, ClaimError> {
        if let Err(e) = &result
            && !matches!(e, ClaimError::Conflict(_) | ClaimError::InvalidContext(_))
        {
            self.caller.budget.refused(&format!("{call}: {e:?}"));
        }
        result
    }

    async fn take(
        &mut self,
        ctx: TraceContext,
        work_item: String,
        lease_ms: u64,
        metadata: String,
    ) -> Result<WorkClaim, ClaimError> {
        if let Err(why) = self.caller.verify("coordination.claim", &ctx) {
            return Err(ClaimError::InvalidContext(why));
        }
        if work_item.is_empty() || work_item.len() > MAX_WORK_ITEM_LEN {
            return Err(ClaimError::InvalidArgument(format!(
                "work-item must be 1 to {MAX_WORK_ITEM_LEN} bytes"
            )));
        }
        if metadata.len() > MAX_METADATA_LEN
            || serde_json::from_str::<serde_json::Value>(&metadata).is_err()
        {
            return Err(ClaimError::InvalidArgument(format!(
                "metadata must be a JSON document of at most {MAX_METADATA_LEN} bytes"
            )));
        }
        let lease = match lease(lease_ms) {
            Ok(l) => l,
            Err(why) => return Err(ClaimError::InvalidArgument(why)),
        };
        if self.claims_left == 0 {
            let reason = "this step attempt's max_claims is used up".to_string();
            self.caller
                .host_event("limit.claims", "warn", &reason, BTreeMap::new());
            return Err(ClaimError::LimitReached(reason));
        }
        self.claims_left -= 1;
        let c = &self.caller;
        let request = ClaimRequest {
            work_item: work_item.clone(),
            lease,
            run_id: c.run_id.clone(),
            trace_id: c.trace.trace_id.to_string(),
            span_id: c.trace.span_id.to_string(),
            step: c.step.clone(),
            owner: c.host_id.clone(),
            metadata,
            workflow: c.workflow.clone(),
        };
        let started = std::time::Instant::now();
        let result = self.store.claim(request).await;
        let took = elapsed_ms(started);
        match &result {
            Ok(claim) => {
                if c.budget.host_line() {
                    tracing::info!(trace_id = %c.trace.trace_id, span_id = %c.trace.span_id, work_item = %work_item,
                        claim_id = %claim.claim_id, "work item claimed");
                }
                self.outcome_event(
                    "claim.granted",
                    &work_item,
                    [
                        ("claim_id".to_string(), claim.claim_id.clone()),
                        ("duration_ms".to_string(), took.clone()),
                    ]
                    .into(),
                );
            }
            Err(ClaimStoreError::Conflict(holder)) => {
                if c.budget.host_line() {
                    tracing::info!(trace_id = %c.trace.trace_id, span_id = %c.trace.span_id, work_item = %work_item,
                        holder_trace_id = %holder.trace_id, holder_run_id = %holder.run_id, "claim conflict");
                }
                self.outcome_event(
                    "claim.conflict",
                    &work_item,
                    [
                        ("holder_trace_id".to_string(), holder.trace_id.clone()),
                        ("holder_run_id".to_string(), holder.run_id.clone()),
                        ("duration_ms".to_string(), took.clone()),
                    ]
                    .into(),
                );
            }
            Err(e) => {
                c.log_line("warn", &format!("claim of `{work_item}` failed: {e}"));
            }
        }
        result
            .map(to_wit)
            .map_err(|e| store_error(seen_from(e, &c.workflow)))
    }

    async fn extend(
        &mut self,
        ctx: TraceContext,
        claim_id: String,
        lease_ms: u64,
    ) -> Result<WorkClaim, ClaimError> {
        if let Err(why) = self.caller.verify("coordination.renew", &ctx) {
            return Err(ClaimError::InvalidContext(why));
        }
        let lease = match lease(lease_ms) {
            Ok(l) => l,
            Err(why) => return Err(ClaimError::InvalidArgument(why)),
        };
        self.store
            .renew(&claim_id, &self.caller.run_id, lease)
            .await
            .map(to_wit)
            .map_err(store_error)
    }

    async fn give_back(&mut self, ctx: TraceContext, claim_id: String) -> Result<(), ClaimError> {
        if let Err(why) = self.caller.verify("coordination.release", &ctx) {
            return Err(ClaimError::InvalidContext(why));
        }
        let started = std::time::Instant::now();
        let result = self.store.release(&claim_id, &self.caller.run_id).await;
        if result.is_ok() {
            self.caller.effect_event(
                "claim.released",
                [
                    ("claim_id".to_string(), claim_id),
                    ("duration_ms".to_string(), elapsed_ms(started)),
                ]
                .into(),
            );
        }
        result.map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(workflow: &str) -> ClaimStoreError {
        ClaimStoreError::Conflict(Box::new(ClaimRecord {
            claim_id: "claim-1".into(),
            work_item: "item".into(),
            run_id: "run-secret".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            step: "claim_work".into(),
            owner: "host:1".into(),
            claimed_at_ms: 10,
            expires_at_ms: 20,
            metadata: "{\"token\":\"t\"}".into(),
            workflow: workflow.into(),
        }))
    }

    #[test]
    fn a_conflict_across_workflows_names_nothing_of_the_holder() {
        let ClaimError::Conflict(seen) = store_error(seen_from(held_by("billing"), "tenant-b"))
        else {
            panic!("a conflict stays a conflict");
        };
        assert_eq!(seen.work_item, "item");
        assert_eq!((seen.claimed_at_ms, seen.expires_at_ms), (10, 20));
        for hidden in [
            &seen.claim_id,
            &seen.run_id,
            &seen.trace_id,
            &seen.span_id,
            &seen.step,
            &seen.owner,
            &seen.metadata,
        ] {
            assert!(hidden.is_empty(), "{hidden}");
        }
        // Within the workflow, the holder is named.
        let ClaimError::Conflict(own) = store_error(seen_from(held_by("billing"), "billing"))
        else {
            panic!("a conflict stays a conflict");
        };
        assert_eq!(own.run_id, "run-secret");
        assert_eq!(own.claim_id, "claim-1");
    }
}
