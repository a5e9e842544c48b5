//! The envelope's error types: what makes an envelope invalid, and why
//! bytes do not decode or an envelope does not encode.
//!
//! # Invariants
//!
//! Display texts are short and lower-case; every enum is
//! `#[non_exhaustive]`, so new reasons can be added without breaking
//! matches.

#[cfg(doc)]
use super::{
    Envelope, MAX_AGGREGATE_ID_LEN, MAX_EVENT_TYPE_LEN, MAX_FIELD_LEN, MAX_HEADERS, MAX_PAYLOAD,
};

/// Why an envelope is invalid.
///
/// # Examples
///
/// ```
/// use lanebus::{Envelope, EnvelopeError};
///
/// let env = Envelope::new("order 1", "OrderPlaced", 1, "{}");
/// assert_eq!(
///     env.validate(),
///     Err(EnvelopeError::InvalidAggregateIdChar { ch: ' ', index: 5 })
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The event ID is empty.
    #[error("empty event id")]
    EmptyEventId,
    /// The aggregate ID is empty.
    #[error("empty aggregate id")]
    EmptyAggregateId,
    /// The aggregate ID has more than [`MAX_AGGREGATE_ID_LEN`] characters.
    #[error("aggregate id too long: {len} characters, max 256")]
    AggregateIdTooLong {
        /// Length of the rejected ID, in characters.
        len: usize,
    },
    /// The aggregate ID holds a character outside `A-Z a-z 0-9 : _ - . /`.
    #[error("invalid character {ch:?} at position {index} of aggregate id")]
    InvalidAggregateIdChar {
        /// The offending character.
        ch: char,
        /// Its position in the ID, counted in characters from 0.
        index: usize,
    },
    /// The event type is empty.
    #[error("empty event type")]
    EmptyEventType,
    /// The event type is longer than [`MAX_EVENT_TYPE_LEN`] bytes.
    #[error("event type too long: {len} bytes, max 256")]
    EventTypeTooLong {
        /// Length of the rejected event type, in bytes.
        len: usize,
    },
    /// The event version is zero or negative.
    #[error("invalid event version {version}: must be positive")]
    InvalidVersion {
        /// The rejected version.
        version: i64,
    },
    /// A string field is longer than [`MAX_FIELD_LEN`] bytes.
    #[error("{field} too long: {len} bytes, max 4096")]
    FieldTooLong {
        /// The field: `event_id`, `trace_id`, `correlation_id`,
        /// `tenant_id`, `header key` or `header value`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// There are more than [`MAX_HEADERS`] headers.
    #[error("too many headers: {count}, max 1024")]
    TooManyHeaders {
        /// Number of headers.
        count: usize,
    },
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload too large: {len} bytes, max 64 MiB")]
    PayloadTooLarge {
        /// Payload size in bytes.
        len: usize,
    },
    /// The bus writes envelopes in the Go-compatible JSON form
    /// (`nats.jetstream.wire_format: json`), which cannot carry this one
    /// (see [`Envelope::encode_json`](crate::Envelope::encode_json)).
    #[error("the json wire form cannot carry it: {0}")]
    NotJsonForm(Box<EncodeError>),
}

/// Why bytes could not be decoded into an envelope.
///
/// # Examples
///
/// ```
/// use lanebus::{DecodeError, Envelope};
///
/// assert!(matches!(Envelope::decode(&[0xEB, 0x1B]), Err(DecodeError::Truncated { .. })));
/// assert!(matches!(Envelope::decode(b"{\"x\":"), Err(DecodeError::InvalidJson { .. })));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended while reading `field`.
    #[error("truncated input reading {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// The input is neither the binary form (wrong magic) nor JSON.
    #[error("bad magic: neither binary envelope nor json")]
    BadMagic,
    /// The binary form has a format version this crate does not know.
    #[error("unsupported binary format version {version}")]
    UnsupportedVersion {
        /// The version byte read.
        version: u8,
    },
    /// The binary flags byte has reserved bits set.
    #[error("unknown flags {flags:#04x}")]
    UnknownFlags {
        /// The flags byte read.
        flags: u8,
    },
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("malformed varint in {field}")]
    BadVarint {
        /// The field being read.
        field: &'static str,
    },
    /// A length or count is over its cap.
    #[error("{field} length {len} over limit {limit}")]
    LengthOverLimit {
        /// The field whose length was read.
        field: &'static str,
        /// The length read.
        len: u64,
        /// The largest accepted length.
        limit: u64,
    },
    /// A string field is not UTF-8.
    #[error("invalid utf-8 in {field}")]
    InvalidUtf8 {
        /// The field being read.
        field: &'static str,
    },
    /// The JSON form is malformed or has wrongly typed fields.
    #[error("invalid json: {message}")]
    InvalidJson {
        /// The JSON parser's description of the problem.
        message: String,
    },
    /// The timestamp is malformed or out of range.
    #[error("bad timestamp: {reason}")]
    BadTimestamp {
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes follow the end of the binary envelope.
    #[error("{count} trailing bytes")]
    TrailingBytes {
        /// How many bytes follow.
        count: usize,
    },
    /// The decoded envelope fails validation.
    #[error("invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
    /// The payload is not JSON of the type asked for
    /// ([`Envelope::payload_json`]).
    #[error("payload is not json of type {target}: {message}")]
    PayloadJson {
        /// The Rust type the payload was read into.
        target: &'static str,
        /// serde_json's description of the problem.
        message: String,
    },
}

/// Why an envelope could not be written in the Go-compatible JSON form.
///
/// [`Envelope::encode_json`] refuses what the Go envelope's `Validate`
/// (run by its `FromBytes`) or our own decoder would reject, and what the
/// JSON form cannot carry. [`Envelope::validate_for`] reports the same
/// errors without writing.
///
/// # Examples
///
/// ```
/// use lanebus::{EncodeError, Envelope};
///
/// let env = Envelope::new("order-1", "OrderPlaced", 1, "not json");
/// assert_eq!(env.encode_json(), Err(EncodeError::PayloadNotJson));
/// let env = Envelope::new("order-1", "OrderPlaced", 1, "");
/// assert_eq!(env.encode_json(), Err(EncodeError::EmptyPayload));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload is not one valid JSON value, so it cannot be embedded.
    #[error("payload is not json")]
    PayloadNotJson,
    /// The timestamp is outside years 0000–9999, which RFC 3339 cannot write.
    #[error("timestamp out of rfc 3339 range")]
    TimestampOutOfRange,
    /// The envelope fails [`Envelope::validate`]; Go's `Validate` or our
    /// decoder would refuse it.
    #[error("invalid envelope: {0}")]
    Invalid(#[from] EnvelopeError),
    /// The event ID or event type is only whitespace, which Go's `Validate`
    /// refuses (it trims before checking).
    #[error("{field} is only whitespace")]
    Blank {
        /// `event id` or `event type`.
        field: &'static str,
    },
    /// The payload is empty; Go's `Validate` requires one.
    #[error("empty payload: the go envelope requires one")]
    EmptyPayload,
    /// The tenant ID is not an integer in canonical decimal form within
    /// `i64`; Go's envelope declares `tenant_id` as an `int`, so it could
    /// not read it.
    #[error("tenant id {tenant_id:?} is not an integer, as go's int tenant_id requires")]
    TenantIdNotInteger {
        /// The rejected tenant ID.
        tenant_id: String,
    },
    /// The payload could not be serialized to JSON ([`Envelope::json`]).
    #[error("payload serialization failed: {message}")]
    Serialize {
        /// serde_json's description of the problem.
        message: String,
    },
}
