//! The compact binary envelope codec, format version 1.
//!
//! Layout (all multi-byte integers little-endian; `varint` is unsigned
//! LEB128 of at most 10 bytes; `str` is a varint byte length followed by
//! that many UTF-8 bytes):
//!
//! | field            | encoding                                           |
//! |------------------|----------------------------------------------------|
//! | magic            | 2 bytes `0xEB 0x1B`                                |
//! | format version   | 1 byte, `1`                                        |
//! | flags            | 1 byte: bit 0 trace ID, bit 1 correlation ID, bit 2 tenant ID present; bits 3–7 zero |
//! | event ID         | `str`                                              |
//! | aggregate ID     | `str`                                              |
//! | event type       | `str`                                              |
//! | event version    | zigzag `varint` of the `i64`                       |
//! | timestamp        | `i64` seconds since the Unix epoch, then `u32` nanoseconds (`< 10^9`) |
//! | trace ID         | `str`, only when flag bit 0 is set                 |
//! | correlation ID   | `str`, only when flag bit 1 is set                 |
//! | tenant ID        | `str`, only when flag bit 2 is set                 |
//! | header count     | `varint`, then count × (key `str`, value `str`)    |
//! | payload          | `varint` length, then the bytes; ends the input    |
//!
//! Invariants of the decoder: it never panics; it checks every length or
//! count against its cap ([`MAX_FIELD_LEN`], [`MAX_HEADERS`],
//! [`MAX_PAYLOAD`]) and against the remaining input *before* allocating, so
//! memory use is bounded by the input size; it rejects reserved flag bits,
//! unknown versions, overlong varints and trailing bytes; and it validates
//! the envelope it built.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{CompactString, DecodeError, Envelope, EventId};
use crate::Headers;

/// The two bytes every binary envelope starts with. `0xEB` can never begin a
/// JSON text, so the binary and JSON forms are told apart by the first byte.
///
/// # Examples
///
/// ```
/// let wire = lanebus::Envelope::new("a", "T", 1, "{}").encode();
/// assert!(wire.starts_with(&lanebus::envelope::MAGIC));
/// ```
pub const MAGIC: [u8; 2] = [0xEB, 0x1B];

/// The binary format version written after [`MAGIC`].
///
/// # Examples
///
/// ```
/// let wire = lanebus::Envelope::new("a", "T", 1, "{}").encode();
/// assert_eq!(wire[2], lanebus::envelope::FORMAT_VERSION);
/// ```
pub const FORMAT_VERSION: u8 = 1;

/// Largest string field (IDs, event type, header key or value) in bytes: 4 KiB.
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::envelope::MAX_FIELD_LEN, 4096);
/// ```
pub const MAX_FIELD_LEN: usize = 4 * 1024;

/// Largest number of headers on one envelope.
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::envelope::MAX_HEADERS, 1024);
/// ```
pub const MAX_HEADERS: usize = 1024;

/// Largest payload in bytes: 64 MiB.
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::envelope::MAX_PAYLOAD, 64 * 1024 * 1024);
/// ```
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

const FLAG_TRACE: u8 = 1;
const FLAG_CORRELATION: u8 = 1 << 1;
const FLAG_TENANT: u8 = 1 << 2;
const KNOWN_FLAGS: u8 = FLAG_TRACE | FLAG_CORRELATION | FLAG_TENANT;

/// Longest LEB128 encoding of a `u64`.
const MAX_VARINT_LEN: usize = 10;

/// Writes the binary form of `env`.
pub(super) fn encode(env: &Envelope) -> Bytes {
    // An empty optional ID means none, as in the JSON form (Go's omitempty):
    // both forms write it as absent.
    let optional = [&env.trace_id, &env.correlation_id, &env.tenant_id]
        .map(|o| o.as_deref().filter(|s| !s.is_empty()));
    let strings = env.event_id.len()
        + env.aggregate_id.len()
        + env.event_type.len()
        + optional.iter().flatten().map(|s| s.len()).sum::<usize>()
        + env
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>();
    let mut out = Vec::with_capacity(4 + 6 * 3 + 10 + 12 + 10 + 10 + strings + env.payload.len());

    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    let mut flags = 0;
    for (bit, field) in [FLAG_TRACE, FLAG_CORRELATION, FLAG_TENANT]
        .into_iter()
        .zip(optional)
    {
        if field.is_some() {
            flags |= bit;
        }
    }
    out.push(flags);

    put_str(&mut out, &env.event_id);
    put_str(&mut out, &env.aggregate_id);
    put_str(&mut out, &env.event_type);
    put_varint(&mut out, zigzag(env.event_version));
    let (secs, nanos) = to_unix(env.timestamp);
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&nanos.to_le_bytes());
    for value in optional.into_iter().flatten() {
        put_str(&mut out, value);
    }
    put_varint(&mut out, env.headers.len() as u64);
    for (key, value) in env.headers.iter() {
        put_str(&mut out, key);
        put_str(&mut out, value);
    }
    put_varint(&mut out, env.payload.len() as u64);
    out.extend_from_slice(&env.payload);
    Bytes::from(out)
}

