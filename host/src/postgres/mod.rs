//! PostgreSQL backend: claims and the run journal shared by several braid
//! hosts (`--store postgres://...`).
//!
//! Owns: the connection pools (deadpool-postgres over tokio-postgres), the
//! versioned schema (created or migrated on open, under an advisory lock so
//! hosts starting together migrate once), [`PostgresClaimStore`] and
//! [`PostgresJournal`].
//!
//! **Clock rule**: every lease time (a claim's or a run's: granted at,
//! expires at, "is it expired yet?") is read from the database's clock inside
//! the statement that uses it, never from a host's. Hosts whose clocks
//! disagree still agree on who holds a work item and who owns a run.
//!
//! A lost connection surfaces as `Unavailable` ([`ClaimStoreError`] or
//! [`JournalError`](crate::journal::JournalError)); the pool drops the broken
//! connection and opens a fresh one for the next call.

mod claims;
mod journal;
mod tls;

pub use claims::PostgresClaimStore;
pub use journal::PostgresJournal;

use crate::db::Durability;
use crate::store::ClaimStoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;

/// The schema version this build writes; older versions are migrated on open.
pub const SCHEMA_VERSION: i32 = 7;

/// Arbitrary, fixed key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6272_6169_6400_0001;

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version n to n + 1.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE braid_claims (
    work_item     TEXT PRIMARY KEY,
    claim_id      TEXT NOT NULL UNIQUE,
    run_id        TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    span_id       TEXT NOT NULL,
    step          TEXT NOT NULL,
    owner         TEXT NOT NULL,
    claimed_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    metadata      TEXT NOT NULL
);
CREATE INDEX braid_claims_run ON braid_claims(run_id);
",
    "
CREATE TABLE braid_runs (
    run_id           TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    trace_id         TEXT NOT NULL,
    start            TEXT NOT NULL,   -- RunStart as JSON
    owner            TEXT NOT NULL,
    lease_expires_ms BIGINT NOT NULL, -- by the database's clock
    status           TEXT NOT NULL,   -- running | succeeded | failed | aborted
    degraded         BOOLEAN NOT NULL DEFAULT false,
    error            TEXT,
    started_at_ms    BIGINT NOT NULL,
    finished_at_ms   BIGINT
);
CREATE INDEX braid_runs_running ON braid_runs(owner) WHERE status = 'running';
CREATE INDEX braid_runs_started ON braid_runs(started_at_ms, run_id);
CREATE TABLE braid_journal (
    seq       BIGSERIAL PRIMARY KEY,
    run_id    TEXT NOT NULL,
    -- Random per append: a write retried after a lost acknowledgement
    -- is stored once.
    entry_key TEXT NOT NULL UNIQUE,
    at_ms     BIGINT NOT NULL,
    entry     TEXT NOT NULL           -- JournalEntry as JSON
);
CREATE INDEX braid_journal_run ON braid_journal(run_id, seq);
CREATE TABLE braid_reports (
    run_id        TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,
    trace_id      TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    duration_ms   DOUBLE PRECISION NOT NULL,
    report        TEXT NOT NULL       -- RunReport as JSON
);
CREATE INDEX braid_reports_recent ON braid_reports(started_at_ms);
CREATE TABLE braid_idempotency (
    workflow    TEXT NOT NULL,
    key         TEXT NOT NULL,
    body_sha256 TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (workflow, key)
);
",
    // Version 3: a trace id finds its runs (the viewer's trace page, `GET
    // /v1/runs?trace_id=`). `IF NOT EXISTS`: an operator may have built
    // them beforehand with `CONCURRENTLY` (docs/scaling.md).
    "
