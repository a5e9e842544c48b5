//! The JSON envelope form, wire-compatible with the Go envelope.
//!
//! Go's `encoding/json` writes the envelope struct as one object with the
//! fields in this order:
//!
//! ```text
//! {"event_id":"…","aggregate_id":"…","event_type":"…","event_version":3,
//!  "timestamp":"2024-05-01T10:30:00.123456789+08:00","trace_id":"…",
//!  "correlation_id":"…","tenant_id":"…","payload":{…}}
//! ```
//!
//! That is the struct of ChenBigdata421/jxt-core's `sdk/pkg/eventbus`
//! (`envelope.go`) as it is today, written by `encoding/json` (or jsoniter's
//! standard-compatible configuration, which writes the same bytes).
//!
//! Rules this module keeps:
//!
//! - `trace_id` and `correlation_id` are `omitempty` strings: absent when
//!   `None` or empty on output; absent, `null` or `""` read as `None`.
//! - `tenant_id` is a Go `int` with `omitempty`: a JSON number, absent when
//!   zero. We keep it as text ([`Envelope::tenant_id`]): on input a JSON
//!   integer in the `i64` range is read as its decimal text (`42` →
//!   `"42"`), and a string, as older Go publishers wrote it, is read as is;
//!   a fraction, an exponent or an out-of-range number is refused, as Go
//!   refuses it. On output a tenant ID in canonical decimal form (optional
//!   `-`, no leading zeros, within `i64`) is written as a number; any other
//!   non-empty tenant ID cannot be read by Go and is refused with
//!   [`EncodeError::TenantIdNotInteger`]. An explicit `0` is written and read
//!   back as `"0"` (Go itself never writes it: zero is its "no tenant").
//! - `timestamp` is RFC 3339 with up to nine fraction digits, trailing zeros
//!   trimmed, as Go's `time.Time` marshals it (RFC3339Nano). Output is always
//!   UTC (`Z`); input accepts any offset. Years 0000–9999 only, as in Go.
//! - `event_version` must be a JSON integer that fits an `i64`.
//! - `payload` is embedded as raw JSON, not as a string, byte for byte
//!   except for whitespace around the value, which is dropped. On input the
//!   payload is the value's exact text (surrounding whitespace excluded), so
//!   numbers, key order and inner spacing are kept; `null` is kept as the
//!   text `null`, as Go keeps it in its `json.RawMessage`, and a missing
//!   `payload` gives an empty payload (reading is lenient; Go would refuse
//!   it). On output the payload must be one JSON value, so not empty.
//! - `headers`, our addition, is an object of string values written just
//!   before `payload`, in order, duplicates kept; omitted when empty. Go
//!   ignores it, as it ignores every unknown field; so do we.
//! - Strings are escaped as Go escapes them (including `<`, `>`, `&`,
//!   U+2028 and U+2029 as `\u` escapes), so an envelope without headers and
//!   with a compact payload is written byte for byte as Go writes it.
//!
//! Writing refuses what Go's `Envelope.Validate` (run by its `FromBytes`)
//! would reject, and what our own decoder would reject: the envelope must
//! pass [`Envelope::validate`], its event ID and event type must not be only
//! whitespace (Go trims before checking), and its payload must not be empty.
//! So every text [`encode`] writes, Go and [`decode`] both accept.
//!
//! Decoding validates the envelope it built ([`Envelope::validate`]).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::binary::{from_unix, to_unix};
use super::{CompactString, DecodeError, EncodeError, Envelope, EventId};
use crate::Headers;
use compact_str::ToCompactString;

/// What [`encode`] writes besides the plain fields, checked and prepared.
pub(super) struct Checked<'a> {
    timestamp: String,
    tenant_id: Option<&'a str>,
    payload: &'a [u8],
}

/// Checks that `env` can be written in the Go form and read back by Go and
/// by [`decode`]; see the module docs for the rules.
pub(super) fn check(env: &Envelope) -> Result<Checked<'_>, EncodeError> {
    env.validate().map_err(EncodeError::Invalid)?;
    for (field, value) in [
        ("event id", &*env.event_id),
        ("event type", &*env.event_type),
    ] {
        if value.trim().is_empty() {
            return Err(EncodeError::Blank { field });
        }
    }
    if env.payload.is_empty() {
        return Err(EncodeError::EmptyPayload);
    }
    let payload = serde_json::from_slice::<&RawValue>(&env.payload)
        .map_err(|_| EncodeError::PayloadNotJson)?
        .get()
        .as_bytes();
    let tenant_id = match env.tenant_id.as_deref().filter(|t| !t.is_empty()) {
        Some(t) if !is_go_int(t) => {
            return Err(EncodeError::TenantIdNotInteger {
                tenant_id: t.to_owned(),
            })
        }
        other => other,
    };
    Ok(Checked {
        timestamp: format_timestamp(env)?,
        tenant_id,
        payload,
    })
}

