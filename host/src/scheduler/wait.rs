//! Wait steps in a run: `sleep` (until a time) and `signal` (until a
//! named signal comes, or its timeout). The DAG starts a wait step like any
//! step once its dependencies have succeeded; this room journals when the
//! wait ends at the latest (once: a resumed run keeps that time), ends
//! waits whose time or signal has come, and, when a run has nothing left
//! to do but wait, parks it: the run leaves memory (status `waiting` in the
//! journal, no task, no lease) until a host wakes it (`take_over_waiting`)
//! and carries it on from its journal, like a resumed run.
//!
//! A run with other steps in flight, or whose wait ends within
//! [`PARK_AFTER`], waits here instead, looking for signals every
//! [`SIGNAL_POLL`].
//!
//! Must not know wasmtime or how an attempt runs.

use super::{RunCtx, RunState, Scheduler, StepExecutor, StepOutcome};
use crate::journal::{JournalEntry, Signal};
use crate::report::{EventRecord, WaitReport};
use crate::workflow::{OnTimeout, StepKind, StepSpec};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// A run whose waits all end later than this is parked (out of memory)
/// rather than waited for here.
pub const PARK_AFTER: Duration = Duration::from_secs(2);
/// How often a run waiting here for a signal reads its signals.
pub const SIGNAL_POLL: Duration = Duration::from_secs(1);
/// How soon a run that could not be parked (the journal did not answer)
/// tries again.
const PARK_RETRY: Duration = Duration::from_secs(5);

/// How an attempt to park a run went.
pub(super) enum Parking {
    /// The run is `waiting` in the journal; it ends here.
    Parked,
    /// The run is another host's now.
    Fenced,
    /// Not parked (no journal, or it did not answer): wait here.
    NotNow,
}

/// The token of signal step `step` (`RunCtx::wait_token`) of run `run_id` from its journaled secret (`RunStart`'s
/// `idempotency_secret`), for checking a token a signal came with.
pub fn wait_token_of(secret_hex: &str, run_id: &str, step: &str) -> String {
    super::KeySecret::from_hex(secret_hex).key(run_id, step, "wait-token")
}

fn now_ms() -> u64 {
    crate::store::now_ms()
}

/// `ms` (since the Unix epoch) as an RFC 3339 time.
fn show_time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// When a wait step started now ends at the latest: a sleep's end, a
/// signal's timeout. `Err`: a sleep's `until` is not a time.
fn due_of(step: &StepSpec, input: &Value, now: u64) -> Result<u64, String> {
    let after = |d: Duration| now.saturating_add(d.as_millis() as u64);
    match &step.kind {
        StepKind::Sleep(sleep) => match sleep.duration {
            Some(d) => Ok(after(d)),
            None => until_ms(&input["until"], now),
        },
        StepKind::Signal(sig) => Ok(after(sig.timeout)),
        _ => Err("not a wait step".into()),
    }
}

/// A sleep's `until`: an RFC 3339 time or milliseconds since the epoch,
/// at most [`crate::workflow::MAX_WAIT`] from now (a past time: now).
fn until_ms(value: &Value, now: u64) -> Result<u64, String> {
    let ms = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => humantime::parse_rfc3339_weak(text.trim())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "argument `until` is {}, not a time (RFC 3339 like 2026-12-08T09:00:00Z, or milliseconds since 1970)",
            crate::workflow::json_kind(value)
        )
    })?;
    let latest = now.saturating_add(crate::workflow::MAX_WAIT.as_millis() as u64);
    if ms > latest {
        return Err(format!(
            "argument `until` ({}) is more than {} days away",
            show_time(ms),
            crate::workflow::MAX_WAIT.as_secs() / 86_400
        ));
    }
    Ok(ms.max(now))
}

