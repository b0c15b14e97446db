//! W3C Trace Context Level 2: `traceparent` and `tracestate`, parsed strictly
//! and formatted canonically, plus fresh trace and span ids.
//!
//! Pure code: no IO, no wasmtime. Everything that carries a trace through braid
//! (runs, step attempts, outbound requests, claims, events) uses these types.
//!
//! Spec: <https://www.w3.org/TR/trace-context-2/>. Notable rules enforced here:
//! - version `ff` is invalid; version `00` must be exactly 55 characters; a
//!   higher (future) version is parsed by the `00` layout and may carry more
//!   fields after a `-`;
//! - ids and flags are lowercase hex; all-zero trace ids and parent ids are invalid;
//! - flags keep the two defined bits, `sampled` (0x01) and `random` (0x02);
//! - `traceparent` received in more than one header field is invalid (its
//!   combined value does not parse): a new trace starts;
//! - `tracestate` fields are combined in order (RFC 9110 field order) into one
//!   list; keys follow the current grammar (`key = (lcalpha / DIGIT)
//!   0*255(keychar)`, `keychar` including `@`); a malformed member drops the
//!   whole list (the specification allows it), while a repeated key keeps its
//!   first (left-most) member, a list of more than 32 members is dropped
//!   whole (the specification's limit; a list is not cut to fit it), and a
//!   list over 512 characters is cut as the specification says (members over
//!   128 characters first, then from the right);
//! - a `tracestate` that came without a valid `traceparent` is dropped, and
//!   the drop is logged like the others.

use std::fmt;

/// A 16-byte trace id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// An 8-byte span id, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

/// The `trace-flags` byte, reduced to the bits Level 2 defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// Bit 0: the caller may have recorded this trace.
    pub const SAMPLED: u8 = 0x01;
    /// Bit 1: the right-most 7 bytes of the trace id are random.
    pub const RANDOM: u8 = 0x02;
    const KNOWN: u8 = Self::SAMPLED | Self::RANDOM;

    /// Flags from a raw byte; bits this version does not define are cleared,
    /// as the spec asks of a vendor that forwards a trace.
    pub fn from_bits(bits: u8) -> Self {
        TraceFlags(bits & Self::KNOWN)
    }
    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn sampled(self) -> bool {
        self.0 & Self::SAMPLED != 0
    }
    pub fn random(self) -> bool {
        self.0 & Self::RANDOM != 0
    }
}

impl TraceId {
    /// The 16 bytes of the id.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// A fresh random trace id (all 16 bytes random, so the `random` flag holds).
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 16] = rand::random();
            if bytes != [0; 16] {
                return TraceId(bytes);
            }
        }
    }
    /// Parses 32 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Result<Self, TraceParentError> {
        let bytes = parse_hex::<16>(s).ok_or(TraceParentError::TraceId)?;
        if bytes == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        Ok(TraceId(bytes))
    }
}

impl SpanId {
    /// The 8 bytes of the id.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }

    /// A fresh random span id.
    pub fn random() -> Self {
        loop {
            let bytes: [u8; 8] = rand::random();
            if bytes != [0; 8] {
                return SpanId(bytes);
            }
        }
    }
    /// Parses 16 lowercase hex digits, not all zero.
    pub fn parse(s: &str) -> Result<Self, TraceParentError> {
        let bytes = parse_hex::<8>(s).ok_or(TraceParentError::ParentId)?;
        if bytes == [0; 8] {
            return Err(TraceParentError::ZeroParentId);
        }
        Ok(SpanId(bytes))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}
impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}
impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Why a `traceparent` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    #[error("traceparent version is not two lowercase hex digits")]
    Version,
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    #[error("traceparent has the wrong length or separators for its version")]
    Layout,
    #[error("trace-id is not 32 lowercase hex digits")]
    TraceId,
    #[error("trace-id is all zeros")]
    ZeroTraceId,
    #[error("parent-id is not 16 lowercase hex digits")]
    ParentId,
    #[error("parent-id is all zeros")]
    ZeroParentId,
    #[error("trace-flags is not two lowercase hex digits")]
    Flags,
}

