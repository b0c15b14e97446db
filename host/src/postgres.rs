//! PostgreSQL backend: coordination claims shared by several braid hosts.
//!
//! Owns: the connection pool (deadpool-postgres over tokio-postgres), the
//! versioned schema (created or migrated on open, under an advisory lock so
//! hosts starting together migrate once), and [`PostgresClaimStore`].
//!
//! **Clock rule**: every lease time (claimed at, expires at, "is it expired
//! yet?") is read from the database's clock inside the statement that uses
//! it, never from a host's. Hosts whose clocks disagree still agree on who
//! holds a work item.
//!
//! A lost connection surfaces as [`ClaimStoreError::Unavailable`] (the failure
//! model decides what the step does); the pool opens a fresh connection for
//! the next call. Each call is one statement (a conflict's holder is read in
//! a second one), so nothing is half-written.

use crate::store::{ClaimRecord, ClaimRequest, ClaimStore, ClaimStoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::time::Duration;
use tokio_postgres::{NoTls, Row};

/// The schema version this build writes; older versions are migrated on open.
pub const SCHEMA_VERSION: i32 = 1;

/// Arbitrary, fixed key of the advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x6272_6169_6400_0001;

/// Migrations, in order: `MIGRATIONS[n]` takes the schema from version n to n + 1.
const MIGRATIONS: &[&str] = &["
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
"];

/// The database's clock in milliseconds since the Unix epoch (SQL expression).
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const COLUMNS: &str = "claim_id, work_item, run_id, trace_id, span_id, step, owner, \
                       claimed_at_ms, expires_at_ms, metadata";

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
    /// The URL with any password removed, for messages.
    shown: String,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool").field("url", &self.shown).finish()
    }
}

