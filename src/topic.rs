//! Topic names and topic configuration.
//!
//! Names are checked once, where they enter (subscribe, configure, and a
//! publish to a topic the registry does not know), so the hot path never
//! re-checks a name it has routed before. The allowed alphabet is the part
//! every transport accepts unchanged: Kafka topic names (`[A-Za-z0-9._-]`,
//! at most 249 bytes) that are also valid NATS subjects (no empty token, so
//! no leading, trailing or doubled `.`).
//!
//! Topic options are checked by [`TopicOptions::validate`] and, against the
//! transport the bus runs on, by `TopicOptions::unhonoured_by`: options the
//! transport cannot honour are kept (a broker config can be tried on the
//! memory transport unchanged) and reported once per configuration by a
//! `tracing` warning from `warn_unhonoured`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields, TransportKind, NO_ZERO_LIMIT};

/// Longest topic name accepted (Kafka's limit).
pub const MAX_TOPIC_LEN: usize = 249;

/// A topic name that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    #[error("topic name is empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic name is {len} bytes long, more than {MAX_TOPIC_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds a character outside `A-Z a-z 0-9 . _ -`.
    #[error("topic name holds {ch:?} at byte {index}; allowed: A-Z a-z 0-9 . _ -")]
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
    /// The name starts or ends with `.` or holds `..`.
    #[error("topic name has an empty segment between dots")]
    EmptySegment,
    /// A publish name holds a wildcard (`*` or `>`): publishing needs an
    /// exact topic; wildcards are for subscribing.
    #[error("topic name holds wildcard {ch:?} at byte {index}; publish to an exact topic (wildcards are for subscribe)")]
    Wildcard {
        /// The wildcard.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
    /// A subscribe pattern holds a wildcard that is not a whole segment, or
    /// a `>` that is not the last segment.
    #[error("wildcard {ch:?} at byte {index} must be a whole segment, and `>` only the last one")]
    MisplacedWildcard {
        /// The wildcard.
        ch: char,
        /// Its byte offset.
        index: usize,
    },
}

/// Checks a topic name.
///
/// # Examples
///
/// ```
/// use lanebus::{validate_topic_name, TopicError};
///
/// assert!(validate_topic_name("orders.events").is_ok());
/// assert_eq!(validate_topic_name("a..b"), Err(TopicError::EmptySegment));
/// ```
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    if is_plain_name(name) {
        return Ok(());
    }
    name_error(name)
}

/// True when `name` is a valid topic name, in one pass over its bytes: the
/// publish path's check (every broker publish makes it). Anything else
/// goes to [`name_error`], which finds the error to report.
#[inline]
pub(crate) fn is_plain_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_TOPIC_LEN {
        return false;
    }
    // A dot at the start, after a dot or at the end is an empty segment.
    let mut after_dot = true;
    for b in name.bytes() {
        match b {
            b'.' if after_dot => return false,
            b'.' => after_dot = true,
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => after_dot = false,
            _ => return false,
        }
    }
    !after_dot
}

/// The error of a name [`is_plain_name`] refused, in the order the checks
/// are documented: empty, too long, an invalid character, an empty
/// segment.
#[cold]
fn name_error(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len: name.len() });
    }
    if let Some((index, ch)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(TopicError::InvalidChar { ch, index });
    }
    if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        return Err(TopicError::EmptySegment);
    }
    Ok(())
}

/// Whether a topic's messages outlive the process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Persistence {
    /// The transport's default (memory: ephemeral; brokers: persistent).
    #[default]
    Auto,
    /// Stored by the broker (JetStream stream, Kafka topic).
    Persistent,
    /// Fire and forget (memory, core NATS).
    Ephemeral,
}

/// Limits on what a persistent topic keeps; `None` means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Retention {
    /// Drop messages older than this.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Keep at most this many messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
}

/// Where a persistent topic's broker keeps it (JetStream's stream
/// storage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Storage {
    /// On disk (the default).
    #[default]
    File,
    /// In the broker's memory: faster, lost when the broker restarts.
    Memory,
}

/// What a persistent topic does when it reaches a retention limit
/// (JetStream's discard policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Discard {
    /// Drop the oldest messages to make room (the default).
    #[default]
    Old,
    /// Refuse new messages: a publish fails until there is room.
    New,
}