/// A parsed `traceparent`: which trace, which parent span, which flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses a `traceparent` header value (surrounding spaces and tabs,
    /// which HTTP allows around a field value, are ignored).
    pub fn parse(value: &str) -> Result<Self, TraceParentError> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        let version = value
            .get(0..2)
            .and_then(parse_hex::<1>)
            .ok_or(TraceParentError::Version)?[0];
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        // Version 00 is exactly 55 characters. A future version starts with
        // the same 55 and may go on, but only after a '-'.
        let layout_ok = bytes.len() >= 55
            && bytes[2] == b'-'
            && bytes[35] == b'-'
            && bytes[52] == b'-'
            && if version == 0 {
                bytes.len() == 55
            } else {
                bytes.len() == 55 || bytes[55] == b'-'
            };
        if !layout_ok {
            return Err(TraceParentError::Layout);
        }
        let trace_id = TraceId::parse(&value[3..35])?;
        let parent_id = SpanId::parse(&value[36..52])?;
        let flags = parse_hex::<1>(&value[53..55]).ok_or(TraceParentError::Flags)?[0];
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags: TraceFlags::from_bits(flags),
        })
    }

    /// A new trace: random trace id (flag `random` set), sampled.
    pub fn new_root() -> Self {
        TraceParent {
            trace_id: TraceId::random(),
            parent_id: SpanId::random(),
            flags: TraceFlags::from_bits(TraceFlags::SAMPLED | TraceFlags::RANDOM),
        }
    }

    /// The same trace and flags with another parent span (the value to send
    /// on a request made from span `span`).
    pub fn with_parent(self, span: SpanId) -> Self {
        TraceParent {
            parent_id: span,
            ..self
        }
    }
}

impl fmt::Display for TraceParent {
    /// Always the version-00 form, whatever version was received.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            self.flags.bits()
        )
    }
}

/// Why a `tracestate` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceStateError {
    #[error("tracestate member `{0}` has no '='")]
    MissingEquals(String),
    #[error("tracestate key `{0}` is not valid")]
    Key(String),
    #[error("tracestate value for key `{0}` is not valid")]
    Value(String),
    #[error("tracestate has {0} members, more than the 32 a list may have")]
    TooManyMembers(usize),
}

