//! `braid runs show|wait|cancel RUN_ID`: one run's state, waiting for its
//! end, and cancelling it; through a server (`--server URL`) or straight
//! in the journal (`--state-dir` / `--store`), whose owner host then
//! finds the cancel request within a second.

use super::super::host::open_stores;
use super::super::{Exit, StateArgs, print_json};
use super::remote::Server;
use anyhow::anyhow;
use braid::journal::{CancelAsked, RunJournal, SignalSent};
use clap::Args;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to reach the run.
#[derive(Args)]
pub struct Reach {
    /// A `braid serve` to ask (`http://HOST:PORT`); without it, the journal
    /// of `--state-dir` / `--store` is read and written directly.
    #[arg(long)]
    server: Option<Server>,
    /// The server's admin token (cancel, resume, abort; a signal without `--token`).
    #[arg(long, env = "BRAID_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Print the run's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    state: StateArgs,
}

/// Where a run is asked about.
pub(super) enum Place {
    Server(Server, Option<String>),
    Journal(Arc<dyn RunJournal>),
}

impl Reach {
    pub(super) async fn open(self) -> Result<(Place, bool), Exit> {
        let place = match self.server {
            Some(server) => Place::Server(server, self.admin_token),
            None => Place::Journal(open_stores(&self.state).await?.journal),
        };
        Ok((place, self.json))
    }
}

/// One answer of a server: a request that failed says why.
pub(super) const ASK_LIMIT: Duration = Duration::from_secs(30);

pub(super) fn failed(status: u16, body: &Value) -> Exit {
    let why = body["error"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_string);
    Exit(
        if status == 404 { 2 } else { 1 },
        anyhow!("HTTP {status}: {why}"),
    )
}

/// The run's state: its report if it ended, else its record.
async fn state_of(place: &Place, run_id: &str, wait: Duration) -> Result<Value, Exit> {
    match place {
        Place::Server(server, _) => {
            let secs = wait.as_secs();
            let path = format!("/v1/runs/{run_id}?wait={secs}s");
            let (status, body) = server
                .send("GET", &path, None, None, wait + ASK_LIMIT)
                .await
                .map_err(|e| Exit(1, e))?;
            if status != 200 {
                return Err(failed(status, &body));
            }
            Ok(body)
        }
        Place::Journal(journal) => {
            let unavailable = |e: braid::journal::JournalError| Exit(1, e.into());
            if let Some(report) = journal.report(run_id).await.map_err(unavailable)? {
                let mut v: Value = serde_json::from_str(&report).map_err(|e| Exit(1, e.into()))?;
                v["status"] = v["outcome"].clone();
                return Ok(v);
            }
            match journal.run(run_id).await.map_err(unavailable)? {
                Some(run) => Ok(serde_json::to_value(run).map_err(|e| Exit(1, e.into()))?),
                None => Err(Exit(2, anyhow!("no run `{run_id}`"))),
            }
        }
    }
}

fn print_state(v: &Value, json: bool) -> Result<(), Exit> {
    if json {
        return print_json(v);
    }
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("");
    println!(
        "{}  {:<9}  workflow {}  trace {}",
        text("/run_id"),
        text("/status"),
        text("/workflow"),
        text("/trace_id")
    );
    if let Some(steps) = v["running_steps"].as_object().filter(|s| !s.is_empty()) {
        let running: Vec<String> = steps
            .iter()
            .map(|(s, a)| format!("{s} (attempt {a})"))
            .collect();
        println!("  running: {}", running.join(", "));
    }
    if !text("/error").is_empty() {
        println!("  error: {}", text("/error"));
    }
    if let Some(result) = v.get("result").filter(|r| !r.is_null()) {
        println!("  result: {result}");
    }
    Ok(())
}

/// `braid runs show RUN_ID`.
pub async fn show(run_id: String, reach: Reach) -> Result<u8, Exit> {
    let (place, json) = reach.open().await?;
    let state = state_of(&place, &run_id, Duration::ZERO).await?;
    print_state(&state, json)?;
    Ok(0)
}

