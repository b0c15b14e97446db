//! Shared helpers: finding the components, running `braid`, the sample API.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `make guests` puts the components; fails loudly if they are missing.
pub fn components() -> PathBuf {
    let dir = root().join("target/components");
    assert!(
        dir.join("authenticate.wasm").exists(),
        "guest components not found in {}: run `make guests`",
        dir.display()
    );
    dir
}

pub fn reference_workflow() -> PathBuf {
    components();
    root().join("workflows/api-orchestration.toml")
}

/// Runs the braid binary with `args`. A command given no `--state-dir`
/// gets a scratch one (never `.braid/` in the source tree).
pub fn braid(args: &[&str]) -> Output {
    let scratch = std::env::temp_dir().join(format!("braid-tests-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .env("BRAID_LOG", "warn")
        .env("BRAID_STATE_DIR", scratch)
        .output()
        .expect("braid runs")
}

/// Parses a command's stdout as JSON, showing stderr if it is not.
pub fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}); exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits for a server started with `--addr-file` to write its address there.
pub fn wait_for_addr(addr_file: &Path, limit: Duration, what: &str) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(a) = std::fs::read_to_string(addr_file)
            && !a.is_empty()
        {
            return a;
        }
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sample API as a child process; killed on drop.
pub struct SampleApi {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl SampleApi {
    pub fn start(latency_ms: Option<u64>) -> SampleApi {
        Self::start_with(latency_ms, &[])
    }

    /// Starts it with `--fault` rules.
    pub fn start_with(latency_ms: Option<u64>, faults: &[&str]) -> SampleApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr_file = dir.path().join("addr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_braid"));
        cmd.args(["sample-api", "--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::null());
        if let Some(ms) = latency_ms {
            cmd.args(["--latency-ms", &ms.to_string()]);
        }
        for f in faults {
            cmd.args(["--fault", f]);
        }
        let child = cmd.spawn().expect("sample API starts");
        let addr = wait_for_addr(&addr_file, Duration::from_secs(10), "sample API");
        SampleApi {
            child,
            addr,
            _dir: dir,
        }
    }

    /// Adds a fault rule (see `braid::sample_api::FaultRule`).
    pub fn add_fault(&self, rule: Value) {
        let (status, body) = http_request(&self.addr, "POST", "/_faults", Some(&rule.to_string()));
        assert_eq!(status, 201, "adding fault {rule}: {body}");
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request the API recorded (optionally for one trace id).
    pub fn requests(&self, trace_id: Option<&str>) -> Vec<Value> {
        let path = match trace_id {
            Some(t) => format!("/_requests?trace_id={t}"),
            None => "/_requests".to_string(),
        };
        let (status, body) = http_request(&self.addr, "GET", &path, None);
        assert_eq!(status, 200, "{body}");
        match serde_json::from_str(&body) {
            Ok(Value::Array(list)) => list,
            other => panic!("bad /_requests answer: {other:?}"),
        }
    }
}

impl Drop for SampleApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for the sample API.
fn http_request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let r = http(addr, method, path, &[], body.unwrap_or(""));
    (r.status, r.body)
}

/// An HTTP response as a test sees it.
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("HTTP {} body is not JSON ({e}): {}", self.status, self.body)
        })
    }
}

/// A minimal HTTP/1.1 client (one request per connection; content-length
/// or chunked bodies), enough for braid's own servers.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}").expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// The run input for the reference workflow.
pub fn reference_input(api: &SampleApi, user: &str, work_item: &str) -> String {
    serde_json::json!({
        "api_base": api.base(),
        "user_id": user,
        "resource": "reports/q3",
        "action": "read",
        "work_item": work_item,
    })
    .to_string()
}

/// Writes a workflow file next to the real components.
/// A workflow `NAME.toml` in `dir` with a components directory of its own
/// (`dir/components`, where a hot swap writes), holding a copy of each
/// built component `from` as `to.wasm`.
pub fn private_workflow(
    dir: &Path,
    name: &str,
    components: &[(&str, &str)],
    body: &str,
) -> PathBuf {
    let own = dir.join("components");
    std::fs::create_dir_all(&own).expect("mkdir");
    for (from, to) in components {
        std::fs::copy(
            self::components().join(format!("{from}.wasm")),
            own.join(format!("{to}.wasm")),
        )
        .expect("copy component");
    }
    let path = dir.join(format!("{name}.toml"));
    let text = format!("components_dir = \"{}\"\n{body}", own.display());
    std::fs::write(&path, text).expect("write workflow");
    path
}

