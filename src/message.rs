//! The plain message a handler receives, and the outbound message a
//! publisher builds.
//!
//! A [`Message`] is cheap to clone: its payload is a [`Bytes`] (reference
//! counted), its topic and key are shared strings. The lane worker builds a
//! fresh `Message` for every attempt, so `attempt()` counts deliveries of
//! this message to this subscription, starting at 1.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::Headers;

/// A message as a handler receives it.
///
/// # Examples
///
/// ```
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use lanebus::{Bus, HandlerError, Message};
///
/// let bus = Bus::memory();
/// let _sub = bus
///     .subscribe("greetings", |msg: Message| async move {
///         println!("{} on {} (attempt {})", String::from_utf8_lossy(msg.payload()), msg.topic(), msg.attempt());
///         Ok::<_, HandlerError>(())
///     })
///     .await?;
/// bus.publish("greetings", "hello").await?;
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) payload: Bytes,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) headers: Headers,
    pub(crate) attempt: u32,
}

impl Message {
    /// The topic it was published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The routing key, if the publisher set one (for an envelope: its
    /// aggregate ID).
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Which delivery of this message this is, starting at 1. Counts local
    /// retries and, on broker transports, redeliveries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("key", &self.key)
            .field("headers", &self.headers)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// A plain message to publish with a key or headers; see
/// [`Bus::publish_with`](crate::Bus::publish_with).
///
/// A key routes the message like an aggregate ID: every message with the
/// same key goes to the same lane of each subscription and is handled in
/// publish order. Without a key, messages are spread over the lanes.
///
/// # Examples
///
/// ```
/// use lanebus::OutboundMessage;
///
/// let msg = OutboundMessage::new("payload")
///     .key("customer-42")
///     .header("content-type", "text/plain");
/// assert_eq!(msg.payload(), "payload".as_bytes());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboundMessage {
    pub(crate) payload: Bytes,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) headers: Headers,
}

impl OutboundMessage {
    /// A message with this payload, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            key: None,
            headers: Headers::new(),
        }
    }

    /// Sets the routing key.
    pub fn key(mut self, key: impl AsRef<str>) -> Self {
        self.key = Some(Arc::from(key.as_ref()));
        self
    }

    /// Sets a header (replacing an earlier value of the same name).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The routing key.
    pub fn routing_key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The headers.
    pub fn header_map(&self) -> &Headers {
        &self.headers
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }
}

impl From<Bytes> for OutboundMessage {
    fn from(payload: Bytes) -> Self {
        Self::new(payload)
    }
}
