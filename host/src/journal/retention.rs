//! Retention: which finished runs the journal keeps, and pruning the rest
//! in short batches (`braid serve` every minute, `braid runs prune`).
//! Must not know a backend's storage (each implements `RunJournal::prune`).

use super::{JournalError, RunJournal};
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
}

impl Pruned {
    pub fn add(&mut self, other: Pruned) {
        self.runs += other.runs;
        self.entries += other.entries;
        self.reports += other.reports;
        self.idempotency_keys += other.idempotency_keys;
    }
}

/// Runs at most this many per prune transaction.
pub const PRUNE_BATCH: usize = 500;

/// How often `braid serve` prunes its journal by default.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes `journal` now and every `every` (`braid serve`), each batch its
/// own short transaction so live runs are not held up.
pub fn spawn_pruning(
    journal: std::sync::Arc<dyn RunJournal>,
    retention: Retention,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match prune_all(journal.as_ref(), retention).await {
                Ok(p) if p.runs > 0 || p.idempotency_keys > 0 => tracing::info!(
                    runs = p.runs,
                    entries = p.entries,
                    reports = p.reports,
                    idempotency_keys = p.idempotency_keys,
                    "pruned finished runs past the retention"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("pruning the run journal failed (tried again later): {e}"),
            }
        }
    })
}

/// Prunes `journal` by `retention` in batches of [`PRUNE_BATCH`] until
/// nothing more is due; what was deleted in all.
pub async fn prune_all(
    journal: &dyn RunJournal,
    retention: Retention,
) -> Result<Pruned, JournalError> {
    let mut total = Pruned::default();
    loop {
        let pruned = journal.prune(retention, PRUNE_BATCH).await?;
        total.add(pruned);
        if pruned.runs < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}
