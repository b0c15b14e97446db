//! `braid:workflow/invocation` (since 0.1.1): what a step may ask about the
//! call it is making - its idempotency key.

use super::Caller;
use crate::bindings::step::braid::workflow::invocation::Host;
use crate::bindings::step::braid::workflow::types::TraceContext;
use std::sync::Arc;

/// Per-attempt state of the invocation interface.
pub struct InvocationCtx {
    pub caller: Arc<Caller>,
}

impl Host for InvocationCtx {
    async fn idempotency_key(
        &mut self,
        ctx: TraceContext,
    ) -> wasmtime::Result<Result<String, String>> {
        self.caller.within_refusals()?;
        if let Err(why) = self.caller.verify("invocation.idempotency-key", &ctx) {
            return Ok(Err(why));
        }
        Ok(Ok(self.caller.idempotency_key.clone()))
    }
}
