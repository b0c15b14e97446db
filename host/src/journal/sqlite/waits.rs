//! What reaches a run from outside in the SQLite journal: parking a
//! waiting run and waking the ones whose time has come, signals, cancel
//! requests, and a run's start (for checking a wait's token). One write
//! transaction each, so one host wakes each run.

use super::{read_entries, read_start, unavailable};
use crate::db::{Db, ms};
use crate::journal::{
    AbandonedRun, CancelAsked, JournalError, RunFence, RunStart, Signal, SignalSent, Unsuspend,
    UnsuspendAsked,
};
use crate::store::now_ms;
use rusqlite::{OptionalExtension, params};
use std::time::Duration;

/// What waiting and suspended runs need on top of the base schema: on
/// `runs`, when a waiting run is woken, what it waits for, since when, how
/// many signals it was sent, and what an operator asked of a suspended run; the signals, one per name and run, kept until the
/// run is pruned.
pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), crate::db::DbUnavailable> {
    crate::db::add_column(conn, "runs", "wake_at_ms", "INTEGER")?;
    crate::db::add_column(conn, "runs", "waiting_for", "TEXT")?;
    crate::db::add_column(conn, "runs", "waiting_since_ms", "INTEGER")?;
    crate::db::add_column(conn, "runs", "signal_count", "INTEGER NOT NULL DEFAULT 0")?;
    crate::db::add_column(conn, "runs", "suspend_action", "TEXT")?;
    crate::db::add_column(conn, "runs", "suspend_note", "TEXT")?;
    conn.execute_batch(
        "DROP INDEX IF EXISTS runs_waking;
         CREATE INDEX IF NOT EXISTS runs_parked ON runs(wake_at_ms)
             WHERE status IN ('waiting', 'suspended');
         CREATE TABLE IF NOT EXISTS signals (
             run_id      TEXT NOT NULL,
             name        TEXT NOT NULL,
             payload     TEXT NOT NULL,
             traceparent TEXT NOT NULL,
             at_ms       INTEGER NOT NULL,
             PRIMARY KEY (run_id, name)
         );",
    )
    .map_err(crate::db::DbUnavailable::from)
}

pub(super) async fn park(
    db: &Db,
    fence: &RunFence,
    wake_at_ms: u64,
    signals_seen: u64,
    waiting_for: &str,
) -> Result<bool, JournalError> {
    let (fence, waiting_for) = (fence.clone(), waiting_for.to_string());
    db.write(move |conn| {
        let now = ms(now_ms());
        let n = crate::db::exec(
            conn,
            // Woken at once when a signal came or a cancel was asked
            // since the run looked (both change this row first).
            "UPDATE runs SET status = 'waiting', waiting_for = ?4, waiting_since_ms = ?5,
                   wake_at_ms = CASE WHEN signal_count > ?6 OR cancel_reason IS NOT NULL
                                     THEN ?5 ELSE ?7 END
                 WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3 AND status = 'running'",
            params![
                fence.run_id,
                fence.owner,
                fence.stored_epoch(),
                waiting_for,
                now,
                i64::try_from(signals_seen).unwrap_or(i64::MAX),
                ms(wake_at_ms)
            ],
        )
        .map_err(unavailable)?;
        Ok(n == 1)
    })
    .await
}

