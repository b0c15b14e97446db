//! Runs in flight on this server, as the run viewer shows them: which runs
//! are going and which step each is on, told to open pages as they change
//! (server-sent events, `GET /ui/events`).
//!
//! Fed by the server when a run starts and ends, and by the scheduler (as
//! an [`AttemptSink`]) when a step attempt starts and ends. Bounded: it holds
//! the runs admitted here (at most `--max-runs-in-flight`), each with its
//! running steps; at most [`MAX_EVENT_STREAMS`] pages listen at once, each
//! at most [`CHANGES_BUFFERED`] changes behind (a page further behind gets
//! the whole list again instead).

use crate::report::{AttemptEnded, AttemptSink, RunMeta};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

/// Pages listening for changes at once; one more gets `503`.
pub const MAX_EVENT_STREAMS: usize = 64;
/// Changes a listening page may fall behind before it is sent the whole
/// list again.
pub const CHANGES_BUFFERED: usize = 1024;

/// A run in flight here.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub started_at_ms: u64,
    /// Steps with an attempt running now: step -> attempt (from 1).
    pub running: BTreeMap<String, u32>,
    /// Attempts that ended so far, and how many of them failed.
    pub attempts_ended: u32,
    pub attempts_failed: u32,
}

/// What changed, as a page is told it (the event's name is `kind`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    /// A run started here.
    Started(InFlight),
    /// An attempt of a step started (`state` is `running`) or ended (its
    /// outcome: `succeeded`, `retryable`, ...).
    Step {
        run_id: String,
        step: String,
        attempt: u32,
        state: String,
    },
    /// A run was refused before anything ran (its start could not be
    /// journaled): it has no report.
    Refused { run_id: String },
    /// A run ended: it is in the journal's reports now.
    Ended {
        run_id: String,
        workflow: String,
        trace_id: String,
        outcome: String,
        degraded: bool,
        started_at_ms: u64,
        duration_ms: f64,
    },
}

/// The runs in flight on this server.
pub struct RunsInFlight {
    runs: Mutex<BTreeMap<String, InFlight>>,
    /// Told when a run in flight ends, for the requests that wait for it
    /// (`GET /v1/runs/ID?wait=`); one entry per run waited for, gone when
    /// the run ends.
    endings: Mutex<HashMap<String, Arc<Notify>>>,
    changes: broadcast::Sender<Change>,
    streams: Arc<Semaphore>,
}

impl Default for RunsInFlight {
    fn default() -> Self {
        RunsInFlight {
            runs: Mutex::new(BTreeMap::new()),
            endings: Mutex::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_BUFFERED).0,
            streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        }
    }
}

impl RunsInFlight {
    /// The runs in flight, oldest first.
    pub fn list(&self) -> Vec<InFlight> {
        oldest_first(&self.lock())
    }

    /// One run in flight, if it is.
    pub fn get(&self, run_id: &str) -> Option<InFlight> {
        self.lock().get(run_id).cloned()
    }

    /// Run `run_id` started; it is listed until the returned guard drops
    /// (when it ends, or if its task dies).
    pub fn started(
        self: &Arc<Self>,
        run_id: &str,
        workflow: &str,
        trace_id: &str,
    ) -> InFlightGuard {
        let run = InFlight {
            run_id: run_id.to_string(),
            workflow: workflow.to_string(),
            trace_id: trace_id.to_string(),
            started_at_ms: crate::store::now_ms(),
            running: BTreeMap::new(),
            attempts_ended: 0,
            attempts_failed: 0,
        };
        let mut runs = self.lock();
        runs.insert(run_id.to_string(), run.clone());
        // Sent under the lock, so a page subscribing sees each change
        // either in its first list or as a change, never both or neither.
        let _ = self.changes.send(Change::Started(run));
        InFlightGuard {
            runs: Arc::clone(self),
            run_id: run_id.to_string(),
            ended: None,
        }
    }