impl<E: StepExecutor> Scheduler<E> {
    /// Starts wait step `step` (already in the run's order): journals when
    /// it ends at the latest, unless a resumed run had, then ends it at
    /// once if its time or signal has come. `Err`: its `until` is no time.
    pub(super) async fn start_wait(
        &self,
        run: &RunCtx,
        state: &mut RunState,
        step: &StepSpec,
    ) -> Result<(), String> {
        let input = super::input::build_input(step, run, &state.outputs)?;
        state.inputs_of.insert(step.name.clone(), input.to_string());
        if !state.wait_due.contains_key(&step.name) {
            let due = due_of(step, &input, now_ms())?;
            run.log
                .append(JournalEntry {
                    kind: "wait".into(),
                    step: step.name.clone(),
                    outcome: due.to_string(),
                    input: Some(input.to_string()),
                    ..Default::default()
                })
                .await;
            state.wait_due.insert(step.name.clone(), due);
        }
        tracing::info!(parent: &run.span, step = %step.name, trace_id = %run.trace_id,
            "waiting: {}", describe(step, state.wait_due[&step.name]));
        state.waiting.insert(step.name.clone());
        self.settle_waits(run, state).await;
        Ok(())
    }

    /// Ends the waits that can end now: a signal that came (its body is
    /// the step's output), a time that has come (a sleep succeeds; a
    /// signal's timeout fails the step or goes on with its default).
    pub(super) async fn settle_waits(&self, run: &RunCtx, state: &mut RunState) {
        if state.waiting.is_empty() {
            return;
        }
        let wants_signal = state.waiting.iter().any(|name| {
            run.wf
                .step(name)
                .is_some_and(|s| matches!(s.kind, StepKind::Signal(_)))
        });
        let signals = match wants_signal {
            true => self.read_signals(run, state).await.unwrap_or_default(),
            false => Vec::new(),
        };
        let now = now_ms();
        let mut ended = Vec::new();
        for name in &state.waiting {
            let (Some(step), Some(due)) = (run.wf.step(name), state.wait_due.get(name)) else {
                continue;
            };
            match &step.kind {
                StepKind::Signal(sig) => {
                    if let Some(s) = signals.iter().find(|s| s.name == sig.name) {
                        ended.push((name.clone(), signalled(s), Some(s.clone())));
                    } else if now >= *due {
                        ended.push((
                            name.clone(),
                            timed_out(&sig.name, sig.timeout, &sig.on_timeout),
                            None,
                        ));
                    }
                }
                StepKind::Sleep(_) if now >= *due => {
                    let output = json!({ "slept_until_ms": due });
                    ended.push((name.clone(), StepOutcome::Succeeded(output), None));
                }
                _ => {}
            }
        }
        if ended.is_empty() {
            return;
        }
        let entries = ended
            .iter()
            .filter_map(|(name, outcome, _)| wait_end_entry(state, name, outcome))
            .collect();
        run.log.append_all(entries).await;
        for (name, outcome, signal) in ended {
            state.waiting.remove(&name);
            run.base.recorder.step_finished(&name, Instant::now());
            if let Some(s) = signal {
                signal_event(run, &name, &s);
                state
                    .signalled
                    .insert(name.clone(), (s.traceparent, s.at_ms));
            }
            state.wait_ended(run, name, outcome);
        }
    }

    /// The run's signals (all of them: one per name), noting how many it
    /// has seen for [`Scheduler::park`]. `None`: no journal, or it failed.
    async fn read_signals(&self, run: &RunCtx, state: &mut RunState) -> Option<Vec<Signal>> {
        let journal = run.log.journal.as_ref()?;
        match journal.signals(&run.run_id).await {
            Ok(signals) => {
                state.signals_seen = Some(signals.len() as u64);
                Some(signals)
            }
            Err(e) => {
                tracing::warn!(parent: &run.span, trace_id = %run.trace_id, "cannot read the run's signals: {e}");
                None
            }
        }
    }

