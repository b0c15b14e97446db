//! The SQLite run journal (`runs.sqlite3` in the state directory, WAL mode,
//! writes group-committed by [`crate::db::Db`]). Must not know wasmtime or
//! the DAG.

mod prune;
mod waits;

use super::*;
use crate::db::{Db, Durability, ms};
use rusqlite::{Connection, OptionalExtension, params};

/// The SQLite journal. Entries are written as they happen (WAL mode).
pub struct SqliteJournal {
    db: Db,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    start            TEXT NOT NULL,   -- RunStart as JSON
    owner            TEXT NOT NULL,
    epoch            INTEGER NOT NULL DEFAULT 1, -- the owner's fence (RunFence)
    lease_expires_ms INTEGER NOT NULL,
    status           TEXT NOT NULL,   -- running | waiting | suspended | succeeded | failed | cancelled | aborted
    degraded         INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    started_at_ms    INTEGER NOT NULL,
    finished_at_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS runs_trace ON runs(trace_id);
CREATE TABLE IF NOT EXISTS journal (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    entry  TEXT NOT NULL             -- JournalEntry as JSON
);
CREATE INDEX IF NOT EXISTS journal_run ON journal(run_id, seq);
-- What runs are pinned to (definition text, components), stored once per
-- version instead of in every run's row; `runs.pinned_sha256` names it.
CREATE TABLE IF NOT EXISTS pinned (
    sha256 TEXT PRIMARY KEY,
    pinned TEXT NOT NULL              -- Pinned as JSON
);
-- The finished run's report, as `braid serve` returns it.
CREATE TABLE IF NOT EXISTS reports (
    run_id        TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    duration_ms   REAL NOT NULL,
    report        TEXT NOT NULL       -- RunReport as JSON
);
CREATE INDEX IF NOT EXISTS reports_recent ON reports(started_at_ms);
CREATE INDEX IF NOT EXISTS reports_trace ON reports(trace_id);
-- Idempotency-Key -> the run it started (per workflow).
CREATE TABLE IF NOT EXISTS idempotency (
    workflow    TEXT NOT NULL,
    key         TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (workflow, key)
);
";

impl SqliteJournal {
    /// Opens (creating if needed) `runs.sqlite3` in `state_dir`.
    /// With the default durability (a commit survives a machine crash).
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(state_dir, Durability::default())
    }

    /// [`SqliteJournal::open`] with commits as durable as `durability` says.
    pub fn open_with(state_dir: &Path, durability: Durability) -> Result<Self, JournalError> {
        let db = Db::open(state_dir, "runs.sqlite3", SCHEMA, durability)?;
        db.blocking_call(|conn| {
            // Runs of a braid before fencing are all at epoch 1.
            crate::db::add_column(conn, "runs", "epoch", "INTEGER NOT NULL DEFAULT 1")?;
            // Runs of a braid before `pinned` keep their definition inline.
            crate::db::add_column(conn, "runs", "pinned_sha256", "TEXT")?;
            // Why a running run was asked to cancel (`request_cancel`).
            crate::db::add_column(conn, "runs", "cancel_reason", "TEXT")?;
            waits::migrate(conn)?;
            conn.execute_batch("CREATE INDEX IF NOT EXISTS runs_pinned ON runs(pinned_sha256)")
                .map_err(crate::db::DbUnavailable::from)
        })?;
        Ok(SqliteJournal { db })
    }
}

/// Appends an entry only while its fence holds the run: `running`, same
/// owner, same epoch.
const APPEND_FENCED: &str = "INSERT INTO journal (run_id, at_ms, entry) SELECT :run, :at, :entry
     WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = :run AND owner = :owner AND epoch = :epoch AND status = 'running')";

/// Extends a run's lease only while its fence holds the run.
const RENEW_FENCED: &str = "UPDATE runs SET lease_expires_ms = :until
     WHERE run_id = :run AND owner = :owner AND epoch = :epoch AND status = 'running'";

/// What a run is pinned to when it starts: its definition's text and its
/// components. The same for every run of one version of a workflow (several
/// KB, most of a start), so stored once in `pinned`, keyed by the sha256 of
/// its JSON, and named by each run's `pinned_sha256`; a run's `start` keeps
/// the rest. Runs journaled before `pinned` keep it all in `start`.
#[derive(Serialize, Deserialize)]
struct Pinned {
    definition: String,
    components: Vec<(String, String, String)>,
}

