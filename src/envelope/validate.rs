//! Envelope validation: the checks [`Envelope::validate`] documents.
//!
//! # Algorithm
//!
//! Every publish validates its envelope, so the common shape is checked in
//! one pass without early exits: event ID and event type lengths in range,
//! a positive version, optional IDs within [`MAX_FIELD_LEN`], no headers,
//! a payload within [`MAX_PAYLOAD`], and an aggregate ID of 1 to
//! [`MAX_AGGREGATE_ID_LEN`] bytes that are all allowed (one table load per
//! byte: every allowed character is ASCII, so bytes are characters). The
//! conditions are combined with `&` rather than `&&`, so the pass is a few
//! loads and compares with one branch (the checks this replaced took 134
//! instructions per publish of the bench tool's keyed row). Anything else,
//! headers included, takes [`detail`]: every check in order, naming the
//! first problem.
//!
//! # Invariants
//!
//! - The fast pass accepts only envelopes that [`detail`] accepts, so the
//!   two agree on every envelope (a proptest checks it near every limit).
//! - An error always comes from [`detail`]: the first problem in the
//!   documented order.

use super::{Envelope, EnvelopeError, MAX_AGGREGATE_ID_LEN, MAX_EVENT_TYPE_LEN};
use super::{MAX_FIELD_LEN, MAX_HEADERS, MAX_PAYLOAD};
use compact_str::CompactString;

/// [`Envelope::validate`].
#[inline]
pub(super) fn check(e: &Envelope) -> Result<(), EnvelopeError> {
    let short = |v: &Option<CompactString>| v.as_ref().is_none_or(|v| v.len() <= MAX_FIELD_LEN);
    let id = e.aggregate_id.as_bytes();
    // `len - 1 < max` (wrapping) is `1 <= len <= max`.
    let common = (e.event_id.len().wrapping_sub(1) < MAX_FIELD_LEN)
        & (id.len().wrapping_sub(1) < MAX_AGGREGATE_ID_LEN)
        & (e.event_type.len().wrapping_sub(1) < MAX_EVENT_TYPE_LEN)
        & (e.event_version > 0)
        & short(&e.trace_id)
        & short(&e.correlation_id)
        & short(&e.tenant_id)
        & e.headers.is_empty()
        & (e.payload.len() <= MAX_PAYLOAD);
    if common && id.iter().all(|&b| id_byte(b)) {
        return Ok(());
    }
    detail(e)
}

/// Every check in order, naming the first problem.
#[cold]
#[inline(never)]
pub(super) fn detail(e: &Envelope) -> Result<(), EnvelopeError> {
    // Lengths only: no need to look at the ID's text.
    match e.event_id.len() {
        0 => return Err(EnvelopeError::EmptyEventId),
        len if len > MAX_FIELD_LEN => {
            return Err(EnvelopeError::FieldTooLong {
                field: "event_id",
                len,
            })
        }
        _ => {}
    }
    validate_aggregate_id(&e.aggregate_id)?;
    if e.event_type.is_empty() {
        return Err(EnvelopeError::EmptyEventType);
    }
    if e.event_type.len() > MAX_EVENT_TYPE_LEN {
        return Err(EnvelopeError::EventTypeTooLong {
            len: e.event_type.len(),
        });
    }
    if e.event_version <= 0 {
        return Err(EnvelopeError::InvalidVersion {
            version: e.event_version,
        });
    }
    if let Some(value) = &e.trace_id {
        check_len("trace_id", value)?;
    }
    if let Some(value) = &e.correlation_id {
        check_len("correlation_id", value)?;
    }
    if let Some(value) = &e.tenant_id {
        check_len("tenant_id", value)?;
    }
    if e.headers.len() > MAX_HEADERS {
        return Err(EnvelopeError::TooManyHeaders {
            count: e.headers.len(),
        });
    }
    for (key, value) in e.headers.iter() {
        check_len("header key", key)?;
        check_len("header value", value)?;
    }
    if e.payload.len() > MAX_PAYLOAD {
        return Err(EnvelopeError::PayloadTooLarge {
            len: e.payload.len(),
        });
    }
    Ok(())
}

fn check_len(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.len() > MAX_FIELD_LEN {
        return Err(EnvelopeError::FieldTooLong {
            field,
            len: value.len(),
        });
    }
    Ok(())
}

