//! Several `braid serve` hosts on one PostgreSQL database (`--store
//! postgres://`), sharing work-item claims and the run journal: load spread
//! over three hosts, a host killed mid-load, the database restarted
//! mid-load. Each test gets a fresh database; the restart test has a server
//! of its own (port 25433) so restarting it disturbs no other test.
//!
//! Every host gets its own `HOSTNAME` (host-0, host-1, ...), so the tests
//! can tell whose runs are whose. On a shared database only expired leases
//! say a host is gone, so a survivor waits for them, as across machines.

use crate::serve::Served;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The reference workflow's steps that undo something real.
const REVERSIBLE: [&str; 4] = [
    "authenticate",
    "fetch_profile",
    "fetch_permissions",
    "claim_work",
];

/// One run request and what came back (`None`: the connection broke).
#[derive(Debug)]
struct Answer {
    host: usize,
    trace_id: String,
    work_item: String,
    lease_ms: u64,
    answer: Option<(u16, Value)>,
}

/// POSTs one run to `addr`; `None` when the connection fails or breaks.
async fn post_run(addr: &str, body: &str, traceparent: &str) -> Option<(u16, Value)> {
    post_run_with(addr, body, &format!("traceparent: {traceparent}\r\n"))
        .await
        .map(|(status, _, body)| (status, body))
}

