//! The run journal in PostgreSQL: what lets several hosts share runs.
//!
//! Tables `braid_runs`, `braid_journal`, `braid_reports` and
//! `braid_idempotency` (schema version 4). A run's lease is a time by the
//! database's clock; its owner renews it, and any host may take over a run
//! whose lease ran out with one conditional UPDATE (rows locked with
//! `SKIP LOCKED`), so of several hosts recovering at once exactly one gets
//! each run.
//!
//! Every call is safe to repeat and is repeated through connection loss for
//! up to [`RETRY_BUDGET`](super::RETRY_BUDGET): a run's start is an insert
//! that ignores a duplicate, an entry carries a random key stored once, a
//! terminal record only moves a `running` run. So a server restart delays
//! writes; it neither loses nor doubles them.

mod waits;

use super::{CallError, DB_NOW_MS, PgPool, with_retry};
use crate::journal::{
    AbandonedRun, CancelAsked, JournalEntry, JournalError, OwnerIsDead, Pruned, ReportQuery,
    ReportSummary, Retention, RunFence, RunJournal, RunRecord, RunStart, Signal, SignalSent,
    StoredReport, Unsuspend, UnsuspendAsked,
};
use std::time::Duration;

/// The run journal of every host that shares one database.
#[derive(Debug, Clone)]
pub struct PostgresJournal {
    pg: PgPool,
}

impl PostgresJournal {
    pub fn new(pg: PgPool) -> Self {
        PostgresJournal { pg }
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

fn to_ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// This host's clock, as stored (milliseconds since the Unix epoch).
fn now() -> i64 {
    i64::try_from(crate::store::now_ms()).unwrap_or(i64::MAX)
}

fn journal_error(e: CallError) -> JournalError {
    JournalError::Unavailable(e.message)
}

fn json_error(e: serde_json::Error) -> JournalError {
    JournalError::Unavailable(format!("journal entry is not valid JSON: {e}"))
}

impl PostgresJournal {
    /// One statement with `params`, repeated through connection loss; the
    /// number of rows it changed.
    async fn execute(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, JournalError> {
        with_retry(what, || async {
            let client = self.pg.pool.get().await?;
            let sql = client.prepare_cached(sql).await?;
            Ok(client.execute(&sql, params).await?)
        })
        .await
        .map_err(journal_error)
    }

    /// One query with `params`, repeated through connection loss.
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, JournalError> {
        with_retry(what, || async {
            let client = self.pg.pool.get().await?;
            let sql = client.prepare_cached(sql).await?;
            Ok(client.query(&sql, params).await?)
        })
        .await
        .map_err(journal_error)
    }

    /// A run just taken over by `new_owner`, from a take-over's row
    /// (`run_id, previous owner, start, epoch, started_at_ms`), its journal
    /// read after the new epoch committed: every entry the old owner got
    /// in is there, and no later one can be (`append`).
    async fn taken_run(
        &self,
        row: &tokio_postgres::Row,
        new_owner: &str,
    ) -> Result<AbandonedRun, JournalError> {
        let run_id: String = row.get(0);
        let start: RunStart = serde_json::from_str(row.get::<_, &str>(2)).map_err(json_error)?;
        let entries = self.read_entries(&run_id).await?;
        Ok(AbandonedRun {
            start,
            previous_owner: row.get(1),
            fence: RunFence {
                run_id,
                owner: new_owner.to_string(),
                epoch: u64::try_from(row.get::<_, i64>(3)).unwrap_or(0),
            },
            started_at_ms: to_ms(row.get(4)),
            entries,
            woken: false,
            cancel_reason: None,
            unsuspend: None,
        })
    }

    async fn read_entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        let rows = self
            .query(
                "reading a run's journal",
                "SELECT entry FROM braid_journal WHERE run_id = $1 ORDER BY seq",
                &[&run_id],
            )
            .await?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).map_err(json_error))
            .collect()
    }
}

#[async_trait::async_trait]
impl RunJournal for PostgresJournal {
    async fn start(&self, start: &RunStart, lease: Duration) -> Result<RunFence, JournalError> {
        let json = serde_json::to_string(start).map_err(json_error)?;
        let sql = format!(
            "INSERT INTO braid_runs (run_id, workflow, trace_id, start, owner, lease_expires_ms, status, started_at_ms)
             SELECT $1, $2, $3, $4, $5, now.ms + $6, 'running', now.ms FROM (SELECT {DB_NOW_MS} AS ms) now
             ON CONFLICT (run_id) DO NOTHING"
        );
        self.execute(
            "journaling a run's start",
            &sql,
            &[
                &start.run_id,
                &start.workflow,
                &start.trace_id,
                &json,
                &start.owner,
                &lease_ms(lease),
            ],
        )
        .await?;
        Ok(RunFence::first(&start.run_id, &start.owner))
    }