/// The bytes an aggregate ID may hold: ASCII letters and digits and
/// `:_-./` (see [`Envelope::validate`]).
static ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b':' | b'_' | b'-' | b'.' | b'/');
        b += 1;
    }
    table
};

/// Whether an aggregate ID may hold `b` (one table load).
#[inline(always)]
fn id_byte(b: u8) -> bool {
    ID_BYTE[usize::from(b)]
}

fn validate_aggregate_id(id: &str) -> Result<(), EnvelopeError> {
    if id.is_empty() {
        return Err(EnvelopeError::EmptyAggregateId);
    }
    // Fast path: every allowed character is ASCII, so a short ID of
    // allowed bytes is valid without decoding characters.
    if id.len() <= MAX_AGGREGATE_ID_LEN && id.bytes().all(id_byte) {
        return Ok(());
    }
    // Slow path: find the first problem, counted in characters.
    let len = id.chars().count();
    if len > MAX_AGGREGATE_ID_LEN {
        return Err(EnvelopeError::AggregateIdTooLong { len });
    }
    for (index, ch) in id.chars().enumerate() {
        if !u8::try_from(ch).is_ok_and(id_byte) {
            return Err(EnvelopeError::InvalidAggregateIdChar { ch, index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    /// Lengths at and around a limit, and a few small ones.
    fn len_near(max: usize) -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0),
            Just(1),
            2..12usize,
            Just(max - 1),
            Just(max),
            Just(max + 1)
        ]
    }

    /// Text of `len` bytes drawn from allowed ID characters, a space, a
    /// `#` and (two bytes) `é`.
    fn text(len: usize) -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            8 => prop::sample::select(b"aZ09:_-./".to_vec()).prop_map(char::from),
            1 => Just(' '),
            1 => Just('#'),
            1 => Just('\u{e9}'),
        ];
        proptest::collection::vec(ch, len).prop_map(|cs| cs.into_iter().collect())
    }

    fn field(max: usize) -> impl Strategy<Value = String> {
        len_near(max).prop_flat_map(text)
    }

    /// A payload of 0, 3 or `MAX_PAYLOAD + 1` bytes (the large one
    /// allocated once).
    fn payload() -> impl Strategy<Value = Bytes> {
        static LARGE: OnceLock<Bytes> = OnceLock::new();
        prop_oneof![
            8 => Just(Bytes::new()),
            8 => Just(Bytes::from_static(b"{1}")),
            1 => Just(()).prop_map(|()| {
                LARGE.get_or_init(|| Bytes::from(vec![0u8; MAX_PAYLOAD + 1])).clone()
            }),
        ]
    }

    prop_compose! {
        fn envelope()(
            event_id in field(MAX_FIELD_LEN),
            aggregate_id in field(MAX_AGGREGATE_ID_LEN),
            event_type in field(MAX_EVENT_TYPE_LEN),
            version in prop_oneof![Just(-1i64), Just(0), Just(1), Just(7)],
            trace in proptest::option::of(field(MAX_FIELD_LEN)),
            correlation in proptest::option::of(field(MAX_FIELD_LEN)),
            tenant in proptest::option::of(field(MAX_FIELD_LEN)),
            headers in proptest::collection::vec((field(MAX_FIELD_LEN), text(3)), 0..3),
            payload in payload(),
        ) -> Envelope {
            let mut e = Envelope::new(aggregate_id.as_str(), event_type.as_str(), version, payload)
                .with_event_id(event_id.as_str());
            e.trace_id = trace.map(CompactString::from);
            e.correlation_id = correlation.map(CompactString::from);
            e.tenant_id = tenant.map(CompactString::from);
            for (k, v) in headers {
                e = e.with_header(k, v);
            }
            e
        }
    }

    proptest! {
        /// The one-pass check and the detailed one agree on every envelope.
        #[test]
        fn the_fast_pass_agrees_with_every_check_in_order(e in envelope()) {
            prop_assert_eq!(check(&e), detail(&e));
        }
    }

    #[test]
    fn too_many_headers_take_the_detailed_path() {
        let mut e = Envelope::new("a", "T", 1, "");
        for i in 0..=MAX_HEADERS {
            e = e.with_header(format!("h{i}"), "v");
        }
        assert_eq!(
            check(&e),
            Err(EnvelopeError::TooManyHeaders {
                count: MAX_HEADERS + 1
            })
        );
    }
}