/// Writes the JSON form of `env`.
pub(super) fn encode(env: &Envelope) -> Result<Bytes, EncodeError> {
    encode_vec(env).map(Bytes::from)
}

/// Writes the JSON form of `env` into a new vector, which holds UTF-8:
/// every piece written is a `str`, ASCII, or the payload checked as JSON.
pub(super) fn encode_vec(env: &Envelope) -> Result<Vec<u8>, EncodeError> {
    let Checked {
        timestamp,
        tenant_id,
        payload,
    } = check(env)?;

    let headers: usize = env.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let mut out = Vec::with_capacity(256 + headers + payload.len());
    out.extend_from_slice(b"{\"event_id\":");
    put_str(&mut out, &env.event_id);
    out.extend_from_slice(b",\"aggregate_id\":");
    put_str(&mut out, &env.aggregate_id);
    out.extend_from_slice(b",\"event_type\":");
    put_str(&mut out, &env.event_type);
    out.extend_from_slice(b",\"event_version\":");
    out.extend_from_slice(env.event_version.to_string().as_bytes());
    out.extend_from_slice(b",\"timestamp\":\"");
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'"');
    let optional = [
        ("trace_id", &env.trace_id),
        ("correlation_id", &env.correlation_id),
    ];
    for (name, value) in optional {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            put_str(&mut out, value);
        }
    }
    if let Some(tenant_id) = tenant_id {
        // Checked to be a canonical decimal integer: written as a number.
        out.extend_from_slice(b",\"tenant_id\":");
        out.extend_from_slice(tenant_id.as_bytes());
    }
    if !env.headers.is_empty() {
        out.extend_from_slice(b",\"headers\":{");
        for (i, (key, value)) in env.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            put_str(&mut out, key);
            out.push(b':');
            put_str(&mut out, value);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload);
    out.push(b'}');
    Ok(out)
}

/// Whether `text` is an integer as Go writes an `int`: an optional `-`,
/// decimal digits without leading zeros (`0` alone, never `-0`), within
/// `i64`. Only such text survives a number round trip unchanged.
fn is_go_int(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = match digits.as_bytes() {
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical && text.parse::<i64>().is_ok()
}

/// Reads the JSON form from `input`; `payload` turns the payload's byte
/// range within `input` into a [`Bytes`] (a copy or a shared slice).
pub(super) fn decode(
    input: &[u8],
    payload: impl FnOnce(Range<usize>) -> Bytes,
) -> Result<Envelope, DecodeError> {
    let wire: WireIn<&RawValue> =
        serde_json::from_slice(input).map_err(|e| DecodeError::InvalidJson {
            message: e.to_string(),
        })?;
    wire.finish(|raw| {
        let range = subslice_range(input, raw.get().as_bytes()).ok_or_else(|| {
            DecodeError::InvalidJson {
                message: "payload not borrowed from the input".to_owned(),
            }
        })?;
        Ok(payload(range))
    })
}

/// The object as read, with the payload's raw JSON as `P` (borrowed from
/// the input by [`decode`], owned by `Envelope`'s `Deserialize`). Missing
/// strings and version default to Go's zero values, which validation then
/// rejects with a precise error; a missing timestamp is reported as such
/// rather than read as Go's year 1.
#[derive(Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub(super) struct WireIn<P> {
    #[serde(default)]
    event_id: EventId,
    #[serde(default)]
    aggregate_id: CompactString,
    #[serde(default)]
    event_type: CompactString,
    #[serde(default)]
    event_version: i64,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    trace_id: Option<CompactString>,
    #[serde(default)]
    correlation_id: Option<CompactString>,
    #[serde(default, deserialize_with = "tenant_id")]
    tenant_id: Option<CompactString>,
    #[serde(default)]
    headers: Option<OrderedHeaders>,
    #[serde(default, deserialize_with = "present")]
    payload: Option<P>,
}

