//! A run's lease in the journal, and the fence around it: the keeper that
//! renews the lease while the run goes on, stops the run when it cannot
//! (before another host may take the run over), and takes the lease back
//! when only the journal was silent. Every move after the fence is made
//! only while the lease is held ([`Scheduler::hold_lease`]).
//!
//! Must not know the DAG or the steps.

use super::{RunCtx, Scheduler, StepExecutor, backoff};
use crate::journal::{JournalError, RunFence, RunJournal, RunStart};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A running run's lease in the journal; renewed at a third of it.
pub const RUN_LEASE: Duration = Duration::from_secs(6);
/// A host stops a run whose lease it has not renewed for this long: before
/// the lease runs out and another host may take the run over and undo it.
pub const LEASE_FENCE: Duration = Duration::from_secs(4);
/// How long a run stopped by [`LEASE_FENCE`] keeps trying to take its lease
/// back (to undo itself) before it leaves the run to recovery.
pub const RECLAIM_WAIT: Duration = Duration::from_secs(10);
/// The error of a run stopped by [`LEASE_FENCE`] that got its lease back
/// and undid itself (outcome `failed`).
pub const LEASE_UNRENEWED: &str = "run stopped: the run journal was unavailable for 4 s, so the run's lease could not be renewed; undone by this host once the journal answered again";
/// The error of a run stopped because another host took it over; that host
/// undoes it and records it `aborted`, as this one reports it.
pub const TAKEN_OVER: &str =
    "run aborted: its lease ran out and another host took the run over (which undoes it)";
/// The error of a run stopped by [`LEASE_FENCE`] whose journal stayed out of
/// reach for [`RECLAIM_WAIT`] too: recovery undoes it once its lease has
/// run out (any host's, this one's included).
pub const LEFT_TO_RECOVERY: &str = "run aborted: the run journal stayed unavailable, so the run's lease could not be kept; recovery undoes the run once its lease has run out";

/// Why a run's lease keeper stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseEnd {
    /// The journal says another host owns the run.
    TakenOver,
    /// No renewal got through for [`LEASE_FENCE`].
    Unrenewed,
    /// The run is finishing (or the keeper was stopped).
    Finished,
}

/// Keeps a run's lease alive; `lost` fires when it cannot (see [`LEASE_FENCE`]).
/// Dropped (the run's future dropped with it), it stops renewing: a run
/// nobody drives any more must not keep its lease.
pub(super) struct LeaseKeeper {
    pub(super) task: tokio::task::JoinHandle<LeaseEnd>,
    pub(super) lost: CancellationToken,
    /// Set before the terminal record is written: a renewal that then finds
    /// the run no longer running is not news.
    pub(super) finishing: Arc<std::sync::atomic::AtomicBool>,
    /// The ownership it renews, and what says the journal refused it.
    fence: RunFence,
    taken_over: CancellationToken,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews a run's lease every third of [`RUN_LEASE`] until aborted. Fires
/// `lost` and ends when the journal says another host owns the run (a
/// renewal, or a journal write refused by the fence: `taken_over`), or when
/// no renewal got through for [`LEASE_FENCE`] (counted from when the last
/// successful renewal was sent, so the run stops at least
/// `RUN_LEASE - LEASE_FENCE` before anyone may take it over).
async fn keep_lease(
    journal: Arc<dyn RunJournal>,
    fence: RunFence,
    lost: CancellationToken,
    taken_over: CancellationToken,
    finishing: Arc<std::sync::atomic::AtomicBool>,
) -> LeaseEnd {
    use tokio::time::Instant;
    let run_id = fence.run_id.as_str();
    // The start (or a renewal) was just journaled with a full lease.
    let mut renewed = Instant::now();
    let period = RUN_LEASE / 3;
    let mut tick = tokio::time::interval_at(renewed + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = taken_over.cancelled() => {
                lost.cancel();
                return LeaseEnd::TakenOver;
            }
        }
        let sent = Instant::now();
        let renewal = journal.heartbeat(&fence, RUN_LEASE);
        match tokio::time::timeout_at(renewed + LEASE_FENCE, renewal).await {
            Ok(Ok(true)) => renewed = sent,
            Ok(Ok(false)) if finishing.load(std::sync::atomic::Ordering::SeqCst) => {
                return LeaseEnd::Finished;
            }
            Ok(Ok(false)) => {
                tracing::warn!(run_id, "another host took this run over");
                lost.cancel();
                return LeaseEnd::TakenOver;
            }
            Ok(Err(e)) => tracing::warn!(run_id, "run lease renewal failed: {e}"),
            Err(_) => {}
        }
        if Instant::now() >= renewed + LEASE_FENCE {
            tracing::error!(
                run_id,
                "run lease not renewed for {} s: stopping the run",
                LEASE_FENCE.as_secs()
            );
            lost.cancel();
            return LeaseEnd::Unrenewed;
        }
    }
}

