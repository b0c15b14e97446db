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
//! - tracestate: at most 32 members, keys and values per the grammar, no
//!   duplicate keys; a tracestate that breaks any rule is dropped whole.

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
    #[error("tracestate has more than {max} list members", max = TraceState::MAX_MEMBERS)]
    TooManyMembers,
    #[error("tracestate member `{0}` has no '='")]
    MissingEquals(String),
    #[error("tracestate key `{0}` is not valid")]
    Key(String),
    #[error("tracestate value for key `{0}` is not valid")]
    Value(String),
    #[error("tracestate key `{0}` appears more than once")]
    DuplicateKey(String),
}

/// A parsed `tracestate`: vendor key/value pairs, left-most first.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    pub const MAX_MEMBERS: usize = 32;

    /// Parses a `tracestate` header value. Empty members (`a=1,,b=2`) and
    /// optional whitespace around members are allowed; anything else invalid
    /// rejects the whole value, which the caller then drops.
    pub fn parse(value: &str) -> Result<Self, TraceStateError> {
        let mut members: Vec<(String, String)> = Vec::new();
        for raw in value.split(',') {
            let member = raw.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
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
                return Err(TraceStateError::DuplicateKey(key.to_string()));
            }
            members.push((key.to_string(), val.to_string()));
            if members.len() > Self::MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
        }
        Ok(TraceState { members })
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
/// caller's trace (with its `tracestate`, if that is valid too); an invalid or
/// absent one starts a new trace, and a `tracestate` without a valid
/// `traceparent` is dropped.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IncomingTrace {
    pub parent: TraceParent,
    pub state: TraceState,
    /// Whether `parent` came from the caller (true) or was made up here.
    pub continued: bool,
    /// Why a supplied header was ignored, for the log.
    pub rejected: Option<String>,
}

impl IncomingTrace {
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Self {
        let Some(header) = traceparent else {
            return IncomingTrace {
                parent: TraceParent::new_root(),
                state: TraceState::default(),
                continued: false,
                rejected: None,
            };
        };
        match TraceParent::parse(header) {
            Ok(parent) => {
                let (state, rejected) = match tracestate.map(TraceState::parse) {
                    None => (TraceState::default(), None),
                    Some(Ok(state)) => (state, None),
                    Some(Err(e)) => (
                        TraceState::default(),
                        Some(format!("tracestate dropped: {e}")),
                    ),
                };
                IncomingTrace {
                    parent,
                    state,
                    continued: true,
                    rejected,
                }
            }
            Err(e) => IncomingTrace {
                parent: TraceParent::new_root(),
                state: TraceState::default(),
                continued: false,
                rejected: Some(format!(
                    "traceparent `{header}` ignored ({e}); started a new trace"
                )),
            },
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

fn key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

/// `simple-key = lcalpha 0*255(keychar)` or
/// `multi-tenant-key = tenant-id "@" system-id` with
/// `tenant-id = (lcalpha / DIGIT) 0*240(keychar)` and `system-id = lcalpha 0*13(keychar)`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            !b.is_empty()
                && b.len() <= 256
                && b[0].is_ascii_lowercase()
                && b.iter().all(|&c| key_char(c))
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(|&c| key_char(c))
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(|&c| key_char(c))
        }
    }
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
        let ts = TraceState::parse("fw529a3039@dt=abc,1tenant@sys_1=x y").expect("valid");
        assert_eq!(ts.get("fw529a3039@dt"), Some("abc"));
        assert_eq!(ts.get("1tenant@sys_1"), Some("x y"));
    }

    #[test]
    fn tracestate_rejects_the_invalid_forms() {
        let cases = [
            "novalue",
            "Upper=1",
            "1digitfirst=1",
            "k=",
            "k=a,b",
            "k=with=equals",
            "k=tab\tinside",
            "tenant@=x",
            "@sys=x",
            "tenant@Sys=x",
            "tenant@systemidtoolong1=x",
            "dup=1,dup=2",
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
    fn tracestate_allows_32_members_not_33() {
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
            Err(TraceStateError::TooManyMembers)
        );
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

        let none = IncomingTrace::from_headers(None, Some("a=1"));
        assert!(!none.continued && none.state.is_empty() && none.rejected.is_none());
    }
}
