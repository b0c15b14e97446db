//! Retention: which finished runs the journal keeps (and which expired
//! claims the claim store keeps), and pruning the rest in short batches
//! (`braid serve` every minute, `braid runs prune`). Must not know a
//! backend's storage (each implements `RunJournal::prune` and
//! `ClaimStore::prune_expired`).

use super::{JournalError, RunJournal};
use crate::store::ClaimStore;
use serde::Serialize;
use std::time::Duration;

/// Which finished runs the journal keeps: those finished within `max_age`,
/// and of those at most the newest `max_runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_runs: u64,
}

impl Default for Retention {
    /// Seven days, 100,000 runs.
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_runs: 100_000,
        }
    }
}

/// What a prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub runs: u64,
    pub entries: u64,
    pub reports: u64,
    pub idempotency_keys: u64,
    /// Expired claims deleted from the claim store.
    pub claims: u64,
}

impl Pruned {
    pub fn add(&mut self, other: Pruned) {
        self.runs += other.runs;
        self.entries += other.entries;
        self.reports += other.reports;
        self.idempotency_keys += other.idempotency_keys;
        self.claims += other.claims;
    }
}

/// Runs (or expired claims) at most this many per prune transaction: short,
/// so the writes of runs in flight wait little behind one.
pub const PRUNE_BATCH: usize = 100;

/// `braid serve`'s pruning waits this long between two batches, so runs in
/// flight get the journal between them.
pub const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// How often `braid serve` prunes its journal by default.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes `journal` and `claims` now and every `every` (`braid serve`),
/// each batch its own short transaction, with [`PRUNE_PAUSE`] between
/// batches, so live runs are not held up.
pub fn spawn_pruning(
    journal: std::sync::Arc<dyn RunJournal>,
    claims: std::sync::Arc<dyn ClaimStore>,
    retention: Retention,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let pruned = prune_paced(journal.as_ref(), claims.as_ref(), retention, PRUNE_PAUSE);
            match pruned.await {
                Ok(p) if p.runs > 0 || p.idempotency_keys > 0 || p.claims > 0 => tracing::info!(
                    runs = p.runs,
                    entries = p.entries,
                    reports = p.reports,
                    idempotency_keys = p.idempotency_keys,
                    claims = p.claims,
                    "pruned finished runs and expired claims past the retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("pruning the run journal failed (tried again later): {e}"),
            }
        }
    })
}

/// Prunes `journal` and `claims` by `retention` in batches of
/// [`PRUNE_BATCH`] until nothing more is due; what was deleted in all.
pub async fn prune_all(
    journal: &dyn RunJournal,
    claims: &dyn ClaimStore,
    retention: Retention,
) -> Result<Pruned, JournalError> {
    prune_paced(journal, claims, retention, Duration::ZERO).await
}

/// [`prune_all`], waiting `pause` between two batches.
async fn prune_paced(
    journal: &dyn RunJournal,
    claims: &dyn ClaimStore,
    retention: Retention,
    pause: Duration,
) -> Result<Pruned, JournalError> {
    let mut total = Pruned::default();
    loop {
        let pruned = journal.prune(retention, PRUNE_BATCH).await?;
        total.add(pruned);
        if pruned.runs < PRUNE_BATCH as u64 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    loop {
        let gone = claims
            .prune_expired(retention.max_age, retention.max_runs, PRUNE_BATCH)
            .await
            .map_err(|e| JournalError::Unavailable(format!("claim store: {e}")))?;
        total.claims += gone;
        if gone < PRUNE_BATCH as u64 {
            return Ok(total);
        }
        tokio::time::sleep(pause).await;
    }
}
