//! The embedded SQLite files under the state directory (claims, run journal):
//! opening them the same way (WAL, so several processes on one machine can
//! share a file; a busy timeout instead of errors under contention) and
//! running blocking queries off the async threads.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The database could not be opened or queried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DbUnavailable(pub String);

impl DbUnavailable {
    pub fn from(e: impl std::fmt::Display) -> Self {
        DbUnavailable(e.to_string())
    }
}

/// One SQLite file: a connection for queries and, for [`Db::write`], a
/// writer thread with a connection of its own that commits the writes
/// queued at the same moment in one transaction (group commit).
pub struct Db {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    writer: std::sync::mpsc::Sender<Box<dyn WriteJob>>,
}

/// A queued write: runs inside the writer's transaction, then hears whether
/// that transaction committed.
trait WriteJob: Send {
    /// Runs the write; false if it failed (its changes are rolled back).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Delivers the outcome once the transaction is over.
    fn finish(self: Box<Self>, committed: Result<(), DbUnavailable>);
}

struct Job<F, R, E> {
    f: Option<F>,
    result: Option<Result<R, E>>,
    reply: tokio::sync::oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> WriteJob for Job<F, R, E>
where
    F: FnOnce(&Connection) -> Result<R, E> + Send,
    R: Send,
    E: From<DbUnavailable> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = f(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), DbUnavailable>) {
        let outcome = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), Some(Ok(_))) => Err(E::from(e)),
            (_, Some(Err(e))) => Err(e),
            (Err(e), None) => Err(E::from(e)),
            (Ok(()), None) => Err(E::from(DbUnavailable("write did not run".into()))),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Writes committed in one transaction at most.
const GROUP: usize = 256;

/// The writer thread: takes a write, adds whatever else is already queued,
/// runs each under a savepoint (a failed write rolls back alone), commits
/// once, and tells every writer.
/// `execute` through the connection's statement cache, so a statement run
/// on every step is parsed once per connection, not every time.
pub fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the connection's statement cache (see [`exec`]).
pub fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn writer_loop(conn: Connection, rx: std::sync::mpsc::Receiver<Box<dyn WriteJob>>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE", []) {
            let e = DbUnavailable(format!("begin: {e}"));
            for job in jobs {
                job.finish(Err(e.clone()));
            }
            continue;
        }
        for job in &mut jobs {
            let _ = exec(&conn, "SAVEPOINT job", []);
            let ok = job.run(&conn);
            if !ok {
                let _ = exec(&conn, "ROLLBACK TO job", []);
            }
            let _ = exec(&conn, "RELEASE job", []);
        }
        let committed = exec(&conn, "COMMIT", []).map(|_| ()).map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            DbUnavailable(format!("commit: {e}"))
        });
        for job in jobs {
            job.finish(committed.clone());
        }
    }
}

/// How durable a committed write is (`--durability`, docs/failure-model.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A commit survives braid's process dying (`kill -9`, a crash, the
    /// OOM killer), not the machine's (power loss, kernel panic): the last
    /// commits before such a crash may be lost. SQLite: WAL with
    /// `synchronous=NORMAL` (the log is synced at checkpoints only);
    /// PostgreSQL: `synchronous_commit=off`.
    Process,
    /// A commit survives a machine crash too: it is on disk before the
    /// write returns (still group-committed: one sync for the writes that
    /// queued together). SQLite: `synchronous=FULL`; PostgreSQL:
    /// `synchronous_commit=on` (with the server's `fsync` on).
    #[default]
    Machine,
}

impl Durability {
    /// SQLite's `synchronous` setting for it (in WAL mode).
    fn sqlite_synchronous(self) -> &'static str {
        match self {
            Durability::Process => "NORMAL",
            Durability::Machine => "FULL",
        }
    }

    /// PostgreSQL's `synchronous_commit` setting for it.
    pub fn postgres_synchronous_commit(self) -> &'static str {
        match self {
            Durability::Process => "off",
            Durability::Machine => "on",
        }
    }
}

