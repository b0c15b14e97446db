//! The claim-store contract, checked against every backend: the embedded
//! SQLite store and PostgreSQL (a private server `make test` starts, see
//! scripts/test-postgres.sh; each test gets a database of its own).

use braid::postgres::{PgPool, PostgresClaimStore, PostgresError};
use braid::store::{ClaimRequest, ClaimStore, ClaimStoreError, SqliteClaimStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The tests' PostgreSQL server, from `make test`.
fn server_url() -> String {
    std::env::var("BRAID_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "BRAID_TEST_POSTGRES is not set: run `make test` (it starts PostgreSQL with \
             scripts/test-postgres.sh), or set it to a postgres:// URL of a test server"
        )
    })
}

/// A new, empty database on the test server; its URL.
async fn fresh_database() -> String {
    let url = server_url();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    let name = format!("braid_t_{}", hex::encode(rand::random::<[u8; 6]>()));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

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

        match s.claim(request("item-1", "run-2", 30_000)).await {
            Err(ClaimStoreError::Conflict(holder)) => {
                assert_eq!(holder.claim_id, first.claim_id, "{}", b.name);
                assert_eq!(holder.run_id, "run-1", "{}", b.name);
                assert_eq!(holder.trace_id, first.trace_id, "{}", b.name);
            }
            other => panic!("{}: expected a conflict, got {other:?}", b.name),
        }
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
