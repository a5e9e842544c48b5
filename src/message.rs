//! The plain message a handler receives, and the outbound message a
//! publisher builds.
//!
//! A [`Message`] is cheap to clone: its payload is a [`Bytes`] (reference
//! counted), its topic and key are shared strings. The lane worker builds a
//! fresh `Message` for every attempt, so `attempt()` counts deliveries of
//! this message to this subscription, starting at 1.
//!
//! Naming follows tokio and crossbeam: bare-noun getters (`key()`,
//! `headers()`), `with_*` builders.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::pipeline::dead_letter::DeadLetterInfo;
use crate::{Context, HandlerError, Headers};

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
///         let ctx = msg.context();
///         println!("{} on {} (attempt {})", String::from_utf8_lossy(msg.payload()), ctx.topic(), ctx.attempt());
///         Ok::<_, HandlerError>(())
///     })
///     .await?;
/// bus.publish("greetings", "hello").await?;
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Message {
    pub(crate) context: Context,
    pub(crate) payload: Bytes,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) headers: Headers,
}

impl Message {
    /// The delivery context: topic, attempt, redeliveries.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The topic it was published to (`context().topic()`).
    pub fn topic(&self) -> &str {
        self.context.topic()
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

    /// Which delivery of this message this is, starting at 1
    /// (`context().attempt()`). Counts local retries and, on broker
    /// transports, redeliveries.
    pub fn attempt(&self) -> u32 {
        self.context.attempt()
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// Parses the payload as JSON. A payload that does not parse is a
    /// *permanent* failure: returned with `?` from a handler, it goes to the
    /// dead-letter topic at once instead of being retried.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Bus, HandlerError, Message, OutboundMessage};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Job { id: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::memory();
    /// let _sub = bus
    ///     .subscribe("jobs", |msg: Message| async move {
    ///         let job: Job = msg.payload_json()?;
    ///         assert_eq!(job.id, 7);
    ///         Ok::<(), HandlerError>(())
    ///     })
    ///     .await?;
    /// bus.publish_with("jobs", OutboundMessage::json(&Job { id: 7 })?).await?;
    /// bus.publish("jobs", "not json").await?; // dead-lettered at the first attempt
    /// bus.close().await?;
    /// assert_eq!(bus.stats().total.retried, 0);
    /// # Ok(()) }
    /// ```
    pub fn payload_json<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        serde_json::from_slice(&self.payload).map_err(HandlerError::permanent)
    }

    /// Why the message was dead-lettered, when it was consumed from a
    /// dead-letter topic (read from its headers).
    pub fn dead_letter(&self) -> Option<DeadLetterInfo> {
        DeadLetterInfo::from_headers(&self.headers)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("context", &self.context)
            .field("payload_len", &self.payload.len())
            .field("key", &self.key)
            .field("headers", &self.headers)
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
///     .with_key("customer-42")
///     .with_header("content-type", "text/plain");
/// assert_eq!(msg.payload(), "payload".as_bytes());
/// assert_eq!(msg.key(), Some("customer-42"));
/// assert_eq!(msg.headers().get("content-type"), Some("text/plain"));
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

    /// A message whose payload is `value` as JSON.
    ///
    /// # Examples
    ///
    /// ```
    /// let msg = lanebus::OutboundMessage::json(&serde_json::json!({ "id": 7 }))?;
    /// assert_eq!(msg.payload(), r#"{"id":7}"#.as_bytes());
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(Self::new)
    }

    /// Sets the routing key.
    pub fn with_key(mut self, key: impl AsRef<str>) -> Self {
        self.key = Some(Arc::from(key.as_ref()));
        self
    }

    /// Sets a header (replacing an earlier value of the same name).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces all headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The routing key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
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