CREATE INDEX IF NOT EXISTS braid_runs_trace ON braid_runs(trace_id);
CREATE INDEX IF NOT EXISTS braid_reports_trace ON braid_reports(trace_id);
",
    // Version 4: each run's ownership epoch, the fencing token every journal
    // write is checked against (`RunFence`), and each claim's workflow (a
    // conflict across workflows names no run). Constant defaults: no rewrite.
    "
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS epoch BIGINT NOT NULL DEFAULT 1;
ALTER TABLE braid_claims ADD COLUMN IF NOT EXISTS workflow TEXT NOT NULL DEFAULT '';
",
    // Version 5: why a running run was asked to cancel (`request_cancel`),
    // for whichever host owns it to find. Nullable: no rewrite.
    "
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS cancel_reason TEXT;
",
    // Version 6: waiting runs (`park`, `take_over_waiting`: when each is
    // woken, what it waits for, since when, the signals it was sent) and
    // the signals themselves. Nullable or constant defaults: no rewrite.
    "
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS wake_at_ms BIGINT;
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS waiting_for TEXT;
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS waiting_since_ms BIGINT;
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS signal_count BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS braid_runs_waking ON braid_runs(wake_at_ms) WHERE status = 'waiting';
CREATE TABLE IF NOT EXISTS braid_signals (
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    traceparent TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (run_id, name)
);
",
    // Version 7: suspended runs (`suspend`, `request_unsuspend`): what an
    // operator asked of one, woken like a waiting run (one index for both).
    // Nullable: no rewrite.
    "
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS suspend_action TEXT;
ALTER TABLE braid_runs ADD COLUMN IF NOT EXISTS suspend_note TEXT;
CREATE INDEX IF NOT EXISTS braid_runs_parked ON braid_runs(wake_at_ms)
    WHERE status IN ('waiting', 'suspended');
DROP INDEX IF EXISTS braid_runs_waking;
",
];

/// The database's clock in milliseconds since the Unix epoch (SQL expression).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("PostgreSQL URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("PostgreSQL at {url}: {reason}")]
    Unavailable { url: String, reason: String },
    #[error(
        "PostgreSQL at {url}: the schema is at version {found}, newer than this braid ({SCHEMA_VERSION}); upgrade braid"
    )]
    SchemaTooNew { url: String, found: i32 },
}