/// Reads the binary form from `input`; `payload` turns the payload's byte
/// range within `input` into a [`Bytes`] (a copy or a shared slice).
pub(super) fn decode(
    input: &[u8],
    payload: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<Envelope, DecodeError> {
    let mut r = Reader { buf: input, pos: 0 };
    let magic = r.take(MAGIC.len(), "magic").map_err(|_| {
        if MAGIC.starts_with(input) {
            DecodeError::Truncated { field: "magic" }
        } else {
            DecodeError::BadMagic
        }
    })?;
    if magic != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.byte("version")?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion { version });
    }
    let flags = r.byte("flags")?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags { flags });
    }

    let event_id = EventId::from(r.string("event_id")?);
    let aggregate_id = CompactString::from(r.string("aggregate_id")?);
    let event_type = CompactString::from(r.string("event_type")?);
    let event_version = unzigzag(r.varint("event_version")?);
    let secs = i64::from_le_bytes(r.array("timestamp")?);
    let nanos = u32::from_le_bytes(r.array("timestamp")?);
    let timestamp = from_unix(secs, nanos).ok_or_else(|| DecodeError::BadTimestamp {
        reason: format!("{secs} s {nanos} ns is not a representable time"),
    })?;
    let trace_id = r.optional(flags, FLAG_TRACE, "trace_id")?;
    let correlation_id = r.optional(flags, FLAG_CORRELATION, "correlation_id")?;
    let tenant_id = r.optional(flags, FLAG_TENANT, "tenant_id")?;

    let count = r.length("header count", MAX_HEADERS, false)?;
    let headers = (0..count)
        .map(|_| Ok((r.string("header key")?, r.string("header value")?)))
        .collect::<Result<Headers, DecodeError>>()?;

    let len = r.length("payload", MAX_PAYLOAD, true)?;
    let start = r.pos;
    r.pos += len;
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            count: r.remaining(),
        });
    }

    let env = Envelope {
        event_id,
        aggregate_id,
        event_type,
        event_version,
        timestamp,
        trace_id,
        correlation_id,
        tenant_id,
        headers,
        payload: payload(start..start + len),
    };
    env.validate()?;
    Ok(env)
}

/// A cursor over the input; every read checks bounds and reports the field.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let b = self.byte(field)?;
            // The tenth byte may only carry the top bit of a u64.
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(DecodeError::BadVarint { field });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint { field })
    }

    /// Reads a length or count and checks it against `limit`; when `bytes`
    /// is set it must also fit in the remaining input.
    fn length(
        &mut self,
        field: &'static str,
        limit: usize,
        bytes: bool,
    ) -> Result<usize, DecodeError> {
        let len = self.varint(field)?;
        if len > limit as u64 {
            return Err(DecodeError::LengthOverLimit {
                field,
                len,
                limit: limit as u64,
            });
        }
        // `len <= limit`, a usize, so the conversion is lossless.
        let len = len as usize;
        if bytes && len > self.remaining() {
            return Err(DecodeError::Truncated { field });
        }
        Ok(len)
    }

    fn string(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.length(field, MAX_FIELD_LEN, true)?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn optional(
        &mut self,
        flags: u8,
        bit: u8,
        field: &'static str,
    ) -> Result<Option<CompactString>, DecodeError> {
        if flags & bit == 0 {
            return Ok(None);
        }
        // Present but empty reads as absent: one meaning for "no ID".
        self.string(field)
            .map(|s| (!s.is_empty()).then(|| CompactString::from(s)))
    }
}

/// Splits a time into whole seconds since the Unix epoch (negative before
/// 1970) and nanoseconds `0..1_000_000_000` after that second. Saturates at
/// the `i64` range, which no platform's `SystemTime` exceeds in practice.
pub(super) fn to_unix(t: SystemTime) -> (i64, u32) {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = -i128::from(d.as_secs());
            let (secs, nanos) = match d.subsec_nanos() {
                0 => (secs, 0),
                n => (secs - 1, 1_000_000_000 - n),
            };
            match i64::try_from(secs) {
                Ok(secs) => (secs, nanos),
                Err(_) => (i64::MIN, 0),
            }
        }
    }
}