impl<E: StepExecutor> Scheduler<E> {
    /// Journals the run's start, gives its log the fence the journal
    /// answered, and keeps its lease alive while it runs.
    pub(super) async fn journal_start(
        &self,
        run: &mut RunCtx,
    ) -> Result<Option<LeaseKeeper>, JournalError> {
        let Some(journal) = self.journal.as_ref() else {
            return Ok(None);
        };
        let (wf, incoming) = (&run.wf, &run.incoming);
        let start = RunStart {
            run_id: run.run_id.clone(),
            workflow: wf.name.clone(),
            workflow_path: wf.source.display().to_string(),
            trace_id: incoming.parent.trace_id.to_string(),
            span_id: run.run_span.to_string(),
            trace_flags: incoming.parent.flags.bits(),
            tracestate: incoming.state.to_string(),
            input: Value::Object(run.inputs.clone()),
            components: wf
                .steps
                .iter()
                .map(|s| {
                    let (path, sha) = self.executor.component_of(&s.name);
                    (s.name.clone(), path, sha)
                })
                .collect(),
            owner: self.owner.clone(),
            parent_span_id: incoming
                .continued
                .then(|| incoming.parent.parent_id.to_string()),
            definition: wf.definition.clone(),
            idempotency_secret: run.base.keys.to_hex(),
        };
        let fence = journal.start(&start, RUN_LEASE).await?;
        run.log.fence = Some(fence.clone());
        Ok(Some(self.keep_lease_of(
            journal,
            fence,
            run.log.taken_over.clone(),
        )))
    }

    /// Renews a run's lease (just taken with a full [`RUN_LEASE`]) under
    /// `fence` until the run finishes or `taken_over` fires.
    pub(super) fn keep_lease_of(
        &self,
        journal: &Arc<dyn RunJournal>,
        fence: RunFence,
        taken_over: CancellationToken,
    ) -> LeaseKeeper {
        let lost = CancellationToken::new();
        let finishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(keep_lease(
            Arc::clone(journal),
            fence.clone(),
            lost.clone(),
            taken_over.clone(),
            Arc::clone(&finishing),
        ));
        LeaseKeeper {
            task,
            lost,
            finishing,
            fence,
            taken_over,
        }
    }

    /// Whether this host may go on with the run: `Ok(false)` while its
    /// lease keeper holds the lease; `Ok(true)` once the keeper gave up but
    /// the lease was taken back (see [`Scheduler::after_fence`]); `Err`
    /// says why the run is another host's to finish.
    pub(super) async fn hold_lease(
        &self,
        lease: &mut Option<LeaseKeeper>,
        run_id: &str,
    ) -> Result<bool, &'static str> {
        match lease.take() {
            Some(keeper) if keeper.lost.is_cancelled() || keeper.taken_over.is_cancelled() => {
                *lease = Some(self.after_fence(keeper, run_id).await?);
                Ok(true)
            }
            kept => {
                *lease = kept;
                Ok(false)
            }
        }
    }

    /// After a run's lease keeper gave up: if only the journal was silent,
    /// tries for [`RECLAIM_WAIT`] to renew the lease (which succeeds only
    /// while no other host has taken the run over) and keeps it from then
    /// on. `Err` says why the run is left to others.
    async fn after_fence(
        &self,
        mut keeper: LeaseKeeper,
        run_id: &str,
    ) -> Result<LeaseKeeper, &'static str> {
        let Some(journal) = &self.journal else {
            return Err(LEFT_TO_RECOVERY);
        };
        match (&mut keeper.task).await {
            Ok(LeaseEnd::Unrenewed) => {}
            Ok(LeaseEnd::TakenOver | LeaseEnd::Finished) => return Err(TAKEN_OVER),
            Err(_) => return Err(LEFT_TO_RECOVERY),
        }
        let deadline = tokio::time::Instant::now() + RECLAIM_WAIT;
        for retry in 1.. {
            let renewal = journal.heartbeat(&keeper.fence, RUN_LEASE);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => {
                    let (fence, taken_over) = (keeper.fence.clone(), keeper.taken_over.clone());
                    return Ok(self.keep_lease_of(journal, fence, taken_over));
                }
                Ok(Ok(false)) => return Err(TAKEN_OVER),
                Ok(Err(e)) => tracing::warn!(run_id, "taking the run's lease back failed: {e}"),
                Err(_) => break,
            }
            let wait = backoff(retry);
            if tokio::time::Instant::now() + wait >= deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        Err(LEFT_TO_RECOVERY)
    }
}