impl<P> WireIn<P> {
    /// Builds the envelope, turning the raw payload (when present) into
    /// bytes with `payload`, and validates it.
    pub(super) fn finish(
        self,
        payload: impl FnOnce(P) -> Result<Bytes, DecodeError>,
    ) -> Result<Envelope, DecodeError> {
        let text = self.timestamp.ok_or_else(|| DecodeError::BadTimestamp {
            reason: "missing".to_owned(),
        })?;
        let parsed =
            OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| DecodeError::BadTimestamp {
                reason: e.to_string(),
            })?;
        let timestamp =
            from_unix(parsed.unix_timestamp(), parsed.nanosecond()).ok_or_else(|| {
                DecodeError::BadTimestamp {
                    reason: format!("{text} is not a representable time"),
                }
            })?;
        let payload = match self.payload {
            None => Bytes::new(),
            Some(raw) => payload(raw)?,
        };
        let env = Envelope {
            event_id: self.event_id,
            aggregate_id: self.aggregate_id,
            event_type: self.event_type,
            event_version: self.event_version,
            timestamp,
            trace_id: self.trace_id.filter(|s| !s.is_empty()),
            correlation_id: self.correlation_id.filter(|s| !s.is_empty()),
            tenant_id: self.tenant_id.filter(|s| !s.is_empty()),
            headers: self.headers.map(|h| h.0).unwrap_or_default(),
            payload,
        };
        env.validate()?;
        Ok(env)
    }
}

/// A JSON object of strings read into [`Headers`] keeping order and
/// duplicate keys (the crate's own serde impl goes through a sorted map).
struct OrderedHeaders(Headers);

impl<'de> Deserialize<'de> for OrderedHeaders {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;

        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = OrderedHeaders;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string header values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut headers = Headers::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    headers.append(key, value);
                }
                Ok(OrderedHeaders(headers))
            }
        }

        deserializer.deserialize_map(PairsVisitor)
    }
}

/// Reads a field that is present as `Some`, even when it is `null` (which
/// serde's `Option` would read as `None`): Go reads a `null` payload as the
/// raw text `null`, and so do we. A missing field is `None` by default.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// Reads `tenant_id` as Go's `int` (a JSON integer within `i64`, kept as
/// its decimal text) or as a string, as older Go publishers wrote it;
/// `null` reads as `None`. Fractions, exponents and out-of-range numbers
/// are refused, as Go refuses them.
fn tenant_id<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<CompactString>, D::Error> {
    struct TenantVisitor;

    impl Visitor<'_> for TenantVisitor {
        type Value = Option<CompactString>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an integer tenant id (or a string from older publishers)")
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(Some(n.to_compact_string()))
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            match i64::try_from(n) {
                Ok(n) => self.visit_i64(n),
                Err(_) => Err(E::custom(format_args!(
                    "tenant_id {n} out of range of go's int"
                ))),
            }
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(CompactString::from(s)))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    deserializer.deserialize_any(TenantVisitor)
}

/// RFC 3339 in UTC with trailing fraction zeros trimmed (Go's RFC3339Nano).
fn format_timestamp(env: &Envelope) -> Result<String, EncodeError> {
    let (secs, nanos) = to_unix(env.timestamp);
    OffsetDateTime::from_unix_timestamp(secs)
        .and_then(|t| t.replace_nanosecond(nanos))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or(EncodeError::TimestampOutOfRange)
}

