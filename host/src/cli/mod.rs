//! The `braid` commands, one module each (as cargo's `commands/`): each holds
//! its clap arguments and an `exec` that runs it. What they share lives
//! here: the state options, the [`Exit`] error, and (in [`host`]) opening the
//! stores and the sandbox. Only the CLI prints for humans.
//!
//! A command must not hold logic the library should own: it parses,
//! calls the library, and prints.

use anyhow::{Context, Result};
use braid::capabilities::budget::BudgetLimits;
use braid::journal::Retention;
use clap::Args;
use std::path::PathBuf;

/// `println!` that ignores a closed stdout (`braid ... | head`): the reader
/// has gone, so there is no one left to tell; `println!` would panic.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod bench;
pub mod bindings;
pub mod check;
pub mod claims;
pub mod componentize;
pub mod host;
pub mod inspect;
pub mod new;
pub mod policy;
pub mod recover;
pub mod run;
pub mod runs;
pub mod sample_api;
pub mod serve;

/// A failure with the exit code it maps to.
pub struct Exit(pub u8, pub anyhow::Error);

pub fn bad_input(e: impl Into<anyhow::Error>) -> Exit {
    Exit(2, e.into())
}

/// `--durability`, as [`braid::db::Durability`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    Machine,
    Process,
}

impl From<DurabilityArg> for braid::db::Durability {
    fn from(d: DurabilityArg) -> Self {
        match d {
            DurabilityArg::Machine => braid::db::Durability::Machine,
            DurabilityArg::Process => braid::db::Durability::Process,
        }
    }
}

#[derive(Args, Clone)]
pub struct StateArgs {
    /// Directory for the claim store and the compiled-component cache.
    #[arg(long, env = "BRAID_STATE_DIR", default_value = ".braid")]
    pub state_dir: PathBuf,
    /// Where claims and the run journal live: `sqlite` (files in the state
    /// directory, one machine) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
    /// (one database shared by several braid hosts; TLS with
    /// `?sslmode=verify-full&sslrootcert=CA.pem`; see docs/scaling.md).
    #[arg(long, env = "BRAID_STORE", default_value = "sqlite")]
    pub store: String,
    /// How durable a commit of the journal and the claim store is:
    /// `machine` (on disk before braid goes on: survives power loss and a
    /// kernel panic) or `process` (survives braid being killed, not the
    /// machine crashing; faster). See docs/failure-model.md.
    #[arg(long, env = "BRAID_DURABILITY", value_enum, default_value = "machine")]
    pub durability: DurabilityArg,
    /// Where compiled components are cached (default: `<state-dir>/cache`).
    /// Entries are keyed by the component's sha256 and the engine's
    /// compatibility hash, so one cache may serve several state dirs.
    #[arg(long, env = "BRAID_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Do not read or write the compiled-component cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Meter fuel so steps can set a CPU budget (`fuel` in the workflow).
    #[arg(long)]
    pub fuel: bool,
    /// Refuse allowlisted host names that resolve to loopback or private
    /// addresses (allowlist the IP itself to reach one).
    #[arg(long)]
    pub deny_private_networks: bool,
    /// Host-wide ceiling on any step's `max_log_records` (records the report
    /// keeps per attempt).
    #[arg(long, env = "BRAID_MAX_STEP_LOG_RECORDS", default_value_t = BudgetLimits::CEILINGS.log_records)]
    pub max_step_log_records: u32,
    /// Host-wide ceiling on any step's `max_log_bytes`.
    #[arg(long, env = "BRAID_MAX_STEP_LOG_BYTES", default_value_t = BudgetLimits::CEILINGS.log_bytes)]
    pub max_step_log_bytes: u64,
    /// Host-wide ceiling on any step's `max_refusals`.
    #[arg(long, env = "BRAID_MAX_STEP_REFUSALS", default_value_t = BudgetLimits::CEILINGS.refusals)]
    pub max_step_refusals: u32,
    /// Lines one step attempt may write to the host's log (its logs,
    /// stdout/stderr and refused calls); more are counted, not written.
    #[arg(long, env = "BRAID_MAX_STEP_HOST_LOG_LINES", default_value_t = BudgetLimits::CEILINGS.host_log_lines)]
    pub max_step_host_log_lines: u32,
}

impl StateArgs {
    /// The compiled-component cache directory, unless `--no-cache`.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        Some(
            self.cache_dir
                .clone()
                .unwrap_or_else(|| self.state_dir.join("cache")),
        )
    }
}

/// How long and how many finished runs the journal keeps (`braid serve`,
/// `braid runs prune`).
#[derive(Args, Clone, Copy)]
pub struct RetainArgs {
    /// Keep finished runs (their reports, journal entries and
    /// Idempotency-Keys) this long: e.g. `7d`, `12h`, `30m`, `90s`.
    #[arg(long, env = "BRAID_RETAIN", default_value = "7d", value_parser = parse_age)]
    pub retain: std::time::Duration,
    /// Keep at most this many finished runs (the newest).
    #[arg(long, env = "BRAID_RETAIN_RUNS", default_value_t = Retention::default().max_runs)]
    pub retain_runs: u64,
}

/// How often `braid serve` prunes (seconds).
#[derive(Args, Clone, Copy)]
pub struct PruneEvery {
    /// How often `braid serve` prunes finished runs past the retention, in seconds.
    #[arg(long, default_value_t = braid::journal::PRUNE_INTERVAL.as_secs())]
    pub prune_interval_s: u64,
}

impl RetainArgs {
    pub fn retention(self) -> Retention {
        Retention {
            max_age: self.retain,
            max_runs: self.retain_runs,
        }
    }
}

/// `7d`, `12h`, `30m`, `90s` or `0s` as a duration.
fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unclear = || format!("`{text}`: expected a number and a unit (d, h, m or s), e.g. 7d");
    let n: u64 = number.parse().map_err(|_| unclear())?;
    let seconds = match unit {
        "d" => n.checked_mul(24 * 3600),
        "h" => n.checked_mul(3600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    }
    .ok_or_else(unclear)?;
    Ok(std::time::Duration::from_secs(seconds))
}

/// A JSON `--input`: the text itself, or `@FILE`.
pub fn read_input(input: &str) -> Result<serde_json::Value> {
    let text = match input.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("--input: cannot read {path}"))?
        }
        None => input.to_string(),
    };
    serde_json::from_str(&text).context("--input is not valid JSON")
}

/// Prints `value` as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> Result<(), Exit> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).map_err(|e| Exit(1, e.into()))?
    );
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over, so
/// a reader (or a build that stops half-way) never sees a partial file.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}", path.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_the_default_is_the_librarys() {
        assert_eq!(parse_age("7d"), Ok(Retention::default().max_age));
        assert_eq!(parse_age("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_age("12h"),
            Ok(std::time::Duration::from_secs(12 * 3600))
        );
        assert!(parse_age("7x").is_err());
        assert!(parse_age("d").is_err());
    }
}
