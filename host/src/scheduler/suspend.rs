//! Suspended runs (`on_failure = "suspend"`): when a step has used up its
//! retries, the run starts nothing more, lets the steps in flight end, and
//! is suspended in the journal (`suspended`: no task, no lease, no
//! memory), nothing undone, its claims held to its deadline. An operator
//! resumes it (the failed step runs again, on the components live then) or
//! aborts it (undone as a failed run is, ending `aborted`); its deadline
//! (`suspend_for`) aborts it too. Either way a host's wake loop takes it
//! over (`take_over_waiting`) and carries it on through `resume`.
//!
//! Must not know wasmtime or how an attempt runs.

use super::wait::Parking;
use super::{RunCtx, RunState, Scheduler, StepExecutor};
use crate::journal::{AbandonedRun, JournalEntry, Unsuspend};
use std::collections::BTreeMap;
use std::time::Duration;

/// A suspended run's claims are held this long past its deadline, so the
/// host that aborts it then releases them before their leases run out.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(300);
/// What a suspended run's `waiting_for` (why it is suspended) holds at most.
const MAX_WHY_BYTES: usize = 1024;

/// The start of the error of a run aborted by an operator.
pub const ABORTED_BY_OPERATOR: &str = "run aborted by an operator";

impl RunState {
    /// Whether step `name`'s failure for good (`error`) suspends the run
    /// rather than failing it: its workflow or step says `suspend`, the run
    /// has not failed otherwise, and it is journaled (a suspended run lives
    /// in the journal). The first such failure is the one shown.
    pub(super) fn suspends_on(&mut self, run: &RunCtx, name: &str, error: &str) -> bool {
        if self.failure.is_some()
            || run.cancel.reason().is_some()
            || run.log.fence.is_none()
            || !run.wf.suspends(name)
        {
            return false;
        }
        if self.suspended.is_none() {
            tracing::warn!(parent: &run.span, step = %name, trace_id = %run.trace_id,
                "step failed for good: the run is suspended until it is resumed or aborted: {error}");
            self.suspended = Some((name.to_string(), error.to_string()));
        }
        true
    }

    /// The run could not be suspended (the journal did not answer): it
    /// fails instead, and is undone.
    pub(super) async fn cannot_suspend(&mut self, run: &RunCtx) {
        let Some((step, error)) = self.suspended.take() else {
            return;
        };
        let failure = format!(
            "step `{step}` failed: {error} (the run could not be suspended: the journal did not answer)"
        );
        run.log.append(JournalEntry::run_failed(&failure)).await;
        self.failure = Some(failure);
        self.failure_journaled = true;
    }
}

impl<E: StepExecutor> Scheduler<E> {
    /// Suspends the run, whose steps in flight have all ended: its claims
    /// held to the deadline, a `suspended` entry (the failed step, its
    /// error, the deadline and the claims' unused leases), then `suspended`
    /// in the journal until resumed, aborted or the deadline.
    pub(super) async fn suspend(&self, run: &RunCtx, state: &mut RunState) -> Parking {
        let Some((step, error)) = state.suspended.clone() else {
            return Parking::NotNow;
        };
        let (Some(journal), Some(fence)) = (&run.log.journal, &run.log.fence) else {
            return Parking::NotNow;
        };
        let deadline = crate::store::now_ms().saturating_add(run.wf.suspend_for.as_millis() as u64);
        let held = self.hold_claims(run, deadline).await;
        run.log
            .append(JournalEntry {
                kind: "suspended".into(),
                step: step.clone(),
                outcome: deadline.to_string(),
                error: Some(error.clone()),
                output: serde_json::to_string(&held).ok(),
                ..Default::default()
            })
            .await;
        let why = crate::report::bounded(
            format!("suspended: step `{step}` failed: {error}"),
            MAX_WHY_BYTES,
        );
        match journal.suspend(fence, deadline, &why).await {
            Ok(true) => {
                tracing::warn!(parent: &run.span, trace_id = %run.trace_id, claims_held = held.len(),
                    "run suspended for at most {}: {why}", humantime::format_duration(run.wf.suspend_for));
                Parking::Parked
            }
            Ok(false) => Parking::Fenced,
            Err(e) => {
                tracing::error!(parent: &run.span, trace_id = %run.trace_id, "cannot suspend the run: {e}");
                Parking::NotNow
            }
        }
    }