    /// Whether the run, which has nothing in flight, should leave memory:
    /// it is journaled and its waits end later than [`PARK_AFTER`].
    pub(super) fn parks(&self, run: &RunCtx, state: &RunState) -> bool {
        let soonest = state
            .waiting
            .iter()
            .filter_map(|w| state.wait_due.get(w))
            .min();
        self.parking
            && run.log.fence.is_some()
            && soonest.is_some_and(|due| *due > now_ms() + PARK_AFTER.as_millis() as u64)
    }

    /// Parks the run: `waiting` in the journal until its soonest wait ends
    /// (or a signal or a cancel comes), holding nothing here.
    pub(super) async fn park(&self, run: &RunCtx, state: &mut RunState) -> Parking {
        let (Some(journal), Some(fence)) = (&run.log.journal, &run.log.fence) else {
            return Parking::NotNow;
        };
        if state.signals_seen.is_none() && self.read_signals(run, state).await.is_none() {
            return Parking::NotNow;
        }
        let mut waits: Vec<(u64, String)> = Vec::new();
        for name in &state.waiting {
            if let (Some(step), Some(due)) = (run.wf.step(name), state.wait_due.get(name)) {
                waits.push((*due, describe(step, *due)));
            }
        }
        let Some(wake) = waits.iter().map(|(due, _)| *due).min() else {
            return Parking::NotNow;
        };
        let waiting_for: Vec<String> = waits.into_iter().map(|(_, what)| what).collect();
        let seen = state.signals_seen.unwrap_or(0);
        match journal
            .park(fence, wake, seen, &waiting_for.join("; "))
            .await
        {
            Ok(true) => {
                tracing::info!(parent: &run.span, trace_id = %run.trace_id,
                    "run parked until {}: {}", show_time(wake), waiting_for.join("; "));
                for name in &state.waiting {
                    state.outcomes.insert(name.clone(), "waiting".into());
                }
                Parking::Parked
            }
            Ok(false) => Parking::Fenced,
            Err(e) => {
                tracing::warn!(parent: &run.span, trace_id = %run.trace_id,
                    "cannot park the run, waiting here: {e}");
                Parking::NotNow
            }
        }
    }
}

/// When the run waiting here looks at its waits again: its soonest wait's
/// end, within [`SIGNAL_POLL`] while it waits for a signal, and within
/// [`PARK_RETRY`] (to try parking again). `None`: it waits for nothing.
pub(super) fn next_look(run: &RunCtx, state: &RunState) -> Option<tokio::time::Instant> {
    let now = now_ms();
    let mut next = None::<u64>;
    for name in &state.waiting {
        let mut at = state.wait_due.get(name).copied().unwrap_or(now);
        if run
            .wf
            .step(name)
            .is_some_and(|s| matches!(s.kind, StepKind::Signal(_)))
        {
            at = at.min(now + SIGNAL_POLL.as_millis() as u64);
        }
        next = Some(next.map_or(at, |n| n.min(at)));
    }
    let at = next?.min(now + PARK_RETRY.as_millis() as u64);
    Some(tokio::time::Instant::now() + Duration::from_millis(at.saturating_sub(now)))
}

/// What a wait step waits for, for people.
fn describe(step: &StepSpec, due: u64) -> String {
    match &step.kind {
        StepKind::Signal(sig) => format!(
            "step `{}`: signal `{}` until {}",
            step.name,
            sig.name,
            show_time(due)
        ),
        _ => format!("step `{}`: sleep until {}", step.name, show_time(due)),
    }
}

/// A signal step ended by its signal: the body is its output.
fn signalled(s: &Signal) -> StepOutcome {
    StepOutcome::Succeeded(serde_json::from_str(&s.payload).unwrap_or(Value::Null))
}

/// A signal step whose signal did not come by its timeout.
fn timed_out(name: &str, timeout: Duration, on_timeout: &OnTimeout) -> StepOutcome {
    match on_timeout {
        OnTimeout::Fail => StepOutcome::Failed(format!(
            "timeout: signal `{name}` did not come within {}",
            humantime::format_duration(timeout)
        )),
        OnTimeout::Continue(v) => StepOutcome::Succeeded(v.clone()),
    }
}

