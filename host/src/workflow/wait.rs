//! Wait steps in a definition: `[steps.sleep]` (a duration, or until a
//! time an argument gives) and `[steps.signal]` (a named signal, with a
//! timeout and what happens then), checked into [`StepKind::Sleep`] and
//! [`StepKind::Signal`]; and durations as people write them (`10m`, `24h`).
//!
//! Must not do IO; how a run waits is `scheduler::wait`'s.

use super::raw::RawStep;
use super::{ArgSource, StepKind, StepSpec, valid_name};
use std::collections::HashMap;
use std::time::Duration;

/// The longest a sleep or a signal's timeout may be (a year and a day).
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);
/// A signal step's timeout when it sets none: a waiting run is bounded too.
pub const DEFAULT_SIGNAL_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// `[steps.sleep]`: `for` a duration from when the step starts, or (`None`)
/// until the time its `until` argument gives (RFC 3339, or milliseconds
/// since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SleepSpec {
    pub duration: Option<Duration>,
}

/// `[steps.signal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalSpec {
    /// The signal waited for (`POST /v1/runs/ID/signals/NAME`); the step's
    /// name unless set. Unique in a workflow.
    pub name: String,
    /// How long after the step starts the signal may come.
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

/// What a signal step does when its signal has not come by its timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnTimeout {
    /// The step fails (and the run with it, undoing what it did).
    Fail,
    /// The step succeeds with this output.
    Continue(serde_json::Value),
}

/// A duration as people write it: `30s`, `10m`, `24h`, `7d`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 30s, 10m, 24h or 7d: {e}"))?;
    if d > MAX_WAIT {
        return Err(format!(
            "`{text}` is longer than the longest wait ({} days)",
            MAX_WAIT.as_secs() / 86_400
        ));
    }
    Ok(d)
}

/// The kind of a wait step; problems as (field, message).
pub(super) fn kind(s: &RawStep, problems: &mut Vec<(String, String)>) -> Option<StepKind> {
    let mut bad = |field: &str, message: String| problems.push((field.to_string(), message));
    if s.component.is_some() || s.compose.is_some() || s.map.is_some() {
        let field = if s.component.is_some() {
            "component"
        } else if s.compose.is_some() {
            "compose"
        } else {
            "map"
        };
        bad(
            field,
            "a `sleep` or `signal` step runs nothing: it has no `component`, `compose` or `map`"
                .into(),
        );
        return None;
    }
    match (&s.sleep, &s.signal) {
        (Some(_), Some(_)) => {
            bad("signal", "set one of `sleep` or `signal`".into());
            None
        }
        (Some(sleep), None) => {
            if !s.args.is_empty() {
                bad(
                    "args",
                    "a sleep step takes no `args` (its time is `sleep.for` or `sleep.until`)"
                        .into(),
                );
            }
            match (&sleep.duration, &sleep.until) {
                (Some(text), None) => match parse_duration(text) {
                    Ok(d) => Some(StepKind::Sleep(SleepSpec { duration: Some(d) })),
                    Err(e) => {
                        bad("sleep.for", e);
                        None
                    }
                },
                (None, Some(_)) => Some(StepKind::Sleep(SleepSpec { duration: None })),
                _ => {
                    bad("sleep", "set one of `for` (a duration, e.g. \"10m\") or `until` (an argument giving the time)".into());
                    None
                }
            }
        }
        (None, Some(signal)) => {
            if !s.args.is_empty() {
                bad(
                    "args",
                    "a signal step takes no `args`: its output is the signal's JSON body".into(),
                );
            }
            let name = signal.name.clone().unwrap_or_else(|| s.name.clone());
            if !valid_name(&name) {
                bad(
                    "signal.name",
                    format!("`{name}` is not a valid signal name (use a-z, 0-9, '_' and '-')"),
                );
            }
            let timeout = match signal.timeout.as_deref().map(parse_duration) {
                None => DEFAULT_SIGNAL_TIMEOUT,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    bad("signal.timeout", e);
                    DEFAULT_SIGNAL_TIMEOUT
                }
            };
            let on_timeout = match (signal.on_timeout.as_deref(), &signal.default) {
                (None | Some("fail"), None) => OnTimeout::Fail,
                (Some("continue"), Some(v)) => OnTimeout::Continue(v.clone()),
                (Some("continue"), None) => {
                    bad(
                        "signal.default",
                        "`on_timeout = \"continue\"` needs the `default` output to go on with"
                            .into(),
                    );
                    OnTimeout::Fail
                }
                (None | Some("fail"), Some(_)) => {
                    bad(
                        "signal.default",
                        "`default` applies only with `on_timeout = \"continue\"`".into(),
                    );
                    OnTimeout::Fail
                }
                (Some(other), _) => {
                    bad(
                        "signal.on_timeout",
                        format!("`{other}` is not `fail` or `continue`"),
                    );
                    OnTimeout::Fail
                }
            };
            Some(StepKind::Signal(SignalSpec {
                name,
                timeout,
                on_timeout,
            }))
        }
        (None, None) => None,
    }
}

