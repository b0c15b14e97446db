//! Stores: coordination claims behind the [`ClaimStore`] trait, with the
//! embedded SQLite implementation ([`SqliteClaimStore`]) as the default.
//!
//! Owns: claim atomicity and lease expiry. Knows nothing of wasmtime or the
//! scheduler; the coordination capability is its only caller besides the CLI.

use crate::db::{Db, DbUnavailable, Durability, ms};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A granted claim, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClaimRecord {
    pub claim_id: String,
    pub work_item: String,
    pub run_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub step: String,
    pub owner: String,
    pub claimed_at_ms: u64,
    pub expires_at_ms: u64,
    /// JSON text the claimant attached.
    pub metadata: String,
    /// The workflow of the run holding it (empty: claimed by an older braid).
    pub workflow: String,
}

/// Who asks for a claim, and for how long.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub work_item: String,
    pub lease: Duration,
    pub run_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub step: String,
    pub owner: String,
    pub metadata: String,
    /// The claiming run's workflow: a conflict tells a step of another
    /// workflow only that the item is held, and until when.
    pub workflow: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimStoreError {
    #[error("work item `{}` is held by run {} (trace {}) until {}", .0.work_item, .0.run_id, .0.trace_id, .0.expires_at_ms)]
    Conflict(Box<ClaimRecord>),
    #[error("claim `{0}` is not held by this run")]
    NotHeld(String),
    #[error("claim store unavailable: {0}")]
    Unavailable(String),
}

