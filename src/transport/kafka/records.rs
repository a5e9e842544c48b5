//! Lane records to Kafka records and back: key, payload and headers.
//!
//! # Algorithm
//!
//! - **Out**: a plain message keeps its payload, its key as the record key
//!   and its headers as record headers. An envelope is written in the
//!   bus's wire form with its aggregate ID as the record key (one
//!   aggregate, one partition); in the Go-compatible JSON form its IDs are
//!   mirrored into the headers the Go system's publisher writes
//!   (`X-Event-ID`, `X-Aggregate-ID`, `X-Event-Version`, `X-Event-Type`,
//!   and `X-Trace-ID`, `X-Correlation-ID`, `X-Tenant-ID` when set).
//! - **In**: the payload and every header; the routing key is the record
//!   key, else the `X-Aggregate-ID` header, else (for an envelope
//!   subscription) the decoded envelope's aggregate ID. A payload that
//!   does not decode goes on as it is: its handler call dead-letters it.
//!
//! # Invariants
//!
//! - A record key or header value that is not UTF-8 is never a panic: the
//!   key is read lossily, and such a header is passed on lossily too.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::Message as _;

use crate::engine::lanes::Body;
use crate::{Envelope, Headers, TransportError, WireFormat};

/// The Go system's header with the aggregate ID.
pub(crate) const AGGREGATE_ID_HEADER: &str = "X-Aggregate-ID";

/// A record ready to produce: key, payload, headers.
pub(crate) struct Outbound {
    pub(crate) key: Option<Arc<str>>,
    pub(crate) payload: Bytes,
    pub(crate) headers: Option<OwnedHeaders>,
}

/// The Kafka record of a lane record.
pub(crate) fn outbound(body: &Body, format: WireFormat) -> Result<Outbound, TransportError> {
    if let Body::Envelope(e) = body {
        let key: Arc<str> = Arc::from(e.aggregate_id.as_str());
        return match format {
            WireFormat::Json => {
                let payload = e.encode_json().map_err(|err| {
                    TransportError::new(
                        "kafka",
                        format!("the envelope cannot be written in the json wire form: {err}"),
                        Some(Box::new(err)),
                    )
                })?;
                Ok(Outbound {
                    key: Some(key),
                    payload,
                    headers: Some(go_headers(e)),
                })
            }
            _ => Ok(Outbound {
                key: Some(key),
                payload: e.encode(),
                headers: None,
            }),
        };
    }
    let (payload, key, headers) = body.parts();
    let headers = (!headers.is_empty()).then(|| {
        headers
            .iter()
            .fold(OwnedHeaders::new(), |h, (name, value)| {
                h.insert(Header {
                    key: name,
                    value: Some(value),
                })
            })
    });
    Ok(Outbound {
        key,
        payload,
        headers,
    })
}

/// The headers the Go system's Kafka publisher writes beside an envelope.
fn go_headers(e: &Envelope) -> OwnedHeaders {
    let version = e.event_version.to_string();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("X-Event-ID", e.event_id.as_ref()),
        (AGGREGATE_ID_HEADER, e.aggregate_id.as_str()),
        ("X-Event-Version", version.as_str()),
        ("X-Event-Type", e.event_type.as_str()),
    ];
    for (name, value) in [
        ("X-Trace-ID", &e.trace_id),
        ("X-Correlation-ID", &e.correlation_id),
        ("X-Tenant-ID", &e.tenant_id),
    ] {
        if let Some(v) = value {
            pairs.push((name, v.as_str()));
        }
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}

/// The lane record of a consumed Kafka record; `envelopes`: the
/// subscription takes envelopes (a record without any key is then
/// decoded here, for its aggregate ID).
pub(crate) fn inbound(msg: &BorrowedMessage<'_>, envelopes: bool) -> Body {
    let payload = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
    let mut headers = Headers::new();
    let mut aggregate = None;
    if let Some(h) = msg.headers() {
        for header in h.iter() {
            let value = header
                .value
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            if header.key == AGGREGATE_ID_HEADER {
                aggregate = Some(Arc::<str>::from(value.as_ref()));
            }
            headers.append(header.key, value.as_ref());
        }
    }
    let key = msg
        .key()
        .map(|k| Arc::<str>::from(String::from_utf8_lossy(k).as_ref()))
        .or(aggregate);
    if key.is_none() && envelopes {
        if let Ok(envelope) = Envelope::decode_bytes(&payload) {
            return Body::Envelope(Arc::new(envelope));
        }
    }
    Body::plain_with(payload, key, headers)
}
