//! The durable run journal: every run is recorded as it goes, so a host that
//! dies mid-run leaves enough behind for another start to undo and abort it.
//!
//! Owns: the `runs` and `journal` tables (a SQLite file in the state
//! directory), run leases (a live host keeps extending the lease of its runs),
//! and the atomic take-over of abandoned runs. Knows nothing of wasmtime or
//! the DAG; the scheduler writes entries, recovery reads them.

use crate::db::{Db, DbUnavailable, ms};
use crate::store::now_ms;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error("run journal unavailable: {0}")]
    Unavailable(String),
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
}

/// One journal entry. `kind` says which fields matter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalEntry {
    /// `attempt`, `completed`, `compensation`, `cancelled`, `undo`, `claims-released`.
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
    /// Completed, not yet undone, in completion order.
    pub completed: Vec<CompletedStep>,
}

/// The runs this host is executing right now (shared by every scheduler
/// of the host and its recovery loop). A run of this host that is `running`
/// in the journal but not here any more was stopped after it lost its lease
/// (see `scheduler::LEASE_FENCE`): recovery takes it over once its lease
/// has run out, as it would another host's.
#[derive(Debug, Clone, Default)]
pub struct LocalRuns(Arc<Mutex<HashSet<String>>>);

impl LocalRuns {
    /// Marks `run_id` as executing here until the guard is dropped.
    pub fn enter(&self, run_id: &str) -> LocalRun {
        self.lock().insert(run_id.to_string());
        LocalRun {
            runs: self.clone(),
            run_id: run_id.to_string(),
        }
    }

    /// The run ids executing here now.
    pub fn list(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic while holding this lock cannot leave the set half-changed.
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
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        self.runs.lock().remove(&self.run_id);
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
}

/// The SQLite journal. Entries are written as they happen (WAL mode).
pub struct SqliteJournal {
    db: Db,
}

impl From<DbUnavailable> for JournalError {
    fn from(e: DbUnavailable) -> Self {
        JournalError::Unavailable(e.0)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    start            TEXT NOT NULL,   -- RunStart as JSON
    owner            TEXT NOT NULL,
    lease_expires_ms INTEGER NOT NULL,
    status           TEXT NOT NULL,   -- running | succeeded | failed | aborted
    degraded         INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    started_at_ms    INTEGER NOT NULL,
    finished_at_ms   INTEGER
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE TABLE IF NOT EXISTS journal (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    at_ms  INTEGER NOT NULL,
    entry  TEXT NOT NULL             -- JournalEntry as JSON
);
CREATE INDEX IF NOT EXISTS journal_run ON journal(run_id, seq);
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

/// A stored run report's summary, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSummary {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub outcome: String,
    pub started_at_ms: u64,
    pub duration_ms: f64,
}

/// Says whether a run owner (`hostname:pid`) is gone, for take-over.
pub type OwnerIsDead = Box<dyn for<'a> Fn(&'a str) -> bool + Send + 'static>;

/// The durable run journal, whatever stores it. The scheduler writes a run's
/// start, entries and terminal record through it; recovery takes over runs
/// whose host died; `braid serve` keeps reports and `Idempotency-Key`s in it.
///
/// An implementation must make each write durable before it returns (a step
/// the journal says completed must survive a crash right after), let
/// `finish` move only a `running` run (once), and hand each abandoned run to
/// exactly one caller of `take_over_abandoned`.
#[async_trait::async_trait]
pub trait RunJournal: Send + Sync + 'static {
    /// Records a run's start; its lease runs `lease` from now.
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<(), JournalError>;
    /// Appends one entry to a run's journal.
    async fn append(&self, run_id: &str, entry: JournalEntry) -> Result<(), JournalError>;
    /// Writes the terminal record. Only a `running` run held by `owner` can
    /// finish, once: a host whose run was taken over cannot overwrite what
    /// the new owner records. `Ok(false)`: it was taken over (the record is
    /// the new owner's to write).
    async fn finish(
        &self,
        run_id: &str,
        owner: &str,
        status: &str,
        degraded: bool,
        error: Option<String>,
    ) -> Result<bool, JournalError>;
    /// Extends the lease of a running run held by `owner`. `Ok(false)`: the
    /// run is no longer `owner`'s (another host took it over).
    async fn heartbeat(
        &self,
        run_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, JournalError>;
    /// Takes over every running run whose lease expired or whose owner
    /// `is_dead` (if given) says is gone; of several callers, exactly one
    /// gets each run. Runs of `new_owner` itself count too (runs it stopped
    /// after losing their lease), except those in `running_here`.
    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError>;
    /// Stores a finished run's report (JSON); a second save replaces the first.
    async fn save_report(
        &self,
        summary: ReportSummary,
        report_json: String,
    ) -> Result<(), JournalError>;
    /// A stored report (JSON), if the run is known.
    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError>;
    /// The most recent reports, newest first, optionally of one workflow
    /// and/or one outcome.
    async fn recent_reports(
        &self,
        workflow: Option<String>,
        outcome: Option<String>,
        limit: usize,
    ) -> Result<Vec<ReportSummary>, JournalError>;
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
    /// Every run, oldest first.
    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError>;
    /// One run, if the journal knows it.
    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError>;
    /// Whether the journal answers now (one cheap query, not retried): what
    /// `braid serve`'s readiness reports.
    async fn ping(&self) -> Result<(), JournalError>;
}

impl SqliteJournal {
    /// Opens (creating if needed) `runs.sqlite3` in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        Ok(SqliteJournal {
            db: Db::open(state_dir, "runs.sqlite3", SCHEMA)?,
        })
    }
}