/// Atomic work claims with leases. Implementations must grant an item to at
/// most one live claim at a time; an expired lease may be taken over, and
/// the run that holds an item gets it again when it claims it again (a
/// retried or resumed step), under a new grant that replaces the old.
#[async_trait::async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    async fn claim(&self, request: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError>;
    /// Extends a claim `run_id` holds to `lease` from now.
    async fn renew(
        &self,
        claim_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<ClaimRecord, ClaimStoreError>;
    /// Drops a claim `run_id` holds.
    async fn release(&self, claim_id: &str, run_id: &str) -> Result<(), ClaimStoreError>;
    /// Drops every claim `run_id` still holds (a failed or aborted run's
    /// backstop after its undo) and returns them.
    async fn release_all(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError>;
    /// Every stored claim, live or expired, oldest first.
    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError>;
    /// The claims `run_id` holds whose lease has not run out (a suspended
    /// run's, to keep held while it waits).
    async fn held_by(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let now = self.clock_ms().await?;
        let all = self.list().await?;
        Ok(all
            .into_iter()
            .filter(|c| c.run_id == run_id && c.expires_at_ms > now)
            .collect())
    }
    /// Deletes at most `batch` claims whose lease has run out and that the
    /// retention does not keep: expired for longer than `max_age`, or past
    /// the newest `max_kept` expired ones (a released claim is gone
    /// already). A live claim is never touched. How many went.
    async fn prune_expired(
        &self,
        max_age: Duration,
        max_kept: u64,
        batch: usize,
    ) -> Result<u64, ClaimStoreError>;
    /// Now, by the clock this store's leases use (milliseconds since the
    /// Unix epoch): what a claim's `expires_at_ms` is compared with.
    async fn clock_ms(&self) -> Result<u64, ClaimStoreError> {
        Ok(now_ms())
    }
}

/// No claim store: every call is refused as unavailable. For commands that
/// load components but never run a workflow (`braid check`, `inspect`,
/// `policy eval`), so they open (and write) no store.
pub struct NoClaims;

#[async_trait::async_trait]
impl ClaimStore for NoClaims {
    async fn claim(&self, _: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError> {
        Err(no_store())
    }
    async fn renew(&self, _: &str, _: &str, _: Duration) -> Result<ClaimRecord, ClaimStoreError> {
        Err(no_store())
    }
    async fn release(&self, _: &str, _: &str) -> Result<(), ClaimStoreError> {
        Err(no_store())
    }
    async fn release_all(&self, _: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        Err(no_store())
    }
    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        Ok(Vec::new())
    }
    async fn prune_expired(&self, _: Duration, _: u64, _: usize) -> Result<u64, ClaimStoreError> {
        Ok(0)
    }
}

fn no_store() -> ClaimStoreError {
    ClaimStoreError::Unavailable("this command opens no claim store".into())
}

/// A fresh, random claim id (`c-` and 16 hex digits).
pub fn new_claim_id() -> String {
    format!("c-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Milliseconds since the Unix epoch by this host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Claims in a SQLite file (WAL mode, so several processes on one machine can
/// share it). Leases use this machine's clock.
pub struct SqliteClaimStore {
    db: Db,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS claims (
    work_item     TEXT PRIMARY KEY,
    claim_id      TEXT NOT NULL UNIQUE,
    run_id        TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    span_id       TEXT NOT NULL,
    step          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    claimed_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    metadata      TEXT NOT NULL,
    workflow      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS claims_run ON claims(run_id);
";

const COLUMNS: &str = "claim_id, work_item, run_id, trace_id, span_id, step, owner, claimed_at_ms, expires_at_ms, metadata, workflow";

fn row_to_claim(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimRecord> {
    Ok(ClaimRecord {
        claim_id: row.get(0)?,
        work_item: row.get(1)?,
        run_id: row.get(2)?,
        trace_id: row.get(3)?,
        span_id: row.get(4)?,
        step: row.get(5)?,
        owner: row.get(6)?,
        claimed_at_ms: row.get::<_, i64>(7)?.max(0) as u64,
        expires_at_ms: row.get::<_, i64>(8)?.max(0) as u64,
        metadata: row.get(9)?,
        workflow: row.get(10)?,
    })
}

fn unavailable(e: impl std::fmt::Display) -> ClaimStoreError {
    ClaimStoreError::Unavailable(e.to_string())
}

impl SqliteClaimStore {
    /// Opens (creating if needed) `claims.sqlite3` in `state_dir`, with
    /// the default durability (a commit survives a machine crash).
    pub fn open(state_dir: &Path) -> Result<Self, ClaimStoreError> {
        Self::open_with(state_dir, Durability::default())
    }

    /// [`SqliteClaimStore::open`] with commits as durable as `durability` says.
    pub fn open_with(state_dir: &Path, durability: Durability) -> Result<Self, ClaimStoreError> {
        let db = Db::open(state_dir, "claims.sqlite3", SCHEMA, durability)?;
        // Claims of an older braid have no workflow (`''`).
        db.blocking_call(|conn| {
            crate::db::add_column(conn, "claims", "workflow", "TEXT NOT NULL DEFAULT ''")
        })?;
        Ok(SqliteClaimStore { db })
    }

    pub fn path(&self) -> &Path {
        self.db.path()
    }
}

impl From<DbUnavailable> for ClaimStoreError {
    fn from(e: DbUnavailable) -> Self {
        ClaimStoreError::Unavailable(e.0)
    }
}

#[async_trait::async_trait]
impl ClaimStore for SqliteClaimStore {
    async fn claim(&self, r: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError> {
        // In the writer's group commit: claims made at the same moment
        // share one transaction and one sync (each is answered only once
        // it is committed), under a savepoint of its own.
        self.db.write(move |conn| {
            let now = now_ms();
            let record = ClaimRecord {
                claim_id: new_claim_id(),
                work_item: r.work_item,
                run_id: r.run_id,
                trace_id: r.trace_id,
                span_id: r.span_id,
                step: r.step,
                owner: r.owner,
                claimed_at_ms: now,
                expires_at_ms: now.saturating_add(u64::try_from(r.lease.as_millis()).unwrap_or(u64::MAX)),
                metadata: r.metadata,
                workflow: r.workflow,
            };
            // One write transaction: take the item if it is free, its lease
            // ran out or the same run holds it (a retried or resumed step
            // claims again); otherwise read the holder under the same lock.
            let granted: Option<String> = crate::db::query_row(
                conn,
                    &format!(
                        "INSERT INTO claims ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                         ON CONFLICT(work_item) DO UPDATE SET
                           claim_id = excluded.claim_id, run_id = excluded.run_id,
                           trace_id = excluded.trace_id, span_id = excluded.span_id,
                           step = excluded.step, owner = excluded.owner,
                           claimed_at_ms = excluded.claimed_at_ms,
                           expires_at_ms = excluded.expires_at_ms, metadata = excluded.metadata,
                           workflow = excluded.workflow
                         WHERE claims.expires_at_ms <= ?8 OR claims.run_id = ?3
                         RETURNING claim_id"
                    ),
                    params![
                        record.claim_id,
                        record.work_item,
                        record.run_id,
                        record.trace_id,
                        record.span_id,
                        record.step,
                        record.owner,
                        ms(record.claimed_at_ms),
                        ms(record.expires_at_ms),
                        record.metadata,
                        record.workflow
                    ],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            if granted.is_some() {
                Ok(record)
            } else {
                let holder = crate::db::query_row(
                    conn,
                        &format!("SELECT {COLUMNS} FROM claims WHERE work_item = ?1"),
                        params![record.work_item],
                        row_to_claim,
                    )
                    .map_err(unavailable)?;
                Err(ClaimStoreError::Conflict(Box::new(holder)))
            }
        })
        .await
    }

    async fn renew(
        &self,
        claim_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<ClaimRecord, ClaimStoreError> {
        let (claim_id, run_id) = (claim_id.to_string(), run_id.to_string());
        self.db
            .write(move |conn| {
                let now = now_ms();
                let until =
                    now.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
                crate::db::query_row(
                    conn,
                    &format!(
                        "UPDATE claims SET expires_at_ms = ?1
                     WHERE claim_id = ?2 AND run_id = ?3 AND expires_at_ms > ?4
                     RETURNING {COLUMNS}"
                    ),
                    params![ms(until), claim_id, run_id, ms(now)],
                    row_to_claim,
                )
                .optional()
                .map_err(unavailable)?
                .ok_or(ClaimStoreError::NotHeld(claim_id))
            })
            .await
    }

    async fn release(&self, claim_id: &str, run_id: &str) -> Result<(), ClaimStoreError> {
        let (claim_id, run_id) = (claim_id.to_string(), run_id.to_string());
        self.db
            .write(move |conn| {
                let n = crate::db::exec(
                    conn,
                    "DELETE FROM claims WHERE claim_id = ?1 AND run_id = ?2",
                    params![claim_id, run_id],
                )
                .map_err(unavailable)?;
                if n == 0 {
                    return Err(ClaimStoreError::NotHeld(claim_id));
                }
                Ok(())
            })
            .await
    }

    async fn release_all(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let run_id = run_id.to_string();
        self.db
            .write(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "DELETE FROM claims WHERE run_id = ?1 RETURNING {COLUMNS}"
                    ))
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![run_id], row_to_claim)
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await
    }

    async fn held_by(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let run_id = run_id.to_string();
        self.db
            .write(move |conn| {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM claims WHERE run_id = ?1 AND expires_at_ms > ?2
                         ORDER BY claimed_at_ms, work_item"
                    ))
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![run_id, ms(now_ms())], row_to_claim)
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await
    }

    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        self.db
            .call(|conn| {
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT {COLUMNS} FROM claims ORDER BY claimed_at_ms, work_item"
                    ))
                    .map_err(unavailable)?;
                let rows = stmt.query_map([], row_to_claim).map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await
    }

    async fn prune_expired(
        &self,
        max_age: Duration,
        max_kept: u64,
        batch: usize,
    ) -> Result<u64, ClaimStoreError> {
        let now = now_ms();
        let cutoff = now.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let keep = i64::try_from(max_kept).unwrap_or(i64::MAX);
        self.db
            .call(move |conn| {
                crate::db::exec(
                    conn,
                    "DELETE FROM claims WHERE claim_id IN (
                       SELECT claim_id FROM claims
                       WHERE expires_at_ms <= ?1
                         AND (expires_at_ms < ?2 OR claim_id NOT IN (
                           SELECT claim_id FROM claims WHERE expires_at_ms <= ?1
                           ORDER BY expires_at_ms DESC, claim_id DESC LIMIT ?3))
                       ORDER BY expires_at_ms LIMIT ?4)",
                    params![ms(now), ms(cutoff), keep, batch as i64],
                )
                .map(|n| n as u64)
                .map_err(unavailable)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn request(item: &str, run: &str, lease_ms: u64) -> ClaimRequest {
        ClaimRequest {
            work_item: item.into(),
            lease: Duration::from_millis(lease_ms),
            run_id: run.into(),
            trace_id: format!("{run:0>32}"),
            span_id: "00f067aa0ba902b7".into(),
            step: "claim_work".into(),
            owner: "test".into(),
            metadata: "{}".into(),
            workflow: "wf".into(),
        }
    }

    /// A directory of its own, removed when the test ends (kept alive by
    /// the caller for as long as the store is open).
    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    #[tokio::test]
    async fn second_claim_conflicts_with_the_holder_until_released() {
        let dir = temp_dir();
        let store = SqliteClaimStore::open(dir.path()).expect("open");
        let first = store
            .claim(request("item-1", "run1", 60_000))
            .await
            .expect("granted");
        assert_eq!(first.run_id, "run1");
        match store.claim(request("item-1", "run2", 60_000)).await {
            Err(ClaimStoreError::Conflict(holder)) => {
                assert_eq!(holder.claim_id, first.claim_id);
                assert_eq!(holder.trace_id, first.trace_id);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        // only the holder may release
        assert!(matches!(
            store.release(&first.claim_id, "run2").await,
            Err(ClaimStoreError::NotHeld(_))
        ));
        store
            .release(&first.claim_id, "run1")
            .await
            .expect("released");
        let second = store
            .claim(request("item-1", "run2", 60_000))
            .await
            .expect("free again");
        assert_eq!(second.run_id, "run2");
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_cannot_be_renewed() {
        let dir = temp_dir();
        let store = SqliteClaimStore::open(dir.path()).expect("open");
        let first = store
            .claim(request("item-2", "run1", 1))
            .await
            .expect("granted");
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = store
            .claim(request("item-2", "run2", 60_000))
            .await
            .expect("taken over");
        assert_ne!(second.claim_id, first.claim_id);
        assert!(matches!(
            store
                .renew(&first.claim_id, "run1", Duration::from_secs(1))
                .await,
            Err(ClaimStoreError::NotHeld(_))
        ));
        let renewed = store
            .renew(&second.claim_id, "run2", Duration::from_secs(120))
            .await
            .expect("renewed");
        assert!(renewed.expires_at_ms > second.expires_at_ms);
        assert_eq!(store.list().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn concurrent_claims_grant_exactly_one() {
        let dir = temp_dir();
        let store = Arc::new(SqliteClaimStore::open(dir.path()).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                store
                    .claim(request("contended", &format!("run{i}"), 60_000))
                    .await
            }));
        }
        let mut granted = 0;
        for t in tasks {
            if t.await.expect("join").is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 1);
    }
}
