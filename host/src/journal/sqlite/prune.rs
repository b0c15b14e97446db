//! Retention in the SQLite journal: deleting finished runs past what
//! the retention keeps, with their entries, reports, keys and signals, and
//! the pinned versions no run names any more.

use super::unavailable;
use crate::db::{Db, ms};
use crate::journal::{JournalError, Pruned, Retention};
use crate::store::now_ms;
use rusqlite::params;

pub(super) async fn prune(
    db: &Db,
    retention: Retention,
    batch: usize,
) -> Result<Pruned, JournalError> {
    let cutoff = now_ms().saturating_sub(retention.max_age.as_millis() as u64);
    let keep = i64::try_from(retention.max_runs).unwrap_or(i64::MAX);
    let pruned = db
        .write(move |conn| {
            let mut pruned = Pruned::default();
            // The runs to go, chosen once; `runs` itself goes last.
            let doomed: Vec<String> = conn
                .prepare_cached(
                    "SELECT run_id FROM runs
                     WHERE status NOT IN ('running', 'waiting', 'suspended')
                       AND (COALESCE(finished_at_ms, started_at_ms) < ?1
                            OR run_id NOT IN (
                              SELECT run_id FROM runs WHERE status NOT IN ('running', 'waiting', 'suspended')
                              ORDER BY COALESCE(finished_at_ms, started_at_ms) DESC, run_id DESC
                              LIMIT ?2))
                     ORDER BY COALESCE(finished_at_ms, started_at_ms), run_id
                     LIMIT ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![ms(cutoff), keep, batch as i64], |r| r.get(0))?
                        .collect()
                })
                .map_err(unavailable)?;
            let ids = serde_json::to_string(&doomed).map_err(unavailable)?;
            // The versions they were pinned to, kept while any run has one.
            let versions: Vec<String> = conn
                .prepare_cached(
                    "SELECT DISTINCT pinned_sha256 FROM runs
                     WHERE run_id IN (SELECT value FROM json_each(?1)) AND pinned_sha256 IS NOT NULL",
                )
                .and_then(|mut stmt| stmt.query_map(params![ids], |r| r.get(0))?.collect())
                .map_err(unavailable)?;
            let delete = |table: &str| {
                crate::db::exec(
                    conn,
                    &format!(
                        "DELETE FROM {table} WHERE run_id IN (SELECT value FROM json_each(?1))"
                    ),
                    params![ids],
                )
                .map(|n| n as u64)
                .map_err(unavailable)
            };
            pruned.entries = delete("journal")?;
            pruned.reports = delete("reports")?;
            pruned.idempotency_keys = delete("idempotency")?;
            delete("signals")?;
            pruned.runs = delete("runs")?;
            crate::db::exec(
                conn,
                "DELETE FROM pinned WHERE sha256 IN (SELECT value FROM json_each(?1))
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.pinned_sha256 = pinned.sha256)",
                params![serde_json::to_string(&versions).map_err(unavailable)?],
            )
            .map_err(unavailable)?;
            // Keys whose run never started (its host died in between).
            pruned.idempotency_keys += crate::db::exec(
                conn,
                "DELETE FROM idempotency WHERE at_ms < ?1
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.run_id = idempotency.run_id)",
                params![ms(cutoff)],
            )
            .map_err(unavailable)? as u64;
            Ok::<_, JournalError>(pruned)
        })
        .await?;
    if pruned.runs > 0 {
        // Give freed pages back to the file system (a journal created by
        // this braid has incremental auto-vacuum; an older one reuses them).
        db.write(|conn| {
            // One row per page freed: step it to the end.
            let mut stmt = conn
                .prepare("PRAGMA incremental_vacuum")
                .map_err(unavailable)?;
            let mut rows = stmt.query([]).map_err(unavailable)?;
            while rows.next().map_err(unavailable)?.is_some() {}
            Ok::<_, JournalError>(())
        })
        .await?;
    }
    Ok(pruned)
}
