//! The store contracts (claims and the run journal), checked against every
//! backend: the embedded SQLite files and PostgreSQL (a private server
//! `make test` starts, see scripts/test-postgres.sh; each test gets a
//! database of its own).

use crate::support::{fresh_database, test_postgres};
use braid::journal::{
    JournalEntry, JournalError, ReportQuery, RunFence, RunJournal, RunStart, SqliteJournal,
};
use braid::postgres::{PgPool, PostgresClaimStore, PostgresError, PostgresJournal};
use braid::store::{ClaimRequest, ClaimStore, ClaimStoreError, SqliteClaimStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Backend {
    name: &'static str,
    store: Arc<dyn ClaimStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteClaimStore::open(dir.path()).expect("sqlite claims");
    let pg = PgPool::open(&fresh_database().await, 16)
        .await
        .expect("postgres opens");
    vec![
        Backend {
            name: "sqlite",
            store: Arc::new(sqlite),
            _dir: Some(dir),
        },
        Backend {
            name: "postgres",
            store: Arc::new(PostgresClaimStore::new(pg)),
            _dir: None,
        },
    ]
}

fn request(item: &str, run: &str, lease_ms: u64) -> ClaimRequest {
    ClaimRequest {
        work_item: item.into(),
        lease: Duration::from_millis(lease_ms),
        run_id: run.into(),
        trace_id: format!("{:0>32}", run.trim_start_matches("run-")),
        span_id: "00f067aa0ba902b7".into(),
        step: "claim_work".into(),
        owner: "host-a:1".into(),
        metadata: "{\"k\":1}".into(),
        workflow: "wf".into(),
    }
}

#[tokio::test]
async fn a_claim_is_granted_once_and_a_conflict_names_the_holder() {
    for b in backends().await {
        let s = &b.store;
        let first = s.claim(request("item-1", "run-1", 30_000)).await;
        let first = first.unwrap_or_else(|e| panic!("{}: first claim: {e}", b.name));
        assert_eq!(first.run_id, "run-1", "{}", b.name);
        assert_eq!(first.metadata, "{\"k\":1}", "{}", b.name);
        assert!(
            first.expires_at_ms >= first.claimed_at_ms + 29_000,
            "{}",
            b.name
        );
        // The store's clock (what `braid claims` compares expiries with) is
        // the one the lease was measured by.
        let clock = s.clock_ms().await.expect("clock");
        assert!(
            (first.claimed_at_ms..first.expires_at_ms).contains(&clock),
            "{}: {clock} outside the lease {}..{}",
            b.name,
            first.claimed_at_ms,
            first.expires_at_ms
        );

        match s.claim(request("item-1", "run-2", 30_000)).await {
            Err(ClaimStoreError::Conflict(holder)) => {
                assert_eq!(holder.claim_id, first.claim_id, "{}", b.name);
                assert_eq!(holder.run_id, "run-1", "{}", b.name);
                assert_eq!(holder.trace_id, first.trace_id, "{}", b.name);
            }
            other => panic!("{}: expected a conflict, got {other:?}", b.name),
        }
        // The holding run claiming again (a retried or resumed step) gets
        // it again, under a new grant; the old grant is gone.
        let again = s.claim(request("item-1", "run-1", 30_000)).await;
        let again = again.unwrap_or_else(|e| panic!("{}: claim again: {e}", b.name));
        assert_ne!(again.claim_id, first.claim_id, "{}", b.name);
        assert!(
            matches!(
                s.release(&first.claim_id, "run-1").await,
                Err(ClaimStoreError::NotHeld(_))
            ),
            "{}: the first grant was replaced",
            b.name
        );
        let first = again;
        // Only the holder may release it.
        assert!(
            matches!(
                s.release(&first.claim_id, "run-2").await,
                Err(ClaimStoreError::NotHeld(_))
            ),
            "{}",
            b.name
        );
        s.release(&first.claim_id, "run-1")
            .await
            .unwrap_or_else(|e| panic!("{}: release: {e}", b.name));
        let second = s.claim(request("item-1", "run-2", 30_000)).await;
        assert_eq!(
            second.map(|c| c.run_id).ok().as_deref(),
            Some("run-2"),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_cannot_be_renewed() {
    for b in backends().await {
        let s = &b.store;
        let old = s
            .claim(request("item-2", "run-1", 50))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let new = s
            .claim(request("item-2", "run-2", 30_000))
            .await
            .unwrap_or_else(|e| panic!("{}: take-over: {e}", b.name));
        assert_ne!(new.claim_id, old.claim_id, "{}", b.name);
        assert!(
            matches!(
                s.renew(&old.claim_id, "run-1", Duration::from_secs(30))
                    .await,
                Err(ClaimStoreError::NotHeld(_))
            ),
            "{}: the old holder renewed a claim it lost",
            b.name
        );
        let renewed = s
            .renew(&new.claim_id, "run-2", Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{}: renew: {e}", b.name));
        assert!(renewed.expires_at_ms > new.expires_at_ms, "{}", b.name);

        // release_all drops every claim of a run and says which.
        s.claim(request("item-3", "run-2", 30_000))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let mut released: Vec<String> = s
            .release_all("run-2")
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name))
            .into_iter()
            .map(|c| c.work_item)
            .collect();
        released.sort();
        assert_eq!(released, ["item-2", "item-3"], "{}", b.name);
        assert!(
            s.list().await.map(|l| l.is_empty()).unwrap_or(false),
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_get_exactly_one_grant_per_item() {
    for b in backends().await {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let s = Arc::clone(&b.store);
            tasks.spawn(async move {
                let item = format!("item-{}", i % 20);
                (
                    item.clone(),
                    s.claim(request(&item, &format!("run-{i}"), 30_000)).await,
                )
            });
        }
        let mut granted: HashMap<String, Vec<String>> = HashMap::new();
        let mut conflicts = 0;
        while let Some(joined) = tasks.join_next().await {
            let (item, result) = joined.expect("task");
            match result {
                Ok(c) => granted.entry(item).or_default().push(c.run_id),
                Err(ClaimStoreError::Conflict(holder)) => {
                    assert_eq!(holder.work_item, item, "{}", b.name);
                    conflicts += 1;
                }
                Err(e) => panic!("{}: {e}", b.name),
            }
        }
        assert_eq!(granted.len(), 20, "{}: every item granted", b.name);
        assert!(
            granted.values().all(|runs| runs.len() == 1),
            "{}: an item was granted twice: {granted:?}",
            b.name
        );
        assert_eq!(conflicts, 180, "{}", b.name);
        let held = b.store.list().await.expect("list");
        for c in held {
            assert_eq!(
                granted[&c.work_item],
                std::slice::from_ref(&c.run_id),
                "{}",
                b.name
            );
        }
    }
}

#[tokio::test]
async fn postgres_schema_is_created_once_versioned_and_a_newer_one_refused() {
    let url = fresh_database().await;
    // Several hosts opening at once migrate exactly once.
    let opens = (0..4).map(|_| PgPool::open(&url, 2));
    for r in futures_util::future::join_all(opens).await {
        r.expect("concurrent opens");
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query("SELECT version FROM braid_schema", &[])
        .await
        .expect("schema table")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [braid::postgres::SCHEMA_VERSION]);

    // A database left at version 1 (claims only, as braid 0.1 wrote it)
    // keeps its claims and gains the journal tables.
    client
        .batch_execute(
            "DROP TABLE braid_runs, braid_journal, braid_reports, braid_idempotency;
             UPDATE braid_schema SET version = 1;
             INSERT INTO braid_claims VALUES
               ('item-old', 'c-old', 'run-old', 't', 's', 'claim_work', 'h:1', 0, 9999999999999, '{}');",
        )
        .await
        .expect("downgrade to version 1");
    let pool = PgPool::open(&url, 2).await.expect("migrates 1 -> 2");
    let version: i32 = client
        .query_one("SELECT version FROM braid_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, braid::postgres::SCHEMA_VERSION);
    let held = PostgresClaimStore::new(pool.clone())
        .list()
        .await
        .expect("claims");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].claim_id, "c-old");
    let journal = PostgresJournal::new(pool);
    assert!(
        journal
            .runs()
            .await
            .expect("journal tables exist")
            .is_empty()
    );

    // A database at version 2 (braid before the trace pages) gains the
    // trace id indexes.
    let trace_indexes = || async {
        client
            .query(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE 'braid_%_trace' ORDER BY 1",
                &[],
            )
            .await
            .expect("indexes")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        trace_indexes().await,
        ["braid_reports_trace", "braid_runs_trace"]
    );
    client
        .batch_execute(
            "DROP INDEX braid_runs_trace, braid_reports_trace; UPDATE braid_schema SET version = 2;",
        )
        .await
        .expect("downgrade to version 2");
    PgPool::open(&url, 2).await.expect("migrates 2 -> 3");
    assert_eq!(
        trace_indexes().await,
        ["braid_reports_trace", "braid_runs_trace"]
    );
    // One an operator built beforehand (CONCURRENTLY) is kept.
    client
        .batch_execute("DROP INDEX braid_reports_trace; UPDATE braid_schema SET version = 2;")
        .await
        .expect("downgrade to version 2");
    client
        .batch_execute("CREATE INDEX CONCURRENTLY braid_reports_trace ON braid_reports(trace_id)")
        .await
        .expect("an index built beforehand");
    PgPool::open(&url, 2)
        .await
        .expect("migrates 2 -> 3 around it");
    assert_eq!(
        trace_indexes().await,
        ["braid_reports_trace", "braid_runs_trace"]
    );

    client
        .execute("UPDATE braid_schema SET version = 99", &[])
        .await
        .expect("bump");
    let err = PgPool::open(&url, 2).await.expect_err("refused");
    assert!(
        matches!(err, PostgresError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade braid"), "{err}");
}

/// `--durability` reaches every PostgreSQL connection as
/// `synchronous_commit`, beside options the URL sets itself.
#[tokio::test]
async fn postgres_durability_sets_synchronous_commit() {
    use braid::db::Durability;
    let url = fresh_database().await;
    let machine = PgPool::open_with(&url, 2, Durability::Machine)
        .await
        .expect("open");
    assert_eq!(machine.synchronous_commit().await.expect("show"), "on");
    let with_options = format!("{url}?options=-c%20statement_timeout%3D5000");
    let process = PgPool::open_with(&with_options, 2, Durability::Process)
        .await
        .expect("open");
    assert_eq!(process.synchronous_commit().await.expect("show"), "off");
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_without_the_password() {
    // Nothing listens on port 1.
    let err = PgPool::open("postgres://braid:hunter2@127.0.0.1:1/braid", 2)
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, PostgresError::Unavailable { .. }), "{text}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");

    let err = PgPool::open("mysql://nope", 2).await.expect_err("bad url");
    assert!(matches!(err, PostgresError::BadUrl { .. }), "{err}");
}

/// The CA that signed the test server's TLS certificate
/// (`scripts/test-postgres.sh ca` for the server of `url`).
fn test_server_ca(url: &str) -> String {
    let port = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .expect("a port in the test server's URL");
    test_postgres(port, &["ca"])
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_certificate() {
    let url = fresh_database().await;
    let ca = test_server_ca(&url);
    // The test server lets the role braid_tls in over TLS only.
    let tls_only = url.replacen("postgres@", "braid_tls@", 1);
    let err = PgPool::open(&tls_only, 2).await.expect_err("plain refused");
    assert!(err.to_string().contains("no encryption"), "{err}");
    // Verified TLS, reaching the server by address and by name (the
    // certificate carries both).
    for host in ["127.0.0.1", "localhost"] {
        let verified = format!(
            "{}?sslmode=verify-full&sslrootcert={ca}",
            tls_only.replacen("127.0.0.1", host, 1)
        );
        let pool = PgPool::open(&verified, 2)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let store = PostgresClaimStore::new(pool);
        let item = format!("tls-{host}");
        let claim = store.claim(request(&item, "run-tls", 30_000)).await;
        assert_eq!(claim.expect("a claim over TLS").work_item, item);
    }
    // `require` verifies too: without the test CA (Mozilla roots only) the
    // server's certificate is not trusted, so there is no connection.
    let err = PgPool::open(&format!("{tls_only}?sslmode=require"), 2)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, PostgresError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Modes braid does not offer are a bad URL, named.
    let err = PgPool::open(&format!("{tls_only}?sslmode=verify-ca"), 2)
        .await
        .expect_err("verify-ca");
    assert!(matches!(err, PostgresError::BadUrl { .. }), "{err}");
    assert!(
        err.to_string().contains("verify-ca is not supported"),
        "{err}"
    );
}

struct JournalBackend {
    name: &'static str,
    /// Four handles on one store, as four hosts would hold.
    hosts: Vec<Arc<dyn RunJournal>>,
    _dir: Option<tempfile::TempDir>,
}

async fn journal_backends() -> Vec<JournalBackend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = (0..4)
        .map(|_| Arc::new(SqliteJournal::open(dir.path()).expect("sqlite journal")) as _)
        .collect();
    let url = fresh_database().await;
    let mut pg: Vec<Arc<dyn RunJournal>> = Vec::new();
    for _ in 0..4 {
        let pool = PgPool::open(&url, 4).await.expect("postgres opens");
        pg.push(Arc::new(PostgresJournal::new(pool)));
    }
    vec![
        JournalBackend {
            name: "sqlite",
            hosts: sqlite,
            _dir: Some(dir),
        },
        JournalBackend {
            name: "postgres",
            hosts: pg,
            _dir: None,
        },
    ]
}

fn run_start(run_id: &str, owner: &str) -> RunStart {
    RunStart {
        run_id: run_id.into(),
        workflow: "wf".into(),
        workflow_path: "wf.toml".into(),
        trace_id: format!("{:0>32}", run_id.len()),
        span_id: "00f067aa0ba902b7".into(),
        trace_flags: 1,
        tracestate: String::new(),
        input: serde_json::json!({}),
        components: vec![(
            "a".into(),
            "a.wasm".into(),
            format!("{:0>64}", run_id.len()),
        )],
        owner: owner.into(),
        parent_span_id: None,
        definition: format!("name = \"wf\"\n# {}\n", "x".repeat(4000)),
        idempotency_secret: String::new(),
    }
}

/// A report to store with a run's end.
fn stored_report(run_id: &str, outcome: &str, at: u64, json: &str) -> braid::journal::StoredReport {
    braid::journal::StoredReport {
        summary: braid::journal::ReportSummary {
            run_id: run_id.into(),
            workflow: "wf".into(),
            trace_id: "t".into(),
            outcome: outcome.into(),
            degraded: false,
            started_at_ms: at,
            duration_ms: 1.5,
        },
        json: json.into(),
    }
}

fn completed(step: &str) -> JournalEntry {
    JournalEntry {
        kind: "completed".into(),
        step: step.into(),
        outcome: "succeeded".into(),
        input: Some("{}".into()),
        output: Some(format!("{{\"step\":\"{step}\"}}")),
        component: Some(format!("{step}.wasm")),
        component_sha256: Some("00".into()),
        timeout_ms: Some(1000),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_abandoned_run_is_taken_over_by_exactly_one_host() {
    for b in journal_backends().await {
        let j = &b.hosts[0];
        // 40 runs of a host whose leases ran out, one of a live host.
        for i in 0..40usize {
            let id = format!("run-dead-{i}");
            let id = &j
                .start(&run_start(&id, "gone:1"), Duration::from_millis(1))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            j.append(id, completed("a")).await.expect("append");
            j.append(id, completed("b")).await.expect("append");
            // A write repeated after a lost acknowledgement counts once.
            j.append(id, completed("b")).await.expect("append");
            if i.is_multiple_of(2) {
                let undo = JournalEntry {
                    kind: "undo".into(),
                    step: "b".into(),
                    outcome: "undone".into(),
                    ..Default::default()
                };
                j.append(id, undo).await.expect("append");
            }
        }
        j.start(&run_start("run-live", "alive:2"), Duration::from_secs(60))
            .await
            .expect("start");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let mut tasks = tokio::task::JoinSet::new();
        for (n, host) in b.hosts.iter().enumerate() {
            let host = Arc::clone(host);
            tasks.spawn(async move {
                let owner = format!("recoverer-{n}:1");
                let taken = host
                    .take_over_abandoned(&owner, Duration::from_secs(60), None, &[])
                    .await;
                (owner, taken)
            });
        }
        let mut taken_by: HashMap<String, String> = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (owner, taken) = joined.expect("task");
            for run in taken.unwrap_or_else(|e| panic!("{}: {e}", b.name)) {
                assert_eq!(run.previous_owner, "gone:1", "{}", b.name);
                // What the run was pinned to comes back whole.
                let started = run_start(&run.start.run_id, "gone:1");
                assert_eq!(run.start.definition, started.definition, "{}", b.name);
                assert_eq!(run.start.components, started.components, "{}", b.name);
                let done = run.completed();
                let steps: Vec<&str> = done.iter().map(|c| c.step.as_str()).collect();
                let i: usize = run.start.run_id["run-dead-".len()..].parse().expect("id");
                let want: &[&str] = if i.is_multiple_of(2) {
                    &["a"]
                } else {
                    &["a", "b"]
                };
                assert_eq!(steps, want, "{}: {}", b.name, run.start.run_id);
                if let Some(other) = taken_by.insert(run.start.run_id.clone(), owner.clone()) {
                    panic!(
                        "{}: {} taken over twice ({other}, {owner})",
                        b.name, run.start.run_id
                    );
                }
            }
        }
        assert_eq!(taken_by.len(), 40, "{}: every abandoned run", b.name);
        assert!(!taken_by.contains_key("run-live"), "{}", b.name);
        // The journal now names the new owners; a second pass finds nothing.
        let runs = j.runs().await.expect("runs");
        for r in &runs {
            if let Some(owner) = taken_by.get(&r.run_id) {
                assert_eq!(&r.owner, owner, "{}", b.name);
            }
        }
        let again = b.hosts[1]
            .take_over_abandoned("late:1", Duration::from_secs(60), None, &[])
            .await
            .expect("take over");
        assert!(again.is_empty(), "{}", b.name);
        // The old owner finds out at its next renewal, and cannot write.
        let old = RunFence::first("run-dead-0", "gone:1");
        let renewed = j
            .heartbeat(&old, Duration::from_secs(60))
            .await
            .expect("heartbeat");
        assert!(!renewed, "{}: a lost run's lease was renewed", b.name);
        // Renewed together (one write for a host's leases), each lease is
        // still fenced on its own: the new owner's, a stale one, a stranger's.
        let new_owner = taken_by.get("run-dead-1").expect("taken").clone();
        let current = RunFence {
            epoch: 2,
            ..RunFence::first("run-dead-1", &new_owner)
        };
        let batch = [
            current.clone(),
            old.clone(),
            RunFence::first("run-dead-2", "stranger:9"),
            RunFence::first("run-dead-1", "gone:1"),
        ];
        let renewed = j
            .renew_leases(&batch, Duration::from_secs(60))
            .await
            .expect("renew");
        assert_eq!(renewed, [true, false, false, false], "{}", b.name);
        assert_eq!(
            j.renew_leases(&[], Duration::from_secs(60))
                .await
                .expect("renew"),
            Vec::<bool>::new(),
            "{}",
            b.name
        );
        assert!(
            matches!(
                j.append(&old, completed("c")).await,
                Err(JournalError::Fenced { .. })
            ),
            "{}: a lost run's journal was written",
            b.name
        );
        // A dead owner's runs are taken at once, lease or not.
        let dead = b.hosts[2]
            .take_over_abandoned(
                "late:1",
                Duration::from_secs(60),
                Some(Box::new(|o: &str| o == "alive:2")),
                &[],
            )
            .await
            .expect("take over");
        assert_eq!(dead.len(), 1, "{}", b.name);
        assert_eq!(dead[0].start.run_id, "run-live", "{}", b.name);
        // A host's own run whose lease ran out (one it stopped) is taken
        // back by that host's recovery, unless it still executes there.
        j.start(&run_start("run-own", "self:1"), Duration::from_millis(1))
            .await
            .expect("start");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let here = ["run-own".to_string()];
        let kept = j
            .take_over_abandoned("self:1", Duration::from_secs(60), None, &here)
            .await
            .expect("take over");
        assert!(kept.is_empty(), "{}: a run in progress taken", b.name);
        let own = j
            .take_over_abandoned("self:1", Duration::from_secs(60), None, &[])
            .await
            .expect("take over");
        let ids: Vec<(&str, &str)> = own
            .iter()
            .map(|r| (r.start.run_id.as_str(), r.previous_owner.as_str()))
            .collect();
        assert_eq!(ids, [("run-own", "self:1")], "{}", b.name);
    }
}

#[tokio::test]
async fn a_run_finishes_once_and_reports_and_keys_keep_the_first_answer() {
    for b in journal_backends().await {
        let j = &b.hosts[0];
        let run1 = j
            .start(&run_start("run-1", "h:1"), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(run1, RunFence::first("run-1", "h:1"), "{}", b.name);
        // Only the owner finishes it.
        let other = RunFence::first("run-1", "other:2");
        let stranger = j.finish(&other, "failed", false, None, None).await;
        assert!(
            !stranger.expect("finish"),
            "{}: a stranger's finish",
            b.name
        );
        assert!(
            !b.hosts[1]
                .heartbeat(&other, Duration::from_secs(60))
                .await
                .expect("heartbeat"),
            "{}: a stranger does not hold the lease",
            b.name
        );
        assert!(
            b.hosts[1]
                .heartbeat(&run1, Duration::from_secs(60))
                .await
                .expect("heartbeat"),
            "{}",
            b.name
        );
        // The end carries the run's report, stored in the same write.
        let report = stored_report("run-1", "succeeded", 10, "{\"run\":\"run-1\"}");
        let first = j
            .finish(&run1, "succeeded", false, None, Some(report))
            .await;
        assert!(first.expect("finish"), "{}: the owner's finish", b.name);
        let late = j.finish(&run1, "aborted", true, Some("late".into()), None);
        assert!(!late.await.expect("finish"), "{}: a second finish", b.name);
        let runs = j.runs().await.expect("runs");
        assert_eq!(runs.len(), 1, "{}", b.name);
        assert_eq!(runs[0].status, "succeeded", "{}", b.name);
        assert!(!runs[0].degraded && runs[0].error.is_none(), "{}", b.name);
        assert!(runs[0].finished_at_ms.is_some(), "{}", b.name);

        let first = j.reserve_idempotent("wf", "key-1", "sha-a", "run-1").await;
        assert_eq!(first.expect("reserve"), None, "{}: reserved", b.name);
        // Reserving again for the same run (a retried write) still holds.
        let again = j.reserve_idempotent("wf", "key-1", "sha-a", "run-1").await;
        assert_eq!(again.expect("reserve"), None, "{}", b.name);
        let second = b.hosts[1]
            .reserve_idempotent("wf", "key-1", "sha-b", "run-2")
            .await
            .expect("reserve");
        assert_eq!(
            second,
            Some(("sha-a".to_string(), "run-1".to_string())),
            "{}: the second host learns who has the key",
            b.name
        );
        let run = b.hosts[2].run("run-1").await.expect("run");
        assert_eq!(run.map(|r| r.status).as_deref(), Some("succeeded"));
        assert!(b.hosts[2].run("run-nope").await.expect("run").is_none());
        assert_eq!(
            b.hosts[2]
                .idempotent_run("wf", "key-1")
                .await
                .expect("read"),
            Some(("sha-a".to_string(), "run-1".to_string())),
            "{}",
            b.name
        );
        assert_eq!(
            j.idempotent_run("other", "key-1").await.expect("read"),
            None
        );
        // A key is given up only for a run that never started, and only by
        // the run it is reserved for.
        let released = |host: usize, key: &'static str, run: &'static str| {
            let j = Arc::clone(&b.hosts[host]);
            async move { j.release_idempotent("wf", key, run).await.expect("release") }
        };
        assert!(
            !released(1, "key-1", "run-1").await,
            "{}: run-1 started",
            b.name
        );
        let never = j
            .reserve_idempotent("wf", "key-2", "sha-a", "run-never")
            .await;
        assert_eq!(never.expect("reserve"), None, "{}", b.name);
        assert!(!released(1, "key-2", "run-other").await, "{}", b.name);
        assert!(released(1, "key-2", "run-never").await, "{}", b.name);
        assert!(!released(1, "key-2", "run-never").await, "{}: once", b.name);
        let retry = b.hosts[2]
            .reserve_idempotent("wf", "key-2", "sha-a", "run-retry")
            .await;
        assert_eq!(retry.expect("reserve"), None, "{}: free again", b.name);

        let run2 = j
            .start(&run_start("run-2", "h:1"), Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let report = stored_report("run-2", "failed", 20, "{\"run\":\"run-2\"}");
        let ended = j.finish(&run2, "failed", false, None, Some(report));
        assert!(ended.await.expect("finish"), "{}", b.name);
        let failed = b.hosts[3]
            .recent_reports(ReportQuery {
                workflow: Some("wf".into()),
                outcome: Some("failed".into()),
                limit: 10,
                ..ReportQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(failed.len(), 1, "{}", b.name);
        assert_eq!(failed[0].run_id, "run-2", "{}", b.name);
        let all = j
            .recent_reports(ReportQuery {
                limit: 10,
                ..ReportQuery::default()
            })
            .await
            .expect("list");
        let order: Vec<&str> = all.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(order, ["run-2", "run-1"], "{}: newest first", b.name);
        assert_eq!(
            j.report("run-2").await.expect("report").as_deref(),
            Some("{\"run\":\"run-2\"}"),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn reports_are_listed_a_page_at_a_time_and_a_trace_finds_its_runs() {
    const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T2: &str = "0af7651916cd43dd8448eb211c80319c";
    for b in journal_backends().await {
        let j = &b.hosts[0];
        // (run, trace, report's start ms); `run-e` is still running.
        let runs = [
            ("run-a", T1, Some(10)),
            ("run-b", T1, Some(20)),
            ("run-c", T1, Some(20)),
            ("run-d", T2, Some(30)),
            ("run-e", T2, None),
        ];
        for (run, trace, at) in runs {
            let start = RunStart {
                trace_id: trace.into(),
                ..run_start(run, "h:1")
            };
            let fence = j
                .start(&start, Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            if let Some(at) = at {
                let mut report = stored_report(run, "succeeded", at, "{}");
                report.summary.trace_id = trace.into();
                let degraded = run == "run-d";
                let done = j.finish(&fence, "succeeded", degraded, None, Some(report));
                assert!(done.await.expect("finish"), "{}", b.name);
            }
        }
        let page = |after: Option<&str>, trace: Option<&str>| {
            let query = ReportQuery {
                trace_id: trace.map(str::to_string),
                after: after.map(|a| a.parse().expect("cursor")),
                limit: 2,
                ..ReportQuery::default()
            };
            let j = Arc::clone(&b.hosts[1]);
            async move {
                let listed = j.recent_reports(query).await.expect("list");
                listed.into_iter().map(|r| r.run_id).collect::<Vec<_>>()
            }
        };
        // A listing says which runs were degraded (from the runs' records).
        let listed = b.hosts[1]
            .recent_reports(ReportQuery {
                limit: 10,
                ..ReportQuery::default()
            })
            .await
            .expect("list");
        let degraded: Vec<&str> = listed
            .iter()
            .filter(|r| r.degraded)
            .map(|r| r.run_id.as_str())
            .collect();
        assert_eq!(degraded, ["run-d"], "{}", b.name);
        // Newest first, then by run id; each page starts after the last.
        assert_eq!(page(None, None).await, ["run-d", "run-b"], "{}", b.name);
        assert_eq!(
            page(Some("20-run-b"), None).await,
            ["run-c", "run-a"],
            "{}",
            b.name
        );
        assert!(page(Some("10-run-a"), None).await.is_empty(), "{}", b.name);
        assert_eq!(page(None, Some(T1)).await, ["run-b", "run-c"], "{}", b.name);
        assert_eq!(
            page(Some("20-run-c"), Some(T1)).await,
            ["run-a"],
            "{}",
            b.name
        );
        // A trace finds its runs, ended or running, on any host.
        let of_t2 = b.hosts[2].runs_of_trace(T2, 10).await.expect("trace");
        let found: Vec<(&str, &str)> = of_t2
            .iter()
            .map(|r| (r.run_id.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            found,
            [("run-d", "succeeded"), ("run-e", "running")],
            "{}",
            b.name
        );
        let running = b.hosts[3].running_runs(10).await.expect("running");
        let running: Vec<&str> = running.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(running, ["run-e"], "{}", b.name);
        let unknown = j.runs_of_trace("00000000000000000000000000000001", 10);
        assert!(unknown.await.expect("trace").is_empty(), "{}", b.name);
        assert_eq!(
            j.runs_of_trace(T1, 2).await.expect("trace").len(),
            2,
            "{}",
            b.name
        );
    }
}

/// A TCP relay to the test server that the test can cut: every connection
/// through it is dropped and new ones refused until it is restored.
struct Relay {
    addr: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (open2, cut2) = (Arc::clone(&open), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !open2.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                let mut cut = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, open, cut }
    }

    fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_a_typed_unavailable_claim_and_the_store_reconnects() {
    let url = fresh_database().await;
    // postgres://postgres@127.0.0.1:PORT/DB -> the same through the relay.
    let (head, rest) = url.split_once("@").expect("url");
    let (server, db) = rest.split_once('/').expect("url");
    let relay = Relay::start(server.to_string()).await;
    let via_relay = format!("{head}:secret@{}/{db}", relay.addr);
    let store = PostgresClaimStore::new(PgPool::open(&via_relay, 4).await.expect("opens"));
    store
        .claim(request("item-1", "run-1", 30_000))
        .await
        .expect("first claim");

    relay.cut();
    match store.claim(request("item-2", "run-2", 30_000)).await {
        Err(ClaimStoreError::Unavailable(why)) => {
            assert!(!why.contains("secret"), "the password leaked: {why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Nothing was half-written: item-2 is free, item-1 still held.
    relay.restore();
    let mut granted = None;
    for _ in 0..20 {
        match store.claim(request("item-2", "run-2", 30_000)).await {
            Ok(c) => {
                granted = Some(c);
                break;
            }
            Err(ClaimStoreError::Unavailable(_)) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(granted.expect("reconnected").run_id, "run-2");
    let held: Vec<String> = store
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|c| c.run_id)
        .collect();
    assert_eq!(held, ["run-1", "run-2"]);
}

/// The runs a journal knows, oldest first.
async fn run_ids(journal: &dyn RunJournal) -> Vec<String> {
    let runs = journal.runs().await.expect("runs");
    runs.into_iter().map(|r| r.run_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_deletes_finished_runs_past_the_retention_and_nothing_running() {
    use braid::journal::{Retention, prune_all};
    for b in journal_backends().await {
        let j = &b.hosts[0];
        // 12 finished runs, each with an entry, a report and a key; 2 running.
        for i in 0..14 {
            let run_id = format!("run-{i:02}");
            let fence = j
                .start(&run_start(&run_id, "h:1"), Duration::from_secs(60))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            j.append(&fence, completed("a")).await.expect("append");
            j.reserve_idempotent("wf", &format!("key-{i}"), "sha", &run_id)
                .await
                .expect("reserve");
            if i < 12 {
                let report = stored_report(&run_id, "succeeded", 1, "{}");
                assert!(
                    j.finish(&fence, "succeeded", false, None, Some(report))
                        .await
                        .expect("finish")
                );
            }
        }
        // A key whose run never started, and is old: pruned by age only.
        j.reserve_idempotent("wf", "orphan", "sha", "run-never")
            .await
            .expect("reserve");
        let keep = |max_runs| Retention {
            max_age: Duration::from_secs(3600),
            max_runs,
        };
        // Keep the newest 5 finished runs: 7 go, in batches of 3.
        let mut total = braid::journal::Pruned::default();
        loop {
            let pruned = j.prune(keep(5), 3).await.expect("prune");
            total.add(pruned);
            if pruned.runs < 3 {
                break;
            }
        }
        assert_eq!(total.runs, 7, "{}: {total:?}", b.name);
        assert_eq!(total.entries, 7, "{}", b.name);
        assert_eq!(total.reports, 7, "{}", b.name);
        assert_eq!(total.idempotency_keys, 7, "{}: the orphan is young", b.name);
        let left = run_ids(j.as_ref()).await;
        let expected: Vec<String> = (7..14).map(|i| format!("run-{i:02}")).collect();
        assert_eq!(
            left, expected,
            "{}: the newest finished and the running stay",
            b.name
        );
        assert!(
            j.report("run-03").await.expect("report").is_none(),
            "{}",
            b.name
        );
        assert!(
            j.report("run-08").await.expect("report").is_some(),
            "{}",
            b.name
        );
        // A pruned run's key is free again: a retry with it starts a new run.
        assert_eq!(
            j.reserve_idempotent("wf", "key-3", "sha", "run-new")
                .await
                .expect("reserve"),
            None,
            "{}",
            b.name
        );
        // Age zero: every finished run goes, the running two and their keys stay.
        let pruned = prune_all(
            j.as_ref(),
            &braid::store::NoClaims,
            Retention {
                max_age: Duration::ZERO,
                max_runs: u64::MAX,
            },
        )
        .await
        .expect("prune");
        assert_eq!(pruned.runs, 5, "{}", b.name);
        let left = run_ids(j.as_ref()).await;
        assert_eq!(left, ["run-12", "run-13"], "{}", b.name);
        assert_eq!(
            j.idempotent_run("wf", "key-12").await.expect("key"),
            Some(("sha".to_string(), "run-12".to_string())),
            "{}",
            b.name
        );
        assert_eq!(
            j.idempotent_run("wf", "orphan").await.expect("key"),
            None,
            "{}: an old key of a run that never started goes",
            b.name
        );
    }
}

/// A run that recovery cannot resume (here: a journal without its
/// definition) is undone and recorded `aborted` with its report, in the
/// same write: `GET /v1/runs/ID` and `?status=aborted` find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_recovery_aborts_has_a_stored_report() {
    use braid::recovery::{Liveness, Recoverer};
    use braid::sandbox::{Sandbox, SandboxConfig};
    for b in journal_backends().await {
        let j = &b.hosts[0];
        let fence = j
            .start(
                &run_start("run-aborted", "gone:1"),
                Duration::from_millis(1),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        j.append(&fence, completed("a")).await.expect("append");
        tokio::time::sleep(Duration::from_millis(50)).await;

        let dir = tempfile::tempdir().expect("tempdir");
        let claims: Arc<dyn ClaimStore> =
            Arc::new(SqliteClaimStore::open(dir.path()).expect("claims"));
        let config = SandboxConfig {
            cache_dir: Some(dir.path().join("cache")),
            ..SandboxConfig::default()
        };
        let recovered = Recoverer {
            sandbox: Arc::new(Sandbox::new(config, Arc::clone(&claims)).expect("sandbox")),
            journal: Arc::clone(&b.hosts[1]),
            claims,
            owner: "recoverer:1".into(),
            liveness: Liveness::LeasesOnly,
            local: Default::default(),
            history_dir: None,
            max_concurrency: 4,
            on_resumed: None,
            live: None,
        }
        .recover()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert_eq!(recovered.len(), 1, "{}", b.name);
        assert_eq!(recovered[0].outcome, "aborted", "{}", b.name);

        let json = j
            .report("run-aborted")
            .await
            .expect("report")
            .unwrap_or_else(|| panic!("{}: an aborted run has no report", b.name));
        let report: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(report["outcome"], "aborted", "{}: {report}", b.name);
        assert_eq!(report["trace_id"], run_start("run-aborted", "").trace_id);
        let error = report["error"].as_str().unwrap_or("");
        assert!(error.starts_with("host gone:1 stopped mid-run"), "{error}");
        assert!(error.contains("cannot resume"), "{error}");
        assert_eq!(report["steps"][0]["name"], "a", "{}: {report}", b.name);
        let aborted = j
            .recent_reports(ReportQuery {
                outcome: Some("aborted".into()),
                limit: 10,
                ..ReportQuery::default()
            })
            .await
            .expect("list");
        let ids: Vec<&str> = aborted.iter().map(|r| r.run_id.as_str()).collect();
        assert_eq!(ids, ["run-aborted"], "{}", b.name);
    }
}

/// Retention covers the claim store too: expired claims past the retention
/// (by age, or past the newest `max_runs` expired ones) go; a live claim
/// never does, whatever the retention.
#[tokio::test]
async fn pruning_deletes_expired_claims_past_the_retention_and_no_live_one() {
    for b in backends().await {
        let s = &b.store;
        for i in 0..5 {
            s.claim(request(&format!("old-{i}"), &format!("run-{i}"), 1))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            // Each expires at a later millisecond than the one before.
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        s.claim(request("live", "run-live", 60_000))
            .await
            .expect("claim");
        tokio::time::sleep(Duration::from_millis(30)).await;
        let items = |list: Vec<braid::store::ClaimRecord>| {
            let mut v: Vec<String> = list.into_iter().map(|c| c.work_item).collect();
            v.sort();
            v
        };
        // Keep the newest 2 expired ones (a day's age keeps every one by age).
        let day = Duration::from_secs(86_400);
        let gone = s.prune_expired(day, 2, 2).await.expect("prune");
        assert_eq!(gone, 2, "{}: one batch of 2", b.name);
        let gone = s.prune_expired(day, 2, 2).await.expect("prune");
        assert_eq!(gone, 1, "{}", b.name);
        assert_eq!(s.prune_expired(day, 2, 2).await.expect("prune"), 0);
        let left = items(s.list().await.expect("list"));
        assert_eq!(left, ["live", "old-3", "old-4"], "{}", b.name);
        // Age zero: every expired claim goes, the live one stays.
        let gone = s
            .prune_expired(Duration::ZERO, u64::MAX, 100)
            .await
            .expect("prune");
        assert_eq!(gone, 2, "{}", b.name);
        assert_eq!(items(s.list().await.expect("list")), ["live"], "{}", b.name);
    }
}

/// Entries appended together (a map's elements that ended at once) are one
/// write, kept in their order; under a stale fence none of them is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_appended_together_are_kept_in_order_all_or_none() {
    for b in journal_backends().await {
        let j = &b.hosts[0];
        let lease = Duration::from_secs(60);
        let fence = j
            .start(&run_start("run-batch", "first:1"), lease)
            .await
            .expect("start");
        j.append(&fence, completed("a")).await.expect("append");
        let batch = vec![completed("b.0"), completed("b.1"), completed("b.2")];
        j.append_all(&fence, batch).await.expect("append all");
        j.append_all(&fence, Vec::new())
            .await
            .expect("nothing to append");
        j.append(&fence, completed("c")).await.expect("append");
        let taken = b.hosts[1]
            .take_over_abandoned(
                "second:1",
                lease,
                Some(Box::new(|o: &str| o == "first:1")),
                &[],
            )
            .await
            .expect("take over");
        let steps: Vec<&str> = taken[0].entries.iter().map(|e| e.step.as_str()).collect();
        assert_eq!(steps, ["a", "b.0", "b.1", "b.2", "c"], "{}", b.name);
        // The first owner lost the run: its batch is refused, whole.
        let refused = j
            .append_all(&fence, vec![completed("d.0"), completed("d.1")])
            .await;
        assert!(
            matches!(refused, Err(JournalError::Fenced { .. })),
            "{}: {refused:?}",
            b.name
        );
        let again = b.hosts[2]
            .take_over_abandoned(
                "third:1",
                lease,
                Some(Box::new(|o: &str| o == "second:1")),
                &[],
            )
            .await
            .expect("take over");
        assert_eq!(
            again[0].entries.len(),
            5,
            "{}: nothing of the batch",
            b.name
        );
    }
}

/// Any host may ask any running run to cancel; the owner finds the
/// request among its runs; the first reason stands; an ended or unknown
/// run says so and is not changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_runs_owner_and_keeps_its_first_reason() {
    use braid::journal::CancelAsked;
    for b in journal_backends().await {
        let (owner, other) = (&b.hosts[0], &b.hosts[1]);
        let lease = Duration::from_secs(60);
        let fence = owner
            .start(&run_start("run-c1", "first:1"), lease)
            .await
            .expect("start");
        owner
            .start(&run_start("run-c2", "first:1"), lease)
            .await
            .expect("start");
        let ids = ["run-c1".to_string(), "run-c2".to_string()];
        let none = owner.cancel_requests(&ids).await.expect("read");
        assert!(none.is_empty(), "{}: {none:?}", b.name);
        let asked = other.request_cancel("run-c1", "by ops").await.expect("ask");
        let by_ops = CancelAsked::Asked {
            reason: "by ops".into(),
        };
        assert_eq!(asked, by_ops, "{}", b.name);
        let again = other.request_cancel("run-c1", "later").await.expect("ask");
        assert_eq!(again, by_ops, "{}: the first reason stands", b.name);
        let found = owner.cancel_requests(&ids).await.expect("read");
        assert_eq!(
            found,
            [("run-c1".to_string(), "by ops".to_string())],
            "{}",
            b.name
        );
        owner
            .finish(
                &fence,
                "cancelled",
                false,
                Some("run cancelled: by ops".into()),
                None,
            )
            .await
            .expect("finish");
        let ended = other
            .request_cancel("run-c1", "too late")
            .await
            .expect("ask");
        assert_eq!(
            ended,
            CancelAsked::Ended {
                status: "cancelled".into()
            },
            "{}",
            b.name
        );
        assert!(owner.cancel_requests(&ids).await.expect("read").is_empty());
        let unknown = other.request_cancel("run-none", "?").await.expect("ask");
        assert_eq!(unknown, CancelAsked::Unknown, "{}", b.name);
    }
}

/// A run parks (`waiting`, no lease), is woken when its time comes by
/// exactly one host, under the next epoch; a signal is kept once per name
/// (also before the run waits) and wakes a waiting run at once; a parked
/// run's stale owner cannot write; waiting runs are never pruned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_woken_once_by_its_time_or_a_signal() {
    use braid::journal::{CancelAsked, Retention, SignalSent};
    for b in journal_backends().await {
        let (owner, other) = (&b.hosts[0], &b.hosts[1]);
        let lease = Duration::from_secs(60);
        let now = braid::store::now_ms();
        let fence = owner
            .start(&run_start("run-w1", "first:1"), lease)
            .await
            .expect("start");
        // A signal sent before the run waits is kept.
        let early = other
            .send_signal("run-w1", "approval", r#"{"ok":true}"#, "00-tp")
            .await
            .expect("send");
        assert_eq!(early, SignalSent::Delivered, "{}", b.name);
        let twice = other
            .send_signal("run-w1", "approval", r#"{"ok":false}"#, "")
            .await
            .expect("send");
        assert_eq!(twice, SignalSent::AlreadySent, "{}", b.name);
        let signals = owner.signals("run-w1").await.expect("read");
        assert_eq!(signals.len(), 1, "{}", b.name);
        assert_eq!(signals[0].payload, r#"{"ok":true}"#, "the first one stands");
        assert_eq!(signals[0].traceparent, "00-tp");
        // Parked having seen it: woken at its time, an hour from now.
        let parked = owner
            .park(&fence, now + 3_600_000, 1, "sleep `later`")
            .await
            .expect("park");
        assert!(parked, "{}", b.name);
        let refused = owner.append(&fence, JournalEntry::default()).await;
        assert!(
            matches!(refused, Err(JournalError::Fenced { .. })),
            "{}: a parked run takes no writes: {refused:?}",
            b.name
        );
        let record = other.run("run-w1").await.expect("run").expect("known");
        assert_eq!(record.status, "waiting", "{}", b.name);
        assert_eq!(record.waiting_for.as_deref(), Some("sleep `later`"));
        assert_eq!(record.wake_at_ms, Some(now + 3_600_000));
        assert!(record.waiting_since_ms.is_some());
        let none = other
            .take_over_waiting("second:1", lease, 10)
            .await
            .expect("wake");
        assert!(none.is_empty(), "{}: not due yet", b.name);
        owner
            .prune(
                Retention {
                    max_age: Duration::ZERO,
                    max_runs: 0,
                },
                100,
            )
            .await
            .expect("prune");
        assert!(other.run("run-w1").await.expect("run").is_some(), "kept");
        // A signal of another name wakes it at once, for one host only.
        let sent = other
            .send_signal("run-w1", "reminder", "{}", "")
            .await
            .expect("send");
        assert_eq!(sent, SignalSent::Delivered, "{}", b.name);
        let (a, c) = tokio::join!(
            other.take_over_waiting("second:1", lease, 10),
            b.hosts[2].take_over_waiting("third:1", lease, 10)
        );
        let (a, c) = (a.expect("wake"), c.expect("wake"));
        assert_eq!(a.len() + c.len(), 1, "{}: one host wakes it", b.name);
        let woken = a.into_iter().chain(c).next().expect("woken");
        assert!(woken.woken, "{}", b.name);
        assert_eq!(woken.fence.epoch, 2);
        assert_eq!(woken.previous_owner, "first:1");
        assert_eq!(woken.start.run_id, "run-w1");
        let record = other.run("run-w1").await.expect("run").expect("known");
        assert_eq!(record.status, "running", "{}", b.name);
        assert_eq!(record.waiting_for, None);
        // The first owner's fence is stale now; the new one parks, having
        // seen one signal of two: it is woken at once.
        let stale = owner.park(&fence, now + 3_600_000, 2, "x").await;
        assert!(
            !stale.expect("park"),
            "{}: a stale fence cannot park",
            b.name
        );
        let parked = other
            .park(&woken.fence, now + 3_600_000, 1, "signal `reminder`")
            .await;
        assert!(parked.expect("park"), "{}", b.name);
        let again = b.hosts[3]
            .take_over_waiting("fourth:1", lease, 10)
            .await
            .expect("wake");
        assert_eq!(again.len(), 1, "{}: 2 signals sent, 1 seen", b.name);
        // A cancel wakes a waiting run with the reason.
        let fence = again[0].fence.clone();
        assert!(
            b.hosts[3]
                .park(&fence, now + 3_600_000, 2, "x")
                .await
                .expect("park")
        );
        let asked = other
            .request_cancel("run-w1", "stop")
            .await
            .expect("cancel");
        assert_eq!(
            asked,
            CancelAsked::Asked {
                reason: "stop".into()
            },
            "{}",
            b.name
        );
        let cancelled = other
            .take_over_waiting("fifth:1", lease, 10)
            .await
            .expect("wake");
        assert_eq!(cancelled.len(), 1, "{}", b.name);
        assert_eq!(cancelled[0].cancel_reason.as_deref(), Some("stop"));
        let start = other
            .run_start("run-w1")
            .await
            .expect("start")
            .expect("known");
        assert_eq!(start.workflow, "wf");
        assert!(other.run_start("run-none").await.expect("start").is_none());
        let unknown = other
            .send_signal("run-none", "x", "{}", "")
            .await
            .expect("send");
        assert_eq!(unknown, SignalSent::Unknown, "{}", b.name);
    }
}