/// POSTs one run with `headers` (`name: value\r\n` lines): status, response
/// head, body.
async fn post_run_with(addr: &str, body: &str, headers: &str) -> Option<(u16, String, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /v1/workflows/api-orchestration/runs HTTP/1.1\r\nHost: {addr}\r\n\
         Connection: close\r\ncontent-type: application/json\r\n{headers}\
         content-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.ok()?;
    stream.write_all(body.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}

/// The load: `runs` requests, at most `in_flight` at once, run `i` on host
/// `i % hosts` unless that host is `down` (then the next one), each on a
/// trace of its own; `item(i)` names its work item.
struct Load {
    addrs: Vec<String>,
    api_base: String,
    runs: usize,
    in_flight: usize,
    lease_ms: u64,
    item: fn(usize) -> String,
    down: Arc<AtomicUsize>,
}

const NONE_DOWN: usize = usize::MAX;

impl Load {
    async fn drive(self) -> Vec<Answer> {
        let gate = Arc::new(tokio::sync::Semaphore::new(self.in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.runs {
            let permit = Arc::clone(&gate).acquire_owned().await.expect("gate");
            let n = self.addrs.len();
            let mut host = i % n;
            if host == self.down.load(Ordering::SeqCst) {
                host = (host + 1) % n;
            }
            let addr = self.addrs[host].clone();
            let work_item = (self.item)(i);
            let trace_id = hex::encode(rand::random::<[u8; 16]>());
            let traceparent = format!(
                "00-{trace_id}-{}-01",
                hex::encode(rand::random::<[u8; 8]>())
            );
            let body = json!({
                "api_base": self.api_base,
                "user_id": "u-100",
                "work_item": work_item,
                "lease_ms": self.lease_ms,
            })
            .to_string();
            let lease_ms = self.lease_ms;
            tasks.spawn(async move {
                let answer = post_run(&addr, &body, &traceparent).await;
                drop(permit);
                Answer {
                    host,
                    trace_id,
                    work_item,
                    lease_ms,
                    answer,
                }
            });
        }
        let mut out = Vec::new();
        while let Some(a) = tasks.join_next().await {
            out.push(a.expect("request task"));
        }
        out
    }
}

/// A run as the shared journal has it.
#[derive(Debug, Clone)]
struct StoredRun {
    run_id: String,
    status: String,
    owner: String,
    error: Option<String>,
    /// Journal entries, in order.
    entries: Vec<Value>,
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Every run in the database, by trace id.
async fn stored_runs(db: &tokio_postgres::Client) -> HashMap<String, StoredRun> {
    // Runs first: a run that has ended has all its entries written before
    // its end, so they are all in the second read.
    let rows = db
        .query(
            "SELECT trace_id, run_id, status, owner, error FROM braid_runs",
            &[],
        )
        .await
        .expect("runs");
    let mut entries: HashMap<String, Vec<Value>> = HashMap::new();
    for row in db
        .query("SELECT run_id, entry FROM braid_journal ORDER BY seq", &[])
        .await
        .expect("journal")
    {
        let entry = serde_json::from_str(row.get::<_, &str>(1)).expect("entry JSON");
        entries.entry(row.get(0)).or_default().push(entry);
    }
    rows.iter()
        .map(|r| {
            let run_id: String = r.get(1);
            let run = StoredRun {
                entries: entries.remove(&run_id).unwrap_or_default(),
                run_id,
                status: r.get(2),
                owner: r.get(3),
                error: r.get(4),
            };
            (r.get(0), run)
        })
        .collect()
}

/// (work item, run id) of every claim held.
async fn held_claims(db: &tokio_postgres::Client) -> Vec<(String, String)> {
    db.query("SELECT work_item, run_id FROM braid_claims", &[])
        .await
        .expect("claims")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// Waits until no run is `running` any more; the runs then.
async fn settled(db: &tokio_postgres::Client, limit: Duration) -> HashMap<String, StoredRun> {
    let deadline = Instant::now() + limit;
    loop {
        let runs = stored_runs(db).await;
        let running: Vec<&str> = runs
            .values()
            .filter(|r| r.status == "running")
            .map(|r| r.run_id.as_str())
            .collect();
        if running.is_empty() {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "runs still running after {limit:?}: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A failed or aborted run undid each reversible step it completed exactly
/// once, nothing it had not completed, and in the reverse of the journal's
/// completion order.
fn assert_undone_once(run: &StoredRun) {
    let completed: HashSet<&str> = run
        .entries
        .iter()
        .filter(|e| e["kind"] == "completed")
        .filter_map(|e| e["step"].as_str())
        .collect();
    let mut undone: Vec<&str> = run
        .entries
        .iter()
        .filter(|e| e["kind"] == "undo" && e["outcome"] == "undone")
        .filter_map(|e| e["step"].as_str())
        .collect();
    // One order: undone in the reverse of the journal's completion order
    // (which is the order the run took its steps in).
    let mut reverse_completion: Vec<&str> = run
        .entries
        .iter()
        .filter(|e| e["kind"] == "completed" && e["outcome"] == "succeeded")
        .filter_map(|e| e["step"].as_str())
        .filter(|s| REVERSIBLE.contains(s))
        .collect();
    reverse_completion.reverse();
    assert_eq!(
        undone, reverse_completion,
        "run {} undone out of order: entries {:?}",
        run.run_id, run.entries
    );
    undone.sort_unstable();
    let mut want: Vec<&str> = REVERSIBLE
        .into_iter()
        .filter(|s| completed.contains(s))
        .collect();
    want.sort_unstable();
    assert_eq!(
        undone, want,
        "run {} ({}, owner {}, error {:?}): entries {:?}",
        run.run_id, run.status, run.owner, run.error, run.entries
    );
}

/// The HTTP status `braid serve` answers a run with: 200 if it succeeded,
/// 422 if it failed.
fn status_of(report: &Value) -> u16 {
    match report["outcome"].as_str() {
        Some("succeeded") => 200,
        Some("aborted") => 503,
        _ => 422,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `n` `braid serve` hosts on `url`, named host-0, host-1, ...
fn hosts(url: &str, n: usize) -> Vec<Served> {
    (0..n)
        .map(|i| {
            let name = format!("host-{i}");
            Served::spawn(
                &reference_workflow(),
                &["--store", url],
                &[("HOSTNAME", name.as_str())],
            )
        })
        .collect()
}

#[test]
fn three_hosts_share_two_thousand_runs_and_two_hundred_work_items() {
    let rt = runtime();
    let url = rt.block_on(fresh_database());
    let api = SampleApi::start(Some(1));
    let hosts = hosts(&url, 3);
    let load = Load {
        addrs: hosts.iter().map(|h| h.addr.clone()).collect(),
        api_base: api.base(),
        runs: 2000,
        in_flight: 60,
        lease_ms: 250,
        item: |_| format!("item-{}", rand::random::<u32>() % 200),
        down: Arc::new(AtomicUsize::new(NONE_DOWN)),
    };
    let answers = rt.block_on(load.drive());
    let db = rt.block_on(connect(&url));
    let stored = rt.block_on(settled(&db, Duration::from_secs(30)));

    let mut by_run: HashMap<String, &Answer> = HashMap::new();
    let mut granted: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    let mut conflicts = 0;
    for a in &answers {
        let (status, body) = a.answer.as_ref().expect("every host answers");
        assert_eq!(*status, status_of(body), "host {}: {body}", a.host);
        assert_eq!(body["trace_id"], a.trace_id.as_str(), "the caller's trace");
        let run_id = str_of(body, "/run_id");
        by_run.insert(run_id.to_string(), a);
        let run = &stored[&a.trace_id];
        assert_eq!(run.run_id, run_id);
        assert_eq!(run.status, body["outcome"].as_str().unwrap_or("?"));
        assert!(
            run.owner.starts_with(&format!("host-{}:", a.host)),
            "run {run_id} of host {} is owned by {}",
            a.host,
            run.owner
        );
        if body["outcome"] == "succeeded" {
            let claim = &body["result"]["claim"];
            assert_eq!(claim["work_item"], a.work_item.as_str());
            assert_eq!(claim["trace_id"], a.trace_id.as_str(), "the claim's trace");
            let expires = claim["expires_at_ms"].as_u64().expect("expiry");
            granted
                .entry(a.work_item.as_str())
                .or_default()
                .push((expires - a.lease_ms, expires));
        } else {
            let error = body["error"].as_str().unwrap_or("");
            assert!(
                error.contains(&format!(
                    "work item `{}` is already claimed by run",
                    a.work_item
                )),
                "only conflicts fail here: {error}"
            );
            conflicts += 1;
            assert_undone_once(run);
        }
    }
    // A conflict names the holder: one of these runs, on its own trace.
    for a in &answers {
        let body = &a.answer.as_ref().expect("answer").1;
        if let Some(error) = body["error"].as_str() {
            let holder = error
                .split("claimed by run ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .expect("holder run");
            let holder = by_run
                .get(holder)
                .unwrap_or_else(|| panic!("holder {holder} is not one of the runs"));
            assert!(
                error.contains(&format!("(trace {},", holder.trace_id)),
                "{error}"
            );
            assert_eq!(holder.work_item, a.work_item);
        }
    }
    // Never two live grants of one item: the leases of the runs that got
    // it, in order, do not overlap.
    for (item, leases) in &mut granted {
        leases.sort_unstable();
        for pair in leases.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{item} granted at {} while held until {}",
                pair[1].0,
                pair[0].1
            );
        }
    }
    let succeeded = answers.len() - conflicts;
    assert!(
        succeeded >= 200 && conflicts > 0,
        "{succeeded} succeeded, {conflicts} conflicts"
    );
    // Every API call carried the trace of the run that made it.
    let traces: HashMap<&str, &Answer> = answers.iter().map(|a| (a.trace_id.as_str(), a)).collect();
    let mut calls: HashMap<&str, Vec<Value>> = HashMap::new();
    let requests = api.requests(None);
    for r in &requests {
        let trace = r["trace_id"].as_str().expect("traceparent on every call");
        let (k, _) = traces
            .get_key_value(trace)
            .unwrap_or_else(|| panic!("call on a foreign trace: {r}"));
        calls.entry(k).or_default().push(r.clone());
    }
    // On a busy machine an attempt may time out and be tried again, so the
    // calls are not counted exactly; what must hold: one token per run (its
    // idempotency key), both fetches made, and a failed run's token revoked.
    for a in &answers {
        let failed = a.answer.as_ref().expect("answer").1["outcome"] == "failed";
        let mine = calls.get(a.trace_id.as_str()).cloned().unwrap_or_default();
        assert_eq!(tokens_issued(&mine), 1, "{a:?}: {mine:?}");
        for path in ["/users/u-100/profile", "/users/u-100/permissions"] {
            assert!(
                mine.iter().any(|r| r["path"] == path && r["status"] == 200),
                "{a:?}: {path}"
            );
        }
        let revoked = mine
            .iter()
            .filter(|r| r["path"] == "/oauth/revoke" && r["status"] == 200)
            .count();
        assert_eq!(revoked, usize::from(failed), "{a:?}: {mine:?}");
    }
    // Failed runs released their claims.
    for (item, run_id) in rt.block_on(held_claims(&db)) {
        let a = by_run[&run_id];
        assert_eq!(a.answer.as_ref().expect("answer").1["outcome"], "succeeded");
        assert_eq!(a.work_item, item);
    }
    eprintln!("3 hosts: {succeeded} runs succeeded, {conflicts} lost the race for their item");
}

/// A host killed with SIGKILL mid-load: a survivor takes each of its runs
/// over once its lease has run out and carries it on (`on_crash =
/// "resume"`): every run the killed host had started ends `succeeded` with
/// its report, and the API issued one token per run (the authenticate step
/// sends its idempotency key, the same after the take-over).
#[test]
fn a_killed_hosts_runs_are_resumed_by_a_survivor() {
    let rt = runtime();
    let url = rt.block_on(fresh_database());
    // Slow API calls, so the killed host has runs in flight.
    let api = SampleApi::start(Some(150));
    let mut hosts = hosts(&url, 3);
    let down = Arc::new(AtomicUsize::new(NONE_DOWN));
    let load = Load {
        addrs: hosts.iter().map(|h| h.addr.clone()).collect(),
        api_base: api.base(),
        runs: 600,
        in_flight: 90,
        lease_ms: 60_000,
        item: |i| format!("job-{i}"),
        down: Arc::clone(&down),
    };
    let driving = rt.spawn(load.drive());
    std::thread::sleep(Duration::from_millis(1500));
    down.store(0, Ordering::SeqCst);
    let killed_at = Instant::now();
    hosts[0].kill();
    let answers = rt.block_on(driving).expect("load");
    let db = rt.block_on(connect(&url));
    let stored = rt.block_on(settled(&db, Duration::from_secs(60)));
    let recovered_in = killed_at.elapsed();
    let reports: HashSet<String> = rt
        .block_on(db.query("SELECT run_id FROM braid_reports", &[]))
        .expect("reports")
        .iter()
        .map(|r| r.get(0))
        .collect();

    let lost: Vec<&Answer> = answers.iter().filter(|a| a.answer.is_none()).collect();
    assert!(
        lost.iter().all(|a| a.host == 0),
        "only the killed host's requests are lost"
    );
    let mut resumed = 0;
    for a in &lost {
        // A request the host had not yet journaled left nothing behind.
        let Some(run) = stored.get(&a.trace_id) else {
            continue;
        };
        assert_eq!(run.status, "succeeded", "{run:?}");
        assert!(reports.contains(&run.run_id), "{}: no report", run.run_id);
        let requests = api.requests(Some(&a.trace_id));
        assert_eq!(tokens_issued(&requests), 1, "{run:?}: {requests:?}");
        if run.entries.iter().any(|e| e["kind"] == "resumed") {
            assert!(
                run.owner.starts_with("host-1:") || run.owner.starts_with("host-2:"),
                "resumed by a survivor: {}",
                run.owner
            );
            resumed += 1;
        } else {
            assert!(
                run.owner.starts_with("host-0:"),
                "ended before the kill: {run:?}"
            );
        }
    }
    assert!(resumed > 0, "the killed host had runs in flight: {lost:?}");
    assert!(
        stored.values().all(|r| r.status == "succeeded"),
        "no run failed or was aborted"
    );
    let after: Vec<&Answer> = answers.iter().filter(|a| a.host != 0).collect();
    assert!(after.len() > 200);
    for a in after {
        let (status, body) = a.answer.as_ref().expect("survivors answer");
        assert_eq!(*status, 200);
        assert_eq!(body["outcome"], "succeeded", "{body}");
        assert_eq!(body["trace_id"], a.trace_id.as_str());
    }
    eprintln!(
        "killed host: {resumed} runs resumed by survivors, all settled within {recovered_in:?}"
    );
}

/// What a database outage under load left: every answer, the journal after
/// it settled, outcomes counted, and how many journal writes were retried.
struct Outage {
    answers: Vec<Answer>,
    stored: HashMap<String, StoredRun>,
    outcomes: HashMap<String, usize>,
    retried: usize,
}

/// Stops the test PostgreSQL server on `port` for `down` while 2 hosts
/// serve `runs` runs (40 in flight), starts it again, and checks what must
/// hold whatever the outage hit: every run answered, the journal agrees
/// with every answer, failed and aborted runs undid each reversible step
/// once, claims are held by exactly the succeeded runs, and both hosts
/// serve new runs afterwards.
fn database_outage(port: &str, down: Duration, runs: usize, api_latency_ms: u64) -> Outage {
    let rt = runtime();
    let pg = |args: &[&str]| test_postgres(port, args);
    let server = pg(&[]);
    let url = rt.block_on(fresh_database_on(&server));
    let api = SampleApi::start(Some(api_latency_ms));
    let hosts = hosts(&url, 2);
    let load = Load {
        addrs: hosts.iter().map(|h| h.addr.clone()).collect(),
        api_base: api.base(),
        runs,
        in_flight: 40,
        lease_ms: 60_000,
        item: |i| format!("job-{i}"),
        down: Arc::new(AtomicUsize::new(NONE_DOWN)),
    };
    let driving = rt.spawn(load.drive());
    std::thread::sleep(Duration::from_millis(1500));
    pg(&["stop"]);
    // Readiness tells a load balancer to send runs elsewhere meanwhile.
    let ready = http(&hosts[0].addr, "GET", "/readyz", &[], "");
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("unavailable"), "{}", ready.body);
    std::thread::sleep(down);
    pg(&[]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while http(&hosts[1].addr, "GET", "/readyz", &[], "").status != 200 {
        assert!(Instant::now() < deadline, "not ready after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = rt.block_on(driving).expect("load");
    let db = rt.block_on(connect(&url));
    let stored = rt.block_on(settled(&db, Duration::from_secs(30)));

    let mut outcomes: HashMap<String, usize> = HashMap::new();
    let mut by_run = HashMap::new();
    for a in &answers {
        let (status, body) = a.answer.as_ref().expect("every run is answered");
        if *status == 503 && body.get("outcome").is_none() {
            // Sent while the database was away for longer than a start's
            // retries: refused before any step, so not in the journal.
            let error = body["error"].as_str().unwrap_or("");
            assert!(error.starts_with("run not started"), "{body}");
            assert!(!stored.contains_key(&a.trace_id), "{body}");
            *outcomes.entry("not started".into()).or_default() += 1;
            continue;
        }
        assert_eq!(*status, status_of(body), "{body}");
        let outcome = body["outcome"].as_str().expect("outcome");
        *outcomes.entry(outcome.to_string()).or_default() += 1;
        let run = stored
            .get(&a.trace_id)
            .unwrap_or_else(|| panic!("run on trace {} not journaled", a.trace_id));
        let log = || {
            hosts
                .iter()
                .flat_map(|h| {
                    h.stderr()
                        .lines()
                        .filter(|l| l.contains(&run.run_id))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            run.status,
            outcome,
            "journal and answer agree: {body}\n{run:?}\n{}",
            log()
        );
        let error = run.error.as_deref().unwrap_or("");
        match outcome {
            "succeeded" => {}
            // The database was away: the claim step says so, typed, or the
            // run stopped because its lease could not be renewed.
            "failed" => {
                assert!(error.contains("unavailable"), "{error}");
                assert_undone_once(run);
            }
            // The lease ran out meanwhile: a host took the run over, undid
            // and aborted it, and the answer says so.
            "aborted" => {
                let answered = body["error"].as_str().unwrap_or("");
                assert!(answered.starts_with("run aborted:"), "{body}");
                assert!(error.contains("recovered"), "{error}");
                assert_undone_once(run);
            }
            other => panic!("outcome {other}: {body}"),
        }
        by_run.insert(run.run_id.clone(), (outcome, a.work_item.clone()));
    }
    // Each succeeded run holds its claim; no other run holds one.
    let held = rt.block_on(held_claims(&db));
    for (item, run_id) in &held {
        let (outcome, want) = &by_run[run_id];
        assert_eq!((*outcome, want), ("succeeded", item));
    }
    assert_eq!(held.len(), outcomes.get("succeeded").copied().unwrap_or(0));
    // Each host reconnected: a new run on each succeeds.
    let again = Load {
        addrs: hosts.iter().map(|h| h.addr.clone()).collect(),
        api_base: api.base(),
        runs: 4,
        in_flight: 4,
        lease_ms: 60_000,
        item: |i| format!("after-{i}"),
        down: Arc::new(AtomicUsize::new(NONE_DOWN)),
    };
    for a in rt.block_on(again.drive()) {
        let body = &a.answer.as_ref().expect("answer").1;
        assert_eq!(body["outcome"], "succeeded", "host {}: {body}", a.host);
    }
    let retried = hosts
        .iter()
        .map(|h| h.stderr().matches("trying again").count())
        .sum::<usize>();
    Outage {
        answers,
        stored,
        outcomes,
        retried,
    }
}

#[test]
fn a_database_restart_mid_load_leaves_every_run_consistent() {
    // Down for two seconds: longer than a claim step's retries last, well
    // within the journal's retry budget.
    let outage = database_outage("25433", Duration::from_secs(2), 1500, 20);
    // Claim calls that met the restart got the typed error (and the step
    // was tried again or failed).
    let unavailable = outage
        .stored
        .values()
        .flat_map(|r| &r.entries)
        .filter(|e| e["kind"] == "attempt" && e["step"] == "claim_work")
        .filter(|e| {
            e["error"]
                .as_str()
                .is_some_and(|t| t.contains("claim store unavailable"))
        })
        .count();
    // The outage met runs in flight: their journal writes waited it out.
    assert!(outage.retried > 0, "no journal write met the restart");
    eprintln!(
        "database restart: outcomes {:?}, {} journal writes retried, \
         {unavailable} claim attempts met `unavailable`",
        outage.outcomes, outage.retried
    );
}

/// The outage that once left completed steps neither undone nor reported:
/// 200 runs of about a second each (300 ms per API call) on 2 hosts, the
/// database away for 2.2 s. Whatever the outage hit, a step the journal
/// records as completed is undone if its run did not succeed
/// (`assert_undone_once` in `database_outage`, for every failed or aborted
/// run), and no step is journaled `cancelled` after its completion (a step
/// cancelled on one host and completed after a resume on another is fine).
#[test]
fn a_database_outage_under_one_second_runs_leaves_no_completed_step_behind() {
    let outage = database_outage("25436", Duration::from_millis(2200), 200, 300);
    for run in outage.stored.values() {
        let mut completed: HashSet<&str> = HashSet::new();
        for e in &run.entries {
            let step = e["step"].as_str().unwrap_or("");
            if e["kind"] == "completed" {
                completed.insert(step);
            }
            assert!(
                !(e["kind"] == "cancelled" && completed.contains(step)),
                "`{step}` completed, then cancelled: {run:?}"
            );
        }
    }
    eprintln!(
        "2.2 s outage, one-second runs: outcomes {:?}, {} journal writes retried",
        outage.outcomes, outage.retried
    );
}

#[test]
fn runs_whose_leases_outlast_a_database_outage_are_undone_once_and_answered_as_journaled() {
    // Down for longer than a run lease: every run in flight stops at the
    // lease fence; when the database is back each is either taken back and
    // undone by its host (`failed`) or taken over and carried on by the
    // other (and answered as it ended there), never both.
    // 200 ms per API call: 300 runs, 40 at a time, last several seconds, so
    // runs are in flight when the database stops 1.5 s in (at 20 ms a fast
    // build finished all of them before it).
    let outage = database_outage("25435", Duration::from_secs(8), 300, 200);
    let stopped: Vec<&Answer> = outage
        .answers
        .iter()
        .filter(|a| {
            let body = &a.answer.as_ref().expect("answer").1;
            body["outcome"] == "aborted"
                || body["error"].as_str() == Some(braid::scheduler::LEASE_UNRENEWED)
        })
        .collect();
    assert!(
        !stopped.is_empty(),
        "no run met the lease fence: {:?}",
        outage.outcomes
    );
    eprintln!(
        "long database outage: outcomes {:?}, {} runs stopped by the lease fence",
        outage.outcomes,
        stopped.len()
    );
}

#[test]
fn an_idempotency_key_sent_to_two_hosts_at_once_runs_once() {
    let rt = runtime();
    let url = rt.block_on(fresh_database());
    // Slow enough that every duplicate arrives while the first run goes on.
    let api = SampleApi::start(Some(200));
    let hosts = hosts(&url, 2);
    let body =
        json!({ "api_base": api.base(), "user_id": "u-100", "work_item": "idem-1" }).to_string();
    let answers: Vec<(u16, String, Value)> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (addr, body) = (hosts[i % 2].addr.clone(), body.clone());
            tasks.spawn(async move {
                post_run_with(&addr, &body, "idempotency-key: order-42\r\n").await
            });
        }
        let mut out = Vec::new();
        while let Some(a) = tasks.join_next().await {
            out.push(a.expect("task").expect("answered"));
        }
        out
    });
    let run_ids: HashSet<&str> = answers
        .iter()
        .map(|(_, _, b)| str_of(b, "/run_id"))
        .collect();
    assert_eq!(run_ids.len(), 1, "one run for one key: {answers:?}");
    for (status, _, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["outcome"], "succeeded");
    }
    let replayed = answers
        .iter()
        .filter(|(_, head, _)| head.contains("idempotent-replayed: true"))
        .count();
    assert_eq!(replayed, 7, "all but the first are replays");
    let db = rt.block_on(connect(&url));
    let runs = rt.block_on(stored_runs(&db));
    assert_eq!(runs.len(), 1, "{runs:?}");
    // One token request, one run's worth of API calls.
    let tokens = api
        .requests(None)
        .iter()
        .filter(|r| r["path"] == "/oauth/token")
        .count();
    assert_eq!(tokens, 1);

    // The same key with another body is refused on either host.
    let other =
        json!({ "api_base": api.base(), "user_id": "u-200", "work_item": "idem-2" }).to_string();
    for h in &hosts {
        let (status, _, body) = rt
            .block_on(post_run_with(
                &h.addr,
                &other,
                "idempotency-key: order-42\r\n",
            ))
            .expect("answered");
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or("")
                .contains("different body"),
            "{body}"
        );
    }
}