    /// Holds the run's live claims until `deadline` (and [`CLAIM_MARGIN`]):
    /// nobody else gets their work items while it is suspended. Returns
    /// each held claim's unused lease (ms), given back when it resumes.
    async fn hold_claims(&self, run: &RunCtx, deadline: u64) -> BTreeMap<String, u64> {
        let mut held = BTreeMap::new();
        let Some(claims) = &self.claims else {
            return held;
        };
        let live = match claims.held_by(&run.run_id).await {
            Ok(live) => live,
            Err(e) => {
                tracing::error!(parent: &run.span, trace_id = %run.trace_id,
                    "cannot read the run's claims to hold them while it is suspended: {e}");
                return held;
            }
        };
        let now = claims
            .clock_ms()
            .await
            .unwrap_or_else(|_| crate::store::now_ms());
        let hold = Duration::from_millis(deadline.saturating_sub(now)) + CLAIM_MARGIN;
        for claim in live {
            match claims.renew(&claim.claim_id, &run.run_id, hold).await {
                Ok(_) => {
                    held.insert(claim.claim_id, claim.expires_at_ms.saturating_sub(now));
                }
                Err(e) => tracing::warn!(parent: &run.span, trace_id = %run.trace_id,
                    work_item = %claim.work_item, "claim not held while suspended: {e}"),
            }
        }
        held
    }

    /// Ends the suspension of `run`, woken for it (`run.unsuspend`): a
    /// resumed run gets its claims' unused leases back and goes on (its
    /// failed step is not completed, so it runs again); an aborted one
    /// fails as `aborted` and is undone. Returns what ended it.
    pub(super) async fn end_suspension(
        &self,
        ctx: &RunCtx,
        state: &mut RunState,
        run: &AbandonedRun,
    ) -> Option<&'static str> {
        let how = run.unsuspend.as_ref()?;
        let last = run.entries.iter().rev().find(|e| e.kind == "suspended");
        let step = last.map(|e| e.step.clone()).unwrap_or_default();
        let error = last.and_then(|e| e.error.clone()).unwrap_or_default();
        let failure = match how {
            Unsuspend::Resume => {
                tracing::warn!(parent: &ctx.span, trace_id = %ctx.trace_id, step = %step,
                    "run resumed by an operator: the failed step runs again");
                if let Some(held) = last.and_then(|e| e.output.as_deref()) {
                    self.give_back_leases(ctx, held).await;
                }
                ctx.log
                    .append(JournalEntry {
                        kind: "unsuspended".into(),
                        step,
                        outcome: how.action().into(),
                        ..Default::default()
                    })
                    .await;
                return Some(how.action());
            }
            Unsuspend::Abort { reason } => format!(
                "{ABORTED_BY_OPERATOR}: {} (step `{step}` had failed: {error})",
                reason.as_deref().unwrap_or("no reason given")
            ),
            Unsuspend::Deadline => format!(
                "run aborted: suspended for {} and neither resumed nor aborted (step `{step}` had failed: {error})",
                humantime::format_duration(ctx.wf.suspend_for)
            ),
        };
        tracing::warn!(parent: &ctx.span, trace_id = %ctx.trace_id, "{failure}");
        ctx.log.append(JournalEntry::run_aborted(&failure)).await;
        state.outcomes.insert(step.clone(), "failed".into());
        state.errors.insert(step, error);
        state.failure = Some(failure);
        state.failure_journaled = true;
        state.aborted = true;
        Some(how.action())
    }

    /// Gives a resumed run's claims the leases they had left when it was
    /// suspended (`held`: claim id -> unused ms, as journaled).
    async fn give_back_leases(&self, ctx: &RunCtx, held: &str) {
        let (Some(claims), Ok(held)) = (
            &self.claims,
            serde_json::from_str::<BTreeMap<String, u64>>(held),
        ) else {
            return;
        };
        for (claim_id, unused) in held {
            let lease = Duration::from_millis(unused.max(1));
            if let Err(e) = claims.renew(&claim_id, &ctx.run_id, lease).await {
                tracing::warn!(parent: &ctx.span, trace_id = %ctx.trace_id, claim = %claim_id,
                    "claim not given its lease back: {e}");
            }
        }
    }
}
