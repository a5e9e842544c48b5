//! Typed payloads and the serde form of an envelope.
//!
//! - [`Envelope::json`] builds an envelope whose payload is a value
//!   serialized with serde_json; [`Envelope::payload_json`] reads it back
//!   into a type, and a payload that does not parse as that type is a
//!   *permanent* handler error: retrying cannot fix it, so the message is
//!   dead-lettered at once instead of being retried to exhaustion.
//! - `Envelope` implements `Serialize` and `Deserialize` in its
//!   Go-compatible JSON form, through the same code as
//!   [`Envelope::encode_json`] and [`Envelope::decode_json`]: the same field
//!   names, the same checks, the same errors (as the data format's custom
//!   error).
//!
//! # Algorithm
//!
//! `Serialize` writes the text [`Envelope::encode_json`] writes and hands it
//! to the serializer as a [`RawValue`], which serde_json embeds verbatim; so
//! `serde_json::to_string(&env)` equals `encode_json` byte for byte, also
//! nested in a larger value. `Deserialize` reads the same object as
//! `decode_json` (one field set, one `finish` step), with the payload taken
//! as an owned `Box<RawValue>` whose buffer becomes the payload bytes
//! without a copy, so it works from `serde_json::from_str`, `from_reader`
//! and `from_value` alike.
//!
//! # Invariants
//!
//! - For every envelope `env` and serde_json: `to_vec(&env)` is `Ok` exactly
//!   when `env.encode_json()` is, with the same bytes; `from_slice` accepts
//!   exactly what `decode_json` accepts, with an equal envelope.
//! - The serde form is JSON-specific: the payload is raw JSON, which other
//!   data formats see as serde_json's raw-value wrapper. Use
//!   [`Envelope::encode`] for a compact, format-neutral form.

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde::ser::{Error as _, Serialize, Serializer};
use serde_json::value::RawValue;

use super::json::{self, WireIn};
use super::{CompactString, DecodeError, EncodeError, Envelope};
use crate::HandlerError;

impl Envelope {
    /// A new envelope (as [`Envelope::new`]) whose payload is `payload`
    /// serialized as JSON.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Serialize`] when serde_json cannot serialize `payload`
    /// (a map with non-string keys, a failing `Serialize` impl).
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::Envelope;
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct OrderPlaced {
    ///     total: u32,
    /// }
    ///
    /// let env = Envelope::json("order-42", "OrderPlaced", 1, &OrderPlaced { total: 10 })?;
    /// assert_eq!(&env.payload[..], br#"{"total":10}"#);
    /// assert_eq!(env.payload_json::<OrderPlaced>().unwrap(), OrderPlaced { total: 10 });
    /// # Ok::<(), lanebus::EncodeError>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        aggregate_id: impl Into<CompactString>,
        event_type: impl Into<CompactString>,
        event_version: i64,
        payload: &T,
    ) -> Result<Envelope, EncodeError> {
        let bytes = serde_json::to_vec(payload).map_err(|e| EncodeError::Serialize {
            message: e.to_string(),
        })?;
        Ok(Envelope::new(
            aggregate_id,
            event_type,
            event_version,
            bytes,
        ))
    }

    /// The payload parsed as JSON into `T`, which may borrow from it.
    ///
    /// # Errors
    ///
    /// A [permanent](HandlerError::permanent) [`HandlerError`] wrapping
    /// [`DecodeError::PayloadJson`] when the payload is not JSON of type
    /// `T`: returned with `?` from a handler, the message is dead-lettered
    /// at once rather than retried, since no retry can make it parse.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Envelope, ErrorClass};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct OrderPlaced<'a> {
    ///     sku: &'a str,
    /// }
    ///
    /// let env = Envelope::new("order-42", "OrderPlaced", 1, r#"{"sku":"A-1"}"#);
    /// assert_eq!(env.payload_json::<OrderPlaced>().unwrap().sku, "A-1");
    ///
    /// let bad = Envelope::new("order-42", "OrderPlaced", 1, r#"{"sku":7}"#);
    /// let Err(err) = bad.payload_json::<OrderPlaced>() else { panic!("parsed") };
    /// assert_eq!(err.class(), ErrorClass::Permanent);
    /// ```
    pub fn payload_json<'a, T: Deserialize<'a>>(&'a self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            HandlerError::permanent(DecodeError::PayloadJson {
                target: std::any::type_name::<T>(),
                message: e.to_string(),
            })
        })
    }
}

/// Writes the Go-compatible JSON object, exactly as
/// [`Envelope::encode_json`] writes it, failing with its [`EncodeError`]
/// (as the serializer's custom error) where it fails.
///
/// # Examples
///
/// ```
/// use lanebus::Envelope;
///
/// let env = Envelope::new("order-1", "OrderPlaced", 1, r#"{"n":1}"#).with_tenant_id("42");
/// let text = serde_json::to_string(&env)?;
/// assert_eq!(text.as_bytes(), &env.encode_json()?[..]);
/// let back: Envelope = serde_json::from_str(&text)?;
/// assert_eq!(back, env);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = json::encode_vec(self).map_err(S::Error::custom)?;
        let text = String::from_utf8(text).map_err(S::Error::custom)?;
        let raw = RawValue::from_string(text).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

/// Reads the Go-compatible JSON object as [`Envelope::decode_json`] does,
/// validation included, failing with its [`DecodeError`] (as the
/// deserializer's custom error) where it fails.
///
/// # Examples
///
/// ```
/// use lanebus::Envelope;
///
/// let go = r#"{"event_id":"e1","aggregate_id":"order-1","event_type":"OrderPlaced",
///   "event_version":1,"timestamp":"2024-05-01T10:30:00+08:00","tenant_id":42,"payload":[1]}"#;
/// let env: Envelope = serde_json::from_str(go)?;
/// assert_eq!(env.tenant_id.as_deref(), Some("42"));
/// assert_eq!(env, Envelope::decode_json(go.as_bytes())?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireIn::<Box<RawValue>>::deserialize(deserializer)?;
        wire.finish(|raw| {
            let text: Box<str> = raw.into();
            Ok(Bytes::from(text.into_boxed_bytes()))
        })
        .map_err(D::Error::custom)
    }
}