/// `url` with its password (if any) replaced by `***`.
fn redact(url: &str) -> String {
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
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`),
    /// then creates or migrates braid's tables.
    pub async fn open(url: &str, max_connections: usize) -> Result<Self, PostgresError> {
        let shown = redact(url);
        let config: tokio_postgres::Config = url.parse().map_err(|e| PostgresError::BadUrl {
            url: shown.clone(),
            reason: format!("{e}"),
        })?;
        let mut config = config;
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| PostgresError::BadUrl {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
        let pg = PgPool { pool, shown };
        pg.migrate().await?;
        Ok(pg)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> PostgresError {
        PostgresError::Unavailable {
            url: self.shown.clone(),
            reason: e.to_string(),
        }
    }

    /// Brings the schema to [`SCHEMA_VERSION`], one migration per
    /// transaction, holding an advisory lock so concurrent hosts do not race.
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
                .map_err(|e| self.unavailable(format!("migration {from} -> {}: {e}", from + 1)))?;
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
            .map_err(|e| ClaimStoreError::Unavailable(format!("{}: {e}", self.shown)))
    }
}

/// Claims in PostgreSQL; any number of hosts may share one database.
#[derive(Debug, Clone)]
pub struct PostgresClaimStore {
    pg: PgPool,
}

impl PostgresClaimStore {
    pub fn new(pg: PgPool) -> Self {
        PostgresClaimStore { pg }
    }
}

fn to_ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn row_to_claim(r: &Row) -> ClaimRecord {
    ClaimRecord {
        claim_id: r.get(0),
        work_item: r.get(1),
        run_id: r.get(2),
        trace_id: r.get(3),
        span_id: r.get(4),
        step: r.get(5),
        owner: r.get(6),
        claimed_at_ms: to_ms(r.get(7)),
        expires_at_ms: to_ms(r.get(8)),
        metadata: r.get(9),
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

fn unavailable(e: tokio_postgres::Error) -> ClaimStoreError {
    ClaimStoreError::Unavailable(format!("PostgreSQL: {e}"))
}

#[async_trait::async_trait]
impl ClaimStore for PostgresClaimStore {
    async fn claim(&self, r: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError> {
        let client = self.pg.client().await?;
        let claim_id = crate::store::new_claim_id();
        // One statement: take the item if it is free or its lease ran out
        // (by the database's clock); otherwise it returns nothing.
        let insert = format!(
            "WITH now AS (SELECT {DB_NOW_MS} AS ms)
             INSERT INTO braid_claims ({COLUMNS})
             SELECT $1, $2, $3, $4, $5, $6, $7, now.ms, now.ms + $8, $9 FROM now
             ON CONFLICT (work_item) DO UPDATE SET
               claim_id = excluded.claim_id, run_id = excluded.run_id,
               trace_id = excluded.trace_id, span_id = excluded.span_id,
               step = excluded.step, owner = excluded.owner,
               claimed_at_ms = excluded.claimed_at_ms,
               expires_at_ms = excluded.expires_at_ms, metadata = excluded.metadata
             WHERE braid_claims.expires_at_ms <= excluded.claimed_at_ms
             RETURNING {COLUMNS}"
        );
        let holder = format!("SELECT {COLUMNS} FROM braid_claims WHERE work_item = $1");
        let lease = lease_ms(r.lease);
        // A holder that releases between the two statements leaves nothing
        // to report: try again (bounded).
        for _ in 0..3 {
            let granted = client
                .query_opt(
                    &insert,
                    &[
                        &claim_id,
                        &r.work_item,
                        &r.run_id,
                        &r.trace_id,
                        &r.span_id,
                        &r.step,
                        &r.owner,
                        &lease,
                        &r.metadata,
                    ],
                )
                .await
                .map_err(unavailable)?;
            if let Some(row) = granted {
                return Ok(row_to_claim(&row));
            }
            if let Some(row) = client
                .query_opt(&holder, &[&r.work_item])
                .await
                .map_err(unavailable)?
            {
                return Err(ClaimStoreError::Conflict(Box::new(row_to_claim(&row))));
            }
        }
        Err(ClaimStoreError::Unavailable(format!(
            "work item `{}` changed hands too often to claim",
            r.work_item
        )))
    }

    async fn renew(
        &self,
        claim_id: &str,
        run_id: &str,
        lease: Duration,
    ) -> Result<ClaimRecord, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!(
            "WITH now AS (SELECT {DB_NOW_MS} AS ms)
             UPDATE braid_claims SET expires_at_ms = now.ms + $3 FROM now
             WHERE claim_id = $1 AND run_id = $2 AND expires_at_ms > now.ms
             RETURNING {}",
            COLUMNS
                .split(", ")
                .map(|c| format!("braid_claims.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        client
            .query_opt(&sql, &[&claim_id, &run_id, &lease_ms(lease)])
            .await
            .map_err(unavailable)?
            .map(|row| row_to_claim(&row))
            .ok_or_else(|| ClaimStoreError::NotHeld(claim_id.to_string()))
    }

    async fn release(&self, claim_id: &str, run_id: &str) -> Result<(), ClaimStoreError> {
        let client = self.pg.client().await?;
        let n = client
            .execute(
                "DELETE FROM braid_claims WHERE claim_id = $1 AND run_id = $2",
                &[&claim_id, &run_id],
            )
            .await
            .map_err(unavailable)?;
        if n == 0 {
            return Err(ClaimStoreError::NotHeld(claim_id.to_string()));
        }
        Ok(())
    }

    async fn release_all(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!("DELETE FROM braid_claims WHERE run_id = $1 RETURNING {COLUMNS}");
        let rows = client.query(&sql, &[&run_id]).await.map_err(unavailable)?;
        Ok(rows.iter().map(row_to_claim).collect())
    }

    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM braid_claims ORDER BY claimed_at_ms, work_item");
        let rows = client.query(&sql, &[]).await.map_err(unavailable)?;
        Ok(rows.iter().map(row_to_claim).collect())
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