/// Where `inner` lies within `outer`, when it is a subslice of it.
fn subslice_range(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = inner.as_ptr().addr().checked_sub(outer.as_ptr().addr())?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

/// Writes `s` as a JSON string escaped the way Go's `encoding/json` does.
fn put_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        let short = match ch {
            '"' => Some(b'"'),
            '\\' => Some(b'\\'),
            '\n' => Some(b'n'),
            '\r' => Some(b'r'),
            '\t' => Some(b't'),
            '\u{8}' => Some(b'b'),
            '\u{c}' => Some(b'f'),
            _ => None,
        };
        let unicode = ch < ' ' || matches!(ch, '<' | '>' | '&' | '\u{2028}' | '\u{2029}');
        if short.is_none() && !unicode {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        match short {
            Some(b) => out.push(b),
            None => {
                let code = ch as u32;
                out.push(b'u');
                for shift in [12, 8, 4, 0] {
                    out.push(HEX[((code >> shift) & 0xf) as usize]);
                }
            }
        }
        start = i + ch.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        put_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    fn at(secs: i64, nanos: u32) -> Envelope {
        Envelope::new("a", "T", 1, "{}")
            .with_timestamp(from_unix(secs, nanos).expect("representable"))
    }

    #[test]
    fn strings_are_escaped_like_go() {
        assert_eq!(escaped("plain"), r#""plain""#);
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(escaped("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(escaped("x\u{2028}y\u{2029}"), r#""x\u2028y\u2029""#);
        assert_eq!(escaped("héllo ✓"), "\"héllo ✓\"");
        let tricky = "<\"\u{0}é\u{2028}>";
        let back: String = serde_json::from_str(&escaped(tricky)).unwrap();
        assert_eq!(back, tricky);
    }

    #[test]
    fn timestamps_are_written_like_go_rfc3339nano() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00Z"),
            (1_714_530_600, 123_456_789, "2024-05-01T02:30:00.123456789Z"),
            (1_714_530_600, 100_000_000, "2024-05-01T02:30:00.1Z"),
            (1_714_530_600, 1_000, "2024-05-01T02:30:00.000001Z"),
            (-1, 999_999_999, "1969-12-31T23:59:59.999999999Z"),
            (-62_135_596_800, 0, "0001-01-01T00:00:00Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59Z"),
        ];
        for (secs, nanos, text) in cases {
            assert_eq!(format_timestamp(&at(secs, nanos)).unwrap(), text);
        }
        assert_eq!(
            format_timestamp(&at(253_402_300_800, 0)),
            Err(EncodeError::TimestampOutOfRange)
        );
        assert_eq!(
            format_timestamp(&at(-62_167_219_201, 0)),
            Err(EncodeError::TimestampOutOfRange)
        );
    }

    #[test]
    fn payload_null_missing_and_empty() {
        let head = r#"{"event_id":"e","aggregate_id":"a","event_type":"T","event_version":1,"timestamp":"2024-01-01T00:00:00Z""#;
        let env = Envelope::decode_json(format!("{head}}}").as_bytes()).unwrap();
        assert!(env.payload.is_empty());
        let null = format!(r#"{head},"payload":null}}"#);
        let env = Envelope::decode_json(null.as_bytes()).unwrap();
        assert_eq!(&env.payload[..], b"null", "kept as Go keeps it");
        assert_eq!(encode(&env).unwrap(), null.as_bytes());
        let env =
            Envelope::decode_json(format!("{head},\"payload\": [1, {{}}] }}").as_bytes()).unwrap();
        assert_eq!(&env.payload[..], b"[1, {}]");
        // Go's `Validate` requires a payload, so an empty one is not written.
        let mut empty = at(0, 0).with_event_id("e");
        empty.payload = Bytes::new();
        assert_eq!(encode(&empty), Err(EncodeError::EmptyPayload));
    }

    #[test]
    fn go_ints_are_canonical_decimal_i64() {
        for good in [
            "0",
            "7",
            "-7",
            "42",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert!(is_go_int(good), "{good}");
        }
        for bad in [
            "",
            "-",
            "-0",
            "007",
            "+7",
            "4.2",
            "1e3",
            " 7",
            "7 ",
            "acme",
            "9223372036854775808",
            "-9223372036854775809",
            "٣",
        ] {
            assert!(!is_go_int(bad), "{bad}");
        }
    }

    #[test]
    fn headers_keep_order_and_duplicates() {
        let headers: Headers = [("z", "1"), ("a", "2"), ("z", "3")].into_iter().collect();
        let env = at(5, 0).with_headers(headers.clone());
        let json = encode(&env).unwrap();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""headers":{"z":"1","a":"2","z":"3"},"payload":{}"#));
        assert_eq!(Envelope::decode_json(&json).unwrap().headers, headers);
    }

    #[test]
    fn field_types_are_enforced() {
        let with = |field: &str| {
            format!(
                r#"{{"event_id":"e","aggregate_id":"a","event_type":"T",{field},"payload":{{}}}}"#
            )
        };
        let bad = [
            with(r#""event_version":1.0,"timestamp":"2024-01-01T00:00:00Z""#),
            with(r#""event_version":"1","timestamp":"2024-01-01T00:00:00Z""#),
            with(r#""event_version":9223372036854775808,"timestamp":"2024-01-01T00:00:00Z""#),
            with(r#""event_version":1,"timestamp":"2024-01-01T00:00:00Z","headers":{"k":1}"#),
        ];
        for json in bad {
            assert!(
                matches!(
                    Envelope::decode_json(json.as_bytes()),
                    Err(DecodeError::InvalidJson { .. })
                ),
                "{json}"
            );
        }
        for ts in [
            r#""event_version":1"#,
            r#""event_version":1,"timestamp":"yesterday""#,
        ] {
            assert!(matches!(
                Envelope::decode_json(with(ts).as_bytes()),
                Err(DecodeError::BadTimestamp { .. })
            ));
        }
    }

    #[test]
    fn offsets_are_read_as_instants() {
        let json = br#"{"event_id":"e","aggregate_id":"a","event_type":"T","event_version":1,"timestamp":"1970-01-01T05:30:00.5+05:30","payload":1}"#;
        let env = Envelope::decode_json(json).unwrap();
        assert_eq!(
            env.timestamp,
            SystemTime::UNIX_EPOCH + Duration::from_millis(500)
        );
    }

    #[test]
    fn subslice_range_rejects_foreign_slices() {
        let outer = [1u8, 2, 3, 4];
        assert_eq!(subslice_range(&outer, &outer[1..3]), Some(1..3));
        assert_eq!(subslice_range(&outer, &outer[4..]), Some(4..4));
        let other = [1u8, 2];
        assert_eq!(subslice_range(&outer, &other), None);
    }
}