/// Configuration of one topic.
///
/// The memory transport records it (and reports it back from
/// [`Bus::topic_config`](crate::Bus::topic_config)); broker transports turn
/// it into streams and topics.
///
/// # What each transport honours
///
/// A transport that cannot honour an option still accepts and records it,
/// and the bus logs one `tracing` warning naming the topic and the options,
/// when it is built with the topic in its config and at every
/// [`Bus::configure_topic`](crate::Bus::configure_topic) call.
///
/// | transport | honours | warns about |
/// |---|---|---|
/// | memory | `persistence` (messages live as long as the process) | `retention.*`, `partitions` ≠ 1, `replicas` ≠ 1, `storage` ≠ file, `discard` ≠ old, `stream` |
/// | nats, persistent topic (JetStream) | everything but `partitions` | `partitions` ≠ 1 |
/// | nats, ephemeral topic (core NATS) | `persistence` | as memory |
/// | kafka | `partitions`, `replicas`, `retention.max_age` (`retention.ms`), `retention.max_bytes` (`retention.bytes`, per partition) | `persistence: ephemeral` (every Kafka topic is stored), `retention.max_messages`, `storage` ≠ file, `discard` ≠ old, `stream` |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{Persistence, TopicOptions};
///
/// let opts = TopicOptions::persistent()
///     .max_age(Duration::from_secs(7 * 86_400))
///     .partitions(6);
/// assert_eq!(opts.persistence, Persistence::Persistent);
/// assert!(opts.validate("topic").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TopicOptions {
    /// Persistent or ephemeral.
    pub persistence: Persistence,
    /// What a persistent topic keeps.
    pub retention: Retention,
    /// Partitions (Kafka); at least 1.
    pub partitions: u32,
    /// Replicas; at least 1.
    pub replicas: u32,
    /// Disk or memory (JetStream).
    pub storage: Storage,
    /// What happens at a retention limit (JetStream).
    pub discard: Discard,
    /// The JetStream stream's name, in place of the one derived from the
    /// topic (letters, digits, `-` and `_`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Free text for operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Publishes to this topic allowed per period (every transport: the
    /// bus limits its own publishers, before the transport sees them);
    /// `publish` waits for a token, `try_publish` returns `RateLimited`.
    /// A bus-wide limit is [`BusConfig::publish_rate_limit`](crate::BusConfig::publish_rate_limit);
    /// a publish takes a token from both. `None` (the default): no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate_limit: Option<crate::RateLimit>,
}

impl Default for TopicOptions {
    fn default() -> Self {
        Self {
            persistence: Persistence::Auto,
            retention: Retention::default(),
            partitions: 1,
            replicas: 1,
            storage: Storage::File,
            discard: Discard::Old,
            stream: None,
            description: None,
            publish_rate_limit: None,
        }
    }
}

impl TopicOptions {
    /// A persistent topic with default limits.
    pub fn persistent() -> Self {
        Self {
            persistence: Persistence::Persistent,
            ..Self::default()
        }
    }

    /// An ephemeral topic.
    pub fn ephemeral() -> Self {
        Self {
            persistence: Persistence::Ephemeral,
            ..Self::default()
        }
    }

    /// Sets the maximal age kept.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.retention.max_age = Some(age);
        self
    }

    /// Sets the maximal bytes kept.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.retention.max_bytes = Some(bytes);
        self
    }

    /// Sets the maximal message count kept.
    pub fn max_messages(mut self, count: u64) -> Self {
        self.retention.max_messages = Some(count);
        self
    }

    /// Sets the partition count.
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets the replica count.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets where the broker keeps the topic.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Sets what happens at a retention limit.
    pub fn discard(mut self, discard: Discard) -> Self {
        self.discard = discard;
        self
    }

    /// Names the JetStream stream (instead of deriving it from the topic).
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// Limits publishes to this topic.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{RateLimit, TopicOptions};
    ///
    /// let opts = TopicOptions::default().publish_rate_limit(RateLimit::per_second(100));
    /// assert!(opts.validate("topics.orders").is_ok());
    /// ```
    pub fn publish_rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.publish_rate_limit = Some(limit);
        self
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        if let Some(limit) = &self.publish_rate_limit {
            limit.validate(&fields.path("publish_rate_limit"))?;
        }
        if let Some(stream) = &self.stream {
            fields.ensure(
                "stream",
                !stream.is_empty()
                    && stream.len() <= 255
                    && stream
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "a stream name is 1 to 255 of A-Z a-z 0-9 - _",
            )?;
        }
        fields.range("partitions", self.partitions, 1..)?;
        fields.range("replicas", self.replicas, 1..)?;
        let limits = [
            (
                "retention.max_age",
                self.retention.max_age.is_some_and(|d| d.is_zero()),
            ),
            ("retention.max_bytes", self.retention.max_bytes == Some(0)),
            (
                "retention.max_messages",
                self.retention.max_messages == Some(0),
            ),
        ];
        for (field, zero) in limits {
            fields.ensure(field, !zero, NO_ZERO_LIMIT)?;
        }
        Ok(())
    }

    /// The options set here that `transport` cannot honour, by their config
    /// names (`retention.max_age`, `partitions`, …); empty when it honours
    /// them all. See [the table above](Self#what-each-transport-honours).
    /// `in_stream`: the topic lives in a JetStream stream (a persistent
    /// topic on NATS).
    pub(crate) fn unhonoured_by(
        &self,
        transport: TransportKind,
        in_stream: bool,
    ) -> Vec<&'static str> {
        match transport {
            TransportKind::Nats if in_stream => {
                if self.partitions != 1 {
                    vec!["partitions"]
                } else {
                    Vec::new()
                }
            }
            TransportKind::Kafka => {
                let set = [
                    ("persistence", self.persistence == Persistence::Ephemeral),
                    (
                        "retention.max_messages",
                        self.retention.max_messages.is_some(),
                    ),
                    ("storage", self.storage != Storage::File),
                    ("discard", self.discard != Discard::Old),
                    ("stream", self.stream.is_some()),
                ];
                set.into_iter()
                    .filter_map(|(name, set)| set.then_some(name))
                    .collect()
            }
            // Core NATS keeps nothing, as the memory transport.
            TransportKind::Memory | TransportKind::Nats => {
                let set = [
                    ("retention.max_age", self.retention.max_age.is_some()),
                    ("retention.max_bytes", self.retention.max_bytes.is_some()),
                    (
                        "retention.max_messages",
                        self.retention.max_messages.is_some(),
                    ),
                    ("partitions", self.partitions != 1),
                    ("replicas", self.replicas != 1),
                    ("storage", self.storage != Storage::File),
                    ("discard", self.discard != Discard::Old),
                    ("stream", self.stream.is_some()),
                ];
                set.into_iter()
                    .filter_map(|(name, set)| set.then_some(name))
                    .collect()
            }
        }
    }
}