#[async_trait::async_trait]
impl RunJournal for SqliteJournal {
    /// Records a run's start; its lease runs `lease` from now.
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<(), JournalError> {
        let start = start.clone();
        self.db.write(move |conn| {
            let now = now_ms();
            let json = serde_json::to_string(&start).map_err(unavailable)?;
            crate::db::exec(
                conn,
                "INSERT INTO runs (run_id, workflow, trace_id, start, owner, lease_expires_ms, status, started_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'running', ?7)",
                params![
                    start.run_id,
                    start.workflow,
                    start.trace_id,
                    json,
                    start.owner,
                    ms(now + lease.as_millis() as u64),
                    ms(now)
                ],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }

    async fn append(&self, run_id: &str, entry: JournalEntry) -> Result<(), JournalError> {
        let run_id = run_id.to_string();
        self.db
            .write(move |conn| {
                let json = serde_json::to_string(&entry).map_err(unavailable)?;
                crate::db::exec(
                    conn,
                    "INSERT INTO journal (run_id, at_ms, entry) VALUES (?1, ?2, ?3)",
                    params![run_id, ms(now_ms()), json],
                )
                .map_err(unavailable)?;
                Ok(())
            })
            .await
    }

    async fn finish(
        &self,
        run_id: &str,
        owner: &str,
        status: &str,
        degraded: bool,
        error: Option<String>,
    ) -> Result<bool, JournalError> {
        let args = [run_id, owner, status].map(str::to_string);
        self.db
            .write(move |conn| {
                let n = crate::db::exec(
                    conn,
                    "UPDATE runs SET status = ?3, degraded = ?4, error = ?5, finished_at_ms = ?6
                 WHERE run_id = ?1 AND owner = ?2 AND status = 'running'",
                    params![args[0], args[1], args[2], degraded, error, ms(now_ms())],
                )
                .map_err(unavailable)?;
                Ok(n == 1)
            })
            .await
    }

    async fn heartbeat(
        &self,
        run_id: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, JournalError> {
        let (run_id, owner) = (run_id.to_string(), owner.to_string());
        self.db.write(move |conn| {
            let n = crate::db::exec(
                conn,
                "UPDATE runs SET lease_expires_ms = ?3 WHERE run_id = ?1 AND owner = ?2 AND status = 'running'",
                params![run_id, owner, ms(now_ms() + lease.as_millis() as u64)],
            )
            .map_err(unavailable)?;
            Ok(n == 1)
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
            let candidates: Vec<(String, String, String, i64)> = {
                let mut stmt = conn
                    .prepare("SELECT run_id, owner, start, lease_expires_ms FROM runs WHERE status = 'running'")
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                    .map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            let mut taken = Vec::new();
            for (run_id, owner, start, lease_expires) in candidates {
                let expired = lease_expires <= ms(now);
                let dead = is_dead.as_ref().is_some_and(|f| f(&owner));
                let own = owner == new_owner;
                if (own && running_here.contains(&run_id)) || !(expired || (dead && !own)) {
                    continue;
                }
                let n = conn
                    .execute(
                        // Only if nobody renewed or took the lease since it was read.
                        "UPDATE runs SET owner = ?2, lease_expires_ms = ?3
                         WHERE run_id = ?1 AND owner = ?4 AND status = 'running' AND lease_expires_ms = ?5",
                        params![run_id, new_owner, ms(now + lease.as_millis() as u64), owner, lease_expires],
                    )
                    .map_err(unavailable)?;
                if n != 1 {
                    continue;
                }
                let start: RunStart = serde_json::from_str(&start).map_err(unavailable)?;
                let completed = completed_steps(&read_entries(conn, &run_id)?);
                taken.push(AbandonedRun {
                    start,
                    previous_owner: owner,
                    completed,
                });
            }
            Ok(taken)
        })
        .await
    }

    /// Stores a finished run's report (JSON). A second save of the same run
    /// replaces the first.
    async fn save_report(
        &self,
        summary: ReportSummary,
        report_json: String,
    ) -> Result<(), JournalError> {
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT OR REPLACE INTO reports (run_id, workflow, trace_id, outcome, started_at_ms, duration_ms, report)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        summary.run_id,
                        summary.workflow,
                        summary.trace_id,
                        summary.outcome,
                        ms(summary.started_at_ms),
                        summary.duration_ms,
                        report_json
                    ],
                )
                .map_err(unavailable)?;
                Ok(())
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

    /// The most recent reports, newest first, optionally of one workflow
    /// and/or one outcome.
    async fn recent_reports(
        &self,
        workflow: Option<String>,
        outcome: Option<String>,
        limit: usize,
    ) -> Result<Vec<ReportSummary>, JournalError> {
        self.db
            .call(move |conn| {
                let mut stmt = conn
                    .prepare(
                        "SELECT run_id, workflow, trace_id, outcome, started_at_ms, duration_ms FROM reports
                         WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR outcome = ?2)
                         ORDER BY started_at_ms DESC, run_id LIMIT ?3",
                    )
                    .map_err(unavailable)?;
                let rows = stmt
                    .query_map(params![workflow, outcome, limit as i64], |r| {
                        Ok(ReportSummary {
                            run_id: r.get(0)?,
                            workflow: r.get(1)?,
                            trace_id: r.get(2)?,
                            outcome: r.get(3)?,
                            started_at_ms: r.get::<_, i64>(4)?.max(0) as u64,
                            duration_ms: r.get(5)?,
                        })
                    })
                    .map_err(unavailable)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)
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
                    (SELECT COUNT(*) FROM journal j WHERE j.run_id = r.run_id)
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
            })
        })
        .map_err(unavailable)?;
    rows.collect::<Result<_, _>>().map_err(unavailable)
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

/// The steps a run completed and has not undone, in completion order, from
/// its journal entries. A step completes once per run, so an entry written
/// twice (a write retried after a lost acknowledgement) counts once.
pub(crate) fn completed_steps(entries: &[JournalEntry]) -> Vec<CompletedStep> {
    let undone: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "undo" && e.outcome == "undone")
        .map(|e| e.step.as_str())
        .collect();
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter(|e| e.kind == "completed" && !undone.contains(&e.step.as_str()))
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
