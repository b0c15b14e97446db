//! `braid bench --mode serve`: `braid serve` measured from outside, as a
//! load balancer would see it. Starts a `braid serve` process (any build:
//! the binary is a parameter, so two builds can be compared in one run) on
//! a scratch state directory, against the in-process sample API, and drives
//! `POST /v1/workflows/{name}/runs` over HTTP/1.1 keep-alive connections:
//!
//! - **closed loop**: N clients, each sending its next request when it has
//!   its answer (after a 503, once its Retry-After has passed), until a
//!   count of runs has run;
//! - **open loop**: requests sent on a fixed schedule whatever happens to
//!   earlier ones, each latency counted from its *scheduled* send (no
//!   coordinated omission), refusals (`503`) counted apart;
//! - **memory**: resident set before a burst, at its peak, and while idle
//!   after it, until back within 1.5x of before (or a minute).
//!
//! The server's CPU time and resident set are read from `/proc`; its step
//! timeouts from its `/metrics`. Every answer's `trace_id` must be the one
//! sent in its `traceparent`.
//!
//! Must not print for humans (the CLI does).

use super::suite::SuiteError;
use super::{BenchApi, reference_input};
use crate::sample_api::Latencies;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to start and how.
#[derive(Debug, Clone)]
pub struct ServeTarget {
    /// The `braid` binary to start as the server.
    pub braid: PathBuf,
    /// The workflow it serves (the reference workflow's inputs).
    pub workflow: PathBuf,
    /// The compiled-component cache (shared, so start-up does not compile).
    pub cache_dir: Option<PathBuf>,
    /// More `braid serve` flags (e.g. `--durability machine`).
    pub extra_args: Vec<String>,
    /// Sample API latencies.
    pub latencies: Latencies,
}

/// One load on the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ServeLoad {
    /// `in_flight` clients, each sending its next request when it has its
    /// answer (after a 503, when its Retry-After has passed), until `runs`
    /// runs have run.
    Closed { in_flight: usize, runs: usize },
    /// A retry storm: as [`ServeLoad::Closed`], but a refused client sends
    /// again at once, ignoring `Retry-After` (what clients with a naive
    /// retry loop do when a server sheds load).
    Storm { clients: usize, runs: usize },
    /// `per_sec` requests a second for `duration`, on schedule.
    Open { per_sec: f64, duration: Duration },
}

impl ServeLoad {
    pub fn label(&self) -> String {
        match self {
            ServeLoad::Closed { in_flight, .. } => format!("{in_flight} clients"),
            ServeLoad::Storm { clients, .. } => {
                format!("{clients} clients resending at once on 503")
            }
            ServeLoad::Open { per_sec, duration } => {
                format!("{per_sec:.0}/s for {:.0} s", duration.as_secs_f64())
            }
        }
    }
}

/// What one load measured.
#[derive(Debug, Clone, Serialize)]
pub struct ServeResult {
    pub load: String,
    /// Requests sent.
    pub sent: usize,
    /// Runs that ran to an answer (`200` or `422`).
    pub ran: usize,
    pub succeeded: usize,
    /// Refused at once (`503`, admission).
    pub refused: usize,
    /// Anything else: connection errors, other statuses.
    pub errors: usize,
    pub elapsed_s: f64,
    /// Runs answered (ran) per second of the load.
    pub runs_per_s: f64,
    /// Runs answered per second between the 10th and the 90th percentile
    /// of their answer times: the rate once every client is sending and
    /// before clients run out of runs (a closed loop's ramp and tail, where
    /// refused clients are still waiting out their Retry-After, left out).
    pub steady_runs_per_s: f64,
    /// The server's CPU time per run answered, in ms (refusals included).
    pub server_ms_per_run: f64,
    /// Latency of the runs that ran (open loop: from the scheduled send).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Slowest refusal (open loop: from the scheduled send).
    pub refused_max_ms: f64,
    /// The server's CPU time over the load's wall time (2.0 = both cores).
    pub server_cores: f64,
    /// The load generator's CPU time over the load's wall time: this
    /// process (its clients and the sample API), on the same cores.
    pub client_cores: f64,
    pub server_rss_mib: f64,
    /// Step attempts that timed out on the server during the load.
    pub step_timeouts: u64,
    /// Answers whose trace id was not the one sent (should be none).
    pub trace_mismatches: usize,
}

/// Resident set before, at the peak of, and after a burst.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryResult {
    pub before_mib: f64,
    pub peak_mib: f64,
    /// Idle resident set when the wait ended.
    pub after_mib: f64,
    /// Seconds of idle until within 1.5x of before (None: not within the wait).
    pub back_within_1_5x_after_s: Option<f64>,
    pub burst: ServeResult,
}

