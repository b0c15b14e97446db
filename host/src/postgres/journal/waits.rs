//! What reaches a run from outside in the PostgreSQL journal: parking a
//! waiting run and waking the ones whose time has come (`FOR UPDATE SKIP
//! LOCKED`: one host wakes each), signals, cancel requests, and a run's
//! start (for checking a wait's token). Each one statement.

use super::{PostgresJournal, journal_error, json_error, lease_ms, now, to_ms};
use crate::journal::{
    AbandonedRun, CancelAsked, JournalError, RunFence, RunStart, Signal, SignalSent, Unsuspend,
    UnsuspendAsked,
};
use crate::postgres::{CallError, DB_NOW_MS};
use std::time::Duration;

pub(super) async fn park(
    j: &PostgresJournal,
    fence: &RunFence,
    wake_at_ms: u64,
    signals_seen: u64,
    waiting_for: &str,
) -> Result<bool, JournalError> {
    // Woken at once when a signal came or a cancel was asked since the
    // run looked: both change this row first, and this statement waits
    // for such a change's lock and then sees it.
    let n = j
        .execute(
            "parking a run",
            "UPDATE braid_runs SET status = 'waiting', waiting_for = $4::text,
               waiting_since_ms = $5::bigint,
               wake_at_ms = CASE WHEN signal_count > $6::bigint OR cancel_reason IS NOT NULL
                                 THEN $5::bigint ELSE $7::bigint END
             WHERE run_id = $1 AND owner = $2 AND epoch = $3 AND status = 'running'",
            &[
                &fence.run_id,
                &fence.owner,
                &fence.stored_epoch(),
                &waiting_for,
                &now(),
                &i64::try_from(signals_seen).unwrap_or(i64::MAX),
                &i64::try_from(wake_at_ms).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn take_over_waiting(
    j: &PostgresJournal,
    new_owner: &str,
    lease: Duration,
    limit: usize,
) -> Result<Vec<AbandonedRun>, JournalError> {
    // One statement, rows locked SKIP LOCKED: hosts waking runs at once
    // take different ones. Wake times are by the hosts' clocks (the
    // times they were computed by).
    let sql = format!(
        "WITH due AS (
           SELECT run_id, owner, status, suspend_action, suspend_note FROM braid_runs
           WHERE status IN ('waiting', 'suspended') AND wake_at_ms <= $3::bigint
           ORDER BY wake_at_ms LIMIT $4::bigint
           FOR UPDATE SKIP LOCKED)
         UPDATE braid_runs r SET status = 'running', owner = $1,
           lease_expires_ms = {DB_NOW_MS} + $2, epoch = r.epoch + 1,
           wake_at_ms = NULL, waiting_for = NULL, waiting_since_ms = NULL,
           suspend_action = NULL, suspend_note = NULL
         FROM due WHERE r.run_id = due.run_id
         RETURNING r.run_id, due.owner, r.start, r.epoch, r.started_at_ms, r.cancel_reason,
           due.status, due.suspend_action, due.suspend_note"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Not repeated, as `take_over_abandoned`: a lost commit leaves the
    // runs running under this host until their lease runs out.
    let rows = async {
        let client = j.pg.leases.get().await?;
        Ok::<_, CallError>(
            client
                .query(&sql, &[&new_owner, &lease_ms(lease), &now(), &limit])
                .await?,
        )
    }
    .await
    .map_err(journal_error)?;
    let mut taken = Vec::new();
    for row in rows {
        let cancel_reason: Option<String> = row.get(5);
        let action: Option<String> = row.get(7);
        let unsuspend = Unsuspend::of_woken(
            row.get(6),
            action.as_deref(),
            row.get(8),
            cancel_reason.is_some(),
        );
        taken.push(AbandonedRun {
            woken: true,
            cancel_reason,
            unsuspend,
            ..j.taken_run(&row, new_owner).await?
        });
    }
    Ok(taken)
}

pub(super) async fn suspend(
    j: &PostgresJournal,
    fence: &RunFence,
    deadline_ms: u64,
    why: &str,
) -> Result<bool, JournalError> {
    // Woken at once when a cancel was asked since the run looked.
    let n = j
        .execute(
            "suspending a run",
            "UPDATE braid_runs SET status = 'suspended', waiting_for = $4::text,
               waiting_since_ms = $5::bigint,
               wake_at_ms = CASE WHEN cancel_reason IS NOT NULL THEN $5::bigint ELSE $6::bigint END,
               suspend_action = NULL, suspend_note = NULL
             WHERE run_id = $1 AND owner = $2 AND epoch = $3 AND status = 'running'",
            &[
                &fence.run_id,
                &fence.owner,
                &fence.stored_epoch(),
                &why,
                &now(),
                &i64::try_from(deadline_ms).unwrap_or(i64::MAX),
            ],
        )
        .await?;
    Ok(n == 1)
}

pub(super) async fn request_unsuspend(
    j: &PostgresJournal,
    run_id: &str,
    ask: &Unsuspend,
) -> Result<UnsuspendAsked, JournalError> {
    let note = match ask {
        Unsuspend::Abort { reason } => reason.clone(),
        _ => None,
    };
    // One statement: the request if the run is suspended (the first one
    // stands), else its status.
    let rows = j
        .query(
            "asking a suspended run to resume or abort",
            "WITH asked AS (
               UPDATE braid_runs SET suspend_action = COALESCE(suspend_action, $2),
                 suspend_note = CASE WHEN suspend_action IS NULL THEN $3 ELSE suspend_note END,
                 wake_at_ms = $4::bigint
               WHERE run_id = $1 AND status = 'suspended' RETURNING suspend_action)
             SELECT true, suspend_action FROM asked
             UNION ALL
             SELECT false, status FROM braid_runs
             WHERE run_id = $1 AND NOT EXISTS (SELECT 1 FROM asked)",
            &[&run_id, &ask.action(), &note, &now()],
        )
        .await?;
    Ok(match rows.first() {
        Some(row) if row.get::<_, bool>(0) => {
            let pending: String = row.get(1);
            if pending == ask.action() {
                UnsuspendAsked::Asked
            } else {
                UnsuspendAsked::AskedOtherwise { pending }
            }
        }
        Some(row) => UnsuspendAsked::NotSuspended { status: row.get(1) },
        None => UnsuspendAsked::Unknown,
    })
}

pub(super) async fn send_signal(
    j: &PostgresJournal,
    run_id: &str,
    name: &str,
    payload: &str,
    traceparent: &str,
) -> Result<SignalSent, JournalError> {
    // One statement: the run's row locked, the signal kept if the run
    // goes on and has none of this name, the run counted and woken.
    let rows = j
        .query(
            "sending a signal",
            "WITH run AS (SELECT status FROM braid_runs WHERE run_id = $1 FOR UPDATE),
             kept AS (
               INSERT INTO braid_signals (run_id, name, payload, traceparent, at_ms)
               SELECT $1::text, $2::text, $3::text, $4::text, $5::bigint
               FROM run WHERE run.status IN ('running', 'waiting', 'suspended')
               ON CONFLICT (run_id, name) DO NOTHING RETURNING 1),
             woken AS (
               UPDATE braid_runs SET signal_count = signal_count + 1,
                 wake_at_ms = CASE WHEN status = 'waiting' THEN $5::bigint ELSE wake_at_ms END
               WHERE run_id = $1 AND EXISTS (SELECT 1 FROM kept) RETURNING 1)
             SELECT run.status, EXISTS (SELECT 1 FROM kept), (SELECT count(*) FROM woken)
             FROM run",
            &[&run_id, &name, &payload, &traceparent, &now()],
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(SignalSent::Unknown);
    };
    let status: String = row.get(0);
    Ok(match (status.as_str(), row.get::<_, bool>(1)) {
        (_, true) => SignalSent::Delivered,
        ("running" | "waiting" | "suspended", false) => SignalSent::AlreadySent,
        _ => SignalSent::Ended { status },
    })
}

pub(super) async fn signals(
    j: &PostgresJournal,
    run_id: &str,
) -> Result<Vec<Signal>, JournalError> {
    let rows = j
        .query(
            "reading a run's signals",
            "SELECT name, payload, traceparent, at_ms FROM braid_signals
             WHERE run_id = $1 ORDER BY at_ms, name",
            &[&run_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Signal {
            name: r.get(0),
            payload: r.get(1),
            traceparent: r.get(2),
            at_ms: to_ms(r.get(3)),
        })
        .collect())
}

pub(super) async fn run_start(
    j: &PostgresJournal,
    run_id: &str,
) -> Result<Option<RunStart>, JournalError> {
    let rows = j
        .query(
            "reading a run's start",
            "SELECT start FROM braid_runs WHERE run_id = $1",
            &[&run_id],
        )
        .await?;
    match rows.first() {
        Some(row) => Ok(Some(
            serde_json::from_str(row.get::<_, &str>(0)).map_err(json_error)?,
        )),
        None => Ok(None),
    }
}

pub(super) async fn request_cancel(
    j: &PostgresJournal,
    run_id: &str,
    reason: &str,
) -> Result<CancelAsked, JournalError> {
    // One statement: the request if the run is running, else its status.
    let rows = j
        .query(
            "asking a run to cancel",
            "WITH asked AS (
               UPDATE braid_runs SET cancel_reason = COALESCE(cancel_reason, $2),
                 wake_at_ms = CASE WHEN status = 'running' THEN wake_at_ms ELSE $3::bigint END
               WHERE run_id = $1 AND status IN ('running', 'waiting', 'suspended')
               RETURNING cancel_reason)
             SELECT true, cancel_reason FROM asked
             UNION ALL
             SELECT false, status FROM braid_runs
             WHERE run_id = $1 AND NOT EXISTS (SELECT 1 FROM asked)",
            &[&run_id, &reason, &now()],
        )
        .await?;
    Ok(match rows.first() {
        Some(row) if row.get::<_, bool>(0) => CancelAsked::Asked { reason: row.get(1) },
        Some(row) => CancelAsked::Ended { status: row.get(1) },
        None => CancelAsked::Unknown,
    })
}

pub(super) async fn cancel_requests(
    j: &PostgresJournal,
    run_ids: &[String],
) -> Result<Vec<(String, String)>, JournalError> {
    if run_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = j
        .query(
            "reading cancel requests",
            "SELECT run_id, cancel_reason FROM braid_runs
             WHERE run_id = ANY($1) AND status = 'running' AND cancel_reason IS NOT NULL",
            &[&run_ids],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
