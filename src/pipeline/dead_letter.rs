//! Dead-lettering: where a message goes when its handler gave up on it.
//!
//! The dead-letter message keeps the original payload bytes, key and
//! headers, and adds headers naming the source topic, the error, its class
//! and the number of attempts. It is published through the same bus (so a
//! broker transport persists it), to `<topic>.dlq` unless the subscription
//! names another topic. With dead-lettering disabled, a failed message is
//! dropped *loudly*: counted as `dropped` and logged at error level.

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::options::ConfigError;
use crate::{ErrorClass, Headers, OutboundMessage};

/// Header naming the topic the message was consumed from.
pub const HEADER_SOURCE_TOPIC: &str = "lanebus-source-topic";
/// Header naming the partition the message was consumed from (Kafka only).
pub const HEADER_SOURCE_PARTITION: &str = "lanebus-source-partition";
/// Header holding the message's offset in that partition (Kafka only).
pub const HEADER_SOURCE_OFFSET: &str = "lanebus-source-offset";
/// Header holding the last error's text.
pub const HEADER_ERROR: &str = "lanebus-error";
/// Header holding the last error's class (`retryable`, `permanent`, `panic`,
/// `timeout`, `malformed`).
pub const HEADER_ERROR_CLASS: &str = "lanebus-error-class";
/// Header holding how many attempts were made.
pub const HEADER_ATTEMPTS: &str = "lanebus-attempts";
/// Header listing, comma-separated and oldest first, every topic a record
/// was dead-lettered from; a record whose dead-letter topic is already on
/// its trail would go round a cycle, and is dropped instead.
pub const HEADER_DEAD_LETTER_TRAIL: &str = "lanebus-dead-letter-trail";

/// Longest error text copied into [`HEADER_ERROR`].
const MAX_ERROR_HEADER: usize = 1024;

/// Where a subscription's failed messages go.
///
/// In YAML: `dead_letter: default`, `dead_letter: disabled` or
/// `dead_letter: { topic: orders.failed }`; in TOML `dead_letter = "default"`
/// or `dead_letter = { topic = "orders.failed" }`. Anything else is an
/// error that names these three forms.
///
/// # Examples
///
/// ```
/// use lanebus::{BusConfig, DeadLetter};
///
/// let c = BusConfig::from_yaml_str("subscribe:\n  dead_letter: { topic: orders.failed }\n")?;
/// assert_eq!(c.subscribe.dead_letter, DeadLetter::Topic("orders.failed".into()));
///
/// let err = BusConfig::from_yaml_str("subscribe:\n  dead_letter: { topc: x }\n").unwrap_err();
/// assert_eq!(err.field(), Some("subscribe.dead_letter"));
/// assert!(err.to_string().contains("unknown field `topc`"));
/// # Ok::<(), lanebus::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetter {
    /// `<topic>.dlq`.
    #[default]
    Default,
    /// No dead-letter topic: failed messages are counted, logged and dropped.
    Disabled,
    /// This topic.
    Topic(String),
}

/// The accepted config forms, as every error about them lists them.
const FORMS: &str = "`default`, `disabled` or `{ topic: <name> }`";

impl Serialize for DeadLetter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Default => s.serialize_str("default"),
            Self::Disabled => s.serialize_str("disabled"),
            Self::Topic(topic) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("topic", topic)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for DeadLetter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DeadLetterVisitor)
    }
}

/// Reads a word (`default`, `disabled`) or a map holding only `topic`.
struct DeadLetterVisitor;

