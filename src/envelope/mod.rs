//! The domain-event envelope: identity, ordering key, metadata and payload.
//!
//! An [`Envelope`] wraps one domain event. Its aggregate ID is the ordering
//! key: the bus hashes it with [`key_hash`] to pick a keyed lane, so all
//! events of one aggregate are handled in publish order.
//!
//! Building one is cheap: [`Envelope::new`] reads the clock once (the
//! system time extrapolated from the CPU's time-stamp counter between
//! system clock readings at most a millisecond apart, about 10 ns instead
//! of a `clock_gettime` call), and its [`EventId`] (a UUIDv7), aggregate ID
//! and event type are stored inline ([`CompactString`] holds up to 24
//! bytes), so the common envelope needs no heap allocation until the bus
//! shares it: one `Arc`, handed to the handler without a copy, and reused
//! for a later envelope once every handler has let go of it.
//!
//! Two wire forms exist, both self-describing so [`Envelope::decode`] can
//! tell them apart from the first bytes:
//!
//! - **binary** ([`Envelope::encode`]): compact, versioned
//!   ([`FORMAT_VERSION`]), little-endian, starting with the [`MAGIC`] bytes
//!   `0xEB 0x1B`, which can never begin a JSON text. Then a flags byte (bits
//!   0–2: trace, correlation and tenant ID present), the event ID,
//!   aggregate ID and event type as varint-length-prefixed UTF-8, the
//!   version as a zigzag varint, the time as `i64` seconds and `u32`
//!   nanoseconds, the present optional IDs, a varint header count with
//!   key/value pairs, and a varint-length payload that ends the input.
//! - **JSON** ([`Envelope::encode_json`], also `Serialize`): the object the
//!   Go envelope writes, starting with `{` after optional JSON whitespace;
//!   its rules are on `encode_json`, `decode_json` and
//!   [`Envelope::tenant_id`].
//!
//! # Invariants
//!
//!
//! - every decoder validates what it built ([`Envelope::validate`]), so a
//!   successfully decoded envelope is always valid;
//! - decoding never panics and bounds every length before allocating;
//! - a valid envelope survives `encode` → `decode` exactly (any payload
//!   bytes, any representable time);
//! - an envelope that [`Envelope::encode_json`] accepts (it refuses what Go
//!   or our decoder would reject, see [`EncodeError`]) survives
//!   `encode_json` → `decode` exactly, except that empty optional IDs become
//!   `None` (Go's `omitempty`) and whitespace around the payload value is
//!   dropped.

mod binary;
pub(crate) mod clock;
mod error;
pub mod hash;
mod id;
mod json;
mod typed;
mod validate;

use std::time::SystemTime;

use bytes::Bytes;

use crate::Headers;

pub use binary::{FORMAT_VERSION, MAGIC, MAX_FIELD_LEN, MAX_HEADERS, MAX_PAYLOAD};
pub use compact_str::CompactString;
pub use error::{DecodeError, EncodeError, EnvelopeError};
pub use hash::key_hash;
pub use id::EventId;

/// Longest aggregate ID accepted by [`Envelope::validate`], in characters.
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::envelope::MAX_AGGREGATE_ID_LEN, 256);
/// ```
pub const MAX_AGGREGATE_ID_LEN: usize = 256;

