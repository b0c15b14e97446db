//! Test guest `hostile`: misbehaves on request, so the tests can show each
//! kind of misbehaviour is contained. Input: `{ "mode": "...", ... }`.
//!
//! Modes that the host must stop (the attempt fails with a typed reason):
//! `loop` (spins forever), `memory` (allocates without end), `recurse`
//! (overflows the wasm call stack), `recurse-shadow` (overflows Rust's stack
//! in linear memory), `huge-output` (returns `bytes` bytes), `bad-json`,
//! `panic`, `unreachable`.
//!
//! Modes that the host must refuse (the step returns what it observed):
//! `file` (reads a host file), `socket` (connects over TCP), `env` (reads
//! environment and arguments), `http` (calls `url`, off its allowlist),
//! `claim-flood` (claims `count` items), `http-flood` (`count` requests to `url`).

use braid_step::{StepError, TraceContext, coordination, http};
use serde_json::{Value, json};

struct Hostile;

/// Recursion on the wasm call stack (scalars only): overflows the engine's
/// stack limit.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_mul(3).wrapping_add(depth)
}

/// Recursion with big frames: overflows Rust's shadow stack in linear
/// memory, which ends in an out-of-bounds access.
#[inline(never)]
#[allow(unconditional_recursion, reason = "it overflows the stack on purpose")]
fn recurse_shadow(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next[0] = pad[0];
    recurse_shadow(depth + 1, &mut next) + u64::from(next[1])
}

impl braid_step::Step for Hostile {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let input: Value = braid_step::parse_input(&input)?;
        let mode = input.get("mode").and_then(Value::as_str).unwrap_or("");
        let count = input.get("count").and_then(Value::as_u64).unwrap_or(100);
        let url = input
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("http://127.0.0.1:1/");
        let out = match mode {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => json!({ "depth": recurse(0) }),
            "recurse-shadow" => json!({ "depth": recurse_shadow(0, &mut [0u8; 256]) }),
            "huge-output" => {
                let bytes = input
                    .get("bytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(8 << 20) as usize;
                return Ok(format!("\"{}\"", "x".repeat(bytes)));
            }
            "bad-json" => return Ok("this is not { json".to_string()),
            "panic" => panic!("hostile guest panics on purpose"),
            "unreachable" => std::process::abort(),
            "file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => json!({ "opened": true, "bytes": text.len() }),
                Err(e) => json!({ "opened": false, "error": e.to_string() }),
            },
            "socket" => match std::net::TcpStream::connect(
                url.trim_start_matches("http://").trim_end_matches('/'),
            ) {
                Ok(_) => json!({ "connected": true }),
                Err(e) => json!({ "connected": false, "error": e.to_string() }),
            },
            "env" => json!({
                "vars": std::env::vars().count(),
                "args": std::env::args().count(),
                "cwd": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
            }),
            "http" => match http::get(url, &[]) {
                Ok(r) => json!({ "sent": true, "status": r.status }),
                Err(e) => json!({ "sent": false, "error": e.to_string() }),
            },
            // Sends an idempotency key of its choosing (e.g. another run's),
            // hoping the API replays that run's answer.
            "forged-key" => {
                let key = input.get("key").and_then(Value::as_str).unwrap_or("");
                let headers = [("idempotency-key", key), ("x-idempotency-key", key)];
                match http::post_json(url, &headers, &json!({ "user_id": "u-100" })) {
                    Ok(r) => json!({ "sent": true, "status": r.status }),
                    Err(e) => json!({ "sent": false, "error": e.to_string() }),
                }
            }
            "claim-flood" => {
                let mut granted = 0;
                let mut refused = Vec::new();
                for i in 0..count {
                    match coordination::claim(&ctx, &format!("flood-{i}"), 60_000, "{}") {
                        Ok(_) => granted += 1,
                        Err(e) => {
                            refused.push(format!("{e:?}"));
                            if refused.len() > 3 {
                                break;
                            }
                        }
                    }
                }
                json!({ "granted": granted, "refused": refused })
            }
            "http-flood" => {
                let mut sent = 0;
                let mut error = None;
                for _ in 0..count {
                    match http::get(url, &[]) {
                        Ok(_) => sent += 1,
                        Err(e) => {
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                json!({ "sent": sent, "error": error })
            }
            other => return Err(StepError::Fatal(format!("unknown mode `{other}`"))),
        };
        Ok(out.to_string())
    }
}

braid_step::export!(Hostile with_types_in braid_step::bindings);
