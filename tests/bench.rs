//! `braid bench` works end to end (the figures themselves belong in
//! `make bench`, never in tests).

use crate::support::*;
use serde_json::Value;

#[test]
fn bench_runs_both_executors_and_checks_every_trace() {
    components();
    let state = tempfile::tempdir().expect("tempdir");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "ladder",
        "--concurrency",
        "1,4",
        "--runs",
        "8",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["trace_violations"], 0);
    let loads = report["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 4, "two rungs, two executors");
    for l in loads {
        assert_eq!(l["succeeded"], l["runs"], "{l}");
        assert!(l["runs"].as_u64().expect("runs") >= 8);
        assert!(l["p50_ms"].as_f64().expect("p50") > 0.0);
        // Six steps: a start, at most one write per completed step (the
        // two fetches share one when they end together), an end (and now
        // and then one lease renewal for every run in flight).
        let journal = l["writes_per_run"]["journal"]
            .as_f64()
            .expect("journal writes");
        assert!((7.0..9.0).contains(&journal), "{l}");
        let claims = l["writes_per_run"]["claims"]
            .as_f64()
            .expect("claim writes");
        assert!(claims >= 1.0, "claim_work claims once: {l}");
    }
    let executors: Vec<&str> = loads.iter().map(|l| str_of(l, "/executor")).collect();
    assert_eq!(executors, ["sandbox", "native", "sandbox", "native"]);
}

/// On a shared PostgreSQL store the ladder journals and claims there, with
/// the same writes per run as on SQLite.
#[test]
fn bench_on_postgres_journals_there_with_the_same_writes_per_run() {
    components();
    let url = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(fresh_database());
    let state = tempfile::tempdir().expect("tempdir");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "ladder",
        "--concurrency",
        "4",
        "--runs",
        "8",
        "--executor",
        "native",
        "--json",
        "--store",
        &url,
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    let loads = report["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 1);
    let l = &loads[0];
    assert_eq!(l["succeeded"], l["runs"], "{l}");
    let journal = l["writes_per_run"]["journal"]
        .as_f64()
        .expect("journal writes");
    assert!((7.0..9.0).contains(&journal), "{l}");
    // The runs are in the database, not in the state directory.
    let runs = braid(&["runs", "--store", &url, "--json"]);
    assert!(runs.status.success(), "{}", stderr(&runs));
    let listed = json_stdout(&runs);
    let n = listed.as_array().map_or(0, Vec::len);
    assert!(n >= 8, "{n} runs in PostgreSQL");
    assert!(!state.path().join("runs.sqlite3").exists());
}

/// `--mode serve` starts `braid serve` as another process and drives it over
/// HTTP: every request answered, each answer on the trace it was sent
/// under, a `--serve-arg` reaching the server (a bound of 2 runs in flight
/// turns part of an over-bound burst into refusals, not errors).
#[test]
fn bench_serve_drives_braid_serve_from_outside() {
    components();
    let state = tempfile::tempdir().expect("tempdir");
    let cache = root().join("target/test-cache");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "serve",
        "--concurrency",
        "4",
        "--runs",
        "12",
        "--rate",
        "200",
        "--duration-s",
        "0.5",
        "--latency-ms",
        "50",
        "--serve-arg=--max-runs-in-flight=2",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let loads = json_stdout(&out);
    let loads = loads.as_array().expect("loads");
    assert_eq!(loads.len(), 2, "one closed-loop rung, one rate");
    for l in loads {
        assert_eq!(l["trace_mismatches"], 0, "{l}");
        assert_eq!(l["errors"], 0, "{l}");
        let (ran, refused) = (l["ran"].as_u64(), l["refused"].as_u64());
        assert_eq!(
            ran.zip(refused).map(|(a, b)| a + b),
            l["sent"].as_u64(),
            "every request ran or was refused: {l}"
        );
        assert_eq!(l["succeeded"], l["ran"], "{l}");
    }
    // 100 requests in half a second, each run over 150 ms, 2 at a time.
    assert_eq!(loads[1]["sent"], 100);
    assert!(
        loads[1]["refused"].as_u64().expect("refused") > 0,
        "{}",
        loads[1]
    );
}

/// `--retry-storm`: refused clients resend at once, ignoring Retry-After;
/// every run still runs, and the refusals are counted, not errors.
#[test]
fn bench_serve_retry_storm_resends_at_once_and_every_run_runs() {
    components();
    let state = tempfile::tempdir().expect("tempdir");
    let cache = root().join("target/test-cache");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "serve",
        "--retry-storm",
        "--concurrency",
        "8",
        "--runs",
        "16",
        "--latency-ms",
        "20",
        "--serve-arg=--max-runs-in-flight=2",
        // Refused at once: the storm is the client's, not the server's wait.
        "--serve-arg=--admission-wait-ms=0",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
        "--cache-dir",
        cache.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let loads = json_stdout(&out);
    let loads = loads.as_array().expect("loads");
    assert_eq!(loads.len(), 1, "one storm rung");
    let l = &loads[0];
    assert_eq!(str_of(l, "/load"), "8 clients resending at once on 503");
    assert_eq!(l["errors"], 0, "{l}");
    assert_eq!(l["trace_mismatches"], 0, "{l}");
    assert_eq!(l["ran"], 24, "max(16, 3 x 8) runs: {l}");
    // Eight clients on a bound of two, each run over 60 ms: most sends
    // are refused, and resent at once rather than after a second.
    assert!(l["refused"].as_u64().expect("refused") > 100, "{l}");
}

/// The map rows of the scaling mode: every run of a map of 50 `noop`
/// elements succeeds on both executors, each with its trace intact.
#[test]
fn bench_maps_noop_over_elements_on_both_executors() {
    components();
    let state = tempfile::tempdir().expect("tempdir");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "scaling",
        "--steps",
        "1",
        "--payload-bytes",
        "100",
        "--map-elements",
        "50",
        "--runs",
        "8",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_stdout(&out);
    assert_eq!(report["trace_violations"], 0);
    let maps: Vec<&Value> = report["loads"]
        .as_array()
        .expect("loads")
        .iter()
        .filter(|l| l["load"] == "map of 50")
        .collect();
    assert_eq!(maps.len(), 2, "sandbox and native: {report}");
    for l in maps {
        assert_eq!(l["succeeded"], l["runs"], "{l}");
        assert!(l["runs"].as_u64().expect("runs") >= 2, "{l}");
    }
}

#[test]
fn bench_waiting_parks_runs_out_of_memory_and_wakes_every_one() {
    components();
    let state = tempfile::tempdir().expect("tempdir");
    let out = braid(&[
        "bench",
        "--workflow",
        reference_workflow().to_str().expect("utf-8"),
        "--mode",
        "waiting",
        "--runs",
        "40",
        "--json",
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = json_stdout(&out);
    assert_eq!(r["runs"], 40);
    assert_eq!(
        r["held_in_memory"], 0,
        "parked runs are rows, not tasks: {r}"
    );
    assert_eq!(r["signalled_succeeded"], 40, "{r}");
    assert_eq!(r["timers_succeeded"], 40, "{r}");
    // A woken run's next step starts after its time, never before.
    assert!(
        r["timer_p50_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{r}"
    );
    assert!(
        r["journal_bytes_per_run"].as_f64().is_some_and(|b| b > 0.0),
        "{r}"
    );
}
