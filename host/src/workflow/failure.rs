//! What a run does when a step has used up its retries: `on_failure =
//! "undo"` (the default: compensate, undo what completed, end `failed`) or
//! `"suspend"` (keep everything, wait for an operator to resume or abort
//! the run, at most `suspend_for`), for the whole workflow or per step.
//!
//! Must not do IO; how a run is suspended is `scheduler::suspend`'s.

use std::time::Duration;

/// How long a suspended run waits for an operator before it is aborted,
/// unless the workflow's `suspend_for` says otherwise.
pub const DEFAULT_SUSPEND_FOR: Duration = Duration::from_secs(24 * 3600);
/// The shortest `suspend_for`.
pub const MIN_SUSPEND_FOR: Duration = Duration::from_secs(1);

/// What the run does once a step has failed for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Compensate the step, undo the completed steps, end `failed`.
    #[default]
    Undo,
    /// Stop starting steps and wait (`suspended`) for `resume` (the failed
    /// step runs again, on the component live then) or `abort` (undo).
    Suspend,
}

impl OnFailure {
    /// `on_failure` as written; `Err`: why not.
    pub(super) fn parse(text: &str) -> Result<OnFailure, String> {
        match text {
            "undo" => Ok(OnFailure::Undo),
            "suspend" => Ok(OnFailure::Suspend),
            other => Err(format!("`{other}` is not `undo` or `suspend`")),
        }
    }
}

/// `suspend_for` as written (`None`: the default); `Err`: why not.
pub(super) fn suspend_for(text: Option<&str>) -> Result<Duration, String> {
    let Some(text) = text else {
        return Ok(DEFAULT_SUSPEND_FOR);
    };
    let d = super::wait::parse_duration(text)?;
    if d < MIN_SUSPEND_FOR {
        return Err(format!("`{text}` is shorter than a second"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_failure_and_suspend_for_are_read_and_checked() {
        assert_eq!(OnFailure::parse("suspend"), Ok(OnFailure::Suspend));
        assert_eq!(OnFailure::parse("undo"), Ok(OnFailure::Undo));
        let bad = OnFailure::parse("pause").expect_err("unknown");
        assert_eq!(bad, "`pause` is not `undo` or `suspend`");
        assert_eq!(suspend_for(None), Ok(DEFAULT_SUSPEND_FOR));
        assert_eq!(suspend_for(Some("2h")), Ok(Duration::from_secs(7200)));
        let short = suspend_for(Some("10ms")).expect_err("too short");
        assert!(short.contains("shorter than a second"), "{short}");
        assert!(suspend_for(Some("soon")).is_err());
    }
}
