//! `braid bench`: load tests of a workflow against the in-process sample API,
//! measured the seed's ways (sequential, a concurrency ladder, a sustained
//! open-loop rate) and against a native baseline: the same workflow through
//! the same scheduler with in-process Rust steps, no sandbox.
//!
//! Latencies go into an HDR histogram; in rate mode each run's latency counts
//! from its *scheduled* start, so a host that falls behind is charged for it
//! (no coordinated omission). Every run's trace is checked: distinct trace ids,
//! every event and outbound call on the run's own trace, and the sample API
//! saw exactly the run's calls on it.

use crate::capabilities::http_client::HttpClient;
use crate::report::{EventRecord, HttpCallRecord, RunReport};
use crate::sample_api::{self, Latencies, RequestLog};
use crate::scheduler::{
    AttemptContext, Compensation, RunRequest, Scheduler, StepExecutor, StepFailure,
};
use crate::store::{ClaimRequest, ClaimStore};
use crate::trace::{IncomingTrace, SpanId};
use crate::workflow::{StepSpec, Workflow};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One load to apply.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// One run at a time.
    Sequential { runs: usize },
    /// `in_flight` runs at a time until `runs` are done.
    Concurrent { in_flight: usize, runs: usize },
    /// Runs started at `per_sec` for `duration`, whatever happens to them.
    Rate { per_sec: f64, duration: Duration },
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Sequential { .. } => "sequential".into(),
            Load::Concurrent { in_flight, .. } => format!("{in_flight} in flight"),
            Load::Rate { per_sec, .. } => format!("{per_sec} ops/s"),
        }
    }
}

/// What one load measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub load: String,
    pub executor: String,
    pub runs: usize,
    pub succeeded: usize,
    pub elapsed_s: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Trace problems found (empty when every run's trace is intact).
    pub trace_violations: Vec<String>,
    pub peak_rss_mib: f64,
}

/// The in-process sample API a bench runs against.
pub struct BenchApi {
    pub addr: SocketAddr,
    pub log: RequestLog,
    server: tokio::task::JoinHandle<()>,
}

impl BenchApi {
    pub async fn start(latencies: Latencies) -> std::io::Result<BenchApi> {
        let (addr, server, log) = sample_api::bind(
            "127.0.0.1:0".parse().map_err(std::io::Error::other)?,
            latencies,
            Vec::new(),
        )
        .await?;
        let server = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("bench sample API stopped: {e}");
            }
        });
        Ok(BenchApi { addr, log, server })
    }
}

impl Drop for BenchApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The process's peak resident set, in MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Builds run `i`'s input; `tag` is unique to one load, so work items differ.
pub type InputFn<'a> = dyn Fn(usize, &str) -> Value + Sync + 'a;

/// The reference workflow's input for run `i` against the sample API at `api`.
pub fn reference_input(api: &SocketAddr, i: usize, tag: &str) -> Value {
    json!({
        "api_base": format!("http://{api}"),
        "user_id": "u-100",
        "resource": "reports/q3",
        "action": "read",
        "work_item": format!("bench-{tag}-{i}"),
        "lease_ms": 60000,
    })
}

