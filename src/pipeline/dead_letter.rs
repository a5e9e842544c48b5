//! Dead-lettering: where a message goes when its handler gave up on it.
//!
//! The dead-letter message keeps the original payload bytes, key and
//! headers, and adds headers naming the source topic, the error, its class
//! and the number of attempts. It is published through the same bus (so a
//! broker transport persists it), to `<topic>.dlq` unless the subscription
//! names another topic. With dead-lettering disabled, a failed message is
//! dropped *loudly*: counted as `dropped` and logged at error level.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::{ErrorClass, Headers, OutboundMessage};

/// Header naming the topic the message was consumed from.
pub const HEADER_SOURCE_TOPIC: &str = "lanebus-source-topic";
/// Header holding the last error's text.
pub const HEADER_ERROR: &str = "lanebus-error";
/// Header holding the last error's class (`retryable`, `permanent`, `panic`,
/// `malformed`).
pub const HEADER_ERROR_CLASS: &str = "lanebus-error-class";
/// Header holding how many attempts were made.
pub const HEADER_ATTEMPTS: &str = "lanebus-attempts";

/// Longest error text copied into [`HEADER_ERROR`].
const MAX_ERROR_HEADER: usize = 1024;

/// Where a subscription's failed messages go.
///
/// In YAML: `dead_letter: default`, `dead_letter: disabled` or
/// `dead_letter: { topic: orders.failed }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeadLetterRepr", into = "DeadLetterRepr")]
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

/// The config form: a word (`default`, `disabled`) or `{ topic: name }`,
/// the same in YAML and TOML.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum DeadLetterRepr {
    Word(String),
    Topic { topic: String },
}

impl TryFrom<DeadLetterRepr> for DeadLetter {
    type Error = String;

    fn try_from(r: DeadLetterRepr) -> Result<Self, String> {
        match r {
            DeadLetterRepr::Word(w) if w == "default" => Ok(Self::Default),
            DeadLetterRepr::Word(w) if w == "disabled" => Ok(Self::Disabled),
            DeadLetterRepr::Word(w) => Err(format!(
                "unknown dead_letter `{w}`, expected `default`, `disabled` or {{ topic: <name> }}"
            )),
            DeadLetterRepr::Topic { topic } => Ok(Self::Topic(topic)),
        }
    }
}

impl From<DeadLetter> for DeadLetterRepr {
    fn from(d: DeadLetter) -> Self {
        match d {
            DeadLetter::Default => Self::Word("default".into()),
            DeadLetter::Disabled => Self::Word("disabled".into()),
            DeadLetter::Topic(topic) => Self::Topic { topic },
        }
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
    Malformed,
}

impl FailureKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Handler(class) => class.as_str(),
            Self::Panic => "panic",
            Self::Malformed => "malformed",
        }
    }

    /// Whether another attempt may succeed.
    pub(crate) fn is_retryable(self) -> bool {
        matches!(self, Self::Handler(ErrorClass::Retryable) | Self::Panic)
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

/// Publishes dead letters (implemented by the bus, for every transport).
pub(crate) trait Republish: Send + Sync + 'static {
    /// Publishes `msg` to `topic`, also while the bus is closing.
    fn republish<'a>(
        &'a self,
        topic: &'a str,
        msg: OutboundMessage,
    ) -> crate::transport::BoxFuture<'a, Result<(), String>>;
}