impl Db {
    /// Opens (creating if needed) `state_dir/file` and applies `schema`;
    /// commits as durable as `durability` says.
    pub fn open(
        state_dir: &Path,
        file: &str,
        schema: &str,
        durability: Durability,
    ) -> Result<Db, DbUnavailable> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            DbUnavailable(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join(file);
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(10))?;
            // Pages freed by pruning go back to the file system (takes
            // effect only on a new file; an older one reuses them instead).
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            // After a checkpoint the write-ahead log is cut back to this
            // (SQLite leaves it at its largest otherwise).
            conn.pragma_update(None, "journal_size_limit", 8 << 20)?;
            conn.pragma_update(None, "synchronous", durability.sqlite_synchronous())?;
            conn.execute_batch(schema)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| DbUnavailable(format!("{}: {e}", path.display())))?;
        let write_conn = open().map_err(|e| DbUnavailable(format!("{}: {e}", path.display())))?;
        let (writer, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("braid-db-{file}"))
            .spawn(move || writer_loop(write_conn, rx))
            .map_err(|e| DbUnavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(Db {
            path,
            conn: Arc::new(Mutex::new(conn)),
            writer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the write `f` in the writer's next transaction and returns once
    /// that transaction has committed (or failed). Writes queued while the
    /// writer is busy are committed together, so many concurrent runs cost
    /// few transactions; each write still completes before its caller goes
    /// on. `f` must not start or end transactions itself.
    pub async fn write<R, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<DbUnavailable> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Box<dyn WriteJob> = Box::new(Job {
            f: Some(f),
            result: None,
            reply,
        });
        self.writer
            .send(job)
            .map_err(|_| E::from(DbUnavailable("the writer thread has stopped".into())))?;
        answer
            .await
            .map_err(|_| E::from(DbUnavailable("the writer thread has stopped".into())))?
    }

    /// Runs `f` on the query connection on this thread (at open, before
    /// any other use: e.g. adding a column a newer braid needs).
    pub fn blocking_call<R, E>(&self, f: impl FnOnce(&Connection) -> Result<R, E>) -> Result<R, E>
    where
        E: From<DbUnavailable>,
    {
        let guard = self
            .conn
            .lock()
            .map_err(|_| E::from(DbUnavailable("database lock poisoned".into())))?;
        f(&guard)
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    pub async fn call<R, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<DbUnavailable> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| E::from(DbUnavailable("database lock poisoned".into())))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(DbUnavailable::from(e)))?
    }
}

/// Adds `column` (with its SQL `declaration`, e.g. `INTEGER NOT NULL
/// DEFAULT 1`) to `table` if a file written by an older braid lacks it.
/// Another process adding it at the same moment is not an error.
pub fn add_column(
    conn: &Connection,
    table: &str,
    column: &str,
    declaration: &str,
) -> Result<(), DbUnavailable> {
    let has: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
            [table, column],
            |r| r.get(0),
        )
        .map_err(DbUnavailable::from)?;
    if has {
        return Ok(());
    }
    match conn.execute_batch(&format!(
        "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
    )) {
        Err(e) if e.to_string().contains("duplicate column") => Ok(()),
        other => other.map_err(DbUnavailable::from),
    }
}

/// Milliseconds as SQLite stores them (i64, saturating).
pub fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of an older braid gets the column, once; adding it again
    /// (another process, a second start) changes nothing.
    #[test]
    fn a_missing_column_is_added_once() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE runs (run_id TEXT); INSERT INTO runs VALUES ('r')")
            .expect("old schema");
        for _ in 0..2 {
            add_column(&conn, "runs", "epoch", "INTEGER NOT NULL DEFAULT 1").expect("added");
        }
        let epoch: i64 = conn
            .query_row("SELECT epoch FROM runs", [], |r| r.get(0))
            .expect("read");
        assert_eq!(epoch, 1, "an old row takes the default");
    }

    /// `synchronous` as the writer's connection has it, for each durability.
    #[tokio::test]
    async fn durability_sets_how_the_writer_syncs() {
        for (durability, expected) in [(Durability::Machine, 2), (Durability::Process, 1)] {
            let dir = std::env::temp_dir().join(format!(
                "braid-db-test-{}",
                hex::encode(rand::random::<[u8; 6]>())
            ));
            let db = Db::open(&dir, "t.sqlite3", "", durability).expect("open");
            let level: i64 = db
                .write(|conn| {
                    conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
                        .map_err(DbUnavailable::from)
                })
                .await
                .expect("pragma");
            // 2 is FULL (synced at every commit), 1 NORMAL.
            assert_eq!(level, expected, "{durability:?}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
