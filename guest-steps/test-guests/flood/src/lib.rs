//! Test guest `flood`: tries to make the host keep, print or refuse more
//! than an attempt's budget allows, so the tests can show each bound holds.
//! A reversible step. Input: `{ "mode": "...", "count": N, "bytes": B, ... }`.
//!
//! `run` modes: `log-storm` (`count` log lines of `bytes` bytes), `event-storm`
//! (`count` events with 64 metadata values of `bytes` bytes), `context-storm`
//! (`count` log calls under a forged trace id), `denied-storm` (`count`
//! requests to `url`, off the allowlist), `stderr-flood` (`count` lines of
//! `bytes` bytes on stderr), `storm-then-claim` (a log storm, then one
//! claim of `flood-claim`), `pollables` (`count` clock pollables kept at
//! once), `headers` (`count` header values of `bytes` bytes in one fields
//! resource), `body` (a POST to `url` whose body is `count` chunks of
//! `bytes` bytes), `error` (fails with an error of `bytes` bytes),
//! `fail` (fails fatally, so `compensate` runs), `events-then-retry`
//! (`count` small events, then a retryable error: with `max_retries` a run
//! of many attempts and events, as the viewer's benchmark wants), `ok`
//! (returns its input).
//!
//! `compensate`: `continue-with` a JSON string of `continue_bytes` bytes when
//! set, else give up. `undo`: fails with an error of `undo_error_bytes` bytes
//! when set, else succeeds.

use braid_step::bindings::braid::workflow::telemetry;
use braid_step::{Level, StepError, TraceContext, http};
use braid_step_reversible::{Compensation, Reversible, Step};
use serde_json::{Value, json};

struct Flood;

fn number(input: &Value, field: &str, default: u64) -> u64 {
    input.get(field).and_then(Value::as_u64).unwrap_or(default)
}

impl Step for Flood {
    fn run(ctx: TraceContext, input: String) -> Result<String, StepError> {
        let parsed: Value = braid_step::parse_input(&input)?;
        let mode = parsed.get("mode").and_then(Value::as_str).unwrap_or("ok");
        let count = number(&parsed, "count", 1_000_000_000);
        let bytes = number(&parsed, "bytes", 8192) as usize;
        let url = parsed
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("http://denied.invalid/");
        let line = "x".repeat(bytes);
        let mut done = 0u64;
        match mode {
            "log-storm" => {
                for _ in 0..count {
                    let _ = telemetry::log(&ctx, Level::Error, &line);
                    done += 1;
                }
            }
            "storm-then-claim" => {
                for _ in 0..count {
                    let _ = telemetry::log(&ctx, Level::Info, &line);
                    done += 1;
                }
                braid_step::coordination::claim(&ctx, "flood-claim", 60_000, "{}")
                    .map_err(|e| StepError::Fatal(format!("claim: {e:?}")))?;
            }
            "event-storm" => {
                let metadata: Vec<(String, String)> =
                    (0..64).map(|i| (format!("k{i}"), line.clone())).collect();
                for _ in 0..count {
                    let _ = telemetry::event(&ctx, "storm", &[], &metadata);
                    done += 1;
                }
            }
            "context-storm" => {
                let forged = TraceContext {
                    trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                    ..ctx.clone()
                };
                for _ in 0..count {
                    let _ = telemetry::log(&forged, Level::Error, "forged");
                    done += 1;
                }
            }
            "denied-storm" => {
                for _ in 0..count {
                    let _ = http::get(url, &[]);
                    done += 1;
                }
            }
            "stderr-flood" => {
                use std::io::Write;
                // Past the host's capture limit writes fail; keep writing.
                let mut stderr = std::io::stderr();
                for _ in 0..count {
                    let _ = writeln!(stderr, "{line}");
                    done += 1;
                }
            }
            "pollables" => {
                use braid_step::bindings::wasi::clocks::monotonic_clock;
                let mut kept = Vec::new();
                for _ in 0..count {
                    kept.push(monotonic_clock::subscribe_duration(1_000_000_000));
                    done += 1;
                }
            }
            "headers" => {
                use braid_step::bindings::wasi::http::types::Fields;
                let fields = Fields::new();
                for i in 0..count {
                    if let Err(e) = fields.append("x-flood", line.as_bytes()) {
                        return Ok(
                            json!({ "mode": mode, "done": i, "refused": format!("{e:?}") })
                                .to_string(),
                        );
                    }
                    done += 1;
                }
            }
            "body" => {
                use braid_step::bindings::wasi::http::outgoing_handler;
                use braid_step::bindings::wasi::http::types::{
                    Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
                };
                let request = OutgoingRequest::new(Fields::new());
                let _ = request.set_method(&Method::Post);
                let _ = request.set_scheme(Some(&Scheme::Http));
                let authority = url
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or("");
                let _ = request.set_authority(Some(authority));
                let _ = request.set_path_with_query(Some("/"));
                let body = request
                    .body()
                    .map_err(|()| StepError::Fatal("no body".into()))?;
                let _pending = outgoing_handler::handle(request, None);
                let stream = body
                    .write()
                    .map_err(|()| StepError::Fatal("no stream".into()))?;
                for i in 0..count {
                    if let Err(e) = stream.blocking_write_and_flush(line.as_bytes()) {
                        return Ok(
                            json!({ "mode": mode, "done": i, "refused": format!("{e:?}") })
                                .to_string(),
                        );
                    }
                    done += 1;
                }
                drop(stream);
                let _ = OutgoingBody::finish(body, None);
            }
            "events-then-retry" => {
                for i in 0..count {
                    let _ = telemetry::event(&ctx, "tick", &[], &[("i".into(), i.to_string())]);
                }
                return Err(StepError::Retryable(format!(
                    "flood retries on purpose after {count} events"
                )));
            }
            "error" => return Err(StepError::Fatal("e".repeat(bytes))),
            "fail" => return Err(StepError::Fatal("flood fails on purpose".into())),
            "ok" => return Ok(input),
            other => return Err(StepError::Fatal(format!("unknown mode `{other}`"))),
        }
        Ok(json!({ "mode": mode, "done": done }).to_string())
    }
}

impl Reversible for Flood {
    fn compensate(_: TraceContext, input: String, _: StepError) -> Compensation {
        let input: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
        match input
            .get("continue_bytes")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
        {
            Some(n) => Compensation::ContinueWith(json!("c".repeat(n as usize)).to_string()),
            None => Compensation::GiveUp,
        }
    }

    fn undo(_: TraceContext, input: String, _: String) -> Result<(), StepError> {
        let input: Value = serde_json::from_str(&input).unwrap_or(Value::Null);
        match input
            .get("undo_error_bytes")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
        {
            Some(n) => Err(StepError::Fatal("u".repeat(n as usize))),
            None => Ok(()),
        }
    }
}

braid_step_reversible::export!(Flood with_types_in braid_step_reversible::bindings);
