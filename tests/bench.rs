//! `braid bench` works end to end (the figures themselves belong in
//! `make bench`, never in tests).

use crate::support::*;

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
    }
    let executors: Vec<&str> = loads.iter().map(|l| str_of(l, "/executor")).collect();
    assert_eq!(executors, ["sandbox", "native", "sandbox", "native"]);
}
