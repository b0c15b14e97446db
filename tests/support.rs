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

/// Runs the braid binary with `args`.
pub fn braid(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid"))
        .args(args)
        .env("BRAID_LOG", "warn")
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

/// The sample API as a child process; killed on drop.
pub struct SampleApi {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl SampleApi {
    pub fn start(latency_ms: Option<u64>) -> SampleApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr_file = dir.path().join("addr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_braid"));
        cmd.args(["sample-api", "--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .stdout(Stdio::null());
        if let Some(ms) = latency_ms {
            cmd.args(["--latency-ms", &ms.to_string()]);
        }
        let child = cmd.spawn().expect("sample API starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file)
                && !a.is_empty()
            {
                break a;
            }
            assert!(Instant::now() < deadline, "sample API did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        SampleApi {
            child,
            addr,
            _dir: dir,
        }
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
        let body = http_get(&self.addr, &path);
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

/// A minimal HTTP/1.1 GET, enough for the sample API's JSON answers.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to sample API");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
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
