//! Topic names and topic configuration.
//!
//! Names are checked once, where they enter (subscribe, configure, and a
//! publish to a topic the registry does not know), so the hot path never
//! re-checks a name it has routed before. The allowed alphabet is the part
//! every transport accepts unchanged: Kafka topic names (`[A-Za-z0-9._-]`,
//! at most 249 bytes) that are also valid NATS subjects (no empty token, so
//! no leading, trailing or doubled `.`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{duration_serde, ConfigError};

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
    #[serde(
        with = "duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Keep at most this many messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
}

/// Configuration of one topic.
///
/// The memory transport records it (and reports it back from
/// [`Bus::topic_config`](crate::Bus::topic_config)); broker transports turn
/// it into streams and topics.
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
    /// Free text for operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Default for TopicOptions {
    fn default() -> Self {
        Self {
            persistence: Persistence::Auto,
            retention: Retention::default(),
            partitions: 1,
            replicas: 1,
            description: None,
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

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.partitions == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.partitions"),
                "must be at least 1",
            ));
        }
        if self.replicas == 0 {
            return Err(ConfigError::invalid(
                format!("{prefix}.replicas"),
                "must be at least 1",
            ));
        }
        if self.retention.max_age.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                format!("{prefix}.retention.max_age"),
                "must be positive (omit it for no limit)",
            ));
        }
        if self.retention.max_bytes == Some(0) {
            return Err(ConfigError::invalid(
                format!("{prefix}.retention.max_bytes"),
                "must be positive (omit it for no limit)",
            ));
        }
        if self.retention.max_messages == Some(0) {
            return Err(ConfigError::invalid(
                format!("{prefix}.retention.max_messages"),
                "must be positive (omit it for no limit)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