/// `braid runs wait RUN_ID`: exit 0 when it succeeded, 1 when it ended
/// otherwise, 3 when it still runs after `timeout`.
pub async fn wait(run_id: String, timeout: Duration, reach: Reach) -> Result<u8, Exit> {
    let (place, json) = reach.open().await?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // A server long-polls (at most 120 s a request); the journal is read again.
        let step = match &place {
            Place::Server(..) => left.min(Duration::from_secs(120)),
            Place::Journal(_) => Duration::ZERO,
        };
        let state = state_of(&place, &run_id, step).await?;
        let status = state["status"].as_str().unwrap_or("running");
        if status != "running" || left.is_zero() {
            print_state(&state, json)?;
            return Ok(match status {
                "succeeded" => 0,
                "running" => 3,
                _ => 1,
            });
        }
        if matches!(place, Place::Journal(_)) {
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
    }
}

/// `braid runs cancel RUN_ID`.
pub async fn cancel(run_id: String, reason: Option<String>, reach: Reach) -> Result<u8, Exit> {
    let (place, json) = reach.open().await?;
    let reason = reason.unwrap_or_else(|| "cancelled by the operator".into());
    let answer = match &place {
        Place::Server(server, token) => {
            let path = format!("/v1/runs/{run_id}/cancel");
            let body = json!({ "reason": reason });
            let (status, body) = server
                .send("POST", &path, token.as_deref(), Some(body), ASK_LIMIT)
                .await
                .map_err(|e| Exit(1, e))?;
            if status != 200 && status != 202 {
                return Err(failed(status, &body));
            }
            body
        }
        Place::Journal(journal) => {
            match journal
                .request_cancel(&run_id, &reason)
                .await
                .map_err(|e| Exit(1, e.into()))?
            {
                CancelAsked::Asked { reason } => {
                    json!({ "run_id": run_id, "status": "cancelling", "reason": reason })
                }
                CancelAsked::Ended { status } if status == "cancelled" => {
                    json!({ "run_id": run_id, "status": status })
                }
                CancelAsked::Ended { status } => {
                    return Err(Exit(
                        1,
                        anyhow!(
                            "run `{run_id}` has already ended `{status}`: there is nothing to cancel"
                        ),
                    ));
                }
                CancelAsked::Unknown => return Err(Exit(2, anyhow!("no run `{run_id}`"))),
            }
        }
    };
    if json {
        print_json(&answer)?;
    } else {
        println!(
            "{run_id}  {}{}",
            answer["status"].as_str().unwrap_or(""),
            answer["reason"]
                .as_str()
                .map(|r| format!("  reason: {r}"))
                .unwrap_or_default()
        );
    }
    Ok(0)
}

/// `braid runs signal RUN_ID NAME`: sends the signal a run's signal step
/// waits for, with `data` (JSON) as the step's output.
pub async fn signal(
    run_id: String,
    name: String,
    data: Option<String>,
    token: Option<String>,
    reach: Reach,
) -> Result<u8, Exit> {
    let data = data.unwrap_or_else(|| "null".into());
    let payload: Value =
        serde_json::from_str(&data).map_err(|e| Exit(2, anyhow!("--data is not JSON: {e}")))?;
    let (place, json) = reach.open().await?;
    let answer = match &place {
        Place::Server(server, admin) => {
            let path = format!("/v1/runs/{run_id}/signals/{name}");
            let token = token.as_deref().or(admin.as_deref());
            let (status, body) = server
                .send("POST", &path, token, Some(payload), ASK_LIMIT)
                .await
                .map_err(|e| Exit(1, e))?;
            if status != 202 {
                return Err(failed(status, &body));
            }
            body
        }
        // Straight in the journal: whoever holds it needs no token. The
        // name is checked by the server only.
        Place::Journal(journal) => match journal
            .send_signal(&run_id, &name, &payload.to_string(), "")
            .await
            .map_err(|e| Exit(1, e.into()))?
        {
            SignalSent::Delivered => {
                json!({ "run_id": run_id, "signal": name, "status": "delivered" })
            }
            SignalSent::AlreadySent => {
                return Err(Exit(
                    1,
                    anyhow!("run `{run_id}` was sent signal `{name}` already"),
                ));
            }
            SignalSent::Ended { status } => {
                return Err(Exit(
                    1,
                    anyhow!("run `{run_id}` has ended `{status}`: it takes no more signals"),
                ));
            }
            SignalSent::Unknown => return Err(Exit(2, anyhow!("no run `{run_id}`"))),
        },
    };
    if json {
        print_json(&answer)?;
    } else {
        println!(
            "{run_id}  signal {name} {}",
            answer["status"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}
