//! The bench's stores, counted: every durable write a run makes in the run
//! journal (start, entry, lease renewal, end, key) and in the claim store
//! (claim, renew, release). Each call of these is one transaction on
//! either store, so calls are writes; the bench divides by runs.
//!
//! Must not know the scheduler.

use crate::journal::{
    AbandonedRun, JournalEntry, JournalError, OwnerIsDead, Pruned, ReportQuery, ReportSummary,
    Retention, RunFence, RunJournal, RunRecord, RunStart, StoredReport,
};
use crate::store::{ClaimRecord, ClaimRequest, ClaimStore, ClaimStoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Durable writes so far, by store.
#[derive(Debug, Default)]
pub struct Writes {
    journal: AtomicU64,
    claims: AtomicU64,
}

/// Writes made between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCount {
    pub journal: u64,
    pub claims: u64,
}

impl Writes {
    pub fn now(&self) -> WriteCount {
        WriteCount {
            journal: self.journal.load(Ordering::Relaxed),
            claims: self.claims.load(Ordering::Relaxed),
        }
    }

    fn journal(&self) {
        self.journal.fetch_add(1, Ordering::Relaxed);
    }

    fn claims(&self) {
        self.claims.fetch_add(1, Ordering::Relaxed);
    }
}

impl WriteCount {
    /// The writes made since `before`.
    pub fn since(self, before: WriteCount) -> WriteCount {
        WriteCount {
            journal: self.journal.saturating_sub(before.journal),
            claims: self.claims.saturating_sub(before.claims),
        }
    }
}

/// A run journal whose writes are counted in `writes`.
pub struct CountedJournal {
    pub inner: Arc<dyn RunJournal>,
    pub writes: Arc<Writes>,
}

#[async_trait::async_trait]
impl RunJournal for CountedJournal {
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<RunFence, JournalError> {
        self.writes.journal();
        self.inner.start(start, lease).await
    }
    async fn append(&self, fence: &RunFence, entry: JournalEntry) -> Result<(), JournalError> {
        self.writes.journal();
        self.inner.append(fence, entry).await
    }
    /// One write: both stores append a batch in one statement or transaction.
    async fn append_all(
        &self,
        fence: &RunFence,
        entries: Vec<JournalEntry>,
    ) -> Result<(), JournalError> {
        self.writes.journal();
        self.inner.append_all(fence, entries).await
    }
    async fn finish(
        &self,
        fence: &RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<StoredReport>,
    ) -> Result<bool, JournalError> {
        self.writes.journal();
        self.inner
            .finish(fence, status, degraded, error, report)
            .await
    }
    async fn renew_leases(
        &self,
        fences: &[RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        self.writes.journal();
        self.inner.renew_leases(fences, lease).await
    }
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        self.writes.journal();
        self.inner
            .take_over_abandoned(new_owner, lease, is_dead, running_here)
            .await
    }
    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        self.inner.report(run_id).await
    }
    async fn recent_reports(&self, query: ReportQuery) -> Result<Vec<ReportSummary>, JournalError> {
        self.inner.recent_reports(query).await
    }
    async fn running_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.running_runs(limit).await
    }
    async fn runs_of_trace(
        &self,
        trace_id: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.runs_of_trace(trace_id, limit).await
    }
    async fn idempotent_run(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.inner.idempotent_run(workflow, key).await
    }
    async fn reserve_idempotent(
        &self,
        workflow: &str,
        key: &str,
        body_sha256: &str,
        run_id: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.writes.journal();
        self.inner
            .reserve_idempotent(workflow, key, body_sha256, run_id)
            .await
    }
    async fn release_idempotent(
        &self,
        workflow: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, JournalError> {
        self.writes.journal();
        self.inner.release_idempotent(workflow, key, run_id).await
    }
    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.runs().await
    }
    async fn park(
        &self,
        fence: &RunFence,
        wake_at_ms: u64,
        signals_seen: u64,
        waiting_for: &str,
    ) -> Result<bool, JournalError> {
        self.inner
            .park(fence, wake_at_ms, signals_seen, waiting_for)
            .await
    }
    async fn suspend(
        &self,
        fence: &RunFence,
        deadline: u64,
        why: &str,
    ) -> Result<bool, JournalError> {
        self.writes.journal();
        self.inner.suspend(fence, deadline, why).await
    }
    async fn request_unsuspend(
        &self,
        run_id: &str,
        ask: &crate::journal::Unsuspend,
    ) -> Result<crate::journal::UnsuspendAsked, JournalError> {
        self.inner.request_unsuspend(run_id, ask).await
    }
    async fn entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        self.inner.entries(run_id).await
    }
    async fn take_over_waiting(
        &self,
        new_owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<crate::journal::AbandonedRun>, JournalError> {
        self.inner.take_over_waiting(new_owner, lease, limit).await
    }
    async fn send_signal(
        &self,
        run_id: &str,
        name: &str,
        payload: &str,
        traceparent: &str,
    ) -> Result<crate::journal::SignalSent, JournalError> {
        self.inner
            .send_signal(run_id, name, payload, traceparent)
            .await
    }
    async fn signals(&self, run_id: &str) -> Result<Vec<crate::journal::Signal>, JournalError> {
        self.inner.signals(run_id).await
    }
    async fn run_start(
        &self,
        run_id: &str,
    ) -> Result<Option<crate::journal::RunStart>, JournalError> {
        self.inner.run_start(run_id).await
    }
    async fn waiting_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        self.inner.waiting_runs(limit).await
    }
    async fn request_cancel(
        &self,
        run_id: &str,
        reason: &str,
    ) -> Result<crate::journal::CancelAsked, JournalError> {
        self.inner.request_cancel(run_id, reason).await
    }
    async fn cancel_requests(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<(String, String)>, JournalError> {
        self.inner.cancel_requests(run_ids).await
    }
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError> {
        self.inner.run(run_id).await
    }
    async fn ping(&self) -> Result<(), JournalError> {
        self.inner.ping().await
    }
    async fn prune(&self, retention: Retention, batch: usize) -> Result<Pruned, JournalError> {
        self.writes.journal();
        self.inner.prune(retention, batch).await
    }
}

/// A claim store whose writes are counted in `writes`.
pub struct CountedClaims {
    pub inner: Arc<dyn ClaimStore>,
    pub writes: Arc<Writes>,
}

#[async_trait::async_trait]
impl ClaimStore for CountedClaims {
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError> {
        self.writes.claims();
        self.inner.claim(request).await
    }
    async fn renew(
        &self,
        claim_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<ClaimRecord, ClaimStoreError> {
        self.writes.claims();
        self.inner.renew(claim_id, run_id, lease).await
    }
    async fn release(&self, claim_id: &str, run_id: &str) -> Result<(), ClaimStoreError> {
        self.writes.claims();
        self.inner.release(claim_id, run_id).await
    }
    async fn release_all(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        self.writes.claims();
        self.inner.release_all(run_id).await
    }
    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        self.inner.list().await
    }
    async fn prune_expired(
        &self,
        max_age: Duration,
        max_kept: u64,
        batch: usize,
    ) -> Result<u64, ClaimStoreError> {
        self.writes.claims();
        self.inner.prune_expired(max_age, max_kept, batch).await
    }
    async fn clock_ms(&self) -> Result<u64, ClaimStoreError> {
        self.inner.clock_ms().await
    }
}