impl<'de> Visitor<'de> for DeadLetterVisitor {
    type Value = DeadLetter;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(FORMS)
    }

    fn visit_str<E: de::Error>(self, word: &str) -> Result<DeadLetter, E> {
        match word {
            "default" => Ok(DeadLetter::Default),
            "disabled" => Ok(DeadLetter::Disabled),
            other => Err(E::custom(format_args!(
                "unknown dead_letter `{other}`, expected {FORMS}"
            ))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeadLetter, A::Error> {
        let mut topic = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "topic" {
                return Err(de::Error::custom(format_args!(
                    "unknown field `{key}` in dead_letter, expected {FORMS}"
                )));
            }
            if topic.is_some() {
                return Err(de::Error::duplicate_field("topic"));
            }
            topic = Some(map.next_value::<String>()?);
        }
        topic.map(DeadLetter::Topic).ok_or_else(|| {
            de::Error::custom(format_args!("dead_letter has no `topic`, expected {FORMS}"))
        })
    }
}

impl DeadLetter {
    /// The dead-letter topic for messages of `topic`, if any.
    pub fn topic_for(&self, topic: &str) -> Option<String> {
        match self {
            Self::Default => Some(format!("{topic}.dlq")),
            Self::Disabled => None,
            Self::Topic(t) => Some(t.clone()),
        }
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if let Self::Topic(t) = self {
            crate::topic::validate_topic_name(t)
                .map_err(|e| ConfigError::invalid(field, e.to_string()))?;
        }
        Ok(())
    }
}

/// Why a message was dead-lettered, as written to [`HEADER_ERROR_CLASS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    Handler(ErrorClass),
    Panic,
    /// The call ran past the subscription's `handler_timeout`.
    Timeout,
    Malformed,
}

impl FailureKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Handler(class) => class.as_str(),
            Self::Panic => "panic",
            Self::Timeout => "timeout",
            Self::Malformed => "malformed",
        }
    }

    /// Whether another attempt may succeed.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Handler(ErrorClass::Retryable) | Self::Panic | Self::Timeout
        )
    }
}

/// Builds the dead-letter message for a failed one.
pub(crate) fn dead_letter_message(
    source_topic: &str,
    payload: bytes::Bytes,
    key: Option<std::sync::Arc<str>>,
    mut headers: Headers,
    error: &str,
    kind: FailureKind,
    attempts: u32,
) -> OutboundMessage {
    let mut text = error.to_owned();
    if text.len() > MAX_ERROR_HEADER {
        let mut cut = MAX_ERROR_HEADER;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let trail = match headers.get(HEADER_DEAD_LETTER_TRAIL) {
        Some(earlier) if !earlier.is_empty() => format!("{earlier},{source_topic}"),
        _ => source_topic.to_owned(),
    };
    headers.insert(HEADER_DEAD_LETTER_TRAIL, trail);
    headers.insert(HEADER_SOURCE_TOPIC, source_topic);
    headers.insert(HEADER_ERROR, text);
    headers.insert(HEADER_ERROR_CLASS, kind.as_str());
    headers.insert(HEADER_ATTEMPTS, attempts.to_string());
    OutboundMessage {
        payload,
        key,
        headers,
    }
}

/// Adds the source partition and offset headers to a dead letter of a
/// record from a partitioned broker (`position`: partition and offset);
/// leaves it as it is otherwise.
pub(crate) fn with_source_position(
    mut msg: OutboundMessage,
    position: Option<(i32, i64)>,
) -> OutboundMessage {
    if let Some((partition, offset)) = position {
        msg.headers
            .insert(HEADER_SOURCE_PARTITION, partition.to_string());
        msg.headers.insert(HEADER_SOURCE_OFFSET, offset.to_string());
    }
    msg
}

/// True when sending a dead letter whose headers are `headers` to
/// `dead_letter_topic` would close a cycle: the topic already sent it on.
pub(crate) fn closes_cycle(headers: &Headers, dead_letter_topic: &str) -> bool {
    headers
        .get(HEADER_DEAD_LETTER_TRAIL)
        .is_some_and(|trail| trail.split(',').any(|t| t == dead_letter_topic))
}

/// Where a dead-letter publish ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Republished {
    /// Stored (a broker) or handed to at least one subscription (memory).
    Delivered,
    /// Accepted by a transport that keeps nothing for absent subscribers
    /// (memory): the dead letter is gone.
    NoSubscriber,
}

/// Publishes dead letters (implemented by the bus, for every transport).
pub(crate) trait Republish: Send + Sync + 'static {
    /// Publishes `msg` to `topic`, also while the bus is closing.
    fn republish<'a>(
        &'a self,
        topic: &'a str,
        msg: OutboundMessage,
    ) -> crate::transport::BoxFuture<'a, Result<Republished, String>>;
}