/// The share of a server's measured capacity the memory mode's burst is
/// sent at when no rate is given ("at capacity", with room for noise).
pub const CAPACITY_SHARE: f64 = 0.9;

/// A running `braid serve` and the sample API it calls.
pub struct ServeBench {
    child: tokio::process::Child,
    pid: u32,
    pub addr: SocketAddr,
    workflow: String,
    api: BenchApi,
    _state: tempfile::TempDir,
    conns: Arc<Pool>,
}

fn setup(what: &str, e: impl std::fmt::Display) -> SuiteError {
    SuiteError::Setup(format!("{what}: {e}").into())
}

impl ServeBench {
    /// Starts the sample API and `braid serve`; returns once it listens.
    pub async fn start(target: &ServeTarget) -> Result<ServeBench, SuiteError> {
        let workflow = crate::workflow::Workflow::load(&target.workflow)
            .map_err(|e| SuiteError::Input(e.into()))?
            .name;
        let api = BenchApi::start(target.latencies)
            .await
            .map_err(|e| setup("sample API", e))?;
        let state = tempfile::Builder::new()
            .prefix("braid-bench-serve-")
            .tempdir()
            .map_err(|e| setup("scratch directory", e))?;
        let addr_file = state.path().join("addr");
        let mut cmd = tokio::process::Command::new(&target.braid);
        cmd.arg("serve")
            .arg(&target.workflow)
            .args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .arg("--state-dir")
            .arg(state.path().join("state"));
        if let Some(cache) = &target.cache_dir {
            cmd.arg("--cache-dir").arg(cache);
        }
        cmd.args(&target.extra_args)
            .env("BRAID_LOG", "error")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| setup(&format!("starting {}", target.braid.display()), e))?;
        let pid = child.id().ok_or_else(|| setup("braid serve", "no pid"))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let addr = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(setup("braid serve", format!("exited at start ({status})")));
            }
            if Instant::now() > deadline {
                return Err(setup("braid serve", "not listening after 300 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(ServeBench {
            child,
            pid,
            addr,
            workflow,
            api,
            _state: state,
            conns: Arc::new(Pool {
                addr,
                idle: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Applies `load` and measures it.
    pub async fn drive(&self, load: ServeLoad) -> ServeResult {
        if let Ok(mut log) = self.api.log.lock() {
            log.clear();
        }
        // Connections are opened beforehand, a few at a time (a thousand
        // at once overflow the listen backlog and cost SYN retries).
        if let ServeLoad::Closed { in_flight, .. }
        | ServeLoad::Storm {
            clients: in_flight, ..
        } = load
        {
            self.conns.warm(in_flight).await;
        }
        let tag = hex::encode(rand::random::<[u8; 4]>());
        let timeouts_before = self.step_timeouts().await;
        let cpu_before = cpu_seconds(self.pid);
        let client_before = cpu_seconds(std::process::id());
        let started = Instant::now();
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let one = {
            let (conns, answers, api) =
                (Arc::clone(&self.conns), Arc::clone(&answers), self.api.addr);
            let path: Arc<str> = format!("/v1/workflows/{}/runs", self.workflow).into();
            move |i: usize, scheduled: Instant| {
                let (conns, answers, path) =
                    (Arc::clone(&conns), Arc::clone(&answers), Arc::clone(&path));
                let body = reference_input(&api, i, &tag).to_string();
                async move {
                    let answer = conns.post(&path, body, scheduled).await;
                    let retry_after = answer.retry_after;
                    if let Ok(mut a) = answers.lock() {
                        a.push(answer);
                    }
                    retry_after
                }
            }
        };
        match load {
            ServeLoad::Closed { in_flight, runs }
            | ServeLoad::Storm {
                clients: in_flight,
                runs,
            } => {
                use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
                let storm = matches!(load, ServeLoad::Storm { .. });
                // `claimed`: runs claimed by a client so far (a refused
                // request gives its claim back); `sent` numbers the
                // requests (each its own work item).
                let (claimed, sent) =
                    (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
                let mut workers = tokio::task::JoinSet::new();
                for _ in 0..in_flight.min(runs) {
                    let (claimed, sent) = (Arc::clone(&claimed), Arc::clone(&sent));
                    let one = one.clone();
                    // Each client sends its next request once it has its
                    // answer. A 503 gives its run back to the count, and
                    // the client waits the Retry-After (jittered) before
                    // it sends again, as a well-behaved client does.
                    workers.spawn(async move {
                        loop {
                            if claimed.fetch_add(1, Relaxed) >= runs {
                                claimed.fetch_sub(1, Relaxed);
                                break;
                            }
                            let i = sent.fetch_add(1, Relaxed);
                            if let Some(wait) = one(i, Instant::now()).await {
                                claimed.fetch_sub(1, Relaxed);
                                if storm {
                                    continue;
                                }
                                // Jittered (1-2x), so refused clients do not
                                // all come back in the same instant.
                                let jitter = 1.0 + rand::random::<f64>();
                                tokio::time::sleep(wait.mul_f64(jitter)).await;
                            }
                        }
                    });
                }
                while workers.join_next().await.is_some() {}
            }
            ServeLoad::Open { per_sec, duration } => {
                let total = (per_sec * duration.as_secs_f64()).round().max(1.0) as usize;
                let interval = Duration::from_secs_f64(1.0 / per_sec.max(0.001));
                let mut tasks = tokio::task::JoinSet::new();
                for i in 0..total {
                    let scheduled = started + interval.mul_f64(i as f64);
                    tokio::time::sleep_until(scheduled.into()).await;
                    tasks.spawn(one(i, scheduled));
                }
                while tasks.join_next().await.is_some() {}
            }
        }
        let elapsed = started.elapsed();
        let cpu = cpu_seconds(self.pid) - cpu_before;
        let client_cpu = cpu_seconds(std::process::id()) - client_before;
        let timeouts = self.step_timeouts().await.saturating_sub(timeouts_before);
        let answers = std::mem::take(&mut *answers.lock().unwrap_or_else(|p| p.into_inner()));
        summarize(
            load,
            &answers,
            (started, elapsed),
            (cpu, client_cpu),
            rss_mib(self.pid),
            timeouts,
        )
    }

    /// A burst at `per_sec` for `duration`, then idle until the resident
    /// set is back within 1.5x of before the burst, or `wait` has passed.
    pub async fn memory(&self, per_sec: f64, duration: Duration, wait: Duration) -> MemoryResult {
        let before = rss_mib(self.pid);
        let peak = Arc::new(Mutex::new(before));
        let watch = {
            let (peak, pid) = (Arc::clone(&peak), self.pid);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok(mut p) = peak.lock() {
                        *p = p.max(rss_mib(pid));
                    }
                }
            })
        };
        let burst = self.drive(ServeLoad::Open { per_sec, duration }).await;
        watch.abort();
        let idle = Instant::now();
        let mut back = None;
        let mut after = rss_mib(self.pid);
        while idle.elapsed() < wait {
            after = rss_mib(self.pid);
            if after <= before * 1.5 {
                back = Some(idle.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let peak_mib = peak.lock().map_or(before, |p| *p).max(burst.server_rss_mib);
        MemoryResult {
            before_mib: before,
            peak_mib,
            after_mib: after,
            back_within_1_5x_after_s: back,
            burst,
        }
    }

    /// Step attempts with outcome `timeout`, from the server's `/metrics`.
    async fn step_timeouts(&self) -> u64 {
        let Ok((200, text)) = self.conns.get("/metrics").await else {
            return 0;
        };
        text.lines()
            .filter(|l| {
                l.starts_with("braid_step_attempts_total{") && l.contains("outcome=\"timeout\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The server's resident set now, in MiB.
    pub fn server_rss_mib(&self) -> f64 {
        rss_mib(self.pid)
    }

    /// Stops the server (SIGKILL: its state directory is scratch).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One answer as the client saw it.
struct Answer {
    status: Option<u16>,
    /// A 503's `Retry-After`.
    retry_after: Option<Duration>,
    latency: Duration,
    answered_at: Instant,
    outcome_succeeded: bool,
    trace_ok: bool,
}

/// Idle keep-alive connections to the server; a request takes one or opens one.
struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Pool {
    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
            match idle {
                Some(mut c) => {
                    if c.ready().await.is_ok() {
                        return Ok(c);
                    }
                }
                None => break,
            }
        }
        self.connect().await
    }

    /// Opens idle connections until there are `n`, 32 at a time.
    async fn warm(&self, n: usize) {
        loop {
            let idle = self.idle.lock().map_or(n, |v| v.len());
            if idle >= n {
                return;
            }
            let batch = (n - idle).min(32);
            let opened = futures_util::future::join_all((0..batch).map(|_| self.connect())).await;
            let opened: Vec<_> = opened.into_iter().filter_map(Result::ok).collect();
            if opened.is_empty() {
                return;
            }
            if let Ok(mut v) = self.idle.lock() {
                v.extend(opened);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    /// (status, Retry-After, body).
    async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Option<Duration>, Bytes), String> {
        let mut conn = self.connection().await?;
        let resp = conn.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        Ok((status, retry_after, body))
    }

    async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let req = http::Request::get(path)
            .header("host", self.addr.to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, _, body) = self.send(req).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Starts a run under a new trace; the answer's latency counts from `scheduled`.
    async fn post(&self, path: &str, body: String, scheduled: Instant) -> Answer {
        let trace_id = hex::encode(rand::random::<[u8; 16]>());
        let parent = hex::encode(rand::random::<[u8; 8]>());
        let req = http::Request::post(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .body(Full::new(Bytes::from(body)));
        let answer = match req {
            Ok(req) => self.send(req).await,
            Err(e) => Err(e.to_string()),
        };
        let answered_at = Instant::now();
        let latency = answered_at - scheduled;
        match answer {
            Ok((status, retry_after, body)) => {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let ran = status == 200 || status == 422;
                Answer {
                    status: Some(status),
                    retry_after: retry_after.filter(|_| status == 503),
                    latency,
                    answered_at,
                    outcome_succeeded: json["outcome"] == "succeeded",
                    trace_ok: !ran || json["trace_id"] == trace_id.as_str(),
                }
            }
            Err(_) => Answer {
                status: None,
                retry_after: None,
                latency,
                answered_at,
                outcome_succeeded: false,
                trace_ok: true,
            },
        }
    }
}

fn summarize(
    load: ServeLoad,
    answers: &[Answer],
    (started, elapsed): (Instant, Duration),
    (cpu_s, client_cpu_s): (f64, f64),
    rss: f64,
    step_timeouts: u64,
) -> ServeResult {
    let mut ran = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).ok();
    let mut refused_max = Duration::ZERO;
    let mut ran_at = Vec::with_capacity(answers.len());
    let (mut n_ran, mut refused, mut errors, mut succeeded, mut mismatches) = (0, 0, 0, 0, 0);
    for a in answers {
        match a.status {
            Some(200 | 422) => {
                n_ran += 1;
                ran_at.push(a.answered_at - started);
                if let Some(h) = ran.as_mut() {
                    let _ = h.record(a.latency.as_micros().max(1) as u64);
                }
            }
            Some(503) => {
                refused += 1;
                refused_max = refused_max.max(a.latency);
            }
            _ => errors += 1,
        }
        succeeded += usize::from(a.outcome_succeeded);
        mismatches += usize::from(!a.trace_ok);
    }
    let q = |p: f64| {
        ran.as_ref()
            .map_or(0.0, |h| h.value_at_quantile(p) as f64 / 1000.0)
    };
    ServeResult {
        load: load.label(),
        sent: answers.len(),
        ran: n_ran,
        succeeded,
        refused,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        runs_per_s: n_ran as f64 / elapsed.as_secs_f64().max(1e-9),
        steady_runs_per_s: steady_rate(&mut ran_at),
        server_ms_per_run: cpu_s * 1000.0 / n_ran.max(1) as f64,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        max_ms: ran.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0),
        refused_max_ms: refused_max.as_secs_f64() * 1000.0,
        server_cores: cpu_s / elapsed.as_secs_f64().max(1e-9),
        client_cores: client_cpu_s / elapsed.as_secs_f64().max(1e-9),
        server_rss_mib: rss,
        step_timeouts,
        trace_mismatches: mismatches,
    }
}

/// Answers per second between the 10th and the 90th percentile of their
/// times (0 with fewer than 10 answers).
fn steady_rate(answered_at: &mut [Duration]) -> f64 {
    answered_at.sort_unstable();
    let n = answered_at.len();
    if n < 10 {
        return 0.0;
    }
    let (first, last) = (n / 10, n * 9 / 10);
    let window = answered_at[last] - answered_at[first];
    (last - first) as f64 / window.as_secs_f64().max(1e-9)
}

/// A process's user + system CPU time, in seconds (`/proc/PID/stat`, at
/// the kernel's 100 ticks a second).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident set, in MiB.
fn rss_mib(pid: u32) -> f64 {
    super::status_mib(&pid.to_string(), "VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A closed loop's tail (the last runs answered after a pause, as when
    /// refused clients wait out their Retry-After) does not lower the
    /// steady rate; the overall rate it does lower.
    #[test]
    fn steady_rate_leaves_out_the_ramp_and_the_tail() {
        // 95 answers 10 ms apart, then 5 more 2 s later.
        let mut at: Vec<Duration> = (0..95)
            .map(|i| Duration::from_millis(10 * i))
            .chain((0..5).map(|i| Duration::from_millis(2_950 + i)))
            .collect();
        let steady = steady_rate(&mut at);
        assert!((steady - 100.0).abs() < 1.0, "{steady}");
        let overall = at.len() as f64 / at[at.len() - 1].as_secs_f64();
        assert!(overall < 40.0, "{overall}");
        assert_eq!(steady_rate(&mut at[..9].to_vec()), 0.0, "too few answers");
    }
}
