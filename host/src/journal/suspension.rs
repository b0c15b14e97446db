//! What ends a suspended run's suspension, as the journal keeps an
//! operator's request on the run's row and reads it back when the run is
//! woken; and what asking found.

/// What ends a suspended run's suspension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsuspend {
    /// An operator asked to go on: the failed step runs again, on the
    /// components live then.
    Resume,
    /// An operator asked to undo the run (`reason`, if given).
    Abort { reason: Option<String> },
    /// Nobody resumed or aborted it within its `suspend_for`.
    Deadline,
}

impl Unsuspend {
    /// How the journal keeps the request (`suspend_action`).
    pub fn action(&self) -> &'static str {
        match self {
            Unsuspend::Resume => "resume",
            Unsuspend::Abort { .. } => "abort",
            Unsuspend::Deadline => "deadline",
        }
    }

    /// What ends the suspension of a run woken from `status`, as its row
    /// keeps it: the operator's `action` (and `note`, an abort's reason),
    /// else its deadline. `None`: it was not suspended, or it was woken to
    /// be cancelled (`cancel_asked`) and nobody asked anything else.
    pub fn of_woken(
        status: &str,
        action: Option<&str>,
        note: Option<String>,
        cancel_asked: bool,
    ) -> Option<Unsuspend> {
        match action {
            _ if status != "suspended" => None,
            Some("resume") => Some(Unsuspend::Resume),
            Some(_) => Some(Unsuspend::Abort { reason: note }),
            None if cancel_asked => None,
            None => Some(Unsuspend::Deadline),
        }
    }

    /// What a run asked this is doing, for answers: `resuming` or `aborting`.
    pub fn doing(&self) -> &'static str {
        match self {
            Unsuspend::Resume => "resuming",
            _ => "aborting",
        }
    }
}

impl UnsuspendAsked {
    /// Why run `run_id` was not asked `ask` (`None`: it was).
    pub fn refusal(&self, run_id: &str, ask: &Unsuspend) -> Option<String> {
        let action = ask.action();
        match self {
            UnsuspendAsked::Asked => None,
            UnsuspendAsked::AskedOtherwise { pending } => Some(format!(
                "run `{run_id}` was asked to {pending} already; that stands (not {action})"
            )),
            UnsuspendAsked::NotSuspended { status } => Some(format!(
                "run `{run_id}` is {status}, not suspended: there is nothing to {action}"
            )),
            UnsuspendAsked::Unknown => Some(format!("no run `{run_id}`")),
        }
    }
}

/// What [`super::RunJournal::request_unsuspend`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnsuspendAsked {
    /// The run is suspended, and asked (or had been asked the same).
    Asked,
    /// The run was asked otherwise first (`resume` or `abort`), which stands.
    AskedOtherwise { pending: String },
    /// The run is not suspended: its status.
    NotSuspended { status: String },
    /// The journal does not know the run.
    Unknown,
}