/// Applies `load` and measures it.
pub async fn drive<E: StepExecutor>(
    scheduler: Arc<Scheduler<E>>,
    workflow: Arc<Workflow>,
    api: &BenchApi,
    load: Load,
    executor: &str,
    make_input: &InputFn<'_>,
    progress: Option<indicatif::ProgressBar>,
) -> LoadResult {
    if let Ok(mut log) = api.log.lock() {
        log.clear();
    }
    let tag = hex::encode(rand::random::<[u8; 4]>());
    let started = Instant::now();
    // Only what the checks need is kept of each report, so a load of tens of
    // thousands of runs does not measure the bench's own memory.
    let mut reports: Vec<(RunFacts, Duration)> = Vec::new();
    let one = |i: usize, scheduled: Instant| {
        let (scheduler, workflow) = (Arc::clone(&scheduler), Arc::clone(&workflow));
        let input = make_input(i, &tag);
        async move {
            let report = scheduler
                .run(RunRequest {
                    workflow,
                    input,
                    trace: IncomingTrace::from_headers(None, None),
                })
                .await;
            (report, scheduled.elapsed())
        }
    };
    let done = |r: Result<RunReport, crate::scheduler::RunError>,
                latency: Duration,
                reports: &mut Vec<(RunFacts, Duration)>| {
        if let Some(p) = &progress {
            p.inc(1);
        }
        if let Ok(report) = r {
            reports.push((RunFacts::of(&report), latency));
        }
    };
    match load {
        Load::Sequential { runs } => {
            for i in 0..runs {
                let (r, latency) = one(i, Instant::now()).await;
                done(r, latency, &mut reports);
            }
        }
        Load::Concurrent { in_flight, runs } => {
            let mut tasks = tokio::task::JoinSet::new();
            let mut next = 0;
            while next < runs.min(in_flight) {
                tasks.spawn(one(next, Instant::now()));
                next += 1;
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((r, latency)) = joined {
                    done(r, latency, &mut reports);
                }
                if next < runs {
                    tasks.spawn(one(next, Instant::now()));
                    next += 1;
                }
            }
        }
        Load::Rate { per_sec, duration } => {
            let total = (per_sec * duration.as_secs_f64()).round().max(1.0) as usize;
            let interval = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..total {
                let scheduled = started + interval.mul_f64(i as f64);
                let run = one(i, scheduled);
                tasks.spawn(async move {
                    tokio::time::sleep_until(scheduled.into()).await;
                    run.await
                });
            }
            while let Some(joined) = tasks.join_next().await {
                if let Ok((r, latency)) = joined {
                    done(r, latency, &mut reports);
                }
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(p) = &progress {
        p.finish_and_clear();
    }
    summarize(load, executor, &reports, elapsed, &api.log)
}

fn summarize(
    load: Load,
    executor: &str,
    reports: &[(RunFacts, Duration)],
    elapsed: Duration,
    log: &RequestLog,
) -> LoadResult {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
    let mut violations = Vec::new();
    let mut traces = HashSet::new();
    let received: HashMap<String, usize> = log
        .lock()
        .map(|l| {
            let mut counts = HashMap::new();
            for r in l.iter() {
                *counts
                    .entry(r.trace_id.clone().unwrap_or_default())
                    .or_insert(0) += 1;
            }
            counts
        })
        .unwrap_or_default();
    for (report, latency) in reports {
        if let Some(h) = hist.as_mut() {
            let _ = h.record(latency.as_micros().max(1) as u64);
        }
        check_trace(report, &received, &mut traces, &mut violations);
    }
    let q = |p: f64| {
        hist.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    let succeeded = reports.iter().filter(|(r, _)| r.succeeded).count();
    LoadResult {
        load: load.label(),
        executor: executor.into(),
        runs: reports.len(),
        succeeded,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: reports.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: q(0.5),
        p90_ms: q(0.9),
        p99_ms: q(0.99),
        max_ms: hist.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        trace_violations: violations,
        peak_rss_mib: peak_rss_mib(),
    }
}

/// What the trace checks need of one run's report.
struct RunFacts {
    run_id: String,
    trace_id: String,
    succeeded: bool,
    /// Events, or calls, found on another trace than the run's.
    foreign: Vec<String>,
    /// Calls sent with a `traceparent`, and calls that got an answer.
    sent: usize,
    answered: usize,
}

impl RunFacts {
    fn of(report: &RunReport) -> Self {
        let t = &report.trace_id;
        let mut foreign = Vec::new();
        if let Some(e) = report.events.iter().find(|e| &e.trace_id != t) {
            foreign.push(format!("event {} on trace {}", e.name, e.trace_id));
        }
        if let Some(c) = report.http_calls.iter().find(|c| {
            c.traceparent
                .as_ref()
                .is_some_and(|tp| !tp.contains(t.as_str()))
        }) {
            foreign.push(format!("call {} sent under another trace", c.url));
        }
        RunFacts {
            run_id: report.run_id.clone(),
            trace_id: t.clone(),
            succeeded: report.outcome == "succeeded",
            foreign,
            sent: report
                .http_calls
                .iter()
                .filter(|c| c.traceparent.is_some())
                .count(),
            answered: report
                .http_calls
                .iter()
                .filter(|c| c.status.is_some())
                .count(),
        }
    }
}

/// Checks one run's trace; appends what is wrong.
fn check_trace(
    run: &RunFacts,
    received: &HashMap<String, usize>,
    seen: &mut HashSet<String>,
    violations: &mut Vec<String>,
) {
    let t = &run.trace_id;
    if !seen.insert(t.clone()) {
        violations.push(format!("trace id {t} used by two runs"));
    }
    for f in &run.foreign {
        violations.push(format!("run {}: {f}", run.run_id));
    }
    // Every call that got an answer reached the API on this trace; calls cut
    // short by a timeout may or may not have arrived; none arrived unsent.
    let got = received.get(t).copied().unwrap_or(0);
    if got < run.answered || got > run.sent {
        violations.push(format!(
            "run {}: {} calls answered and {} sent on its trace, but the API saw {got}",
            run.run_id, run.answered, run.sent
        ));
    }
}

/// Writes `chain-N.toml` into `dir`: `steps` `noop` steps in a row, each
/// handing the `payload` input on to the next (cost vs steps and payload).
pub fn chain_workflow(
    components_dir: &std::path::Path,
    steps: usize,
    dir: &std::path::Path,
) -> std::io::Result<std::path::PathBuf> {
    use std::fmt::Write as _;
    let mut toml = String::new();
    let components = toml::Value::String(components_dir.to_string_lossy().into_owned());
    let _ = writeln!(
        toml,
        "name = \"chain-{steps}\"\ncomponents_dir = {components}\nresult = \"s{steps}\"\n\n[inputs.payload]\n"
    );
    for i in 1..=steps {
        let arg = if i == 1 {
            "{ input = \"payload\" }".to_string()
        } else {
            format!("{{ step = \"s{}\", pointer = \"/x\" }}", i - 1)
        };
        let _ = writeln!(
            toml,
            "[[steps]]\nname = \"s{i}\"\ncomponent = \"noop\"\nallowed_hosts = []\nargs.x = {arg}\n"
        );
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("chain-{steps}.toml"));
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// The reference workflow's steps as plain Rust: the native baseline. Same
/// scheduler, same API calls (with `traceparent`), same claims and events,
/// no sandbox.
pub struct NativeExecutor {
    claims: Arc<dyn ClaimStore>,
    owner: String,
    /// The same pooled client the sandbox's outbound requests go through.
    client: Arc<HttpClient>,
}

impl NativeExecutor {
    pub fn new(claims: Arc<dyn ClaimStore>, owner: String) -> Result<Self, String> {
        Ok(NativeExecutor {
            claims,
            owner,
            client: Arc::new(HttpClient::new()?),
        })
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a str, StepFailure> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| StepFailure::Fatal(format!("input field `{name}` is missing")))
}

/// One HTTP/1.1 request through the pooled client (as the sandbox's steps send theirs).
async fn http(
    client: &Arc<HttpClient>,
    ctx: &AttemptContext,
    step: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<Value, StepFailure> {
    use http_body_util::{BodyExt, Full};
    let span = SpanId::random();
    let traceparent = ctx.trace.traceparent_for(span).to_string();
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| StepFailure::Fatal(format!("bad url {url}: {e}")))?;
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let started = Instant::now();
    let index = ctx.recorder.http_call(HttpCallRecord {
        step: step.into(),
        attempt_span_id: ctx.trace.span_id.to_string(),
        span_id: span.to_string(),
        method: method.into(),
        url: url.into(),
        traceparent: Some(traceparent.clone()),
        status: None,
        error: None,
        start_ms: ctx.recorder.offset_ms(started),
        duration_ms: 0.0,
    });
    let retry = |e: &dyn std::fmt::Display| StepFailure::Retryable(format!("{url}: {e}"));
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", &authority)
        .header("traceparent", &traceparent);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    if !payload.is_empty() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(
            Full::new(bytes::Bytes::from(payload))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| StepFailure::Fatal(e.to_string()))?;
    let (resp, _) = client.send(req, None).await.map_err(|e| retry(&e))?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| retry(&e))?
        .to_bytes();
    ctx.recorder.http_call_done(
        index,
        Some(status),
        None,
        started.elapsed().as_secs_f64() * 1000.0,
    );
    if status != 200 {
        let msg = format!("{url}: HTTP {status}");
        return Err(if status >= 500 {
            StepFailure::Retryable(msg)
        } else {
            StepFailure::Fatal(msg)
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| StepFailure::Fatal(format!("{url}: {e}")))
}

fn event(ctx: &AttemptContext, name: &str) {
    ctx.recorder.event(EventRecord {
        kind: "event".into(),
        name: name.into(),
        level: "info".into(),
        message: String::new(),
        trace_id: ctx.trace.trace_id.to_string(),
        span_id: ctx.trace.span_id.to_string(),
        step: ctx.step.clone(),
        at_ms: 0.0,
        measurements: BTreeMap::new(),
        metadata: BTreeMap::new(),
    });
}

impl NativeExecutor {
    async fn step(
        &self,
        step: &StepSpec,
        ctx: &AttemptContext,
        input: Value,
    ) -> Result<Value, StepFailure> {
        let kind = step
            .component
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let base = input
            .get("api_base")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let out = match kind {
            // The minimal step: its input back, no host call.
            "noop" => return Ok(input),
            "authenticate" => {
                let user = field(&input, "user_id")?;
                let body = json!({ "client_id": "braid", "user_id": user });
                let token = http(
                    &self.client,
                    ctx,
                    &step.name,
                    "POST",
                    &format!("{base}/oauth/token"),
                    None,
                    Some(body),
                )
                .await?;
                json!({ "access_token": token["access_token"], "user_id": user })
            }
            "fetch_profile" | "fetch_permissions" => {
                let what = if kind == "fetch_profile" {
                    "profile"
                } else {
                    "permissions"
                };
                let url = format!("{base}/users/{}/{what}", field(&input, "user_id")?);
                http(
                    &self.client,
                    ctx,
                    &step.name,
                    "GET",
                    &url,
                    Some(field(&input, "token")?),
                    None,
                )
                .await?
            }
            "validate_access" | "policy_rbac" => {
                let (resource, action) = (field(&input, "resource")?, field(&input, "action")?);
                let grants = input
                    .pointer("/permissions/grants")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let ok = input.pointer("/profile/active") == Some(&Value::Bool(true))
                    && grants.iter().any(|g| {
                        let pattern = g["resource"].as_str().unwrap_or("");
                        let covers = pattern == "*"
                            || pattern == resource
                            || pattern
                                .strip_suffix("/*")
                                .is_some_and(|p| resource.starts_with(&format!("{p}/")));
                        covers
                            && g["actions"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|x| x == action || x == "*"))
                    });
                if !ok {
                    return Err(StepFailure::Fatal("denied by policy".into()));
                }
                json!({ "allowed": true, "reasons": ["grant matches"], "obligations": {} })
            }
            "claim_work" => {
                let claim = self
                    .claims
                    .claim(ClaimRequest {
                        work_item: field(&input, "work_item")?.to_string(),
                        lease: Duration::from_millis(input["lease_ms"].as_u64().unwrap_or(30_000)),
                        run_id: ctx.run_id.clone(),
                        trace_id: ctx.trace.trace_id.to_string(),
                        span_id: ctx.trace.span_id.to_string(),
                        step: step.name.clone(),
                        owner: self.owner.clone(),
                        metadata: "{}".into(),
                    })
                    .await
                    .map_err(|e| StepFailure::Fatal(e.to_string()))?;
                json!({ "claim_id": claim.claim_id, "work_item": claim.work_item, "trace_id": claim.trace_id })
            }
            "aggregate" => json!({
                "trace_id": ctx.trace.trace_id.to_string(),
                "user": input.pointer("/profile/name"),
                "decision": input.get("decision"),
                "claim": input.get("claim"),
            }),
            other => {
                return Err(StepFailure::Host(format!(
                    "no native implementation of `{other}`"
                )));
            }
        };
        event(ctx, &format!("{kind}.done"));
        Ok(out)
    }
}

impl StepExecutor for NativeExecutor {
    fn component_of(&self, step: &str) -> (String, String) {
        (format!("native:{step}"), String::new())
    }

    fn is_reversible(&self, _step: &str) -> bool {
        false
    }

    async fn execute(
        &self,
        step: &StepSpec,
        ctx: AttemptContext,
        input: String,
    ) -> Result<String, StepFailure> {
        let input: Value =
            serde_json::from_str(&input).map_err(|e| StepFailure::Fatal(e.to_string()))?;
        match tokio::time::timeout(step.timeout, self.step(step, &ctx, input)).await {
            Ok(out) => out.map(|v| v.to_string()),
            Err(_) => Err(StepFailure::Timeout(step.timeout)),
        }
    }

    async fn compensate(
        &self,
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: StepFailure,
    ) -> Result<Compensation, StepFailure> {
        Ok(Compensation::GiveUp)
    }

    async fn undo(
        &self,
        _: &StepSpec,
        _: AttemptContext,
        _: String,
        _: String,
    ) -> Result<(), StepFailure> {
        Ok(())
    }
}

/// One rung of the claim benchmark: `claimers` tasks claiming and releasing
/// work items as fast as the store answers.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimRung {
    pub store: String,
    pub claimers: usize,
    /// Distinct work items the claimers pick from (few: contended).
    pub items: usize,
    /// Claim calls made (granted or conflict).
    pub claims: usize,
    pub conflicts: usize,
    pub elapsed_s: f64,
    /// Claim calls per second (each granted claim is also released).
    pub claims_per_s: f64,
    pub claim_p50_us: f64,
    pub claim_p99_us: f64,
    pub release_p50_us: f64,
    pub release_p99_us: f64,
}

/// Runs one rung against `store`: every claimer makes `claims / claimers`
/// claim calls on random items out of `items`, releasing each it is granted.
pub async fn claim_rung(
    store: Arc<dyn ClaimStore>,
    label: &str,
    claimers: usize,
    claims: usize,
    items: usize,
) -> Result<ClaimRung, crate::store::ClaimStoreError> {
    let tag = hex::encode(rand::random::<[u8; 4]>());
    let per_claimer = claims.div_ceil(claimers.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..claimers.max(1) {
        let (store, tag) = (Arc::clone(&store), tag.clone());
        tasks.spawn(async move {
            let (mut claim_us, mut release_us, mut conflicts) = (Vec::new(), Vec::new(), 0);
            for n in 0..per_claimer {
                let item = rand::random::<u64>() % items.max(1) as u64;
                let request = ClaimRequest {
                    work_item: format!("bench-{tag}-{item}"),
                    lease: Duration::from_secs(30),
                    run_id: format!("run-{tag}-{c}-{n}"),
                    trace_id: hex::encode(rand::random::<[u8; 16]>()),
                    span_id: hex::encode(rand::random::<[u8; 8]>()),
                    step: "bench".into(),
                    owner: "bench:0".into(),
                    metadata: "{}".into(),
                };
                let run_id = request.run_id.clone();
                let t = Instant::now();
                let granted = store.claim(request).await;
                claim_us.push(t.elapsed().as_secs_f64() * 1e6);
                match granted {
                    Ok(claim) => {
                        let t = Instant::now();
                        store.release(&claim.claim_id, &run_id).await?;
                        release_us.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Err(crate::store::ClaimStoreError::Conflict(_)) => conflicts += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok((claim_us, release_us, conflicts))
        });
    }
    let (mut claim_us, mut release_us, mut conflicts) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (c, r, n) =
            done.map_err(|e| crate::store::ClaimStoreError::Unavailable(e.to_string()))??;
        claim_us.extend(c);
        release_us.extend(r);
        conflicts += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Ok(ClaimRung {
        store: label.to_string(),
        claimers,
        items,
        claims: claim_us.len(),
        conflicts,
        elapsed_s: elapsed,
        claims_per_s: claim_us.len() as f64 / elapsed.max(1e-9),
        claim_p50_us: pct(&mut claim_us, 0.5),
        claim_p99_us: pct(&mut claim_us, 0.99),
        release_p50_us: pct(&mut release_us, 0.5),
        release_p99_us: pct(&mut release_us, 0.99),
    })
}