pub(super) async fn take_over_waiting(
    db: &Db,
    new_owner: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<AbandonedRun>, JournalError> {
    let new_owner = new_owner.to_string();
    db.write(move |conn| {
        let now = now_ms();
        let due: Vec<Due> = conn
            .prepare_cached(
                "SELECT run_id, owner, epoch, started_at_ms, cancel_reason, status,
                        suspend_action, suspend_note FROM runs
                     WHERE status IN ('waiting', 'suspended') AND wake_at_ms <= ?1
                     ORDER BY wake_at_ms LIMIT ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ms(now), limit as i64], |r| {
                    let cancel_reason: Option<String> = r.get(4)?;
                    let (status, action): (String, Option<String>) = (r.get(5)?, r.get(6)?);
                    Ok(Due {
                        run_id: r.get(0)?,
                        owner: r.get(1)?,
                        epoch: r.get(2)?,
                        started_at: r.get(3)?,
                        unsuspend: Unsuspend::of_woken(
                            &status,
                            action.as_deref(),
                            r.get(7)?,
                            cancel_reason.is_some(),
                        ),
                        cancel_reason,
                    })
                })?
                .collect()
            })
            .map_err(unavailable)?;
        let mut taken = Vec::new();
        for Due {
            run_id,
            owner,
            epoch: old_epoch,
            started_at,
            cancel_reason,
            unsuspend,
        } in due
        {
            // In the write transaction: no other host takes it meanwhile.
            crate::db::exec(
                conn,
                "UPDATE runs SET status = 'running', owner = ?2, lease_expires_ms = ?3,
                       epoch = epoch + 1, wake_at_ms = NULL, waiting_for = NULL,
                       waiting_since_ms = NULL, suspend_action = NULL, suspend_note = NULL
                     WHERE run_id = ?1",
                params![run_id, new_owner, ms(now + lease.as_millis() as u64)],
            )
            .map_err(unavailable)?;
            let next = RunFence {
                run_id: run_id.clone(),
                owner: new_owner.clone(),
                epoch: u64::try_from(old_epoch).unwrap_or(0) + 1,
            };
            taken.push(AbandonedRun {
                woken: true,
                cancel_reason,
                unsuspend,
                ..taken_run(conn, next, owner, started_at)?
            });
        }
        Ok(taken)
    })
    .await
}

/// A waiting or suspended run whose wake time has come, as read.
struct Due {
    run_id: String,
    owner: String,
    epoch: i64,
    started_at: i64,
    cancel_reason: Option<String>,
    unsuspend: Option<Unsuspend>,
}

pub(super) async fn suspend(
    db: &Db,
    fence: &RunFence,
    deadline_ms: u64,
    why: &str,
) -> Result<bool, JournalError> {
    let (fence, why) = (fence.clone(), why.to_string());
    db.write(move |conn| {
        let now = ms(now_ms());
        let n = crate::db::exec(
            conn,
            // Woken at once when a cancel was asked since the run looked.
            "UPDATE runs SET status = 'suspended', waiting_for = ?4, waiting_since_ms = ?5,
                   wake_at_ms = CASE WHEN cancel_reason IS NOT NULL THEN ?5 ELSE ?6 END,
                   suspend_action = NULL, suspend_note = NULL
                 WHERE run_id = ?1 AND owner = ?2 AND epoch = ?3 AND status = 'running'",
            params![
                fence.run_id,
                fence.owner,
                fence.stored_epoch(),
                why,
                now,
                ms(deadline_ms)
            ],
        )
        .map_err(unavailable)?;
        Ok(n == 1)
    })
    .await
}

pub(super) async fn request_unsuspend(
    db: &Db,
    run_id: &str,
    ask: &Unsuspend,
) -> Result<UnsuspendAsked, JournalError> {
    let (run_id, action) = (run_id.to_string(), ask.action());
    let note = match ask {
        Unsuspend::Abort { reason } => reason.clone(),
        _ => None,
    };
    db.write(move |conn| {
        let pending: Option<String> = conn
            .query_row(
                "UPDATE runs SET suspend_action = COALESCE(suspend_action, ?2),
                       suspend_note = CASE WHEN suspend_action IS NULL THEN ?3 ELSE suspend_note END,
                       wake_at_ms = ?4
                     WHERE run_id = ?1 AND status = 'suspended'
                     RETURNING suspend_action",
                params![run_id, action, note, ms(now_ms())],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        match pending {
            Some(p) if p == action => return Ok(UnsuspendAsked::Asked),
            Some(pending) => return Ok(UnsuspendAsked::AskedOtherwise { pending }),
            None => {}
        }
        let status: Option<String> = conn
            .query_row(
                "SELECT status FROM runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        Ok(status.map_or(UnsuspendAsked::Unknown, |status| {
            UnsuspendAsked::NotSuspended { status }
        }))
    })
    .await
}

