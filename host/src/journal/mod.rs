//! The durable run journal: every run is recorded as it goes, so a host that
//! dies mid-run leaves enough behind for another start to undo and abort it.
//!
//! Owns: the [`RunJournal`] contract (what every backend must guarantee),
//! run leases (a live host keeps extending the lease of its runs), the
//! atomic take-over of abandoned runs, and what is kept (`retention`).
//! Rooms: this file the contract and its types; `sqlite` the SQLite backend
//! (PostgreSQL's is in `crate::postgres`); `retention` pruning finished runs.
//! Knows nothing of wasmtime or the DAG; the scheduler writes entries,
//! recovery reads them.

mod retention;
mod sqlite;
mod suspension;

pub use retention::{
    PRUNE_BATCH, PRUNE_INTERVAL, PRUNE_PAUSE, Pruned, Retention, prune_all, spawn_pruning,
};
pub use sqlite::SqliteJournal;
pub use suspension::{Unsuspend, UnsuspendAsked};

use crate::db::DbUnavailable;
use crate::store::now_ms;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("run journal unavailable: {0}")]
    Unavailable(String),
    /// The write came from a host that no longer owns the run (another
    /// host took it over, or it has ended): refused, nothing written.
    #[error(
        "run {run_id}: write refused, this host ({owner}, ownership {epoch}) no longer owns the run"
    )]
    Fenced {
        run_id: String,
        owner: String,
        epoch: u64,
    },
}

/// A run's ownership, as a fencing token: the host that owns it and the
/// epoch the journal gave that ownership (1 at the start, one more at each
/// take-over). Every write of a run's journal carries it and is refused
/// unless the run is still `running` under exactly this owner and epoch,
/// checked in the same statement or transaction as the write: a host that
/// lost a run cannot add to it after the new owner has read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFence {
    pub run_id: String,
    pub owner: String,
    pub epoch: u64,
}

impl RunFence {
    /// The fence of a run just started by `owner`.
    pub fn first(run_id: &str, owner: &str) -> RunFence {
        RunFence {
            run_id: run_id.to_string(),
            owner: owner.to_string(),
            epoch: 1,
        }
    }

    /// The epoch as both stores keep it (a signed 64-bit integer).
    pub fn stored_epoch(&self) -> i64 {
        i64::try_from(self.epoch).unwrap_or(i64::MAX)
    }

    /// The refusal of a write under this fence.
    pub fn refused(&self) -> JournalError {
        JournalError::Fenced {
            run_id: self.run_id.clone(),
            owner: self.owner.clone(),
            epoch: self.epoch,
        }
    }
}

/// The refusal of a journal that keeps no waiting runs (test doubles).
fn no_waits() -> JournalError {
    JournalError::Unavailable("this journal does not keep waiting runs".into())
}

fn unavailable(e: impl std::fmt::Display) -> JournalError {
    JournalError::Unavailable(e.to_string())
}

/// What a run starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStart {
    pub run_id: String,
    pub workflow: String,
    pub workflow_path: String,
    pub trace_id: String,
    /// The run span: every step attempt (and every undo) is its child.
    pub span_id: String,
    pub trace_flags: u8,
    pub tracestate: String,
    pub input: serde_json::Value,
    /// Step name -> (component path, sha256).
    pub components: Vec<(String, String, String)>,
    /// The host running it (`hostname:pid`).
    pub owner: String,
    /// The caller's span, when the run continued an incoming trace.
    #[serde(default)]
    pub parent_span_id: Option<String>,
    /// The workflow definition's text the run started with: what a host
    /// that resumes the run runs (empty in journals of older braids, whose
    /// runs recovery undoes).
    #[serde(default)]
    pub definition: String,
    /// The run's idempotency-key secret (64 hex digits; empty in journals
    /// of older braids): a host that resumes the run makes the same keys.
    /// Never shown by any listing or report.
    #[serde(default)]
    pub idempotency_secret: String,
}