/// A parsed `tracestate`: vendor key/value pairs, left-most first.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    pub const MAX_MEMBERS: usize = 32;
    /// Longest list propagated, in characters (commas counted, optional
    /// white space not): what every vendor SHOULD propagate at least.
    pub const MAX_LEN: usize = 512;
    /// Members longer than this go first when a list is cut to [`Self::MAX_LEN`].
    pub const LONG_MEMBER: usize = 128;

    /// Parses a `tracestate` value (several fields combined with `,`).
    /// Empty members (`a=1,,b=2`) and optional white space around members are
    /// allowed; a malformed member, or more than [`Self::MAX_MEMBERS`]
    /// members, rejects the whole value, which the caller then drops.
    /// Repeated keys and lists over 512 characters are trimmed, not
    /// rejected (see [`TraceState::parse_noting`]).
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        Self::parse_noting(value).map(|(state, _)| state)
    }

    /// [`TraceState::parse`], also saying what was trimmed: a repeated key's
    /// later members, members cut to fit 512 characters.
    pub fn parse_noting(value: &str) -> Result<(Self, Vec<String>), TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        let mut notes = Vec::new();
        let mut count = 0;
        for raw in value.split(',') {
            let member = raw.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            count += 1;
            if count > Self::MAX_MEMBERS {
                let all = value
                    .split(',')
                    .filter(|m| !m.trim_matches([' ', '\t']).is_empty())
                    .count();
                return Err(TraceStateError::TooManyMembers(all));
            }
            let (key, val) = member
                .split_once('=')
                .ok_or_else(|| TraceStateError::MissingEquals(member.to_string()))?;
            if !valid_key(key) {
                return Err(TraceStateError::Key(key.to_string()));
            }
            if !valid_value(val) {
                return Err(TraceStateError::Value(key.to_string()));
            }
            if members.iter().any(|(k, _)| k == key) {
                notes.push(format!("repeated key `{key}`: kept its first member"));
                continue;
            }
            members.push((key.to_string(), val.to_string()));
        }
        let mut state = TraceState { members };
        let before = state.members.len();
        state.cut_to(Self::MAX_LEN);
        if state.members.len() < before {
            notes.push(format!(
                "longer than {} characters: {} member(s) removed",
                Self::MAX_LEN,
                before - state.members.len()
            ));
        }
        Ok((state, notes))
    }

    /// The list's length as propagated: members and the commas between them.
    fn propagated_len(&self) -> usize {
        let members: usize = self
            .members
            .iter()
            .map(|(k, v)| k.len() + 1 + v.len())
            .sum();
        members + self.members.len().saturating_sub(1)
    }

    /// Cuts the list to `max` characters as the specification says: members
    /// longer than [`Self::LONG_MEMBER`] go first (right-most first), then
    /// members from the right.
    fn cut_to(&mut self, max: usize) {
        while self.propagated_len() > max {
            let long = self
                .members
                .iter()
                .rposition(|(k, v)| k.len() + 1 + v.len() > Self::LONG_MEMBER);
            match long {
                Some(i) => {
                    self.members.remove(i);
                }
                None => {
                    self.members.pop();
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
    pub fn members(&self) -> &[(String, String)] {
        &self.members
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.members.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A trace context as a run receives it: a valid `traceparent` continues the
/// caller's trace (with its `tracestate`, if that is valid too); an invalid,
/// repeated or absent one starts a new trace, and a `tracestate` without a
/// valid `traceparent` is dropped.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IncomingTrace {
    pub parent: TraceParent,
    pub state: TraceState,
    /// Whether `parent` came from the caller (true) or was made up here.
    pub continued: bool,
    /// What of the supplied headers was ignored or trimmed, and why, for the log.
    pub rejected: Option<String>,
}

impl IncomingTrace {
    /// At most one value per header: [`IncomingTrace::from_fields`].
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        Self::from_fields(traceparent.as_slice(), tracestate.as_slice())
    }

    /// The trace context of a request from every `traceparent` and
    /// `tracestate` field it carried, in the order received (`braid serve`'s
    /// header lines, `braid run`'s repeated flags):
    ///
    /// - no `traceparent`: a new trace (any `tracestate` is dropped);
    /// - more than one `traceparent` field: their combined value is invalid,
    ///   so a new trace starts (the specification's rule);
    /// - one valid `traceparent`: its trace goes on, with the `tracestate`
    ///   fields combined in order into one list (see [`TraceState::parse_noting`]).
    pub fn from_fields<S: AsRef<str>>(traceparents: &[S], tracestates: &[S]) -> Self {
        let fresh = |rejected: Option<String>| IncomingTrace {
            parent: TraceParent::new_root(),
            state: TraceState::default(),
            continued: false,
            rejected,
        };
        // A tracestate goes only with the traceparent it came with.
        let state_too = if tracestates.iter().any(|s| !s.as_ref().trim().is_empty()) {
            "; tracestate dropped with it"
        } else {
            ""
        };
        let header = match traceparents {
            [] if state_too.is_empty() => return fresh(None),
            [] => {
                return fresh(Some(
                    "tracestate dropped: it came without a traceparent".to_string(),
                ));
            }
            [one] => one.as_ref(),
            several => {
                return fresh(Some(format!(
                    "traceparent sent in {} header fields (a repeated traceparent is invalid); started a new trace{state_too}",
                    several.len()
                )));
            }
        };
        let parent = match TraceParent::parse(header) {
            Ok(parent) => parent,
            Err(e) => {
                return fresh(Some(format!(
                    "traceparent `{}` ignored ({e}); started a new trace{state_too}",
                    crate::report::bounded(header.to_string(), 128)
                )));
            }
        };
        let combined = tracestates
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",");
        let (state, rejected) = if tracestates.is_empty() {
            (TraceState::default(), None)
        } else {
            match TraceState::parse_noting(&combined) {
                Ok((state, notes)) if notes.is_empty() => (state, None),
                Ok((state, notes)) => (
                    state,
                    Some(format!("tracestate trimmed: {}", notes.join("; "))),
                ),
                Err(e) => (
                    TraceState::default(),
                    Some(format!("tracestate dropped: {e}")),
                ),
            }
        };
        IncomingTrace {
            parent,
            state,
            continued: true,
            rejected,
        }
    }
}

/// The trace context of one step attempt (what the guest receives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptTrace {
    pub trace_id: TraceId,
    /// The attempt's own span.
    pub span_id: SpanId,
    /// The run span.
    pub parent_span_id: SpanId,
    pub flags: TraceFlags,
    pub state: TraceState,
}

impl AttemptTrace {
    /// `traceparent` for a request made from span `span` within this attempt.
    pub fn traceparent_for(&self, span: SpanId) -> TraceParent {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: span,
            flags: self.flags,
        }
    }
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2
        || !b
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"` (Level 2; the
/// older `tenant@system` form is a case of it).
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let keychar = |c: u8| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
    };
    !b.is_empty()
        && b.len() <= 256
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|&c| keychar(c))
}