pub fn write_workflow(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!("components_dir = \"{}\"\n{body}", components().display());
    std::fs::write(&path, text).expect("write workflow");
    path
}

pub fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

/// A fresh `traceparent` and its trace id, so a test can scope faults to one run.
pub fn new_trace() -> (String, String) {
    let tp = braid::trace::TraceParent::new_root();
    (tp.to_string(), tp.trace_id.to_string())
}

/// The run report's step `name`.
pub fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {report}"))
}

/// The steps undone, in the order they were undone.
pub fn undone(report: &Value) -> Vec<String> {
    report["undo"]
        .as_array()
        .expect("undo")
        .iter()
        .map(|u| {
            assert_eq!(u["outcome"], "undone", "{u}");
            str_of(u, "/step").to_string()
        })
        .collect()
}

/// Runs the reference workflow (or `workflow`) with `--json`.
pub fn run_reference(state: &Path, input: &str, extra: &[&str]) -> Output {
    run_workflow(&reference_workflow(), state, input, extra)
}

pub fn run_workflow(workflow: &Path, state: &Path, input: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        workflow.to_str().expect("utf-8 path"),
        "--json",
        "--input",
        input,
        "--state-dir",
    ];
    args.push(state.to_str().expect("utf-8 path"));
    args.extend_from_slice(extra);
    braid(&args)
}

/// `braid claims --json` or `braid runs --json` as a list.
pub fn list(what: &str, state: &Path) -> Vec<Value> {
    let out = braid(&[
        what,
        "--json",
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    match json_stdout(&out) {
        Value::Array(list) => list,
        other => panic!("{what} --json: {other}"),
    }
}

/// The tests' PostgreSQL server, from `make test`.
pub fn postgres_url() -> String {
    std::env::var("BRAID_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "BRAID_TEST_POSTGRES is not set: run `make test` (it starts PostgreSQL with \
             scripts/test-postgres.sh), or set it to a postgres:// URL of a test server"
        )
    })
}

/// Runs `scripts/test-postgres.sh ARGS` for the test server on `port`
/// (start, `stop`, `ca`, ...); what it printed.
pub fn test_postgres(port: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(root().join("scripts/test-postgres.sh"))
        .args(args)
        .env("BRAID_TEST_PG_PORT", port)
        .output()
        .expect("scripts/test-postgres.sh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new, empty database on the PostgreSQL server at `url`; its URL.
pub async fn fresh_database_on(url: &str) -> String {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {url}: {e}"));
    tokio::spawn(conn);
    let name = format!("braid_t_{}", hex::encode(rand::random::<[u8; 6]>()));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}

/// A new, empty database on the tests' PostgreSQL server; its URL.
pub async fn fresh_database() -> String {
    fresh_database_on(&postgres_url()).await
}

/// The reference workflow (as `api-orchestration-audited`, with `on_crash`)
/// plus an `audit` step after the claim (a second permissions call, so a
/// fault can hang it), written to `dir` next to the real components.
pub fn audited_workflow(dir: &Path, on_crash: &str) -> PathBuf {
    let reference = std::fs::read_to_string(reference_workflow()).expect("read");
    let body = reference
        .replace("components_dir = \"../target/components\"\n", "")
        .replace(
            "name = \"api-orchestration\"",
            "name = \"api-orchestration-audited\"",
        )
        .replace(
            "on_crash = \"resume\"",
            &format!("on_crash = \"{on_crash}\""),
        )
        + r#"
[[steps]]
name = "audit"
component = "fetch_permissions"
timeout_ms = 60000
wait_for = ["claim_work"]
args.api_base = { input = "api_base" }
args.user_id = { input = "user_id" }
args.token = { step = "authenticate", pointer = "/access_token" }
"#;
    write_workflow(dir, "audited.toml", &body)
}

/// Run `run_id` as `braid runs` lists it from `state`'s journal.
pub fn journal_run(state: &Path, run_id: &str) -> Value {
    list("runs", state)
        .into_iter()
        .find(|r| r["run_id"] == run_id)
        .unwrap_or_else(|| panic!("run {run_id} not journaled"))
}

/// How many tokens the sample API issued among `requests`: answered token
/// requests that were not a replay of an `Idempotency-Key`'s first answer.
pub fn tokens_issued(requests: &[Value]) -> usize {
    requests
        .iter()
        .filter(|r| r["path"] == "/oauth/token" && r["status"] == 200 && r["replayed"] != true)
        .count()
}
