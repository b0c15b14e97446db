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
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;
use tokio::time::Instant;
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

/// The leases a scheduler holds, renewed together: every third of
/// [`RUN_LEASE`], one [`RunJournal::renew_leases`] write for all of them
/// (not one per run), so a host with a thousand runs in flight sends one
/// renewal, and that renewal queues behind the runs' own entries once.
/// The renewing task runs while any lease is held.
pub(super) struct LeaseBook {
    journal: Arc<dyn RunJournal>,
    state: Mutex<Book>,
}

#[derive(Default)]
struct Book {
    held: HashMap<u64, Held>,
    next: u64,
    /// Whether the renewing task is running.
    renewing: bool,
}

/// One run's lease, as the renewing task sees it.
struct Held {
    fence: RunFence,
    /// When the last renewal that got through was sent (the start counts).
    renewed: Instant,
    lost: CancellationToken,
    finishing: Arc<AtomicBool>,
    end: Arc<OnceLock<LeaseEnd>>,
}

impl Held {
    /// Ends the keeping of this lease; the run hears of it through `lost`
    /// (not for [`LeaseEnd::Finished`]: the run is ending anyway).
    fn end(&self, end: LeaseEnd) {
        let _ = self.end.set(end);
        if end != LeaseEnd::Finished {
            self.lost.cancel();
        }
    }
}

/// Keeps a run's lease alive; `lost` fires when it cannot (see
/// [`LEASE_FENCE`]), or when the journal refused one of the run's writes
/// (`taken_over`). Dropped (the run's future dropped with it), its lease is
/// no longer renewed: a run nobody drives any more must not keep its lease.
pub(super) struct LeaseKeeper {
    book: Arc<LeaseBook>,
    id: u64,
    pub(super) lost: CancellationToken,
    /// Set before the terminal record is written: a renewal that then finds
    /// the run no longer running is not news.
    pub(super) finishing: Arc<AtomicBool>,
    /// Why the keeping ended, once it has.
    end: Arc<OnceLock<LeaseEnd>>,
    /// The ownership it renews, and what says the journal refused it.
    fence: RunFence,
    taken_over: CancellationToken,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.book.lock().held.remove(&self.id);
    }
}