pub(super) async fn send_signal(
    db: &Db,
    run_id: &str,
    name: &str,
    payload: &str,
    traceparent: &str,
) -> Result<SignalSent, JournalError> {
    let args = [run_id, name, payload, traceparent].map(str::to_string);
    db.write(move |conn| {
        let now = ms(now_ms());
        let status: Option<String> = conn
            .query_row(
                "SELECT status FROM runs WHERE run_id = ?1",
                params![args[0]],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        match status.as_deref() {
            None => return Ok(SignalSent::Unknown),
            // A suspended run takes it once resumed.
            Some("running" | "waiting" | "suspended") => {}
            Some(other) => {
                return Ok(SignalSent::Ended {
                    status: other.to_string(),
                });
            }
        }
        let inserted = crate::db::exec(
            conn,
            "INSERT OR IGNORE INTO signals (run_id, name, payload, traceparent, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            params![args[0], args[1], args[2], args[3], now],
        )
        .map_err(unavailable)?;
        if inserted == 0 {
            return Ok(SignalSent::AlreadySent);
        }
        crate::db::exec(
            conn,
            "UPDATE runs SET signal_count = signal_count + 1,
                   wake_at_ms = CASE WHEN status = 'waiting' THEN ?2 ELSE wake_at_ms END
                 WHERE run_id = ?1",
            params![args[0], now],
        )
        .map_err(unavailable)?;
        Ok(SignalSent::Delivered)
    })
    .await
}

pub(super) async fn signals(db: &Db, run_id: &str) -> Result<Vec<Signal>, JournalError> {
    let run_id = run_id.to_string();
    db.call(move |conn| {
        conn.prepare_cached(
            "SELECT name, payload, traceparent, at_ms FROM signals
                 WHERE run_id = ?1 ORDER BY at_ms, name",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![run_id], |r| {
                Ok(Signal {
                    name: r.get(0)?,
                    payload: r.get(1)?,
                    traceparent: r.get(2)?,
                    at_ms: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?
            .collect()
        })
        .map_err(unavailable)
    })
    .await
}

pub(super) async fn run_start(db: &Db, run_id: &str) -> Result<Option<RunStart>, JournalError> {
    let run_id = run_id.to_string();
    db.call(move |conn| {
        let known: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        match known {
            Some(_) => Ok(Some(read_start(conn, &run_id)?)),
            None => Ok(None),
        }
    })
    .await
}

pub(super) async fn request_cancel(
    db: &Db,
    run_id: &str,
    reason: &str,
) -> Result<CancelAsked, JournalError> {
    let (run_id, reason) = (run_id.to_string(), reason.to_string());
    db.write(move |conn| {
        let asked: Option<String> = conn
            .query_row(
                "UPDATE runs SET cancel_reason = COALESCE(cancel_reason, ?2),
                       wake_at_ms = CASE WHEN status = 'running' THEN wake_at_ms ELSE ?3 END
                     WHERE run_id = ?1 AND status IN ('running', 'waiting', 'suspended')
                     RETURNING cancel_reason",
                params![run_id, reason, ms(now_ms())],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        if let Some(reason) = asked {
            return Ok(CancelAsked::Asked { reason });
        }
        let status: Option<String> = conn
            .query_row(
                "SELECT status FROM runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(unavailable)?;
        Ok(status.map_or(CancelAsked::Unknown, |status| CancelAsked::Ended { status }))
    })
    .await
}

pub(super) async fn cancel_requests(
    db: &Db,
    run_ids: &[String],
) -> Result<Vec<(String, String)>, JournalError> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(run_ids).map_err(unavailable)?;
    db.call(move |conn| {
        conn.prepare_cached(
            "SELECT run_id, cancel_reason FROM runs
                 WHERE run_id IN (SELECT value FROM json_each(?1))
                   AND status = 'running' AND cancel_reason IS NOT NULL",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![ids], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(unavailable)
    })
    .await
}

/// A run just taken over under `fence` from `previous_owner`, with its
/// start and journal read (after the take-over: every accepted write).
pub(super) fn taken_run(
    conn: &rusqlite::Connection,
    fence: RunFence,
    previous_owner: String,
    started_at_ms: i64,
) -> Result<AbandonedRun, JournalError> {
    Ok(AbandonedRun {
        start: read_start(conn, &fence.run_id)?,
        entries: read_entries(conn, &fence.run_id)?,
        previous_owner,
        fence,
        started_at_ms: u64::try_from(started_at_ms).unwrap_or(0),
        woken: false,
        cancel_reason: None,
        unsuspend: None,
    })
}
