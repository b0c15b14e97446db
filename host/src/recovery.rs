//! Crash recovery: runs whose host died are undone and marked `aborted`.
//!
//! A running run keeps a lease in the journal. When its host is killed, the
//! lease runs out (or, on the same machine, its process is plainly gone), and
//! the next `braid run` or `braid recover` takes the run over (atomically:
//! exactly one recoverer gets it), undoes its completed reversible steps in
//! reverse completion order under the run's original trace id, releases its
//! claims and writes the terminal record `aborted`. Undos are journaled as
//! they happen, so a recoverer that dies too leaves no step undone twice.
//!
//! A live host's own runs are left alone while it executes them
//! ([`LocalRuns`]); one it stopped because it could not keep its lease and
//! could not take back either (the journal stayed out of reach) is
//! recovered like any other once its lease has run out, by another host or
//! by this one's recovery loop.

use crate::journal::{AbandonedRun, JournalError, LocalRuns, RunJournal};
use crate::report::{RunRecorder, UndoReport};
use crate::sandbox::{Sandbox, SandboxExecutor};
use crate::scheduler::{AttemptContext, JournalUndoLog, RUN_LEASE, StepExecutor, undo_step};
use crate::store::ClaimStore;
use crate::trace::{AttemptTrace, SpanId, TraceFlags, TraceId, TraceState};
use crate::workflow::StepSpec;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What recovery did to one abandoned run.
#[derive(Debug, Clone, Serialize)]
pub struct RecoveredRun {
    pub run_id: String,
    pub workflow: String,
    pub trace_id: String,
    pub previous_owner: String,
    pub undo: Vec<UndoReport>,
    pub released_claims: Vec<String>,
}

/// How recovery tells that a run's host is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The store is on this machine (SQLite): a run whose owner process
    /// (`hostname:pid`) no longer exists here is taken at once; otherwise
    /// its lease must run out.
    ThisMachine,
    /// The store is shared by several machines (PostgreSQL): only an
    /// expired lease says a host is gone. A process id seen from another
    /// machine (or another pid namespace) proves nothing.
    LeasesOnly,
}

/// What recovery needs: the host's sandbox and stores, its name as a run
/// owner, how it tells a dead host, and the runs it is executing itself.
#[derive(Clone)]
pub struct Recoverer {
    pub sandbox: Arc<Sandbox>,
    pub journal: Arc<dyn RunJournal>,
    pub claims: Arc<dyn ClaimStore>,
    pub owner: String,
    pub liveness: Liveness,
    /// This host's runs in progress: never taken over (see [`LocalRuns`]).
    pub local: LocalRuns,
}

/// How often `braid serve` looks for abandoned runs: well within a run
/// lease, so a dead host's runs are undone soon after its leases run out.
pub const RECOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

impl Recoverer {
    /// Finds runs abandoned by dead hosts (or stopped by this one after it
    /// lost their lease), undoes and aborts them.
    pub async fn recover(&self) -> Result<Vec<RecoveredRun>, JournalError> {
        let is_dead: Option<crate::journal::OwnerIsDead> = match self.liveness {
            Liveness::ThisMachine => {
                let this = self.owner.clone();
                Some(Box::new(move |o| {
                    crate::journal::owner_is_dead_here(o, &this)
                }))
            }
            Liveness::LeasesOnly => None,
        };
        let abandoned = self
            .journal
            .take_over_abandoned(&self.owner, RUN_LEASE, is_dead, &self.local.list())
            .await?;
        let mut recovered = Vec::new();
        for run in abandoned {
            let done = recover_one(
                &self.sandbox,
                &self.journal,
                self.claims.as_ref(),
                &self.owner,
                run,
            )
            .await?;
            recovered.extend(done);
        }
        Ok(recovered)
    }

    /// Runs [`Recoverer::recover`] every [`RECOVERY_INTERVAL`] until the
    /// task is aborted: how hosts sharing a store (`--store postgres://`)
    /// undo the runs of a host that died and is not coming back. Errors are
    /// logged and tried again on the next pass.
    pub fn spawn_loop(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECOVERY_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match self.recover().await {
                    Ok(runs) => {
                        for r in runs {
                            tracing::warn!(run_id = %r.run_id, trace_id = %r.trace_id,
                                previous_owner = %r.previous_owner, undone = r.undo.len(),
                                "recovered a run its host had left: aborted");
                        }
                    }
                    Err(e) => tracing::error!("looking for abandoned runs failed: {e}"),
                }
            }
        })
    }
}

