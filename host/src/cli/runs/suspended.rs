//! `braid runs resume|abort RUN_ID`: ends a suspended run's suspension,
//! through a server (`--server URL`) or straight in the journal, where a
//! `braid serve`'s wake loop takes the request up; `braid runs restart
//! RUN_ID --from STEP` (through a server, which runs it).

use super::control::{ASK_LIMIT, Place, Reach, failed};
use crate::cli::{Exit, print_json};
use anyhow::anyhow;
use braid::journal::{Unsuspend, UnsuspendAsked};
use serde_json::json;

/// Asks suspended run `run_id` to resume (the failed step runs again) or
/// abort (undone, `reason` kept in its error).
pub async fn unsuspend(run_id: String, what: Unsuspend, reach: Reach) -> Result<u8, Exit> {
    let (place, json) = reach.open().await?;
    let answer = match &place {
        Place::Server(server, token) => {
            let path = format!("/v1/runs/{run_id}/{}", what.action());
            let body = match &what {
                Unsuspend::Abort {
                    reason: Some(reason),
                } => Some(json!({ "reason": reason })),
                _ => None,
            };
            let (code, body) = server
                .send("POST", &path, token.as_deref(), body, ASK_LIMIT)
                .await
                .map_err(|e| Exit(1, e))?;
            if code != 202 {
                return Err(failed(code, &body));
            }
            body
        }
        Place::Journal(journal) => {
            let asked = journal
                .request_unsuspend(&run_id, &what)
                .await
                .map_err(|e| Exit(1, e.into()))?;
            match asked.refusal(&run_id, &what) {
                None => json!({ "run_id": run_id, "status": what.doing() }),
                Some(why) if asked == UnsuspendAsked::Unknown => return Err(Exit(2, anyhow!(why))),
                Some(why) => return Err(Exit(1, anyhow!(why))),
            }
        }
    };
    if json {
        print_json(&answer)?;
    } else {
        println!(
            "{run_id}  {}",
            answer["status"].as_str().unwrap_or(what.doing())
        );
    }
    Ok(0)
}

/// Restarts ended run `run_id` from step `from`, through a server; prints
/// the new run (`202`: started).
pub async fn restart(run_id: String, from: String, reach: Reach) -> Result<u8, Exit> {
    let (place, json) = reach.open().await?;
    let Place::Server(server, token) = &place else {
        return Err(Exit(
            2,
            anyhow!(
                "a restart runs steps: name the server that runs it with --server http://HOST:PORT"
            ),
        ));
    };
    let path = format!("/v1/runs/{run_id}/restart");
    let (code, body) = server
        .send(
            "POST",
            &path,
            token.as_deref(),
            Some(json!({ "from": from })),
            ASK_LIMIT,
        )
        .await
        .map_err(|e| Exit(1, e))?;
    if code != 202 {
        return Err(failed(code, &body));
    }
    if json {
        print_json(&body)?;
    } else {
        println!(
            "{}  restarts {run_id} from `{from}`  trace {}",
            body["run_id"].as_str().unwrap_or(""),
            body["trace_id"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}