/// The inverse of [`to_unix`]; `None` when `nanos` is not below one second
/// or the platform cannot represent the time.
pub(super) fn from_unix(secs: i64, nanos: u32) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    let whole = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    whole.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_of(bytes: &[u8]) -> Result<u64, DecodeError> {
        Reader { buf: bytes, pos: 0 }.varint("v")
    }

    fn sample() -> Envelope {
        Envelope::new("order-1", "Placed", 3, &b"{}"[..])
            .with_event_id("e1")
            .with_timestamp(SystemTime::UNIX_EPOCH + Duration::new(2, 7))
    }

    #[test]
    fn unix_split_round_trips_around_the_epoch() {
        let epoch = SystemTime::UNIX_EPOCH;
        let cases = [
            (epoch, (0, 0)),
            (epoch + Duration::new(1, 5), (1, 5)),
            (epoch - Duration::new(0, 1), (-1, 999_999_999)),
            (epoch - Duration::new(1, 0), (-1, 0)),
            (epoch - Duration::new(86_400, 250), (-86_401, 999_999_750)),
        ];
        for (t, split) in cases {
            assert_eq!(to_unix(t), split);
            assert_eq!(from_unix(split.0, split.1), Some(t));
        }
        assert_eq!(from_unix(0, 1_000_000_000), None);
    }

    #[test]
    fn varint_round_trips_and_bounds() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert!(out.len() <= MAX_VARINT_LEN);
            assert_eq!(varint_of(&out), Ok(v));
        }
        let mut max = Vec::new();
        put_varint(&mut max, u64::MAX);
        assert_eq!(max.len(), 10);
        assert_eq!(max[9], 1);
        // The tenth byte carrying more than one bit overflows.
        let mut over = max.clone();
        over[9] = 2;
        assert_eq!(varint_of(&over), Err(DecodeError::BadVarint { field: "v" }));
        // Eleven bytes are never accepted.
        assert_eq!(
            varint_of(&[0x80; 11]),
            Err(DecodeError::BadVarint { field: "v" })
        );
        assert_eq!(
            varint_of(&[0x80, 0x80]),
            Err(DecodeError::Truncated { field: "v" })
        );
    }

    #[test]
    fn zigzag_is_a_bijection_on_edges() {
        for v in [0, 1, -1, 2, -2, i64::MAX, i64::MIN, i64::MIN + 1] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn layout_is_pinned() {
        let env = sample().with_tenant_id("t").with_header("k", "v");
        let mut expected = vec![0xEB, 0x1B, 1, FLAG_TENANT];
        expected.extend_from_slice(b"\x02e1\x07order-1\x06Placed");
        expected.push(6); // zigzag(3)
        expected.extend_from_slice(&2i64.to_le_bytes());
        expected.extend_from_slice(&7u32.to_le_bytes());
        expected.extend_from_slice(b"\x01t\x01\x01k\x01v\x02{}");
        assert_eq!(&env.encode()[..], &expected[..]);
    }

    #[test]
    fn pre_epoch_timestamp_round_trips() {
        let t = SystemTime::UNIX_EPOCH - Duration::new(1_000_000, 123);
        let env = sample().with_timestamp(t);
        let back = decode(&env.encode(), |_| Bytes::from_static(b"{}")).unwrap();
        assert_eq!(back.timestamp, t);
    }

    #[test]
    fn every_prefix_is_truncated_not_a_panic() {
        let wire = sample().with_trace_id("tr").with_header("a", "b").encode();
        for cut in 1..wire.len() {
            let err = decode(&wire[..cut], |_| Bytes::new()).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "cut {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn header_fields_and_flags_are_checked() {
        let wire = sample().encode();
        let mut bad = wire.to_vec();
        bad[3] = 0x08;
        assert_eq!(
            decode(&bad, |_| Bytes::new()),
            Err(DecodeError::UnknownFlags { flags: 0x08 })
        );
        bad[3] = 0;
        bad[2] = 2;
        assert_eq!(
            decode(&bad, |_| Bytes::new()),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        );
        assert_eq!(
            decode(&[0xEB], |_| Bytes::new()),
            Err(DecodeError::Truncated { field: "magic" })
        );
        assert_eq!(
            decode(&[0x00], |_| Bytes::new()),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn lengths_are_capped_before_allocating() {
        // A header count of 2^32 with nothing behind it.
        let mut wire = sample().encode().to_vec();
        let payload_at = wire.len() - 3;
        wire.truncate(payload_at - 1);
        put_varint(&mut wire, 1 << 32);
        assert_eq!(
            decode(&wire, |_| Bytes::new()),
            Err(DecodeError::LengthOverLimit {
                field: "header count",
                len: 1 << 32,
                limit: MAX_HEADERS as u64,
            })
        );
        // An event ID claiming u64::MAX bytes.
        let mut wire = vec![0xEB, 0x1B, 1, 0];
        put_varint(&mut wire, u64::MAX);
        assert!(matches!(
            decode(&wire, |_| Bytes::new()),
            Err(DecodeError::LengthOverLimit {
                field: "event_id",
                ..
            })
        ));
    }

    #[test]
    fn bad_nanos_and_utf8_are_typed() {
        let mut wire = sample().encode().to_vec();
        // magic, version, flags, "e1", "order-1", "Placed", version 3, secs.
        let nanos_at = 4 + 3 + 8 + 7 + 1 + 8;
        wire[nanos_at..nanos_at + 4].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert!(matches!(
            decode(&wire, |_| Bytes::new()),
            Err(DecodeError::BadTimestamp { .. })
        ));
        let mut wire = sample().encode().to_vec();
        wire[5] = 0xFF;
        assert_eq!(
            decode(&wire, |_| Bytes::new()),
            Err(DecodeError::InvalidUtf8 { field: "event_id" })
        );
    }
}