/// One journal entry. `kind` says which fields matter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalEntry {
    /// `attempt` (a failed attempt), `completed` (`outcome` `succeeded`,
    /// with the attempt that succeeded and its span, or `compensated`: a
    /// substitute output), `compensation`, `cancelled`, `run-failed`,
    /// `undo`, `claims-released`.
    pub kind: String,
    pub step: String,
    pub span_id: String,
    pub attempt: u32,
    /// e.g. `succeeded`, `timeout`, `undone`, `give-up`.
    pub outcome: String,
    pub error: Option<String>,
    /// For `completed`: the step's input and output, its component and
    /// timeout, so recovery can undo it without the workflow file.
    pub input: Option<String>,
    pub output: Option<String>,
    pub component: Option<String>,
    pub component_sha256: Option<String>,
    pub timeout_ms: Option<u64>,
    pub allowed_hosts: Option<Vec<String>>,
}

impl JournalEntry {
    /// The run failed (`error` says why): a host that takes it over winds
    /// it down (undoes what completed) instead of going on with it.
    pub fn run_failed(error: &str) -> JournalEntry {
        JournalEntry {
            kind: "run-failed".into(),
            outcome: "failed".into(),
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    /// The run was cancelled (`error` says by whom and why): a host that
    /// takes it over winds it down, and it ends `cancelled`.
    pub fn run_cancelled(error: &str) -> JournalEntry {
        JournalEntry {
            outcome: "cancelled".into(),
            ..JournalEntry::run_failed(error)
        }
    }

    /// A suspended run was aborted (by an operator, or its deadline): a
    /// host that takes it over winds it down, and it ends `aborted`.
    pub fn run_aborted(error: &str) -> JournalEntry {
        JournalEntry {
            outcome: "aborted".into(),
            ..JournalEntry::run_failed(error)
        }
    }
}

/// A step that completed and was not undone, as recovery needs it.
#[derive(Debug, Clone)]
pub struct CompletedStep {
    pub step: String,
    pub input: String,
    pub output: String,
    pub component: PathBuf,
    pub component_sha256: String,
    pub timeout: Duration,
    pub allowed_hosts: Vec<String>,
}

/// A run whose host died, now owned by the caller of `take_over_abandoned`.
#[derive(Debug, Clone)]
pub struct AbandonedRun {
    pub start: RunStart,
    pub previous_owner: String,
    /// The new owner's fence (the epoch after the one it took over from).
    pub fence: RunFence,
    /// When the run started, by the journal's clock.
    pub started_at_ms: u64,
    /// Its journal, in the order it was written.
    pub entries: Vec<JournalEntry>,
    /// Taken from `waiting` because its wait is over (a timer, a signal, a
    /// cancel): carried on whatever its workflow's `on_crash` says.
    pub woken: bool,
    /// Why the run was asked to cancel, if it was.
    pub cancel_reason: Option<String>,
    /// Taken from `suspended`: what ends the suspension (none when it was
    /// woken to be cancelled).
    pub unsuspend: Option<Unsuspend>,
}

/// Whether a run with this status (or a report with this outcome) waits in
/// the journal, held by no host: `waiting` (for a time or a signal) or
/// `suspended` (for an operator). It has not ended.
pub fn is_parked(status: &str) -> bool {
    matches!(status, "waiting" | "suspended")
}

/// Whether a run with this status has ended (not `running`, not parked).
pub fn has_ended(status: &str) -> bool {
    status != "running" && !is_parked(status)
}

impl AbandonedRun {
    /// Its steps completed and not yet undone, in completion order.
    pub fn completed(&self) -> Vec<CompletedStep> {
        completed_steps(&self.entries)
    }

    /// Whether the run was cancelled (its `run-failed` entry says so).
    pub fn cancelled(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.kind == "run-failed" && e.outcome == "cancelled")
    }

    /// Whether the run was aborted while suspended (its `run-failed` entry
    /// says so).
    pub fn aborted(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.kind == "run-failed" && e.outcome == "aborted")
    }

    /// Why the run failed, if its journal says it did (`run-failed`).
    pub fn failure(&self) -> Option<String> {
        self.entries
            .iter()
            .find(|e| e.kind == "run-failed")
            .map(|e| e.error.clone().unwrap_or_default())
    }
}