async fn recover_one(
    sandbox: &Arc<Sandbox>,
    journal: &Arc<dyn RunJournal>,
    claims: &dyn ClaimStore,
    owner: &str,
    run: AbandonedRun,
) -> Result<Option<RecoveredRun>, JournalError> {
    let start = &run.start;
    // Each undo (and the release, and the end) only while the run is still
    // ours, its lease renewed: a recoverer slower than a lease must not undo
    // alongside the one that took the run from it.
    let still_ours = || async {
        let ours = journal.heartbeat(&start.run_id, owner, RUN_LEASE).await?;
        if !ours {
            tracing::warn!(run_id = %start.run_id, "another host took over this recovery; leaving the rest to it");
        }
        Ok::<_, JournalError>(ours)
    };
    tracing::warn!(run_id = %start.run_id, trace_id = %start.trace_id, previous_owner = %run.previous_owner,
        steps = run.completed.len(), "recovering a run whose host died");
    let trace = AttemptTrace {
        trace_id: TraceId::parse(&start.trace_id).unwrap_or_else(|_| TraceId::random()),
        span_id: SpanId::parse(&start.span_id).unwrap_or_else(|_| SpanId::random()),
        parent_span_id: SpanId::parse(&start.span_id).unwrap_or_else(|_| SpanId::random()),
        flags: TraceFlags::from_bits(start.trace_flags),
        state: TraceState::parse(&start.tracestate).unwrap_or_default(),
    };
    let recorder = RunRecorder::new();
    let log = JournalUndoLog {
        journal: Arc::clone(journal),
        run_id: start.run_id.clone(),
    };
    let mut undo = Vec::new();
    let mut problems = Vec::new();
    for done in run.completed.iter().rev() {
        let prepared = match sandbox.load(&done.component) {
            Ok(c) if c.sha256 == done.component_sha256 => c,
            Ok(c) => {
                problems.push(format!(
                    "step `{}`: component {} changed since the run (sha256 {} != {}); not undone",
                    done.step,
                    done.component.display(),
                    c.sha256,
                    done.component_sha256
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("step `{}`: {e}; not undone", done.step));
                continue;
            }
        };
        if !prepared.is_reversible() {
            continue;
        }
        if !still_ours().await? {
            return Ok(None);
        }
        let executor =
            SandboxExecutor::from_components(Arc::clone(sandbox), [(done.step.clone(), prepared)]);
        let spec = StepSpec {
            name: done.step.clone(),
            component: done.component.clone(),
            args: BTreeMap::new(),
            wait_for: Vec::new(),
            timeout: done.timeout,
            max_retries: 0,
            allowed_hosts: done.allowed_hosts.clone(),
            limits: crate::workflow::StepLimits::default(),
        };
        let ctx = AttemptContext {
            run_id: start.run_id.clone(),
            workflow: start.workflow.clone(),
            step: done.step.clone(),
            attempt: 0,
            trace: trace.clone(),
            recorder: recorder.clone(),
        };
        debug_assert!(executor.is_reversible(&done.step));
        undo.push(
            undo_step(
                &executor,
                &spec,
                ctx,
                done.input.clone(),
                done.output.clone(),
                &log,
            )
            .await,
        );
    }
    if !still_ours().await? {
        return Ok(None);
    }
    let released_claims = match claims.release_all(&start.run_id).await {
        Ok(list) => list.into_iter().map(|c| c.claim_id).collect(),
        Err(e) => {
            problems.push(format!(
                "claims not released (their leases will expire): {e}"
            ));
            Vec::new()
        }
    };
    let failed_undos = undo.iter().filter(|u| u.outcome != "undone").count();
    let mut error = format!(
        "host {} stopped mid-run; recovered: {} step(s) undone, {} undo(s) failed, {} claim(s) released",
        run.previous_owner,
        undo.len() - failed_undos,
        failed_undos,
        released_claims.len()
    );
    for p in &problems {
        error.push_str("; ");
        error.push_str(p);
    }
    let recorded = journal
        .finish(&start.run_id, owner, "aborted", false, Some(error.clone()))
        .await?;
    if !recorded {
        tracing::warn!(run_id = %start.run_id, "another host took over this recovery; it records the end");
        return Ok(None);
    }
    tracing::warn!(run_id = %start.run_id, trace_id = %start.trace_id, "run aborted: {error}");
    Ok(Some(RecoveredRun {
        run_id: start.run_id.clone(),
        workflow: start.workflow.clone(),
        trace_id: start.trace_id.clone(),
        previous_owner: run.previous_owner,
        undo,
        released_claims,
    }))
}