/// Across the workflow's steps (composed ones too): each signal name is
/// waited for by one step, and each `wait_token` names a signal step.
/// Problems as (step, field, message).
pub(super) fn check(steps: &[StepSpec], problems: &mut Vec<(String, String, String)>) {
    let mut names: HashMap<&str, &str> = HashMap::new();
    for s in steps {
        if let StepKind::Signal(sig) = &s.kind
            && let Some(first) = names.insert(&sig.name, &s.name)
        {
            problems.push((
                s.name.clone(),
                "signal.name".into(),
                format!(
                    "signal `{}` is already waited for by step `{first}`",
                    sig.name
                ),
            ));
        }
    }
    for s in steps {
        for (arg, source) in &s.args {
            let ArgSource::WaitToken { step } = source else {
                continue;
            };
            let is_signal = steps
                .iter()
                .any(|t| &t.name == step && matches!(t.kind, StepKind::Signal(_)));
            if !is_signal {
                problems.push((
                    s.name.clone(),
                    format!("args.{arg}.wait_token"),
                    format!("`{step}` is not a signal step of this workflow"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Workflow;

    fn load(steps: &str) -> Result<Workflow, Vec<String>> {
        let text = format!(
            "name = \"w\"\nresult = \"last\"\n[inputs.at]\n{steps}\n[[steps]]\nname = \"last\"\ncomponent = \"c\"\nwait_for = [\"first\"]\n"
        );
        Workflow::from_toml(&text, std::path::Path::new("w.toml"))
            .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn sleep_and_signal_steps_are_read_with_their_times_and_tokens() {
        let wf = load(
            r#"
[[steps]]
name = "nap"
[steps.sleep]
for = "10m"
[[steps]]
name = "until"
[steps.sleep]
until = { input = "at" }
[[steps]]
name = "ask"
component = "c"
args.link = { wait_token = "first" }
[[steps]]
name = "first"
wait_for = ["nap", "until", "ask"]
[steps.signal]
name = "approval"
timeout = "2h"
on_timeout = "continue"
default = { approved = false }
"#,
        )
        .expect("valid");
        let kind = |n: &str| wf.step(n).map(|s| s.kind.clone());
        let ten = Some(Duration::from_secs(600));
        assert_eq!(
            kind("nap"),
            Some(StepKind::Sleep(SleepSpec { duration: ten }))
        );
        assert_eq!(
            kind("until"),
            Some(StepKind::Sleep(SleepSpec { duration: None }))
        );
        assert_eq!(
            wf.step("until").map(|s| s.args.get("until").cloned()),
            Some(Some(ArgSource::Input("at".into())))
        );
        assert_eq!(
            kind("first"),
            Some(StepKind::Signal(SignalSpec {
                name: "approval".into(),
                timeout: Duration::from_secs(7200),
                on_timeout: OnTimeout::Continue(serde_json::json!({"approved": false})),
            }))
        );
        assert_eq!(
            wf.signal_step("approval").map(|s| s.name.as_str()),
            Some("first")
        );
        assert_eq!(
            wf.step("ask").map(|s| s.args["link"].clone()),
            Some(ArgSource::WaitToken {
                step: "first".into()
            })
        );
        assert!(
            wf.step("ask").is_some_and(|s| s.dependencies().is_empty()),
            "a token is known from the start"
        );
    }

    #[test]
    fn a_wait_step_that_is_not_one_thing_is_refused_naming_the_field() {
        let problems = load(
            r#"
[[steps]]
name = "both"
[steps.sleep]
for = "1m"
[steps.signal]
[[steps]]
name = "runs"
component = "c"
[steps.sleep]
for = "1m"
[[steps]]
name = "empty"
[steps.sleep]
[[steps]]
name = "long"
[steps.sleep]
for = "2y"
[[steps]]
name = "first"
args.x = { value = 1 }
[steps.signal]
on_timeout = "continue"
[[steps]]
name = "dup"
[steps.signal]
name = "first"
[[steps]]
name = "tok"
component = "c"
args.t = { wait_token = "runs" }
"#,
        )
        .expect_err("invalid");
        let expect = [
            "step `both`: field `signal`: set one of `sleep` or `signal`",
            "step `runs`: field `component`: a `sleep` or `signal` step runs nothing",
            "step `empty`: field `sleep`: set one of `for`",
            "step `long`: field `sleep.for`: `2y` is longer than the longest wait (366 days)",
            "step `first`: field `args`: a signal step takes no `args`",
            "step `first`: field `signal.default`: `on_timeout = \"continue\"` needs the `default` output",
            "step `dup`: field `signal.name`: signal `first` is already waited for by step `first`",
            "step `tok`: field `args.t.wait_token`: `runs` is not a signal step of this workflow",
        ];
        for e in expect {
            assert!(
                problems.iter().any(|p| p.contains(e)),
                "missing {e:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn durations_are_read_as_people_write_them_and_bounded() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        let long = parse_duration("400d").expect_err("too long");
        assert_eq!(long, "`400d` is longer than the longest wait (366 days)");
        assert!(parse_duration("soon").is_err_and(|e| e.starts_with("`soon` is not a duration")));
    }
}