/// The runs this host is executing right now (shared by every scheduler
/// of the host and its recovery loop), each with the switch that cancels
/// it. A run of this host that is `running` in the journal but not here
/// any more was stopped after it lost its lease (see
/// `scheduler::LEASE_FENCE`): recovery takes it over once its lease has
/// run out, as it would another host's.
#[derive(Debug, Clone, Default)]
pub struct LocalRuns(Arc<Mutex<HashMap<String, RunCancel>>>);

impl LocalRuns {
    /// Marks `run_id` as executing here until the guard is dropped.
    pub fn enter(&self, run_id: &str) -> LocalRun {
        let cancel = RunCancel::default();
        self.lock().insert(run_id.to_string(), cancel.clone());
        LocalRun {
            runs: self.clone(),
            run_id: run_id.to_string(),
            cancel,
        }
    }

    /// The run ids executing here now.
    pub fn list(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Cancels run `run_id` if it executes here (`false`: it does not):
    /// its steps in flight stop and it winds down, ending `cancelled`.
    pub fn cancel(&self, run_id: &str, reason: &str) -> bool {
        let Some(cancel) = self.lock().get(run_id).cloned() else {
            return false;
        };
        cancel.request(reason);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunCancel>> {
        // A panic while holding this lock cannot leave the map half-changed.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A run in [`LocalRuns`]; leaves it when dropped.
#[derive(Debug)]
pub struct LocalRun {
    runs: LocalRuns,
    run_id: String,
    /// The run's cancel switch.
    pub cancel: RunCancel,
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        self.runs.lock().remove(&self.run_id);
    }
}

/// The switch that cancels one run, with the reason the first request gave.
#[derive(Debug, Clone, Default)]
pub struct RunCancel {
    fired: tokio_util::sync::CancellationToken,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl RunCancel {
    /// Cancels the run (again: nothing new; the first reason stands).
    pub fn request(&self, reason: &str) {
        let _ = self.reason.set(reason.to_string());
        self.fired.cancel();
    }

    /// Resolves once the run is cancelled.
    pub async fn requested(&self) {
        self.fired.cancelled().await;
    }

    /// The reason, once the run is cancelled.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// A run's terminal state as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub status: String,
    pub degraded: bool,
    pub error: Option<String>,
    pub owner: String,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    pub entries: usize,
    /// A `waiting` run: what it waits for, since when, and when it is
    /// woken at the latest.
    pub waiting_for: Option<String>,
    pub waiting_since_ms: Option<u64>,
    pub wake_at_ms: Option<u64>,
}

impl From<DbUnavailable> for JournalError {
    fn from(e: DbUnavailable) -> Self {
        JournalError::Unavailable(e.0)
    }
}

/// A signal sent to a run (`POST /v1/runs/ID/signals/NAME`), kept until
/// the run's step that waits for it takes it (also when it comes first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signal {
    pub name: String,
    /// The signal's JSON body: the waiting step's output.
    pub payload: String,
    /// The `traceparent` of the request that sent it (empty: none).
    pub traceparent: String,
    pub at_ms: u64,
}

/// What [`RunJournal::send_signal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalSent {
    /// Kept for the run (which is woken if it waits).
    Delivered,
    /// The run has a signal of this name already: nothing changed.
    AlreadySent,
    /// The run has ended, with this status.
    Ended { status: String },
    /// The journal does not know the run.
    Unknown,
}

/// What [`RunJournal::request_cancel`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelAsked {
    /// The run is running and asked to cancel, for this reason (the first
    /// request's).
    Asked { reason: String },
    /// The run has ended already, with this status.
    Ended { status: String },
    /// The journal does not know the run.
    Unknown,
}

/// A stored run report's summary, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub outcome: String,
    /// A step's failure was compensated (`continue-with`): the run went on
    /// with a stand-in. Listings read it from the run's record.
    pub degraded: bool,
    pub started_at_ms: u64,
    pub duration_ms: f64,
}

