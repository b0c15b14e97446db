//! What the host keeps, prints and tolerates on behalf of one step attempt.
//!
//! A step reaches host state only through its imports, so every byte the
//! host keeps for it (report records, log lines) and every refused call is
//! counted here, per attempt:
//! - records (log lines, events, stdout/stderr lines, host events about the
//!   attempt) past `log_records` or `log_bytes` are dropped and counted; the
//!   step keeps running;
//! - lines written to the host's own log past `host_log_lines` are
//!   suppressed and counted;
//! - refused calls (a bad trace context, a denied or over-limit HTTP request,
//!   a claim error, an invalid argument) past `refusals` end the attempt with
//!   the `refusals` limit ([`RefusalsExceeded`], raised by the sandbox).
//!
//! At the attempt's end the sandbox records one summary of what was dropped.
//! Must not know the scheduler or wasmtime.

use crate::report::Dropped;
use std::sync::Mutex;

/// An attempt's budget, from the step's limits capped by the host's ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetLimits {
    /// Records the report keeps for the attempt.
    pub log_records: u32,
    /// Their bytes (as [`crate::report::EventRecord::size`] counts them).
    pub log_bytes: u64,
    /// Refused calls before the attempt is ended.
    pub refusals: u32,
    /// Lines the attempt may put in the host's own log.
    pub host_log_lines: u32,
}

impl BudgetLimits {
    /// The host-wide ceilings a host has unless told otherwise.
    pub const CEILINGS: BudgetLimits = BudgetLimits {
        log_records: 10_000,
        log_bytes: 1 << 20,
        refusals: 1_000,
        host_log_lines: 100,
    };
}

/// The per-attempt counters behind [`BudgetLimits`].
pub struct AttemptBudget {
    limits: BudgetLimits,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    records: u32,
    bytes: u64,
    host_lines: u32,
    refusals: u32,
    last_refusal: String,
    dropped: Dropped,
}

/// The attempt refused more calls than its budget allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{refused} calls refused, the step's max_refusals is {limit}; the last: {last}")]
pub struct RefusalsExceeded {
    pub refused: u32,
    pub limit: u32,
    pub last: String,
}

impl AttemptBudget {
    pub fn new(limits: BudgetLimits) -> Self {
        AttemptBudget {
            limits,
            used: Mutex::new(Used::default()),
        }
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    fn with<T>(&self, f: impl FnOnce(&mut Used) -> T) -> T {
        match self.used.lock() {
            Ok(mut used) => f(&mut used),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether the report may keep a record of `bytes`; if not, it is counted
    /// as dropped.
    pub fn keep_record(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        self.with(|u| {
            if u.records < self.limits.log_records && u.bytes + bytes <= self.limits.log_bytes {
                u.records += 1;
                u.bytes += bytes;
                true
            } else {
                u.dropped.telemetry_records += 1;
                u.dropped.telemetry_bytes += bytes;
                false
            }
        })
    }

    /// Whether one more line may go to the host's log; if not, it is counted.
    pub fn host_line(&self) -> bool {
        self.with(|u| {
            if u.host_lines < self.limits.host_log_lines {
                u.host_lines += 1;
                true
            } else {
                u.dropped.host_log_lines += 1;
                false
            }
        })
    }

    /// Counts a refused call (`why` says what was refused).
    pub fn refused(&self, why: &str) {
        self.with(|u| {
            u.refusals = u.refusals.saturating_add(1);
            why.clone_into(&mut u.last_refusal);
        });
    }

    /// Set once the attempt refused more calls than it may.
    pub fn exceeded(&self) -> Option<RefusalsExceeded> {
        self.with(|u| {
            (u.refusals > self.limits.refusals).then(|| RefusalsExceeded {
                refused: u.refusals,
                limit: self.limits.refusals,
                last: crate::report::bounded(u.last_refusal.clone(), 512),
            })
        })
    }

    /// What was dropped or suppressed so far.
    pub fn dropped(&self) -> Dropped {
        self.with(|u| u.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> AttemptBudget {
        AttemptBudget::new(BudgetLimits {
            log_records: 3,
            log_bytes: 100,
            refusals: 2,
            host_log_lines: 1,
        })
    }

    #[test]
    fn records_past_the_count_or_the_bytes_are_dropped_and_counted() {
        let b = budget();
        assert!(b.keep_record(40));
        assert!(b.keep_record(40));
        assert!(!b.keep_record(40), "over 100 bytes");
        assert!(b.keep_record(20));
        assert!(!b.keep_record(1), "over 3 records");
        let d = b.dropped();
        assert_eq!((d.telemetry_records, d.telemetry_bytes), (2, 41));
    }

    #[test]
    fn host_lines_past_the_budget_are_suppressed() {
        let b = budget();
        assert!(b.host_line());
        assert!(!b.host_line());
        assert!(!b.host_line());
        assert_eq!(b.dropped().host_log_lines, 2);
    }

    #[test]
    fn refusals_past_the_budget_end_the_attempt_naming_the_last() {
        let b = budget();
        b.refused("first");
        b.refused("second");
        assert_eq!(b.exceeded(), None, "two refusals are allowed");
        b.refused("third");
        assert_eq!(
            b.exceeded(),
            Some(RefusalsExceeded {
                refused: 3,
                limit: 2,
                last: "third".into()
            })
        );
    }
}