/// Logs one warning if `transport` cannot honour some of `options` for
/// `topic`; the bus calls it once per topic configuration.
pub(crate) fn warn_unhonoured(topic: &str, options: &TopicOptions, config: &crate::BusConfig) {
    let transport = config.transport;
    let in_stream = transport == TransportKind::Nats
        && config.nats.jetstream.is_persistent(options.persistence);
    let unhonoured = options.unhonoured_by(transport, in_stream);
    if !unhonoured.is_empty() {
        tracing::warn!(
            topic,
            transport = transport.as_str(),
            options = %unhonoured.join(", "),
            "topic options recorded but not honoured by this transport"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The one-pass check accepts exactly what the error search finds
        /// nothing wrong with.
        #[test]
        fn the_fast_check_agrees_with_the_error_search(
            name in "[a-zA-Z0-9._*>\\- é]{0,12}"
        ) {
            proptest::prop_assert_eq!(is_plain_name(&name), name_error(&name).is_ok());
        }
    }

    #[test]
    fn the_fast_check_refuses_every_kind_of_bad_name() {
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            ".",
            "a b",
            "a*",
            "a.>",
            "é",
            long.as_str(),
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "orders.events", "A-b_c.9", &"a".repeat(MAX_TOPIC_LEN)] {
            assert!(is_plain_name(good), "{good:?}");
        }
    }

    #[test]
    fn memory_names_what_it_cannot_honour() {
        let memory = TransportKind::Memory;
        assert!(TopicOptions::default()
            .unhonoured_by(memory, false)
            .is_empty());
        assert!(TopicOptions::persistent()
            .unhonoured_by(memory, false)
            .is_empty());
        assert!(TopicOptions::ephemeral()
            .unhonoured_by(memory, false)
            .is_empty());
        let all = TopicOptions::persistent()
            .max_age(Duration::from_secs(60))
            .max_bytes(1 << 20)
            .max_messages(1000)
            .partitions(6)
            .replicas(3);
        assert_eq!(
            all.unhonoured_by(memory, false),
            [
                "retention.max_age",
                "retention.max_bytes",
                "retention.max_messages",
                "partitions",
                "replicas"
            ]
        );
        assert_eq!(
            TopicOptions::default()
                .replicas(3)
                .unhonoured_by(memory, false),
            ["replicas"]
        );
    }

    #[test]
    fn validate_names_the_field() {
        let cases = [
            (TopicOptions::default().partitions(0), "t.partitions"),
            (TopicOptions::default().replicas(0), "t.replicas"),
            (
                TopicOptions::default().max_age(Duration::ZERO),
                "t.retention.max_age",
            ),
            (
                TopicOptions::default().max_bytes(0),
                "t.retention.max_bytes",
            ),
            (
                TopicOptions::default().max_messages(0),
                "t.retention.max_messages",
            ),
        ];
        for (options, field) in cases {
            assert_eq!(options.validate("t").unwrap_err().field(), Some(field));
        }
        assert!(TopicOptions::default().max_bytes(1).validate("t").is_ok());
    }

    #[test]
    fn names() {
        assert!(validate_topic_name("a").is_ok());
        assert!(validate_topic_name("orders.v1_created-x").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name(".a"), Err(TopicError::EmptySegment));
        assert_eq!(validate_topic_name("a."), Err(TopicError::EmptySegment));
        assert_eq!(
            validate_topic_name("a b"),
            Err(TopicError::InvalidChar { ch: ' ', index: 1 })
        );
        assert_eq!(
            validate_topic_name("a*"),
            Err(TopicError::InvalidChar { ch: '*', index: 1 })
        );
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
        assert_eq!(
            validate_topic_name(&"x".repeat(250)),
            Err(TopicError::TooLong { len: 250 })
        );
    }
}