/// A pool of connections to one database.
#[derive(Clone)]
pub struct PgPool {
    pool: Pool,
    /// A small pool of its own for run leases (heartbeats, take-overs), so
    /// a lease is never renewed late because journal writes hold every
    /// connection of `pool`.
    leases: Pool,
    /// The URL with any password removed, for messages.
    shown: String,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool").field("url", &self.shown).finish()
    }
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PgPool {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`,
    /// with `?sslmode=...&sslrootcert=...` for TLS: see the `tls` module),
    /// then creates or migrates braid's tables. Commits survive a machine
    /// crash (the default durability).
    pub async fn open(url: &str, max_connections: usize) -> Result<Self, PostgresError> {
        Self::open_with(url, max_connections, Durability::default()).await
    }

    /// [`PgPool::open`] with commits as durable as `durability` says: every
    /// connection's `synchronous_commit` is set to match (added to the
    /// URL's own `options`).
    pub async fn open_with(
        url: &str,
        max_connections: usize,
        durability: Durability,
    ) -> Result<Self, PostgresError> {
        let shown = redact(url);
        let bad_url = |reason: String| PostgresError::BadUrl {
            url: shown.clone(),
            reason,
        };
        let (rest, tls) = tls::split_url(url).map_err(bad_url)?;
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e| bad_url(format!("{e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        config.ssl_mode(tls.mode);
        let synchronous = format!(
            "-c synchronous_commit={}",
            durability.postgres_synchronous_commit()
        );
        let options = match config.get_options() {
            Some(own) if !own.is_empty() => format!("{own} {synchronous}"),
            _ => synchronous,
        };
        config.options(&options);
        let connector = tls.connector().map_err(bad_url)?;
        let build = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                connector.clone(),
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .wait_timeout(Some(Duration::from_secs(5)))
                .create_timeout(Some(Duration::from_secs(5)))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .build()
                .map_err(|e| PostgresError::BadUrl {
                    url: shown.clone(),
                    reason: e.to_string(),
                })
        };
        let pool = build(max_connections.max(1))?;
        let leases = build(2)?;
        let pg = PgPool {
            pool,
            leases,
            shown,
        };
        pg.migrate().await?;
        Ok(pg)
    }

    fn unavailable(&self, e: impl std::error::Error + 'static) -> PostgresError {
        let mut reason = chain(&e);
        if reason.contains("invalid peer certificate") && !self.shown.contains("sslrootcert=") {
            reason.push_str(
                " (to trust the server's own CA, add sslrootcert=PATH-TO-CA.pem to the URL)",
            );
        }
        PostgresError::Unavailable {
            url: self.shown.clone(),
            reason,
        }
    }

    /// The URL, password removed.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The `synchronous_commit` the pool's connections run with (what
    /// `--durability` asked for, unless the server overrides it).
    pub async fn synchronous_commit(&self) -> Result<String, PostgresError> {
        let client = self.pool.get().await.map_err(|e| self.unavailable(e))?;
        let row = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(row.get(0))
    }

    /// Brings the schema to [`SCHEMA_VERSION`] in one transaction, holding an advisory lock so concurrent hosts do not race.
    async fn migrate(&self) -> Result<(), PostgresError> {
        let mut client = self.pool.get().await.map_err(|e| self.unavailable(e))?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.unavailable(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.unavailable(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS braid_schema (version INTEGER NOT NULL)")
            .await
            .map_err(|e| self.unavailable(e))?;
        let found: i32 = tx
            .query_opt("SELECT version FROM braid_schema", &[])
            .await
            .map_err(|e| self.unavailable(e))?
            .map_or(0, |r| r.get(0));
        if found > SCHEMA_VERSION {
            return Err(PostgresError::SchemaTooNew {
                url: self.shown.clone(),
                found,
            });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
            tx.batch_execute(sql)
                .await
                .map_err(|e| PostgresError::Unavailable {
                    url: self.shown.clone(),
                    reason: format!("migration {from} -> {}: {}", from + 1, chain(&e)),
                })?;
        }
        tx.execute("DELETE FROM braid_schema", &[])
            .await
            .map_err(|e| self.unavailable(e))?;
        tx.execute(
            "INSERT INTO braid_schema (version) VALUES ($1)",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(|e| self.unavailable(e))?;
        tx.commit().await.map_err(|e| self.unavailable(e))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ClaimStoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| ClaimStoreError::Unavailable(format!("{}: {}", self.shown, chain(&e))))
    }
}

/// `e` and every error under it, joined by ": " (deadpool and tokio-postgres
/// keep the useful part, e.g. "Connection refused", in the sources).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

/// Why a database call failed, and whether trying again may help.
#[derive(Debug)]
pub(crate) struct CallError {
    pub message: String,
    /// The connection's fault (server gone or restarting, network), not
    /// the statement's: the same call may succeed on a fresh connection.
    pub transient: bool,
}

impl From<tokio_postgres::Error> for CallError {
    fn from(e: tokio_postgres::Error) -> Self {
        let transient = match e.as_db_error() {
            // 08: connection exception, 57: operator intervention (shutdown,
            // starting up), 53: insufficient resources, 40: serialization.
            Some(db) => ["08", "57", "53", "40"]
                .iter()
                .any(|class| db.code().code().starts_with(class)),
            None => {
                e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            }
        };
        CallError {
            message: format!("PostgreSQL: {}", chain(&e)),
            transient,
        }
    }
}

impl From<deadpool_postgres::PoolError> for CallError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        CallError {
            message: format!("PostgreSQL: {}", chain(&e)),
            transient: true,
        }
    }
}

/// How long a journal call keeps trying through connection loss (a server
/// restart takes a second or two) before it reports `Unavailable`.
pub(crate) const RETRY_BUDGET: Duration = Duration::from_secs(15);

/// Runs `call` until it succeeds, fails for a reason of its own, or
/// [`RETRY_BUDGET`] is spent on connection errors; waits grow from 50 ms to
/// 1 s between tries. Only for calls that are safe to repeat.
pub(crate) async fn with_retry<T, F, Fut>(what: &str, mut call: F) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_BUDGET;
    let mut wait = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e) if e.transient && tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(
                    "{what}: {}; trying again in {} ms",
                    e.message,
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://braid:s3cret@db:5432/braid"),
            "postgres://braid:***@db:5432/braid"
        );
        assert_eq!(
            redact("postgres://braid@db/braid"),
            "postgres://braid@db/braid"
        );
        assert_eq!(redact("host=db user=braid"), "host=db user=braid");
    }
}