/// Longest event type accepted by [`Envelope::validate`], in bytes.
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::envelope::MAX_EVENT_TYPE_LEN, 256);
/// ```
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// One domain event with its routing and tracing metadata.
///
/// Build it with [`Envelope::new`] (or [`Envelope::json`] for a typed
/// payload) and the `with_*` methods; the fields are public for reading
/// and adjusting. Read a JSON payload back with [`Envelope::payload_json`].
///
/// # Payload and wire forms
///
/// The payload is opaque bytes to the bus. The binary form
/// ([`Envelope::encode`]) carries any bytes. The Go-compatible JSON form
/// ([`Envelope::encode_json`], and `Serialize`) embeds the payload as raw
/// JSON, so there it must be exactly one JSON value: an empty or non-JSON
/// payload is refused with [`EncodeError::EmptyPayload`] or
/// [`EncodeError::PayloadNotJson`], never re-encoded in some other way.
/// [`Envelope::validate_for`] with [`WireFormat::Json`] runs the same
/// checks without writing, for use before publishing where the wire form
/// is JSON, so such an envelope is refused when it is published rather
/// than failing later.
///
/// # Examples
///
/// ```
/// use lanebus::Envelope;
///
/// let env = Envelope::new("order-42", "OrderPlaced", 1, &b"{\"total\":10}"[..])
///     .with_trace_id("trace-1")
///     .with_header("source", "checkout");
/// env.validate().unwrap();
/// let back = Envelope::decode(&env.encode()).unwrap();
/// assert_eq!(back, env);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// Unique ID of the event; a lowercase hyphenated UUIDv7 by default,
    /// any text from other publishers. Stored inline up to
    /// [`EventId::INLINE_CAP`] bytes.
    pub event_id: EventId,
    /// ID of the aggregate the event belongs to; the ordering key. Stored
    /// inline up to 24 bytes.
    pub aggregate_id: CompactString,
    /// Name of the event type, e.g. `OrderPlaced`. Stored inline up to 24
    /// bytes.
    pub event_type: CompactString,
    /// Version of the aggregate after this event; valid when positive.
    pub event_version: i64,
    /// When the event happened.
    pub timestamp: SystemTime,
    /// Distributed-tracing ID.
    pub trace_id: Option<CompactString>,
    /// ID correlating this event with the request or saga that caused it.
    pub correlation_id: Option<CompactString>,
    /// Tenant the event belongs to.
    ///
    /// Go's envelope declares it as an `int` (a JSON number, omitted when
    /// zero), so for the JSON form it must be an integer in canonical
    /// decimal text, such as `"42"` or `"-7"`: [`decode_json`](Self::decode_json)
    /// reads Go's number `42` as `"42"` (and a string, as older Go
    /// publishers wrote it, as is), and [`encode_json`](Self::encode_json)
    /// writes `"42"` as the number `42` and refuses any other text with
    /// [`EncodeError::TenantIdNotInteger`]. The binary form carries any text.
    pub tenant_id: Option<CompactString>,
    /// Extra string headers, in order.
    pub headers: Headers,
    /// The event body, opaque to the bus.
    pub payload: Bytes,
}

