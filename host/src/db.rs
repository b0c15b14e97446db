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

/// One SQLite file and its connection.
pub struct Db {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating if needed) `state_dir/file` and applies `schema`.
    pub fn open(state_dir: &Path, file: &str, schema: &str) -> Result<Db, DbUnavailable> {
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
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.execute_batch(schema)?;
            Ok(conn)
        };
        let conn = open().map_err(|e| DbUnavailable(format!("{}: {e}", path.display())))?;
        Ok(Db {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

/// Milliseconds as SQLite stores them (i64, saturating).
pub fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