    /// What is told when run `run_id` ends, if it is in flight here
    /// (`None`: it is not). Its report is stored before it is told.
    pub fn ending(&self, run_id: &str) -> Option<Arc<Notify>> {
        let runs = self.lock();
        runs.get(run_id)?;
        let mut endings = self.endings.lock().unwrap_or_else(|p| p.into_inner());
        Some(Arc::clone(endings.entry(run_id.to_string()).or_default()))
    }

    /// Tells whoever waits for run `run_id` that it ended.
    fn tell_ended(&self, run_id: &str) {
        let told = self
            .endings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
        if let Some(notify) = told {
            notify.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InFlight>> {
        // A panic while holding the lock leaves a map still worth showing.
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, run_id: &str, change: impl FnOnce(&mut InFlight) -> Option<Change>) {
        let mut runs = self.lock();
        if let Some(run) = runs.get_mut(run_id)
            && let Some(change) = change(run)
        {
            let _ = self.changes.send(change);
        }
    }

    /// A page's stream of changes: first `runs` (every run in flight), then
    /// each change as it happens (`runs` again if the page fell behind),
    /// until `closing` (the server is shutting down). `None`: already
    /// [`MAX_EVENT_STREAMS`] pages listen.
    pub fn events(
        self: &Arc<Self>,
        closing: CancellationToken,
    ) -> Option<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>> + use<>>> {
        let permit = Arc::clone(&self.streams).try_acquire_owned().ok()?;
        let (first, changes) = {
            let runs = self.lock();
            (oldest_first(&runs), self.changes.subscribe())
        };
        let state = Listening {
            runs: Arc::clone(self),
            changes,
            closing,
            first: Some(first),
            _permit: permit,
        };
        let stream = futures_util::stream::unfold(state, |mut s| async move {
            let event = s.next().await?;
            Some((Ok(event), s))
        });
        Some(Sse::new(stream).keep_alive(KeepAlive::default()))
    }
}

/// The runs of `runs`, oldest first.
fn oldest_first(runs: &BTreeMap<String, InFlight>) -> Vec<InFlight> {
    let mut list: Vec<InFlight> = runs.values().cloned().collect();
    list.sort_by(|a, b| (a.started_at_ms, &a.run_id).cmp(&(b.started_at_ms, &b.run_id)));
    list
}

/// One page's place in the changes.
struct Listening {
    runs: Arc<RunsInFlight>,
    changes: broadcast::Receiver<Change>,
    closing: CancellationToken,
    /// The list to send first (and again after falling behind).
    first: Option<Vec<InFlight>>,
    _permit: OwnedSemaphorePermit,
}

impl Listening {
    async fn next(&mut self) -> Option<Event> {
        if let Some(list) = self.first.take() {
            return Some(json_event("runs", &list));
        }
        let received = tokio::select! {
            received = self.changes.recv() => received,
            () = self.closing.cancelled() => return None,
        };
        match received {
            Ok(change) => {
                let kind = match &change {
                    Change::Started(_) => "started",
                    Change::Step { .. } => "step",
                    Change::Ended { .. } => "ended",
                    Change::Refused { .. } => "refused",
                };
                Some(json_event(kind, &change))
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind: start over from the whole list.
                self.changes = self.changes.resubscribe();
                Some(json_event("runs", &self.runs.list()))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

fn json_event(name: &str, data: &impl Serialize) -> Event {
    let event = Event::default().event(name);
    match serde_json::to_string(data) {
        Ok(json) => event.data(json),
        Err(e) => event.comment(format!("unserialisable change: {e}")),
    }
}

/// Keeps a run listed while it goes on; [`InFlightGuard::ended`] says how
/// it ended, dropping without it (a task that died) says `aborted`.
pub struct InFlightGuard {
    runs: Arc<RunsInFlight>,
    run_id: String,
    ended: Option<(String, bool, f64)>,
}

impl InFlightGuard {
    /// The run ended with `outcome` (`degraded` or not) after `duration_ms`.
    pub fn ended(mut self, outcome: &str, degraded: bool, duration_ms: f64) {
        self.ended = Some((outcome.to_string(), degraded, duration_ms));
    }

    /// The run was refused before anything ran.
    pub fn refused(self) {
        let mut runs = self.runs.lock();
        if runs.remove(&self.run_id).is_some() {
            let _ = self.runs.changes.send(Change::Refused {
                run_id: self.run_id.clone(),
            });
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut runs = self.runs.lock();
        if let Some(run) = runs.remove(&self.run_id) {
            let (outcome, degraded, duration_ms) = self.ended.take().unwrap_or_else(|| {
                let ms = crate::store::now_ms().saturating_sub(run.started_at_ms);
                ("aborted".to_string(), false, ms as f64)
            });
            let _ = self.runs.changes.send(Change::Ended {
                run_id: run.run_id,
                workflow: run.workflow,
                trace_id: run.trace_id,
                outcome,
                degraded,
                started_at_ms: run.started_at_ms,
                duration_ms,
            });
        }
        // Not under the runs' lock (`ending` takes it first).
        drop(runs);
        self.runs.tell_ended(&self.run_id);
    }
}

impl AttemptSink for RunsInFlight {
    fn attempt_started(&self, run: &RunMeta, step: &str, attempt: u32) {
        self.update(&run.run_id, |r| {
            r.running.insert(step.to_string(), attempt);
            Some(Change::Step {
                run_id: r.run_id.clone(),
                step: step.to_string(),
                attempt,
                state: "running".to_string(),
            })
        });
    }

    /// Only the attempt's outcome is shown.
    fn wants_calls_and_claims(&self) -> bool {
        false
    }

    fn attempt_ended(&self, run: &RunMeta, ended: AttemptEnded) {
        self.update(&run.run_id, |r| {
            if r.running.get(&ended.step) == Some(&ended.attempt.attempt) {
                r.running.remove(&ended.step);
            }
            r.attempts_ended += 1;
            if ended.attempt.outcome != "succeeded" {
                r.attempts_failed += 1;
            }
            Some(Change::Step {
                run_id: r.run_id.clone(),
                step: ended.step,
                attempt: ended.attempt.attempt,
                state: ended.attempt.outcome,
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(run_id: &str) -> RunMeta {
        RunMeta {
            run_id: run_id.into(),
            workflow: "wf".into(),
            traceparent: String::new(),
            tracestate: String::new(),
            started_at_ms: 0,
        }
    }

    #[test]
    fn a_run_is_listed_with_its_running_steps_until_it_ends() {
        let runs = Arc::new(RunsInFlight::default());
        let mut changes = runs.changes.subscribe();
        let guard = runs.started("run-1", "wf", "t");
        runs.attempt_started(&meta("run-1"), "fetch", 1);
        runs.attempt_started(&meta("run-other"), "fetch", 1); // not a run of this server
        let listed = runs.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].running.get("fetch"), Some(&1));
        guard.ended("succeeded", false, 12.5);
        assert!(runs.list().is_empty());
        let kinds: Vec<String> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| match c {
                Change::Started(r) => format!("started {}", r.run_id),
                Change::Step {
                    step,
                    state,
                    attempt,
                    ..
                } => format!("{step} #{attempt} {state}"),
                Change::Ended { outcome, .. } => format!("ended {outcome}"),
                Change::Refused { run_id } => format!("refused {run_id}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["started run-1", "fetch #1 running", "ended succeeded"]
        );
    }

    #[test]
    fn a_run_whose_task_died_ends_aborted() {
        let runs = Arc::new(RunsInFlight::default());
        let mut changes = runs.changes.subscribe();
        drop(runs.started("run-1", "wf", "t"));
        let last = std::iter::from_fn(|| changes.try_recv().ok()).last();
        assert!(
            matches!(last, Some(Change::Ended { ref outcome, .. }) if outcome == "aborted"),
            "{last:?}"
        );
    }

    #[tokio::test]
    async fn at_most_the_bound_of_pages_listen_at_once() {
        let runs = Arc::new(RunsInFlight::default());
        let open: Vec<_> = (0..MAX_EVENT_STREAMS)
            .map(|_| runs.events(CancellationToken::new()))
            .collect();
        assert!(open.iter().all(Option::is_some));
        assert!(runs.events(CancellationToken::new()).is_none());
        drop(open);
        assert!(runs.events(CancellationToken::new()).is_some());
    }
}
