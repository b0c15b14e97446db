//! Claims in PostgreSQL: one row per held work item in `braid_claims`.
//!
//! Each call is one statement (a conflict's holder is read in a second one),
//! so nothing is half-written; every lease time comes from the database's
//! clock. A lost connection is [`ClaimStoreError::Unavailable`] at once (the
//! failure model decides whether the step retries), except for
//! `release_all`, which tries again for a while.

use super::{DB_NOW_MS, PgPool, with_retry};
use crate::store::{ClaimRecord, ClaimRequest, ClaimStore, ClaimStoreError};
use std::time::Duration;
use tokio_postgres::Row;

const COLUMNS: &str = "claim_id, work_item, run_id, trace_id, span_id, step, owner, \
                       claimed_at_ms, expires_at_ms, metadata, workflow";

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
        workflow: r.get(10),
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

fn unavailable(e: tokio_postgres::Error) -> ClaimStoreError {
    ClaimStoreError::Unavailable(format!("PostgreSQL: {}", super::chain(&e)))
}

#[async_trait::async_trait]
impl ClaimStore for PostgresClaimStore {
    async fn claim(&self, r: ClaimRequest) -> Result<ClaimRecord, ClaimStoreError> {
        let client = self.pg.client().await?;
        let claim_id = crate::store::new_claim_id();
        // One statement: take the item if it is free, its lease ran out (by
        // the database's clock) or the same run holds it (a retried or
        // resumed step claims again); otherwise it returns nothing.
        let insert = format!(
            "WITH now AS (SELECT {DB_NOW_MS} AS ms)
             INSERT INTO braid_claims ({COLUMNS})
             SELECT $1, $2, $3, $4, $5, $6, $7, now.ms, now.ms + $8, $9, $10 FROM now
             ON CONFLICT (work_item) DO UPDATE SET
               claim_id = excluded.claim_id, run_id = excluded.run_id,
               trace_id = excluded.trace_id, span_id = excluded.span_id,
               step = excluded.step, owner = excluded.owner,
               claimed_at_ms = excluded.claimed_at_ms,
               expires_at_ms = excluded.expires_at_ms, metadata = excluded.metadata,
               workflow = excluded.workflow
             WHERE braid_claims.expires_at_ms <= excluded.claimed_at_ms
                OR braid_claims.run_id = excluded.run_id
             RETURNING {COLUMNS}"
        );
        let holder = format!("SELECT {COLUMNS} FROM braid_claims WHERE work_item = $1");
        let lease = lease_ms(r.lease);
        // A holder that releases between the two statements leaves nothing
        // to report: try again (bounded).
        // Prepared once per connection, not on every call.
        let insert = client.prepare_cached(&insert).await.map_err(unavailable)?;
        let holder = client.prepare_cached(&holder).await.map_err(unavailable)?;
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
                        &r.workflow,
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
             RETURNING {COLUMNS}"
        );
        let sql = client.prepare_cached(&sql).await.map_err(unavailable)?;
        client
            .query_opt(&sql, &[&claim_id, &run_id, &lease_ms(lease)])
            .await
            .map_err(unavailable)?
            .map(|row| row_to_claim(&row))
            .ok_or_else(|| ClaimStoreError::NotHeld(claim_id.to_string()))
    }

    async fn release(&self, claim_id: &str, run_id: &str) -> Result<(), ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = client
            .prepare_cached("DELETE FROM braid_claims WHERE claim_id = $1 AND run_id = $2")
            .await
            .map_err(unavailable)?;
        let n = client
            .execute(&sql, &[&claim_id, &run_id])
            .await
            .map_err(unavailable)?;
        if n == 0 {
            return Err(ClaimStoreError::NotHeld(claim_id.to_string()));
        }
        Ok(())
    }

    /// Repeated through connection loss (see `with_retry`): it runs on a
    /// failed run's way out, where a claim left behind would block its
    /// work item until the lease ran out, and deleting twice is harmless.
    async fn release_all(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let sql = format!("DELETE FROM braid_claims WHERE run_id = $1 RETURNING {COLUMNS}");
        let rows = with_retry("releasing a run's claims", || async {
            let client = self.pg.pool.get().await?;
            let sql = client.prepare_cached(&sql).await?;
            Ok(client.query(&sql, &[&run_id]).await?)
        })
        .await
        .map_err(|e| ClaimStoreError::Unavailable(e.message))?;
        Ok(rows.iter().map(row_to_claim).collect())
    }

    async fn held_by(&self, run_id: &str) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM braid_claims WHERE run_id = $1 AND expires_at_ms > {DB_NOW_MS}
             ORDER BY claimed_at_ms, work_item"
        );
        let rows = client.query(&sql, &[&run_id]).await.map_err(unavailable)?;
        Ok(rows.iter().map(row_to_claim).collect())
    }

    async fn list(&self) -> Result<Vec<ClaimRecord>, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM braid_claims ORDER BY claimed_at_ms, work_item");
        let rows = client.query(&sql, &[]).await.map_err(unavailable)?;
        Ok(rows.iter().map(row_to_claim).collect())
    }

    async fn prune_expired(
        &self,
        max_age: Duration,
        max_kept: u64,
        batch: usize,
    ) -> Result<u64, ClaimStoreError> {
        let client = self.pg.client().await?;
        let sql = format!(
            "WITH now AS (SELECT {DB_NOW_MS} AS ms),
             expired AS (SELECT claim_id, expires_at_ms FROM braid_claims, now WHERE expires_at_ms <= now.ms),
             kept AS (SELECT claim_id FROM expired ORDER BY expires_at_ms DESC, claim_id DESC LIMIT $2),
             doomed AS (
               SELECT claim_id FROM expired, now
               WHERE expires_at_ms < now.ms - $1 OR claim_id NOT IN (SELECT claim_id FROM kept)
               ORDER BY expires_at_ms LIMIT $3)
             DELETE FROM braid_claims WHERE claim_id IN (SELECT claim_id FROM doomed)"
        );
        let sql = client.prepare_cached(&sql).await.map_err(unavailable)?;
        client
            .execute(
                &sql,
                &[
                    &lease_ms(max_age),
                    &i64::try_from(max_kept).unwrap_or(i64::MAX),
                    &i64::try_from(batch).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(unavailable)
    }

    /// The database's clock, which every lease here is measured by.
    async fn clock_ms(&self) -> Result<u64, ClaimStoreError> {
        let client = self.pg.client().await?;
        let row = client
            .query_one(&format!("SELECT {DB_NOW_MS}"), &[])
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }
}