/// What the error headers of a dead letter say: read back by a subscriber
/// of a dead-letter topic with [`Message::dead_letter`](crate::Message::dead_letter)
/// or [`Event::dead_letter`](crate::Event::dead_letter).
///
/// # The dead-letter format
///
/// A dead letter is the failed record itself — the original payload bytes
/// (for an in-process envelope: its binary encoding, so
/// `subscribe_envelope` decodes it), the original key and headers — plus
/// these headers:
///
/// | header | value |
/// |---|---|
/// | [`HEADER_SOURCE_TOPIC`] | the topic it was consumed from |
/// | [`HEADER_ERROR`] | the last error's text, at most 1024 bytes |
/// | [`HEADER_ERROR_CLASS`] | `retryable`, `permanent`, `panic`, `timeout` (past the subscription's `handler_timeout`) or `malformed` |
/// | [`HEADER_ATTEMPTS`] | attempts made, in decimal |
/// | [`HEADER_DEAD_LETTER_TRAIL`] | every topic it was dead-lettered from, comma-separated |
/// | [`HEADER_SOURCE_PARTITION`] | the partition it was consumed from (Kafka only), in decimal |
/// | [`HEADER_SOURCE_OFFSET`] | its offset in that partition (Kafka only), in decimal |
///
/// A dead letter that fails again on its dead-letter topic is dead-lettered
/// onward (`orders.dlq` to `orders.dlq.dlq`), except where that would close
/// a cycle (the next topic is on its trail): then it is dropped, counted
/// and logged at error level.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, DeadLetter, Envelope, Event, HandlerError, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::memory();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let _dlq = bus
///     .subscribe_envelope("orders.dlq", move |ev: Event| {
///         let tx = tx.clone();
///         async move {
///             tx.send((ev.aggregate_id.clone(), ev.dead_letter().unwrap())).unwrap();
///             Ok::<(), HandlerError>(())
///         }
///     })
///     .await?;
/// let _orders = bus
///     .subscribe_envelope("orders", |_ev: Event| async move {
///         Err::<(), _>(HandlerError::permanent("unknown product"))
///     })
///     .await?;
/// bus.publish_envelope("orders", Envelope::new("order-1", "OrderPlaced", 1, "{}")).await?;
/// let (aggregate, why) = rx.recv().await.unwrap();
/// assert_eq!(aggregate, "order-1");
/// assert_eq!(why.source_topic, "orders");
/// assert_eq!(why.error, "unknown product");
/// assert_eq!(why.error_class, "permanent");
/// assert_eq!(why.attempts, 1);
/// assert_eq!(why.source_partition, None, "in-process: no partition");
/// # bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterInfo {
    /// The topic the failed record was consumed from.
    pub source_topic: String,
    /// The last error's text.
    pub error: String,
    /// The last error's class: `retryable`, `permanent`, `panic`,
    /// `timeout` or `malformed`.
    pub error_class: String,
    /// Attempts made before giving up.
    pub attempts: u32,
    /// The partition the failed record was consumed from (Kafka; `None`
    /// elsewhere).
    pub source_partition: Option<i32>,
    /// The failed record's offset in that partition (Kafka; `None`
    /// elsewhere).
    pub source_offset: Option<i64>,
}

impl DeadLetterInfo {
    /// Reads the dead-letter headers; `None` unless the source topic and
    /// error headers are present.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        Some(Self {
            source_topic: headers.get(HEADER_SOURCE_TOPIC)?.to_owned(),
            error: headers.get(HEADER_ERROR)?.to_owned(),
            error_class: headers.get(HEADER_ERROR_CLASS).unwrap_or("").to_owned(),
            attempts: headers
                .get(HEADER_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            source_partition: headers
                .get(HEADER_SOURCE_PARTITION)
                .and_then(|p| p.parse().ok()),
            source_offset: headers
                .get(HEADER_SOURCE_OFFSET)
                .and_then(|o| o.parse().ok()),
        })
    }
}