/// Which stored reports a listing wants (`GET /v1/runs`, the viewer's run
/// list): newest first, each filter optional.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    pub workflow: Option<String>,
    pub outcome: Option<String>,
    pub trace_id: Option<String>,
    /// Only reports after this one in listing order (the last of the
    /// previous page): keyset pagination, stable while runs end.
    pub after: Option<ReportCursor>,
    pub limit: usize,
}

/// A place in the listing of reports (newest first, then by run id): the
/// last report of a page, as `<started_at_ms>-<run_id>` in URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportCursor {
    pub started_at_ms: u64,
    pub run_id: String,
}

impl ReportCursor {
    /// The cursor after `summary`.
    pub fn after(summary: &ReportSummary) -> ReportCursor {
        ReportCursor {
            started_at_ms: summary.started_at_ms,
            run_id: summary.run_id.clone(),
        }
    }
}

impl std::fmt::Display for ReportCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.started_at_ms, self.run_id)
    }
}

impl std::str::FromStr for ReportCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a page cursor (<started_at_ms>-<run_id>)");
        let (ms, run_id) = s.split_once('-').ok_or_else(bad)?;
        let started_at_ms = ms.parse().map_err(|_| bad())?;
        if run_id.is_empty() {
            return Err(bad());
        }
        Ok(ReportCursor {
            started_at_ms,
            run_id: run_id.to_string(),
        })
    }
}

/// A finished run's report as stored: its summary (for listings) and JSON.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub summary: ReportSummary,
    pub json: String,
}

/// Says whether a run owner (`hostname:pid`) is gone, for take-over.
pub type OwnerIsDead = Box<dyn for<'a> Fn(&'a str) -> bool + Send + 'static>;