/// `value = 0*255(chr) nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`,
/// `chr = %x20 / nblk-chr`: 1 to 256 printable characters other than ',' and
/// '=', not ending in a space.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    let nblk = |c: u8| (0x21..=0x7e).contains(&c) && c != b',' && c != b'=';
    !b.is_empty()
        && b.len() <= 256
        && b.iter().all(|&c| c == b' ' || nblk(c))
        && b[b.len() - 1] != b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_spec_example() {
        let tp = TraceParent::parse(VALID).expect("valid");
        assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(tp.flags.sampled());
        assert!(!tp.flags.random());
        assert_eq!(tp.to_string(), VALID);
    }

    #[test]
    fn keeps_the_random_flag() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")
            .expect("valid");
        assert!(tp.flags.sampled() && tp.flags.random());
        assert!(tp.to_string().ends_with("-03"));
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02")
                .expect("valid");
        assert!(!unsampled.flags.sampled() && unsampled.flags.random());
    }

    #[test]
    fn clears_undefined_flag_bits() {
        let tp = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")
            .expect("valid");
        assert_eq!(tp.flags.bits(), 0x03);
        assert!(tp.to_string().ends_with("-03"));
    }

    #[test]
    fn rejects_the_invalid_forms() {
        use TraceParentError::*;
        let cases: &[(&str, TraceParentError)] = &[
            ("", Version),
            ("0", Version),
            (
                "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ForbiddenVersion,
            ),
            // version 00 must be exactly 55 characters
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                Layout,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                Layout,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                Layout,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                Layout,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
                Layout,
            ),
            // uppercase hex is invalid
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                ParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G",
                Flags,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
                Flags,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e47g6-00f067aa0ba902b7-01",
                TraceId,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroParentId,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                TraceParent::parse(value).as_ref().err(),
                Some(want),
                "value {value:?}"
            );
        }
    }

    #[test]
    fn accepts_a_future_version_with_more_fields_and_emits_00() {
        let v = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let tp = TraceParent::parse(v).expect("future version parses");
        assert_eq!(tp.to_string(), VALID);
        assert!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_ok()
        );
        // ...but the field after the flags must start with '-'
        assert_eq!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
            Err(TraceParentError::Layout)
        );
    }

    #[test]
    fn trims_optional_whitespace() {
        assert!(TraceParent::parse(&format!("  {VALID}\t")).is_ok());
    }

    #[test]
    fn new_roots_are_random_and_distinct() {
        let a = TraceParent::new_root();
        let b = TraceParent::new_root();
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.flags.random() && a.flags.sampled());
        assert_eq!(TraceParent::parse(&a.to_string()), Ok(a));
    }

    #[test]
    fn tracestate_round_trips_and_skips_empty_members() {
        let ts = TraceState::parse("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE,,  ").expect("valid");
        assert_eq!(ts.members().len(), 2);
        assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert!(TraceState::parse("").expect("empty is valid").is_empty());
    }

    #[test]
    fn tracestate_accepts_multi_tenant_keys() {
        // The specification's examples of keys, and `@` anywhere after the first.
        let ts = TraceState::parse("fw529a3039@dt=abc,1tenant@sys_1=x y").expect("valid");
        assert_eq!(ts.get("fw529a3039@dt"), Some("abc"));
        assert_eq!(ts.get("1tenant@sys_1"), Some("x y"));
    }

    #[test]
    fn tracestate_rejects_the_invalid_forms() {
        let cases = [
            "novalue",
            "Upper=1",
            "_underscorefirst=1",
            "k=",
            "k=a,b",
            "k=with=equals",
            "k=tab\tinside",
            "@sys=x",
            "tenant@Sys=x",
            "kéy=1",
            "k=välue",
        ];
        for value in cases {
            assert!(
                TraceState::parse(value).is_err(),
                "{value:?} should be invalid"
            );
        }
        let long_key = format!("{}=1", "a".repeat(257));
        assert!(TraceState::parse(&long_key).is_err());
        let long_value = format!("k={}", "v".repeat(257));
        assert!(TraceState::parse(&long_value).is_err());
        let max_value = format!("k={}", "v".repeat(256));
        assert!(TraceState::parse(&max_value).is_ok());
    }

    #[test]
    fn tracestate_keys_follow_the_current_grammar() {
        // Level 2: a key may start with a digit, and `@` is a key character
        // anywhere after the first (no tenant/system length split).
        for key in [
            "1digitfirst",
            "tenant@",
            "tenant@systemidlongerthanfourteen",
            "a@b@c",
            "vendor/x*y_z-1",
        ] {
            let value = format!("{key}=1");
            assert_eq!(
                TraceState::parse(&value).map(|t| t.to_string()),
                Ok(value.clone()),
                "{key}"
            );
        }
        let longest = format!("{}=1", "k".repeat(256));
        assert!(TraceState::parse(&longest).is_ok());
    }

    #[test]
    fn a_repeated_key_keeps_its_first_member_not_nothing() {
        let (ts, notes) = TraceState::parse_noting("dup=1,other=2,dup=3").expect("kept");
        assert_eq!(ts.to_string(), "dup=1,other=2");
        assert_eq!(notes, ["repeated key `dup`: kept its first member"]);
    }

    #[test]
    fn a_list_over_32_members_is_dropped_whole() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(
            TraceState::parse(&list(32)).map(|t| t.members().len()),
            Ok(32)
        );
        assert_eq!(
            TraceState::parse(&list(33)),
            Err(TraceStateError::TooManyMembers(33))
        );
        // Empty members do not count.
        assert!(TraceState::parse(&format!("{},,", list(32))).is_ok());
        let t = IncomingTrace::from_headers(Some(VALID), Some(&list(40)));
        assert!(t.continued && t.state.is_empty());
        assert_eq!(
            t.rejected.as_deref(),
            Some("tracestate dropped: tracestate has 40 members, more than the 32 a list may have")
        );
    }

    #[test]
    fn a_list_over_512_characters_loses_long_members_first_then_from_the_right() {
        // Four short members (each "kN=" + 60 characters), one long one (200).
        let short = |i: usize| format!("k{i}={}", "s".repeat(60));
        let long = format!("big={}", "l".repeat(200));
        let value = [
            short(0),
            long,
            short(1),
            short(2),
            short(3),
            short(4),
            short(5),
            short(6),
        ]
        .join(",");
        let (ts, notes) = TraceState::parse_noting(&value).expect("cut");
        assert!(ts.get("big").is_none(), "the long member goes first");
        assert!(
            ts.propagated_len() <= TraceState::MAX_LEN,
            "{}",
            ts.propagated_len()
        );
        // 7 short members are 7 * 63 + 6 = 447 characters: all fit.
        assert_eq!(ts.members().len(), 7);
        assert_eq!(notes.len(), 1, "{notes:?}");
        // Without a long member, the right-most go.
        let many: Vec<String> = (0..10).map(short).collect();
        let ts = TraceState::parse(&many.join(",")).expect("cut");
        assert_eq!(ts.members().len(), 8, "8 * 63 + 7 = 511");
        assert_eq!(ts.members()[7].0, "k7");
    }

    #[test]
    fn incoming_trace_rules() {
        let continued = IncomingTrace::from_headers(Some(VALID), Some("a=1"));
        assert!(continued.continued);
        assert_eq!(
            continued.parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(continued.state.to_string(), "a=1");

        let bad_state = IncomingTrace::from_headers(Some(VALID), Some("A=1"));
        assert!(bad_state.continued && bad_state.state.is_empty() && bad_state.rejected.is_some());

        let fresh = IncomingTrace::from_headers(Some("00-garbage"), Some("a=1"));
        assert!(!fresh.continued);
        assert!(
            fresh.state.is_empty(),
            "tracestate without a valid traceparent is dropped"
        );
        assert_ne!(
            fresh.parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        assert!(
            fresh
                .rejected
                .as_deref()
                .is_some_and(|r| r.ends_with("; tracestate dropped with it")),
            "{:?}",
            fresh.rejected
        );

        // Dropped, and said so in the log, like every other drop.
        let none = IncomingTrace::from_headers(None, Some("a=1"));
        assert!(!none.continued && none.state.is_empty());
        assert_eq!(
            none.rejected.as_deref(),
            Some("tracestate dropped: it came without a traceparent")
        );
        let nothing = IncomingTrace::from_headers(None, None);
        assert!(nothing.rejected.is_none());
    }

    #[test]
    fn repeated_fields_follow_the_specification() {
        // Two traceparent fields, even two equal ones: a new trace.
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for fields in [[VALID, other], [VALID, VALID]] {
            let t = IncomingTrace::from_fields(&fields, &["a=1"]);
            assert!(!t.continued, "{fields:?}");
            assert!(t.state.is_empty());
            assert!(
                t.rejected
                    .as_deref()
                    .is_some_and(|r| r.contains("2 header fields")),
                "{:?}",
                t.rejected
            );
        }
        // tracestate fields are combined in order; an empty one counts for nothing.
        let t = IncomingTrace::from_fields(
            &[VALID],
            &["", "rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"],
        );
        assert!(t.continued);
        assert_eq!(
            t.state.to_string(),
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        assert!(t.rejected.is_none());
        // The same key in two fields: the first (left-most) stays.
        let t = IncomingTrace::from_fields(&[VALID], &["a=1", "b=2,a=3"]);
        assert_eq!(t.state.to_string(), "a=1,b=2");
        assert!(
            t.rejected
                .as_deref()
                .is_some_and(|r| r.contains("repeated key `a`"))
        );
        // A malformed member in any field drops the whole list.
        let t = IncomingTrace::from_fields(&[VALID], &["a=1", "B=2"]);
        assert!(t.continued && t.state.is_empty());
        assert!(
            t.rejected
                .as_deref()
                .is_some_and(|r| r.starts_with("tracestate dropped"))
        );
    }
}