impl LeaseBook {
    pub(super) fn new(journal: Arc<dyn RunJournal>) -> Arc<LeaseBook> {
        Arc::new(LeaseBook {
            journal,
            state: Mutex::new(Book::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the lease of a run just given a full [`RUN_LEASE`] under
    /// `fence` until the keeper is dropped; `taken_over` (fired by a
    /// refused write) stops the run as taken over.
    pub(super) fn keep(
        self: &Arc<Self>,
        fence: RunFence,
        taken_over: CancellationToken,
    ) -> LeaseKeeper {
        // A refused write fires `lost` too, at once.
        let lost = taken_over.child_token();
        let finishing = Arc::new(AtomicBool::new(false));
        let end = Arc::new(OnceLock::new());
        let mut book = self.lock();
        let id = book.next;
        book.next += 1;
        book.held.insert(
            id,
            Held {
                fence: fence.clone(),
                renewed: Instant::now(),
                lost: lost.clone(),
                finishing: Arc::clone(&finishing),
                end: Arc::clone(&end),
            },
        );
        if !book.renewing {
            book.renewing = true;
            let renewing = renew_while_held(Arc::downgrade(self));
            match lease_runtime() {
                Some(leases) => drop(leases.spawn(renewing)),
                None => drop(tokio::spawn(renewing)),
            }
        }
        LeaseKeeper {
            book: Arc::clone(self),
            id,
            lost,
            finishing,
            end,
            fence,
            taken_over,
        }
    }

    /// The leases to renew now, or `None` (and the task marked stopped)
    /// when none is held.
    fn to_renew(&self) -> Option<Vec<(u64, RunFence)>> {
        let mut book = self.lock();
        if book.held.is_empty() {
            book.renewing = false;
            return None;
        }
        Some(
            book.held
                .iter()
                .map(|(id, h)| (*id, h.fence.clone()))
                .collect(),
        )
    }

    /// Applies a renewal's answer: renewed leases count from `sent`; a
    /// lease the journal no longer gives this host ends as taken over
    /// (unless its run is finishing, which is why it is gone).
    fn renewed(&self, batch: &[(u64, RunFence)], answer: &[bool], sent: Instant) {
        let mut book = self.lock();
        for ((id, _), ok) in batch.iter().zip(answer) {
            let Some(held) = book.held.get_mut(id) else {
                continue;
            };
            if *ok {
                held.renewed = held.renewed.max(sent);
                continue;
            }
            if held.finishing.load(Ordering::SeqCst) {
                held.end(LeaseEnd::Finished);
            } else {
                tracing::warn!(run_id = %held.fence.run_id, "another host took this run over");
                held.end(LeaseEnd::TakenOver);
            }
            book.held.remove(id);
        }
    }

    /// Stops every run whose lease was not renewed for [`LEASE_FENCE`];
    /// returns when the next one would be due.
    fn fence_overdue(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut book = self.lock();
        book.held.retain(|_, held| {
            if now < held.renewed + LEASE_FENCE {
                return true;
            }
            tracing::error!(
                run_id = %held.fence.run_id,
                "run lease not renewed for {} s: stopping the run",
                LEASE_FENCE.as_secs()
            );
            held.end(LeaseEnd::Unrenewed);
            false
        });
        book.held.values().map(|h| h.renewed + LEASE_FENCE).min()
    }
}

/// The runtime lease renewals run on: a thread of its own (`braid-leases`),
/// so a renewal is sent, and a fence checked, on time even when the runtime
/// the runs execute on has a long queue of guest code to get through (a
/// fence measures the journal's silence, not the host's backlog). `None`
/// if the thread could not be started: renewals then run beside the runs.
fn lease_runtime() -> Option<tokio::runtime::Handle> {
    static LEASES: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    LEASES
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("braid-leases".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// The renewing task: every third of [`RUN_LEASE`], renews every lease
/// held (see [`LeaseBook`]) and, while a renewal is slow, stops the runs
/// whose [`LEASE_FENCE`] passes (counted from when their last successful
/// renewal was sent, so a run stops at least `RUN_LEASE - LEASE_FENCE`
/// before anyone may take it over). Ends when no lease is held.
async fn renew_while_held(book: Weak<LeaseBook>) {
    let period = RUN_LEASE / 3;
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(book) = book.upgrade() else {
            return;
        };
        let Some(batch) = book.to_renew() else {
            return;
        };
        let fences: Vec<RunFence> = batch.iter().map(|(_, f)| f.clone()).collect();
        let sent = Instant::now();
        // A renewal still unanswered after the fence is given up: the
        // next one is sent on time, for the runs still held then.
        let renewal =
            tokio::time::timeout(LEASE_FENCE, book.journal.renew_leases(&fences, RUN_LEASE));
        tokio::pin!(renewal);
        let answer = loop {
            let due = book.fence_overdue().unwrap_or(sent + LEASE_FENCE);
            tokio::select! {
                answer = &mut renewal => break answer,
                () = tokio::time::sleep_until(due) => {}
            }
        };
        match answer {
            Ok(Ok(renewed)) => book.renewed(&batch, &renewed, sent),
            Ok(Err(e)) => tracing::warn!(runs = batch.len(), "run lease renewal failed: {e}"),
            Err(_) => tracing::warn!(runs = batch.len(), "run lease renewal unanswered"),
        }
        book.fence_overdue();
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
            // The steps that run a component (a compose step runs none).
            components: wf
                .steps
                .iter()
                .filter(|s| s.kind == crate::workflow::StepKind::Call)
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
        Ok(self.keep_lease_of(fence, run.log.taken_over.clone()))
    }

    /// Renews a run's lease (just taken with a full [`RUN_LEASE`]) under
    /// `fence` until the run finishes or `taken_over` fires; `None` for a
    /// scheduler without a journal.
    pub(super) fn keep_lease_of(
        &self,
        fence: RunFence,
        taken_over: CancellationToken,
    ) -> Option<LeaseKeeper> {
        self.leases
            .as_ref()
            .map(|book| book.keep(fence, taken_over))
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
        keeper: LeaseKeeper,
        run_id: &str,
    ) -> Result<LeaseKeeper, &'static str> {
        let Some(journal) = &self.journal else {
            return Err(LEFT_TO_RECOVERY);
        };
        if keeper.taken_over.is_cancelled() {
            return Err(TAKEN_OVER);
        }
        match keeper.end.get() {
            Some(LeaseEnd::Unrenewed) => {}
            Some(LeaseEnd::TakenOver | LeaseEnd::Finished) => return Err(TAKEN_OVER),
            None => return Err(LEFT_TO_RECOVERY),
        }
        let deadline = tokio::time::Instant::now() + RECLAIM_WAIT;
        for retry in 1.. {
            let renewal = journal.heartbeat(&keeper.fence, RUN_LEASE);
            match tokio::time::timeout_at(deadline, renewal).await {
                Ok(Ok(true)) => {
                    let (fence, taken_over) = (keeper.fence.clone(), keeper.taken_over.clone());
                    return self
                        .keep_lease_of(fence, taken_over)
                        .ok_or(LEFT_TO_RECOVERY);
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