/// The two wire forms of an envelope.
///
/// # Examples
///
/// ```
/// use lanebus::{Envelope, WireFormat};
///
/// assert_eq!(Envelope::detect(b" {\"event_id\":\"x\"}"), Some(WireFormat::Json));
/// assert_eq!(Envelope::detect(&[0xEB, 0x1B, 1]), Some(WireFormat::Binary));
/// assert_eq!(Envelope::detect(b"hello"), None);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WireFormat {
    /// The compact binary form written by [`Envelope::encode`] (the
    /// default wire form of a bus).
    #[default]
    Binary,
    /// The Go-compatible JSON form written by [`Envelope::encode_json`].
    Json,
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 event ID, the current time, no
    /// optional IDs and no headers. Does not validate.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// let env = Envelope::new("order-1", "OrderPlaced", 1, "{}");
    /// assert_eq!(env.event_id.len(), 36);
    /// assert_eq!(&env.payload[..], b"{}");
    /// assert!(env.trace_id.is_none());
    /// ```
    pub fn new(
        aggregate_id: impl Into<CompactString>,
        event_type: impl Into<CompactString>,
        event_version: i64,
        payload: impl Into<Bytes>,
    ) -> Self {
        // One clock read serves the ID and the timestamp.
        let (timestamp, millis) = clock::now_with_millis();
        Self {
            event_id: EventId::v7_at_millis(millis),
            aggregate_id: aggregate_id.into(),
            event_type: event_type.into(),
            event_version,
            timestamp,
            trace_id: None,
            correlation_id: None,
            tenant_id: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Sets the trace ID.
    ///
    /// # Examples
    ///
    /// ```
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}").with_trace_id("t-1");
    /// assert_eq!(env.trace_id.as_deref(), Some("t-1"));
    /// ```
    pub fn with_trace_id(mut self, trace_id: impl Into<CompactString>) -> Self {
        self.trace_id = Some(trace_id.into());
        self
    }

    /// Sets the correlation ID.
    ///
    /// # Examples
    ///
    /// ```
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}").with_correlation_id("c-1");
    /// assert_eq!(env.correlation_id.as_deref(), Some("c-1"));
    /// ```
    pub fn with_correlation_id(mut self, correlation_id: impl Into<CompactString>) -> Self {
        self.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets the tenant ID.
    ///
    /// # Examples
    ///
    /// ```
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}").with_tenant_id("acme");
    /// assert_eq!(env.tenant_id.as_deref(), Some("acme"));
    /// ```
    pub fn with_tenant_id(mut self, tenant_id: impl Into<CompactString>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// Sets header `key` to `value`, replacing earlier values of `key`.
    ///
    /// # Examples
    ///
    /// ```
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}")
    ///     .with_header("k", "1")
    ///     .with_header("k", "2");
    /// assert_eq!(env.headers.get("k"), Some("2"));
    /// ```
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key, value);
        self
    }

    /// Replaces all headers.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Envelope, Headers};
    ///
    /// let headers: Headers = [("a", "1"), ("a", "2")].into_iter().collect();
    /// let env = Envelope::new("a", "T", 1, "{}").with_headers(headers);
    /// assert_eq!(env.headers.len(), 2);
    /// ```
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Replaces the generated event ID.
    ///
    /// # Examples
    ///
    /// ```
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}").with_event_id("evt-1");
    /// assert_eq!(env.event_id, "evt-1");
    /// ```
    pub fn with_event_id(mut self, event_id: impl Into<EventId>) -> Self {
        self.event_id = event_id.into();
        self
    }

    /// Replaces the timestamp.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    ///
    /// let env = lanebus::Envelope::new("a", "T", 1, "{}").with_timestamp(SystemTime::UNIX_EPOCH);
    /// assert_eq!(env.timestamp, SystemTime::UNIX_EPOCH);
    /// ```
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// Checks the envelope: non-empty event ID; an aggregate ID of 1–256
    /// characters from `A-Z a-z 0-9 : _ - . /`; a non-empty event type of at
    /// most 256 bytes; a positive version; string fields and header entries
    /// of at most [`MAX_FIELD_LEN`] bytes; at most [`MAX_HEADERS`] headers;
    /// a payload of at most [`MAX_PAYLOAD`] bytes. Reports the first problem.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Envelope, EnvelopeError};
    ///
    /// assert!(Envelope::new("tenant:order/42", "OrderPlaced", 1, "{}").validate().is_ok());
    /// assert_eq!(
    ///     Envelope::new("order-1", "OrderPlaced", 0, "{}").validate(),
    ///     Err(EnvelopeError::InvalidVersion { version: 0 })
    /// );
    /// ```
    #[inline]
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        validate::check(self)
    }

    /// Encodes the compact binary form. Never fails; an envelope that passes
    /// [`validate`](Self::validate) always decodes back equal.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// let bytes = Envelope::new("order-1", "OrderPlaced", 1, "{}").encode();
    /// assert_eq!(&bytes[..2], &lanebus::envelope::MAGIC);
    /// ```
    pub fn encode(&self) -> Bytes {
        binary::encode(self)
    }

    /// Encodes the JSON form the Go envelope reads and writes.
    ///
    /// Refuses, with a typed [`EncodeError`], every envelope that Go's
    /// `Validate` or [`decode`](Self::decode) would reject or that the form
    /// cannot carry: one that fails [`validate`](Self::validate); a blank
    /// event ID or event type; an empty payload, or one that is not exactly
    /// one JSON value (non-JSON payloads travel only in the binary form,
    /// [`encode`](Self::encode)); a tenant ID that is not an integer (Go's
    /// `tenant_id` is an `int`; see [`tenant_id`](Self::tenant_id)); a
    /// timestamp outside years 0000–9999. So whatever it writes, both sides
    /// read.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use lanebus::Envelope;
    ///
    /// let env = Envelope::new("order-1", "OrderPlaced", 2, "{\"n\":1}")
    ///     .with_event_id("e1")
    ///     .with_timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1500));
    /// let json = env.encode_json().unwrap();
    /// assert_eq!(
    ///     std::str::from_utf8(&json).unwrap(),
    ///     r#"{"event_id":"e1","aggregate_id":"order-1","event_type":"OrderPlaced","event_version":2,"timestamp":"1970-01-01T00:00:01.5Z","payload":{"n":1}}"#
    /// );
    /// ```
    pub fn encode_json(&self) -> Result<Bytes, EncodeError> {
        json::encode(self)
    }

    /// Checks that the envelope can be written in `format` and read back by
    /// that form's readers, without writing it: for
    /// [`WireFormat::Binary`] that is [`validate`](Self::validate); for
    /// [`WireFormat::Json`] it is every check of
    /// [`encode_json`](Self::encode_json), so an envelope the Go side would
    /// reject is refused before it is sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{EncodeError, Envelope, WireFormat};
    ///
    /// let env = Envelope::new("order-1", "OrderPlaced", 1, "{}").with_tenant_id("acme");
    /// assert_eq!(env.validate_for(WireFormat::Binary), Ok(()));
    /// assert_eq!(
    ///     env.validate_for(WireFormat::Json),
    ///     Err(EncodeError::TenantIdNotInteger { tenant_id: "acme".into() })
    /// );
    /// assert_eq!(env.with_tenant_id("42").validate_for(WireFormat::Json), Ok(()));
    /// ```
    pub fn validate_for(&self, format: WireFormat) -> Result<(), EncodeError> {
        match format {
            WireFormat::Binary => self.validate().map_err(EncodeError::Invalid),
            WireFormat::Json => json::check(self).map(drop),
        }
    }

    /// Decodes either wire form, chosen by [`detect`](Self::detect), and
    /// validates the result. The payload is copied out of `bytes`.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// let env = Envelope::new("order-1", "OrderPlaced", 1, "{}");
    /// assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
    /// let json = env.encode_json().unwrap();
    /// assert_eq!(Envelope::decode(&json).unwrap().event_id, env.event_id);
    /// ```
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        match Self::detect(bytes) {
            Some(WireFormat::Binary) => Self::decode_binary(bytes),
            Some(WireFormat::Json) => Self::decode_json(bytes),
            None if MAGIC.starts_with(bytes) => Err(DecodeError::Truncated { field: "magic" }),
            None => Err(DecodeError::BadMagic),
        }
    }

    /// Like [`decode`](Self::decode), but the payload shares `bytes`'
    /// buffer instead of being copied (both forms).
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// let wire = Envelope::new("order-1", "OrderPlaced", 1, "{}").encode();
    /// let env = Envelope::decode_bytes(&wire).unwrap();
    /// assert_eq!(&env.payload[..], b"{}");
    /// ```
    pub fn decode_bytes(bytes: &Bytes) -> Result<Envelope, DecodeError> {
        match Self::detect(bytes) {
            Some(WireFormat::Binary) => binary::decode(bytes, |r| bytes.slice(r)),
            Some(WireFormat::Json) => json::decode(bytes, |r| bytes.slice(r)),
            None if MAGIC.starts_with(bytes) => Err(DecodeError::Truncated { field: "magic" }),
            None => Err(DecodeError::BadMagic),
        }
    }

    /// Decodes the binary form only, and validates the result.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{DecodeError, Envelope};
    ///
    /// let env = Envelope::new("order-1", "OrderPlaced", 1, "{}");
    /// assert_eq!(Envelope::decode_binary(&env.encode()).unwrap(), env);
    /// assert_eq!(Envelope::decode_binary(b"{}"), Err(DecodeError::BadMagic));
    /// ```
    pub fn decode_binary(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        binary::decode(bytes, |r| Bytes::copy_from_slice(&bytes[r]))
    }

    /// Decodes the Go-compatible JSON form only, and validates the result.
    /// The payload is the raw JSON text of the `payload` value, byte for
    /// byte (`null` stays `null`, as in Go's `json.RawMessage`); a missing
    /// `payload` gives an empty payload. Empty optional IDs become `None`; a
    /// numeric `tenant_id` (Go's `int`) is read as its decimal text; unknown
    /// fields are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// let json = br#"{"event_id":"e1","aggregate_id":"order-1","event_type":"OrderPlaced",
    ///   "event_version":1,"timestamp":"2024-05-01T10:30:00+08:00","trace_id":"",
    ///   "payload":{"a": [1, 2]}}"#;
    /// let env = Envelope::decode_json(json).unwrap();
    /// assert_eq!(&env.payload[..], br#"{"a": [1, 2]}"#);
    /// assert_eq!(env.trace_id, None);
    /// ```
    pub fn decode_json(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        json::decode(bytes, |r| Bytes::copy_from_slice(&bytes[r]))
    }

    /// Tells which wire form `bytes` is in: [`WireFormat::Binary`] when they
    /// start with [`MAGIC`], [`WireFormat::Json`] when the first byte after
    /// JSON whitespace is `{`, else `None`. Looks at the first bytes only.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Envelope, WireFormat};
    ///
    /// assert_eq!(Envelope::detect(b"\r\n\t {"), Some(WireFormat::Json));
    /// assert_eq!(Envelope::detect(b""), None);
    /// ```
    pub fn detect(bytes: &[u8]) -> Option<WireFormat> {
        if bytes.starts_with(&MAGIC) {
            return Some(WireFormat::Binary);
        }
        let first = bytes
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        (*first == b'{').then_some(WireFormat::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_order_reports_first_problem() {
        let mut env = Envelope::new("", "", 0, Bytes::new()).with_event_id("");
        assert_eq!(env.validate(), Err(EnvelopeError::EmptyEventId));
        env.event_id = "e".into();
        assert_eq!(env.validate(), Err(EnvelopeError::EmptyAggregateId));
        env.aggregate_id = "a".into();
        assert_eq!(env.validate(), Err(EnvelopeError::EmptyEventType));
        env.event_type = "T".into();
        assert_eq!(
            env.validate(),
            Err(EnvelopeError::InvalidVersion { version: 0 })
        );
        env.event_version = 1;
        assert_eq!(env.validate(), Ok(()));
    }
}