impl Pinned {
    /// The start without what it is pinned to, and what it is pinned to.
    fn split(start: &RunStart) -> (RunStart, Pinned) {
        let mut slim = start.clone();
        let pinned = Pinned {
            definition: std::mem::take(&mut slim.definition),
            components: std::mem::take(&mut slim.components),
        };
        (slim, pinned)
    }
}

/// A run's start as it began, with what it is pinned to put back.
fn read_start(conn: &Connection, run_id: &str) -> Result<RunStart, JournalError> {
    let (start, pinned): (String, Option<String>) = crate::db::query_row(
        conn,
        "SELECT r.start, p.pinned FROM runs r LEFT JOIN pinned p ON p.sha256 = r.pinned_sha256
         WHERE r.run_id = ?1",
        params![run_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .map_err(unavailable)?;
    let mut start: RunStart = serde_json::from_str(&start).map_err(unavailable)?;
    if let Some(pinned) = pinned {
        let pinned: Pinned = serde_json::from_str(&pinned).map_err(unavailable)?;
        start.definition = pinned.definition;
        start.components = pinned.components;
    }
    Ok(start)
}

#[async_trait::async_trait]
impl RunJournal for SqliteJournal {
    /// Records a run's start; its lease runs `lease` from now. What the
    /// run is pinned to goes into `pinned` (once per version).
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<RunFence, JournalError> {
        // Serialized here, on the caller's thread: the writer thread only writes.
        let (slim, pinned) = Pinned::split(start);
        let json = serde_json::to_string(&slim).map_err(unavailable)?;
        let pinned_json = serde_json::to_string(&pinned).map_err(unavailable)?;
        let pinned_sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(pinned_json.as_bytes()))
        };
        let [run_id, workflow, trace_id, owner] = [
            &start.run_id,
            &start.workflow,
            &start.trace_id,
            &start.owner,
        ]
        .map(String::clone);
        self.db.write(move |conn| {
            let now = now_ms();
            // Already there for every run of this version but the first.
            crate::db::exec(
                conn,
                "INSERT OR IGNORE INTO pinned (sha256, pinned) VALUES (?1, ?2)",
                params![pinned_sha, pinned_json],
            )
            .map_err(unavailable)?;
            crate::db::exec(
                conn,
                "INSERT INTO runs (run_id, workflow, trace_id, start, owner, lease_expires_ms, status, started_at_ms, pinned_sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7, ?8)",
                params![
                    run_id,
                    workflow,
                    trace_id,
                    json,
                    owner,
                    ms(now + lease.as_millis() as u64),
                    ms(now),
                    pinned_sha
                ],
            )
            .map_err(unavailable)?;
            Ok::<_, JournalError>(())
        })
        .await?;
        Ok(RunFence::first(&start.run_id, &start.owner))
    }

    async fn append(&self, fence: &RunFence, entry: JournalEntry) -> Result<(), JournalError> {
        let fence = fence.clone();
        let json = serde_json::to_string(&entry).map_err(unavailable)?;
        self.db
            .write(move |conn| {
                // The check and the insert are one statement in the
                // writer's transaction: SQLite has one writer at a time.
                let n = crate::db::exec(
                    conn,
                    APPEND_FENCED,
                    rusqlite::named_params! {
                        ":run": fence.run_id, ":at": ms(now_ms()), ":entry": json,
                        ":owner": fence.owner, ":epoch": fence.stored_epoch(),
                    },
                )
                .map_err(unavailable)?;
                if n == 1 { Ok(()) } else { Err(fence.refused()) }
            })
            .await
    }

    async fn append_all(
        &self,
        fence: &RunFence,
        entries: Vec<JournalEntry>,
    ) -> Result<(), JournalError> {
        let fence = fence.clone();
        let json: Vec<String> = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        self.db
            .write(move |conn| {
                // One job: all of them or (refused, rolled back) none.
                for entry in &json {
                    let n = crate::db::exec(
                        conn,
                        APPEND_FENCED,
                        rusqlite::named_params! {
                            ":run": fence.run_id, ":at": ms(now_ms()), ":entry": entry,
                            ":owner": fence.owner, ":epoch": fence.stored_epoch(),
                        },
                    )
                    .map_err(unavailable)?;
                    if n != 1 {
                        return Err(fence.refused());
                    }
                }
                Ok(())
            })
            .await
    }

    async fn finish(
        &self,
        fence: &RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<StoredReport>,
    ) -> Result<bool, JournalError> {
        let (fence, status) = (fence.clone(), status.to_string());
        self.db
            .write(move |conn| {
                // One write job is one transaction: the end and the report
                // are committed together or not at all.
                let n = crate::db::exec(
                    conn,
                    "UPDATE runs SET status = :status, degraded = :degraded, error = :error, finished_at_ms = :at
                     WHERE run_id = :run AND owner = :owner AND epoch = :epoch AND status = 'running'",
                    rusqlite::named_params! {
                        ":run": fence.run_id, ":owner": fence.owner, ":epoch": fence.stored_epoch(),
                        ":status": status, ":degraded": degraded, ":error": error, ":at": ms(now_ms()),
                    },
                )
                .map_err(unavailable)?;
                if n == 1
                    && let Some(report) = &report
                {
                    insert_report(conn, report)?;
                }
                Ok(n == 1)
            })
            .await
    }

    /// One write job (one transaction) for every lease, so a host's
    /// renewals queue behind its runs' entries once, not once per run.
    async fn renew_leases(
        &self,
        fences: &[RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        let fences = fences.to_vec();
        self.db
            .write(move |conn| {
                let until = ms(now_ms() + lease.as_millis() as u64);
                let mut renewed = Vec::with_capacity(fences.len());
                for fence in &fences {
                    let n = crate::db::exec(
                        conn,
                        RENEW_FENCED,
                        rusqlite::named_params! {
                            ":run": fence.run_id, ":owner": fence.owner,
                            ":epoch": fence.stored_epoch(), ":until": until,
                        },
                    )
                    .map_err(unavailable)?;
                    renewed.push(n == 1);
                }
                Ok(renewed)
            })
            .await
    }

    /// Takes over every running run whose lease expired or whose owner
    /// `is_dead` says is gone. Each take-over is one conditional UPDATE, so
    /// of several hosts recovering at once exactly one gets each run.
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        let new_owner = new_owner.to_string();
        let running_here: HashSet<String> = running_here.iter().cloned().collect();
        self.db.call(move |conn| {
            let now = now_ms();
            type Candidate = (String, String, i64, i64, i64);
            // The start (the largest column) is read only for runs taken.
            let candidates: Vec<Candidate> = {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT run_id, owner, lease_expires_ms, epoch, started_at_ms
                         FROM runs WHERE status = 'running'",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })
                    .map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            let mut taken = Vec::new();
            for (run_id, owner, lease_expires, old_epoch, started_at) in candidates {
                let expired = lease_expires <= ms(now);
                let dead = is_dead.as_ref().is_some_and(|f| f(&owner));
                let own = owner == new_owner;
                if (own && running_here.contains(&run_id)) || !(expired || (dead && !own)) {
                    continue;
                }
                let n = conn
                    .execute(
                        // Only if nobody renewed or took the lease since it
                        // was read; committed (autocommit) before the entries
                        // are read, so every write the old owner got in is
                        // read below and every later one is refused.
                        "UPDATE runs SET owner = ?2, lease_expires_ms = ?3, epoch = epoch + 1
                         WHERE run_id = ?1 AND owner = ?4 AND status = 'running' AND lease_expires_ms = ?5
                           AND epoch = ?6",
                        params![run_id, new_owner, ms(now + lease.as_millis() as u64), owner, lease_expires, old_epoch],
                    )
                    .map_err(unavailable)?;
                if n != 1 {
                    continue;
                }
                let next = RunFence {
                    run_id: run_id.clone(),
                    owner: new_owner.clone(),
                    epoch: u64::try_from(old_epoch).unwrap_or(0) + 1,
                };
                taken.push(waits::taken_run(conn, next, owner, started_at)?);
            }
            Ok(taken)
        })
        .await
    }

    /// A stored report (JSON), if the run is known.
    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        let run_id = run_id.to_string();
        self.db
            .call(move |conn| {
                conn.query_row(
                    "SELECT report FROM reports WHERE run_id = ?1",
                    params![run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable)
            })
            .await
    }

    async fn recent_reports(&self, query: ReportQuery) -> Result<Vec<ReportSummary>, JournalError> {
        let (after_ms, after_run) = match &query.after {
            Some(c) => (Some(ms(c.started_at_ms)), Some(c.run_id.clone())),
            None => (None, None),
        };
        self.db
            .call(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT p.run_id, p.workflow, p.trace_id, p.outcome, p.started_at_ms, p.duration_ms,
                                COALESCE(r.degraded, 0)
                         FROM reports p LEFT JOIN runs r ON r.run_id = p.run_id
                         WHERE (?1 IS NULL OR p.workflow = ?1) AND (?2 IS NULL OR p.outcome = ?2)
                           AND (?3 IS NULL OR p.trace_id = ?3)
                           AND (?4 IS NULL OR p.started_at_ms < ?4 OR (p.started_at_ms = ?4 AND p.run_id > ?5))
                         ORDER BY p.started_at_ms DESC, p.run_id LIMIT ?6",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(
                        params![
                            query.workflow,
                            query.outcome,
                            query.trace_id,
                            after_ms,
                            after_run,
                            query.limit as i64
                        ],
                        |r| {
                            Ok(ReportSummary {
                                run_id: r.get(0)?,
                                workflow: r.get(1)?,
                                trace_id: r.get(2)?,
                                outcome: r.get(3)?,
                                started_at_ms: r.get::<_, i64>(4)?.max(0) as u64,
                                duration_ms: r.get(5)?,
                                degraded: r.get(6)?,
                            })
                        },
                    )
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
            })
            .await
    }

    async fn running_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        self.db
            .call(move |conn| {
                select_runs(
                    conn,
                    "WHERE r.status = 'running' ORDER BY r.started_at_ms, r.run_id LIMIT ?1",
                    params![limit as i64],
                )
            })
            .await
    }

    async fn waiting_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        let tail =
            "WHERE r.status IN ('waiting', 'suspended') ORDER BY r.wake_at_ms, r.run_id LIMIT ?1";
        self.db
            .call(move |conn| select_runs(conn, tail, params![limit as i64]))
            .await
    }

    async fn runs_of_trace(
        &self,
        trace_id: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, JournalError> {
        let trace_id = trace_id.to_string();
        self.db
            .call(move |conn| {
                select_runs(
                    conn,
                    "WHERE r.trace_id = ?1 ORDER BY r.started_at_ms, r.run_id LIMIT ?2",
                    params![trace_id, limit as i64],
                )
            })
            .await
    }

    /// The run an `Idempotency-Key` of `workflow` started: (body sha256, run id).
    async fn idempotent_run(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        let (workflow, key) = (workflow.to_string(), key.to_string());
        self.db
            .call(move |conn| {
                conn.query_row(
                    "SELECT body_sha256, run_id FROM idempotency WHERE workflow = ?1 AND key = ?2",
                    params![workflow, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(unavailable)
            })
            .await
    }

    async fn reserve_idempotent(
        &self,
        workflow: &str,
        key: &str,
        body_sha256: &str,
        run_id: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        let args = [workflow, key, body_sha256, run_id].map(str::to_string);
        self.db
            .write(move |conn| {
                let inserted = conn
                    .execute(
                        "INSERT OR IGNORE INTO idempotency (workflow, key, body_sha256, run_id, at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![args[0], args[1], args[2], args[3], ms(now_ms())],
                    )
                    .map_err(unavailable)?;
                if inserted == 1 {
                    return Ok(None);
                }
                let (sha, holder): (String, String) = conn
                    .query_row(
                        "SELECT body_sha256, run_id FROM idempotency WHERE workflow = ?1 AND key = ?2",
                        params![args[0], args[1]],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(unavailable)?;
                // Already this run's (a repeated reservation) counts as reserved.
                Ok((holder != args[3]).then_some((sha, holder)))
            })
            .await
    }

    async fn release_idempotent(
        &self,
        workflow: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, JournalError> {
        let args = [workflow, key, run_id].map(str::to_string);
        self.db
            .write(move |conn| {
                let n = crate::db::exec(
                    conn,
                    "DELETE FROM idempotency WHERE workflow = ?1 AND key = ?2 AND run_id = ?3
                     AND NOT EXISTS (SELECT 1 FROM runs WHERE run_id = ?3)",
                    params![args[0], args[1], args[2]],
                )
                .map_err(unavailable)?;
                Ok(n == 1)
            })
            .await
    }

    async fn park(
        &self,
        fence: &RunFence,
        wake_at_ms: u64,
        signals_seen: u64,
        waiting_for: &str,
    ) -> Result<bool, JournalError> {
        waits::park(&self.db, fence, wake_at_ms, signals_seen, waiting_for).await
    }

    async fn take_over_waiting(
        &self,
        new_owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        waits::take_over_waiting(&self.db, new_owner, lease, limit).await
    }

    async fn send_signal(
        &self,
        run_id: &str,
        name: &str,
        payload: &str,
        traceparent: &str,
    ) -> Result<SignalSent, JournalError> {
        waits::send_signal(&self.db, run_id, name, payload, traceparent).await
    }

    async fn signals(&self, run_id: &str) -> Result<Vec<Signal>, JournalError> {
        waits::signals(&self.db, run_id).await
    }

    async fn run_start(&self, run_id: &str) -> Result<Option<RunStart>, JournalError> {
        waits::run_start(&self.db, run_id).await
    }

    async fn request_cancel(
        &self,
        run_id: &str,
        reason: &str,
    ) -> Result<CancelAsked, JournalError> {
        waits::request_cancel(&self.db, run_id, reason).await
    }

    async fn cancel_requests(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<(String, String)>, JournalError> {
        waits::cancel_requests(&self.db, run_ids).await
    }

    async fn suspend(
        &self,
        fence: &RunFence,
        deadline: u64,
        why: &str,
    ) -> Result<bool, JournalError> {
        waits::suspend(&self.db, fence, deadline, why).await
    }

    async fn request_unsuspend(
        &self,
        run_id: &str,
        ask: &Unsuspend,
    ) -> Result<UnsuspendAsked, JournalError> {
        waits::request_unsuspend(&self.db, run_id, ask).await
    }

    async fn entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        let run_id = run_id.to_string();
        self.db.call(move |conn| read_entries(conn, &run_id)).await
    }

    async fn ping(&self) -> Result<(), JournalError> {
        self.db
            .call(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(unavailable)
            })
            .await
    }

    /// Every run, oldest first.
    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        self.db
            .call(|conn| select_runs(conn, "ORDER BY r.started_at_ms, r.run_id", params![]))
            .await
    }

    async fn prune(&self, retention: Retention, batch: usize) -> Result<Pruned, JournalError> {
        prune::prune(&self.db, retention, batch).await
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError> {
        let run_id = run_id.to_string();
        self.db
            .call(move |conn| {
                let found = select_runs(conn, "WHERE r.run_id = ?1", params![run_id])?;
                Ok(found.into_iter().next())
            })
            .await
    }
}

/// Runs as [`RunRecord`]s; `tail` filters and orders (`r` is `runs`).
fn select_runs(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RunRecord>, JournalError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT r.run_id, r.workflow, r.trace_id, r.status, r.degraded, r.error, r.owner,
                    r.started_at_ms, r.finished_at_ms,
                    (SELECT COUNT(*) FROM journal j WHERE j.run_id = r.run_id),
                    r.waiting_for, r.waiting_since_ms, r.wake_at_ms
             FROM runs r {tail}"
        ))
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params, |r| {
            Ok(RunRecord {
                run_id: r.get(0)?,
                workflow: r.get(1)?,
                trace_id: r.get(2)?,
                status: r.get(3)?,
                degraded: r.get(4)?,
                error: r.get(5)?,
                owner: r.get(6)?,
                started_at_ms: r.get::<_, i64>(7)?.max(0) as u64,
                finished_at_ms: r.get::<_, Option<i64>>(8)?.map(|v| v.max(0) as u64),
                entries: r.get::<_, i64>(9)?.max(0) as usize,
                waiting_for: r.get(10)?,
                waiting_since_ms: r.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
                wake_at_ms: r.get::<_, Option<i64>>(12)?.map(|v| v.max(0) as u64),
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
}

fn insert_report(conn: &Connection, report: &StoredReport) -> Result<(), JournalError> {
    let summary = &report.summary;
    crate::db::exec(
        conn,
        "INSERT OR REPLACE INTO reports (run_id, workflow, trace_id, outcome, started_at_ms, duration_ms, report)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            summary.run_id,
            summary.workflow,
            summary.trace_id,
            summary.outcome,
            ms(summary.started_at_ms),
            summary.duration_ms,
            report.json
        ],
    )
    .map_err(unavailable)?;
    Ok(())
}

fn read_entries(conn: &Connection, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
    let mut stmt = conn
        .prepare("SELECT entry FROM journal WHERE run_id = ?1 ORDER BY seq")
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![run_id], |r| r.get::<_, String>(0))
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        let text = row.map_err(unavailable)?;
        out.push(serde_json::from_str(&text).map_err(unavailable)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(run_id: &str, definition: &str) -> RunStart {
        RunStart {
            run_id: run_id.into(),
            workflow: "wf".into(),
            workflow_path: "wf.toml".into(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            span_id: "00f067aa0ba902b7".into(),
            trace_flags: 1,
            tracestate: String::new(),
            input: serde_json::json!({"n": 1}),
            components: vec![("a".into(), "a.wasm".into(), "ab".repeat(32))],
            owner: "gone:1".into(),
            parent_span_id: None,
            definition: definition.into(),
            idempotency_secret: "cd".repeat(32),
        }
    }

    fn count(j: &SqliteJournal, sql: &'static str) -> i64 {
        j.db.blocking_call(move |conn| {
            conn.query_row(sql, [], |r| r.get(0))
                .map_err(crate::db::DbUnavailable::from)
        })
        .expect("count")
    }

    #[tokio::test]
    async fn a_version_is_stored_once_read_back_whole_and_pruned_with_its_last_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = SqliteJournal::open_with(dir.path(), Durability::Process).expect("open");
        let v1 = format!("name = \"wf\"\n# {}\n", "1".repeat(3000));
        let v2 = format!("name = \"wf\"\n# {}\n", "2".repeat(3000));
        let lease = Duration::from_millis(1);
        for (id, def) in [("r1", &v1), ("r2", &v1), ("r3", &v1), ("r4", &v2)] {
            j.start(&start(id, def), lease).await.expect("start");
        }
        assert_eq!(
            count(&j, "SELECT count(*) FROM pinned"),
            2,
            "one per version"
        );
        let biggest = count(&j, "SELECT max(length(start)) FROM runs");
        assert!(
            biggest < 1000,
            "a run's row holds no definition: {biggest} bytes"
        );
        // A run of an older braid: everything inline, no pinned version.
        let old = serde_json::to_string(&start("r0", "name = \"old\"\n")).expect("json");
        j.db.blocking_call(move |conn| {
            conn.execute(
                "INSERT INTO runs (run_id, workflow, trace_id, start, owner, lease_expires_ms, status, started_at_ms)
                 VALUES ('r0', 'wf', 't', ?1, 'gone:1', 0, 'running', 0)",
                [old],
            )
            .map_err(crate::db::DbUnavailable::from)
        })
        .expect("old row");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut taken = j
            .take_over_abandoned("new:2", Duration::from_secs(60), None, &[])
            .await
            .expect("take over");
        taken.sort_by(|a, b| a.start.run_id.cmp(&b.start.run_id));
        let got: Vec<(&str, &str)> = taken
            .iter()
            .map(|t| (t.start.run_id.as_str(), t.start.definition.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("r0", "name = \"old\"\n"),
                ("r1", v1.as_str()),
                ("r2", v1.as_str()),
                ("r3", v1.as_str()),
                ("r4", v2.as_str())
            ]
        );
        assert!(
            taken
                .iter()
                .all(|t| t.start.components == start("x", "").components)
        );
        // Runs end; pruning keeps a version while any run of it is kept.
        for t in &taken {
            assert!(
                j.finish(&t.fence, "aborted", false, None, None)
                    .await
                    .expect("finish")
            );
        }
        let keep = |max_runs| Retention {
            max_age: Duration::from_secs(3600),
            max_runs,
        };
        // The oldest go first (r0, r1, r2 by finish time, then run id).
        tokio::time::sleep(Duration::from_millis(5)).await;
        j.prune(keep(2), 100).await.expect("prune");
        assert_eq!(count(&j, "SELECT count(*) FROM runs"), 2);
        assert_eq!(count(&j, "SELECT count(*) FROM pinned"), 2, "r3 keeps v1");
        j.prune(keep(0), 100).await.expect("prune");
        assert_eq!(count(&j, "SELECT count(*) FROM pinned"), 0, "no run left");
    }
}