    async fn append(&self, fence: &RunFence, entry: JournalEntry) -> Result<(), JournalError> {
        let json = serde_json::to_string(&entry).map_err(json_error)?;
        let key = hex::encode(rand::random::<[u8; 16]>());
        // The run's row is share-locked while the entry is inserted: a
        // take-over (which updates the row) waits for this insert to commit,
        // then reads it; an insert after a take-over finds the new epoch
        // (the lock re-reads the row) and inserts nothing.
        let sql = format!(
            "WITH owned AS (
               SELECT run_id FROM braid_runs
               WHERE run_id = $1 AND owner = $4 AND epoch = $5 AND status = 'running'
               FOR SHARE)
             INSERT INTO braid_journal (run_id, entry_key, at_ms, entry)
             SELECT run_id, $2, {DB_NOW_MS}, $3 FROM owned
             ON CONFLICT (entry_key) DO NOTHING"
        );
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &fence.run_id,
            &key,
            &json,
            &fence.owner,
            &fence.stored_epoch(),
        ];
        if self.execute("journaling an entry", &sql, &args).await? == 1 {
            return Ok(());
        }
        // Nothing inserted: refused by the fence, or a first try whose
        // answer was lost already stored this very entry.
        let stored = self
            .query(
                "reading a journal entry",
                "SELECT 1 FROM braid_journal WHERE entry_key = $1",
                &[&key],
            )
            .await?;
        if stored.is_empty() {
            Err(fence.refused())
        } else {
            Ok(())
        }
    }

    async fn append_all(
        &self,
        fence: &RunFence,
        entries: Vec<JournalEntry>,
    ) -> Result<(), JournalError> {
        if entries.is_empty() {
            return Ok(());
        }
        let json: Vec<String> = entries
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<_, _>>()
            .map_err(json_error)?;
        let keys: Vec<String> = json
            .iter()
            .map(|_| hex::encode(rand::random::<[u8; 16]>()))
            .collect();
        // As `append`, the entries in one statement, inserted in order
        // (their `seq` follows it): all of them, or none.
        let sql = format!(
            "WITH owned AS (
               SELECT run_id FROM braid_runs
               WHERE run_id = $1 AND owner = $4 AND epoch = $5 AND status = 'running'
               FOR SHARE)
             INSERT INTO braid_journal (run_id, entry_key, at_ms, entry)
             SELECT owned.run_id, e.key, {DB_NOW_MS}, e.entry
             FROM owned, unnest($2::text[], $3::text[]) WITH ORDINALITY AS e(key, entry, n)
             ORDER BY e.n
             ON CONFLICT (entry_key) DO NOTHING"
        );
        let args: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &fence.run_id,
            &keys,
            &json,
            &fence.owner,
            &fence.stored_epoch(),
        ];
        if self.execute("journaling entries", &sql, &args).await? == keys.len() as u64 {
            return Ok(());
        }
        // Nothing inserted: refused by the fence, or a first try whose
        // answer was lost already stored them.
        let stored = self
            .query(
                "reading a journal entry",
                "SELECT 1 FROM braid_journal WHERE entry_key = $1",
                &[&keys[0]],
            )
            .await?;
        if stored.is_empty() {
            Err(fence.refused())
        } else {
            Ok(())
        }
    }

    async fn finish(
        &self,
        fence: &RunFence,
        status: &str,
        degraded: bool,
        error: Option<String>,
        report: Option<StoredReport>,
    ) -> Result<bool, JournalError> {
        // One statement, so one transaction: the end and the report are
        // committed together (the report only if the end moved the run).
        let (summary, json) = match &report {
            Some(r) => (Some(&r.summary), Some(r.json.as_str())),
            None => (None, None),
        };
        let started_at = summary.map(|s| i64::try_from(s.started_at_ms).unwrap_or(i64::MAX));
        let sql = format!(
            "WITH ended AS (
               UPDATE braid_runs SET status = $3, degraded = $4, error = $5, finished_at_ms = {DB_NOW_MS}
               WHERE run_id = $1 AND owner = $2 AND epoch = $9 AND status = 'running'
               RETURNING run_id, workflow, trace_id),
             stored AS (
               INSERT INTO braid_reports (run_id, workflow, trace_id, outcome, started_at_ms, duration_ms, report)
               SELECT run_id, workflow, trace_id, $3, $6::bigint, $7::float8, $8::text FROM ended WHERE $8::text IS NOT NULL
               ON CONFLICT (run_id) DO UPDATE SET outcome = excluded.outcome,
                 started_at_ms = excluded.started_at_ms, duration_ms = excluded.duration_ms,
                 report = excluded.report
               RETURNING 1)
             SELECT (SELECT count(*) FROM ended), (SELECT count(*) FROM stored)"
        );
        let rows = self
            .query(
                "journaling a run's end",
                &sql,
                &[
                    &fence.run_id,
                    &fence.owner,
                    &status,
                    &degraded,
                    &error,
                    &started_at,
                    &summary.map(|s| s.duration_ms),
                    &json,
                    &fence.stored_epoch(),
                ],
            )
            .await?;
        if rows.first().is_some_and(|r| r.get::<_, i64>(0) == 1) {
            return Ok(true);
        }
        // Nothing moved: another host took the run over, or a first try
        // whose answer was lost already wrote this very end (and report).
        let rows = self
            .query(
                "reading a run's end",
                "SELECT owner, status, epoch FROM braid_runs WHERE run_id = $1",
                &[&fence.run_id],
            )
            .await?;
        Ok(rows.first().is_some_and(|r| {
            r.get::<_, &str>(0) == fence.owner
                && r.get::<_, &str>(1) == status
                && r.get::<_, i64>(2) == fence.stored_epoch()
        }))
    }

    /// One statement for every lease (the fences as arrays), on the lease
    /// pool, tried once: the next renewal comes soon.
    async fn renew_leases(
        &self,
        fences: &[RunFence],
        lease: Duration,
    ) -> Result<Vec<bool>, JournalError> {
        let sql = format!(
            "UPDATE braid_runs r SET lease_expires_ms = {DB_NOW_MS} + $4
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS f(run_id, owner, epoch)
             WHERE r.run_id = f.run_id AND r.owner = f.owner AND r.epoch = f.epoch
               AND r.status = 'running'
             RETURNING r.run_id, r.epoch"
        );
        let run_ids: Vec<&str> = fences.iter().map(|f| f.run_id.as_str()).collect();
        let owners: Vec<&str> = fences.iter().map(|f| f.owner.as_str()).collect();
        let epochs: Vec<i64> = fences.iter().map(RunFence::stored_epoch).collect();
        let call = async {
            let client = self.pg.leases.get().await?;
            let sql = client.prepare_cached(&sql).await?;
            let rows = client
                .query(&sql, &[&run_ids, &owners, &epochs, &lease_ms(lease)])
                .await?;
            let renewed: std::collections::HashSet<(&str, i64)> = rows
                .iter()
                .map(|r| (r.get::<_, &str>(0), r.get::<_, i64>(1)))
                .collect();
            Ok::<_, CallError>(
                fences
                    .iter()
                    .map(|f| renewed.contains(&(f.run_id.as_str(), f.stored_epoch())))
                    .collect(),
            )
        };
        call.await.map_err(journal_error)
    }

    async fn take_over_abandoned(
        &self,
        new_owner: &str,
        lease: Duration,
        is_dead: Option<OwnerIsDead>,
        running_here: &[String],
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        // Owners that `is_dead` knows are gone: their runs are taken at
        // once, without waiting for the lease.
        let mut dead: Vec<String> = Vec::new();
        if let Some(is_dead) = is_dead {
            let owners = self
                .query(
                    "listing run owners",
                    "SELECT DISTINCT owner FROM braid_runs WHERE status = 'running' AND owner <> $1",
                    &[&new_owner],
                )
                .await?;
            dead = owners
                .iter()
                .map(|r| r.get::<_, String>(0))
                .filter(|o| is_dead(o))
                .collect();
        }
        // One statement: lock the abandoned runs no other recoverer holds
        // (SKIP LOCKED), move them to `new_owner`, return each with its
        // previous owner. This host's own runs count unless they still run
        // here (`running_here`). A row another host took over meanwhile no longer
        // matches once locked, so it is not taken twice.
        let sql = format!(
            "WITH now AS (SELECT {DB_NOW_MS} AS ms),
             abandoned AS (
               SELECT run_id, owner FROM braid_runs, now
               WHERE status = 'running'
                 AND (owner <> $1 OR run_id <> ALL($4))
                 AND (lease_expires_ms <= now.ms OR owner = ANY($3))
               FOR UPDATE OF braid_runs SKIP LOCKED)
             UPDATE braid_runs r SET owner = $1, lease_expires_ms = now.ms + $2, epoch = r.epoch + 1
             FROM abandoned, now
             WHERE r.run_id = abandoned.run_id
             RETURNING r.run_id, abandoned.owner, r.start, r.epoch, r.started_at_ms"
        );
        // Not repeated: had the commit happened before the connection broke,
        // a second try would find nothing and the runs would sit owned by
        // this host until its lease on them ran out; the next pass gets them.
        let rows = async {
            let client = self.pg.leases.get().await?;
            Ok::<_, CallError>(
                client
                    .query(&sql, &[&new_owner, &lease_ms(lease), &dead, &running_here])
                    .await?,
            )
        }
        .await
        .map_err(journal_error)?;
        let mut taken = Vec::new();
        for row in rows {
            taken.push(self.taken_run(&row, new_owner).await?);
        }
        Ok(taken)
    }

    async fn report(&self, run_id: &str) -> Result<Option<String>, JournalError> {
        let rows = self
            .query(
                "reading a run report",
                "SELECT report FROM braid_reports WHERE run_id = $1",
                &[&run_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn recent_reports(&self, query: ReportQuery) -> Result<Vec<ReportSummary>, JournalError> {
        let after_ms = query
            .after
            .as_ref()
            .map(|c| i64::try_from(c.started_at_ms).unwrap_or(i64::MAX));
        let after_run = query.after.as_ref().map(|c| c.run_id.as_str());
        let rows = self
            .query(
                "listing run reports",
                "SELECT p.run_id, p.workflow, p.trace_id, p.outcome, p.started_at_ms, p.duration_ms,
                        COALESCE(r.degraded, false)
                 FROM braid_reports p LEFT JOIN braid_runs r ON r.run_id = p.run_id
                 WHERE ($1::TEXT IS NULL OR p.workflow = $1) AND ($2::TEXT IS NULL OR p.outcome = $2)
                   AND ($3::TEXT IS NULL OR p.trace_id = $3)
                   AND ($4::BIGINT IS NULL OR p.started_at_ms < $4 OR (p.started_at_ms = $4 AND p.run_id > $5))
                 ORDER BY p.started_at_ms DESC, p.run_id LIMIT $6",
                &[
                    &query.workflow,
                    &query.outcome,
                    &query.trace_id,
                    &after_ms,
                    &after_run,
                    &i64::try_from(query.limit).unwrap_or(i64::MAX),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ReportSummary {
                run_id: r.get(0),
                workflow: r.get(1),
                trace_id: r.get(2),
                outcome: r.get(3),
                started_at_ms: to_ms(r.get(4)),
                duration_ms: r.get(5),
                degraded: r.get(6),
            })
            .collect())
    }

    async fn running_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        let sql = format!(
            "{SELECT_RUNS} WHERE r.status = 'running' ORDER BY r.started_at_ms, r.run_id LIMIT $1"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query("listing running runs", &sql, &[&limit]).await?;
        Ok(rows.iter().map(run_record).collect())
    }

    async fn waiting_runs(&self, limit: usize) -> Result<Vec<RunRecord>, JournalError> {
        let sql = format!(
            "{SELECT_RUNS} WHERE r.status IN ('waiting', 'suspended') ORDER BY r.wake_at_ms, r.run_id LIMIT $1"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query("listing waiting runs", &sql, &[&limit]).await?;
        Ok(rows.iter().map(run_record).collect())
    }

    async fn runs_of_trace(
        &self,
        trace_id: &str,
        limit: usize,
    ) -> Result<Vec<RunRecord>, JournalError> {
        let sql = format!(
            "{SELECT_RUNS} WHERE r.trace_id = $1 ORDER BY r.started_at_ms, r.run_id LIMIT $2"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query("listing a trace's runs", &sql, &[&trace_id, &limit])
            .await?;
        Ok(rows.iter().map(run_record).collect())
    }

    async fn idempotent_run(
        &self,
        workflow: &str,
        key: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        let rows = self
            .query(
                "reading an idempotency key",
                "SELECT body_sha256, run_id FROM braid_idempotency WHERE workflow = $1 AND key = $2",
                &[&workflow, &key],
            )
            .await?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    async fn reserve_idempotent(
        &self,
        workflow: &str,
        key: &str,
        body_sha256: &str,
        run_id: &str,
    ) -> Result<Option<(String, String)>, JournalError> {
        // Insert, or read who has it; a retried insert that had committed
        // reads back this very run, which counts as reserved.
        let sql = format!(
            "WITH inserted AS (
               INSERT INTO braid_idempotency (workflow, key, body_sha256, run_id, at_ms)
               VALUES ($1, $2, $3, $4, {DB_NOW_MS}) ON CONFLICT (workflow, key) DO NOTHING
               RETURNING body_sha256, run_id)
             SELECT body_sha256, run_id FROM inserted
             UNION ALL
             SELECT body_sha256, run_id FROM braid_idempotency
             WHERE workflow = $1 AND key = $2 AND NOT EXISTS (SELECT 1 FROM inserted)"
        );
        let rows = self
            .query(
                "reserving an idempotency key",
                &sql,
                &[&workflow, &key, &body_sha256, &run_id],
            )
            .await?;
        let mut found = rows.first().map(|r| (r.get(0), r.get(1)));
        if found.is_none() {
            // Lost a race with an insert committed after this statement's
            // snapshot: a new statement sees it.
            found = self.idempotent_run(workflow, key).await?;
        }
        let (sha, holder): (String, String) =
            found.ok_or_else(|| JournalError::Unavailable("idempotency key vanished".into()))?;
        Ok((holder != run_id).then_some((sha, holder)))
    }

    async fn release_idempotent(
        &self,
        workflow: &str,
        key: &str,
        run_id: &str,
    ) -> Result<bool, JournalError> {
        // Safe to repeat: a second try deletes nothing, and says so.
        let n = self
            .execute(
                "releasing an idempotency key",
                "DELETE FROM braid_idempotency WHERE workflow = $1 AND key = $2 AND run_id = $3
                 AND NOT EXISTS (SELECT 1 FROM braid_runs WHERE run_id = $3)",
                &[&workflow, &key, &run_id],
            )
            .await?;
        Ok(n == 1)
    }

    async fn prune(&self, retention: Retention, batch: usize) -> Result<Pruned, JournalError> {
        // One statement (so one transaction), its rows locked `SKIP LOCKED`
        // so two hosts pruning at once take different runs; times by the
        // database's clock. Safe to repeat: a second try finds less to do.
        let sql = format!(
            "WITH doomed AS (
               SELECT run_id FROM braid_runs
               WHERE status NOT IN ('running', 'waiting', 'suspended')
                 AND (COALESCE(finished_at_ms, started_at_ms) < {DB_NOW_MS} - $1
                      OR run_id NOT IN (
                        SELECT run_id FROM braid_runs WHERE status NOT IN ('running', 'waiting', 'suspended')
                        ORDER BY COALESCE(finished_at_ms, started_at_ms) DESC, run_id DESC
                        LIMIT $2))
               ORDER BY COALESCE(finished_at_ms, started_at_ms), run_id
               LIMIT $3
               FOR UPDATE SKIP LOCKED),
             e AS (DELETE FROM braid_journal WHERE run_id IN (SELECT run_id FROM doomed) RETURNING 1),
             r AS (DELETE FROM braid_reports WHERE run_id IN (SELECT run_id FROM doomed) RETURNING 1),
             k AS (DELETE FROM braid_idempotency WHERE run_id IN (SELECT run_id FROM doomed) RETURNING 1),
             s AS (DELETE FROM braid_signals WHERE run_id IN (SELECT run_id FROM doomed) RETURNING 1),
             never AS (DELETE FROM braid_idempotency i WHERE i.at_ms < {DB_NOW_MS} - $1
                        AND NOT EXISTS (SELECT 1 FROM braid_runs WHERE run_id = i.run_id) RETURNING 1),
             d AS (DELETE FROM braid_runs WHERE run_id IN (SELECT run_id FROM doomed) RETURNING 1)
             SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM e), (SELECT count(*) FROM r),
                    (SELECT count(*) FROM k) + (SELECT count(*) FROM never)"
        );
        let age = lease_ms(retention.max_age);
        let keep = i64::try_from(retention.max_runs).unwrap_or(i64::MAX);
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let rows = self
            .query("pruning finished runs", &sql, &[&age, &keep, &batch])
            .await?;
        let count = |i: usize| rows.first().map_or(0, |row| to_ms(row.get::<_, i64>(i)));
        Ok(Pruned {
            runs: count(0),
            entries: count(1),
            reports: count(2),
            idempotency_keys: count(3),
            claims: 0,
        })
    }

    async fn run(&self, run_id: &str) -> Result<Option<RunRecord>, JournalError> {
        let sql = format!("{SELECT_RUNS} WHERE r.run_id = $1");
        let rows = self.query("reading a run", &sql, &[&run_id]).await?;
        Ok(rows.first().map(run_record))
    }

    async fn park(
        &self,
        fence: &RunFence,
        wake_at_ms: u64,
        signals_seen: u64,
        waiting_for: &str,
    ) -> Result<bool, JournalError> {
        waits::park(self, fence, wake_at_ms, signals_seen, waiting_for).await
    }

    async fn take_over_waiting(
        &self,
        new_owner: &str,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<AbandonedRun>, JournalError> {
        waits::take_over_waiting(self, new_owner, lease, limit).await
    }

    async fn send_signal(
        &self,
        run_id: &str,
        name: &str,
        payload: &str,
        traceparent: &str,
    ) -> Result<SignalSent, JournalError> {
        waits::send_signal(self, run_id, name, payload, traceparent).await
    }

    async fn signals(&self, run_id: &str) -> Result<Vec<Signal>, JournalError> {
        waits::signals(self, run_id).await
    }

    async fn run_start(&self, run_id: &str) -> Result<Option<RunStart>, JournalError> {
        waits::run_start(self, run_id).await
    }

    async fn request_cancel(
        &self,
        run_id: &str,
        reason: &str,
    ) -> Result<CancelAsked, JournalError> {
        waits::request_cancel(self, run_id, reason).await
    }

    async fn cancel_requests(
        &self,
        run_ids: &[String],
    ) -> Result<Vec<(String, String)>, JournalError> {
        waits::cancel_requests(self, run_ids).await
    }

    async fn suspend(
        &self,
        fence: &RunFence,
        deadline: u64,
        why: &str,
    ) -> Result<bool, JournalError> {
        waits::suspend(self, fence, deadline, why).await
    }

    async fn request_unsuspend(
        &self,
        run_id: &str,
        ask: &Unsuspend,
    ) -> Result<UnsuspendAsked, JournalError> {
        waits::request_unsuspend(self, run_id, ask).await
    }

    async fn entries(&self, run_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        self.read_entries(run_id).await
    }

    async fn ping(&self) -> Result<(), JournalError> {
        // On the lease pool, so a busy main pool does not read as "down".
        let call = async {
            let client = self.pg.leases.get().await?;
            client.simple_query("SELECT 1").await?;
            Ok::<_, CallError>(())
        };
        match tokio::time::timeout(Duration::from_secs(2), call).await {
            Ok(answer) => answer.map_err(journal_error),
            Err(_) => Err(JournalError::Unavailable(format!(
                "{}: no answer within 2 s",
                self.pg.shown
            ))),
        }
    }

    async fn runs(&self) -> Result<Vec<RunRecord>, JournalError> {
        let sql = format!("{SELECT_RUNS} ORDER BY r.started_at_ms, r.run_id");
        let rows = self.query("listing runs", &sql, &[]).await?;
        Ok(rows.iter().map(run_record).collect())
    }
}

/// Runs as [`RunRecord`]s (`r` is `braid_runs`), see [`run_record`].
const SELECT_RUNS: &str =
    "SELECT r.run_id, r.workflow, r.trace_id, r.status, r.degraded, r.error, r.owner,
        r.started_at_ms, r.finished_at_ms,
        (SELECT COUNT(*) FROM braid_journal j WHERE j.run_id = r.run_id),
        r.waiting_for, r.waiting_since_ms, r.wake_at_ms
 FROM braid_runs r";

fn run_record(r: &tokio_postgres::Row) -> RunRecord {
    RunRecord {
        run_id: r.get(0),
        workflow: r.get(1),
        trace_id: r.get(2),
        status: r.get(3),
        degraded: r.get(4),
        error: r.get(5),
        owner: r.get(6),
        started_at_ms: to_ms(r.get(7)),
        finished_at_ms: r.get::<_, Option<i64>>(8).map(to_ms),
        entries: usize::try_from(r.get::<_, i64>(9)).unwrap_or(0),
        waiting_for: r.get(10),
        waiting_since_ms: r.get::<_, Option<i64>>(11).map(to_ms),
        wake_at_ms: r.get::<_, Option<i64>>(12).map(to_ms),
    }
}