/// The journal entry of a wait step that ended (none for a failure: the
/// run's failure is journaled).
fn wait_end_entry(state: &RunState, name: &str, outcome: &StepOutcome) -> Option<JournalEntry> {
    let StepOutcome::Succeeded(output) = outcome else {
        return None;
    };
    Some(JournalEntry {
        kind: "completed".into(),
        step: name.to_string(),
        outcome: "succeeded".into(),
        input: state.inputs_of.get(name).cloned(),
        output: Some(output.to_string()),
        ..Default::default()
    })
}

/// The run's event for a signal that ended step `step`, with the
/// `traceparent` of the request that sent it: the link from the
/// sender's trace to this run's.
fn signal_event(run: &RunCtx, step: &str, s: &Signal) {
    run.base.recorder.event(EventRecord {
        kind: "host".into(),
        name: "signal.received".into(),
        level: "info".into(),
        message: format!("signal `{}` received", s.name),
        trace_id: run.trace_id.to_string(),
        span_id: run.run_span.to_string(),
        step: step.to_string(),
        at_ms: 0.0,
        measurements: BTreeMap::new(),
        metadata: [
            ("signal".to_string(), s.name.clone()),
            ("sender_traceparent".to_string(), s.traceparent.clone()),
        ]
        .into_iter()
        .collect(),
    });
}

impl RunState {
    /// Takes in how wait step `name` ended: nothing to undo if it succeeded.
    fn wait_ended(&mut self, run: &RunCtx, name: String, outcome: StepOutcome) {
        match outcome {
            StepOutcome::Succeeded(v) => {
                self.outputs.insert(name.clone(), v);
                self.outcomes.insert(name, "succeeded".into());
            }
            other => self.step_ended(run, name, other),
        }
    }

    /// The run failed: its waits stop (`cancelled`).
    pub(super) fn stop_waits(&mut self, run: &RunCtx) {
        for name in std::mem::take(&mut self.waiting) {
            run.base.recorder.step_finished(&name, Instant::now());
            self.outcomes.insert(name, "cancelled".into());
        }
    }

    /// A wait step's report part.
    pub(super) fn wait_report(
        &self,
        step: &StepSpec,
        run_span: crate::trace::SpanId,
    ) -> Option<WaitReport> {
        let (kind, signal) = match &step.kind {
            StepKind::Sleep(_) => ("sleep", None),
            StepKind::Signal(sig) => ("signal", Some(sig.name.clone())),
            _ => return None,
        };
        let sent = self.signalled.get(&step.name);
        Some(WaitReport {
            kind: kind.into(),
            span_id: super::compose::compose_span(run_span, &step.name).to_string(),
            signal,
            until_ms: self.wait_due.get(&step.name).copied().unwrap_or(0),
            signal_traceparent: sent.map(|(tp, _)| tp.clone()),
            signal_at_ms: sent.map(|(_, at)| *at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_a_time_not_too_far_and_a_past_one_is_now() {
        let now = 1_800_000_000_000;
        assert_eq!(until_ms(&json!(now + 5), now), Ok(now + 5));
        assert_eq!(until_ms(&json!(5), now), Ok(now), "a past time: now");
        // `now` is 2027-01-15T08:00:00Z.
        let at = until_ms(&json!("2027-01-15T09:00:00Z"), now);
        assert_eq!(at, Ok(now + 3_600_000));
        let far = until_ms(&json!(now + 400 * 86_400_000), now).expect_err("too far");
        assert!(far.contains("more than 366 days away"), "{far}");
        let bad = until_ms(&json!("tomorrow"), now).expect_err("no time");
        assert!(
            bad.starts_with("argument `until` is a string, not a time"),
            "{bad}"
        );
    }
}