/// The durable run journal, whatever stores it. The scheduler writes a run's
/// start, entries and terminal record through it; recovery takes over runs
/// whose host died; `braid serve` keeps reports and `Idempotency-Key`s in it.
///
/// An implementation must make each write durable before it returns (a step
/// the journal says completed must survive a crash right after), let
/// `finish` move only a `running` run (once), hand each abandoned run to
/// exactly one caller of `take_over_abandoned`, and fence every write of a
/// run ([`RunFence`]): `append`, `heartbeat` and `finish` change nothing
/// unless the run is `running` under the fence's owner and epoch, checked
/// atomically with the write, and a take-over reads the entries only after
/// its new epoch is committed (so it sees every write that was accepted).
#[async_trait::async_trait]
pub trait RunJournal: Send + Sync + 'static {
    /// Records a run's start; its lease runs `lease` from now. Returns the
    /// fence of the run's first owner (`start.owner`, epoch 1).
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<RunFence, JournalError>;
    /// Appends one entry to a run's journal. [`JournalError::Fenced`]: the
    /// run is no longer `fence`'s (nothing was written).
    async fn append(&self, fence: &RunFence, entry: JournalEntry) -> Result<(), JournalError>;
    /// Appends several entries of one run, in order, as one write where the
    /// store can (all or none). By default one [`RunJournal::append`] each.
    async fn append_all(
        &self,
        fence: &RunFence,
        entries: Vec<JournalEntry>,
    ) -> Result<(), JournalError> {
        for entry in entries {
            self.append(fence, entry).await?;
        }
        Ok(())
    }
    /// Writes the terminal record, and `report` (if given) in the same
    /// transaction: a run that has ended has its report. Only a `running`
    /// run held under `fence` can finish, once: a host whose run was taken
    /// over cannot overwrite what the new owner records. `Ok(false)`: it was
    /// taken over (the record, and the report, are the new owner's to write).
    async fn finish(
        &self,
        fence: &RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<StoredReport>,
    ) -> Result<bool, JournalError>;
    /// Extends the leases of running runs, each only while it is held
    /// under its fence, in one write (how a host renews every lease it
    /// holds): run by run, in `fences`' order, whether the lease was
    /// extended (`false`: another host took that run over).
    async fn renew_leases(
        &self,
        fences: &[RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError>;
    /// [`RunJournal::renew_leases`] for one run.
    async fn heartbeat(&self, fence: &RunFence, lease: Duration) -> Result<bool, JournalError> {
        let renewed = self
            .renew_leases(std::slice::from_ref(fence), lease)
            .await?;
        Ok(renewed.first() == Some(&true))
    }
    /// Takes over every running run whose lease expired or whose owner
    /// `is_dead` (if given) says is gone, moving it to the next epoch; of
    /// several callers, exactly one gets each run. Runs of `new_owner` itself count too (runs it stopped
    /// after losing their lease), except those in `running_here`.
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError>;
    /// A stored report (JSON), if the run is known.
    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError>;
    /// The most recent reports that `query` wants, newest first, at most
    /// `query.limit`.
    async fn recent_reports(&self, query: ReportQuery) -> Result<Vec<ReportSummary>, JournalError>;
    /// The runs still `running` (on any host sharing the journal), oldest
    /// first, at most `limit`.
    async fn running_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError>;
    /// The runs waiting (parked: a time or a signal to come), the soonest
    /// to wake first, at most `limit`.
    async fn waiting_runs(&self, _limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        Err(no_waits())
    }
    /// The runs of trace `trace_id`, running or ended, oldest first, at
    /// most `limit` (indexed: what the viewer's trace page finds).
    async fn runs_of_trace(
        &self,
        trace_id: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, JournalError>;
    /// The run an `Idempotency-Key` of `workflow` started: (body sha256, run id).
    async fn idempotent_run(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, JournalError>;
    /// Reserves an `Idempotency-Key` of `workflow` for the run `run_id` is
    /// about to start. `None`: reserved; `Some((body sha256, run id))`: the
    /// key was taken first (on any host sharing the journal) by that run.
    async fn reserve_idempotent(
        &self,
        workflow: &str,
        key: &str,
        body_sha256: &str,
        run_id: &str,
    ) -> Result<Option<(String, String)>, JournalError>;
    /// Gives `key` up again when its run `run_id` never started (its start
    /// could not be journaled), so a retry with the key runs. `Ok(false)`:
    /// kept, because the key is another run's or the run did start.
    async fn release_idempotent(
        &self,
        workflow: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, JournalError>;
    /// Asks that run `run_id` be cancelled, whichever host owns it (the
    /// owner finds the request with [`RunJournal::cancel_requests`]; a
    /// waiting run is woken to be cancelled); any host may ask, no fence.
    /// A repeat keeps the first request's reason.
    async fn request_cancel(&self, run_id: &str, reason: &str)
    -> Result<CancelAsked, JournalError>;
    /// Parks a running run held under `fence` that has nothing to do but
    /// wait: it becomes `waiting` (no lease, no host), to be woken at
    /// `wake_at_ms` (by the journal's clock where it has one, see
    /// [`RunJournal::take_over_waiting`]), or at once if it was sent a
    /// signal since it read `signals_seen` of them, or asked to cancel.
    /// `waiting_for` says what it waits for (listings, the viewer).
    /// `Ok(false)`: the run is no longer `fence`'s (nothing changed).
    async fn park(
        &self,
        _fence: &RunFence,
        _wake_at_ms: u64,
        _signals_seen: u64,
        _waiting_for: &str,
    ) -> Result<bool, JournalError> {
        Err(no_waits())
    }
    /// Suspends a running run held under `fence` whose step failed for good
    /// (`why`, also what it waits for): it becomes `suspended` (no lease, no
    /// host) until an operator resumes or aborts it
    /// ([`RunJournal::request_unsuspend`]), or until `deadline_ms`, when it
    /// is woken to be aborted; at once if it was asked to cancel.
    /// `Ok(false)`: the run is no longer `fence`'s (nothing changed).
    async fn suspend(
        &self,
        _fence: &RunFence,
        _deadline_ms: u64,
        _why: &str,
    ) -> Result<bool, JournalError> {
        Err(no_waits())
    }
    /// Asks suspended run `run_id` to resume or abort (not
    /// [`Unsuspend::Deadline`]); it is woken at once. Any host may ask, no
    /// fence. A repeat of the same request changes nothing.
    async fn request_unsuspend(
        &self,
        _run_id: &str,
        _ask: &Unsuspend,
    ) -> Result<UnsuspendAsked, JournalError> {
        Err(no_waits())
    }
    /// Run `run_id`'s journal, in the order it was written (empty: unknown
    /// run or no entries): what a restart reuses.
    async fn entries(&self, _run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        Err(no_waits())
    }
    /// Takes over at most `limit` waiting (or suspended) runs whose wake time has come
    /// (soonest first), as `new_owner` under the next epoch with a lease of
    /// `lease`: they are `running` again, to be carried on (`woken`). Of
    /// several callers, exactly one gets each run.
    async fn take_over_waiting(
        &self,
        _new_owner: &str,
        _lease: Duration,
        _limit: usize,
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        Err(no_waits())
    }
    /// Keeps signal `name` with its JSON `payload` for run `run_id` (running
    /// or waiting; a waiting run is woken), sent by the request of
    /// `traceparent`. One signal per name and run.
    async fn send_signal(
        &self,
        _run_id: &str,
        _name: &str,
        _payload: &str,
        _traceparent: &str,
    ) -> Result<SignalSent, JournalError> {
        Err(no_waits())
    }
    /// The signals run `run_id` was sent, oldest first, and how many.
    async fn signals(&self, _run_id: &str) -> Result<Vec<Signal>, JournalError> {
        Err(no_waits())
    }
    /// How run `run_id` started, if the journal knows it.
    async fn run_start(&self, _run_id: &str) -> Result<Option<RunStart>, JournalError> {
        Err(no_waits())
    }
    /// Of `run_ids`, the running ones asked to cancel, with the reason.
    async fn cancel_requests(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<(String, String)>, JournalError>;
    /// Every run, oldest first.
    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError>;
    /// One run, if the journal knows it.
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError>;
    /// Whether the journal answers now (one cheap query, not retried): what
    /// `braid serve`'s readiness reports.
    async fn ping(&self) -> Result<(), JournalError>;
    /// Deletes at most `batch` finished runs that `retention` does not keep
    /// (oldest first), with their journal entries, stored reports and
    /// `Idempotency-Key`s, in one short transaction; and keys older than
    /// `retention.max_age` whose run never started. Running runs are never
    /// touched. Safe to repeat; call again while it deletes a full batch.
    async fn prune(&self, retention: Retention, batch: usize) -> Result<Pruned, JournalError>;
}

/// The steps a run completed and has not undone, in completion order, from
/// its journal entries. A step completes once per run, so an entry written
/// twice (a write retried after a lost acknowledgement) counts once.
pub fn completed_steps(entries: &[JournalEntry]) -> Vec<CompletedStep> {
    let undone: HashSet<&str> = entries
        .iter()
        .filter(|e| e.kind == "undo" && e.outcome == "undone")
        .map(|e| e.step.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| e.kind == "completed" && e.outcome == "succeeded")
        .filter(|e| !undone.contains(&e.step.as_str()))
        .filter(|e| seen.insert(e.step.as_str()))
        .map(|e| CompletedStep {
            step: e.step.clone(),
            input: e.input.clone().unwrap_or_default(),
            output: e.output.clone().unwrap_or_default(),
            component: PathBuf::from(e.component.clone().unwrap_or_default()),
            component_sha256: e.component_sha256.clone().unwrap_or_default(),
            timeout: Duration::from_millis(e.timeout_ms.unwrap_or(10_000)),
            allowed_hosts: e.allowed_hosts.clone().unwrap_or_default(),
        })
        .collect()
}

/// Whether a `hostname:pid` owner is a process of this machine that is gone.
pub fn owner_is_dead_here(owner: &str, this_host: &str) -> bool {
    let Some((host, pid)) = owner.rsplit_once(':') else {
        return false;
    };
    let this = this_host.rsplit_once(':').map_or(this_host, |(h, _)| h);
    host == this && pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
}
