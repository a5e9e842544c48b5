//! [`JetStreamOptions`]: how a NATS bus uses JetStream, as plain data (read
//! and checked on builds without the `nats` feature too).
//!
//! # Algorithm
//!
//! Serde reads the struct with `default` and `deny_unknown_fields`;
//! [`JetStreamOptions::validate`] names the first bad field by its dotted
//! path. The strategy decides what the first publish or subscribe to a
//! persistent topic does with the topic's stream:
//!
//! | strategy | stream missing | stream differs from the topic's options |
//! |---|---|---|
//! | `create_or_update` (default) | created | updated |
//! | `create_only` | created | left as it is |
//! | `validate_only` | error | error naming the first difference |
//! | `skip` | nothing (a publish then fails: no stream takes the subject) | left as it is |
//!
//! # Invariants
//!
//! - `default_persistence` is `persistent` or `ephemeral`, never `auto`: it
//!   is what `auto` means on NATS.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields};
use crate::{Persistence, WireFormat};

/// What the bus does with a persistent topic's stream before it first
/// uses it (see the table in the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StreamStrategy {
    /// Create the stream, or update it to the topic's options.
    #[default]
    CreateOrUpdate,
    /// Create the stream when it is missing; never change one that exists.
    CreateOnly,
    /// Never create or change: check that the stream exists and matches
    /// the topic's options, else fail.
    ValidateOnly,
    /// Assume the stream exists; make no call about it.
    Skip,
}

impl StreamStrategy {
    /// Its config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateOrUpdate => "create_or_update",
            Self::CreateOnly => "create_only",
            Self::ValidateOnly => "validate_only",
            Self::Skip => "skip",
        }
    }
}

/// How a NATS bus uses JetStream.
///
/// Persistent topics live in JetStream streams (one per topic); ephemeral
/// topics use core NATS. A topic without configuration, or configured with
/// `persistence: auto`, gets `default_persistence`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{JetStreamOptions, Persistence, StreamStrategy, WireFormat};
///
/// let js = JetStreamOptions::default()
///     .stream_strategy(StreamStrategy::ValidateOnly)
///     .wire_format(WireFormat::Json)
///     .api_timeout(Duration::from_secs(2));
/// assert_eq!(js.default_persistence, Persistence::Persistent);
/// assert!(js.validate("nats.jetstream").is_ok());
///
/// let bad = JetStreamOptions::default().default_persistence(Persistence::Auto);
/// assert_eq!(
///     bad.validate("nats.jetstream").unwrap_err().field(),
///     Some("nats.jetstream.default_persistence")
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct JetStreamOptions {
    /// What the bus does with a topic's stream before first using it.
    /// Default: `create_or_update`.
    pub stream_strategy: StreamStrategy,
    /// What a topic without configuration (or with `persistence: auto`)
    /// is. Default: `persistent` (a JetStream stream).
    pub default_persistence: Persistence,
    /// How envelopes are written: `binary` (default) or `json` (the Go
    /// system's form, so its services can share a stream). Inbound, the
    /// form is detected, whatever this says.
    pub wire_format: WireFormat,
    /// How long a JetStream API request (stream and consumer calls) and a
    /// publish acknowledgement may take. Default: 5 s.
    #[serde(with = "duration")]
    pub api_timeout: Duration,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        Self {
            stream_strategy: StreamStrategy::CreateOrUpdate,
            default_persistence: Persistence::Persistent,
            wire_format: WireFormat::Binary,
            api_timeout: Duration::from_secs(5),
        }
    }
}

impl JetStreamOptions {
    /// Sets the stream strategy.
    pub fn stream_strategy(mut self, strategy: StreamStrategy) -> Self {
        self.stream_strategy = strategy;
        self
    }

    /// Sets what unconfigured topics are.
    pub fn default_persistence(mut self, persistence: Persistence) -> Self {
        self.default_persistence = persistence;
        self
    }

    /// Sets the envelope wire form.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// Sets the API and publish-ack timeout.
    pub fn api_timeout(mut self, timeout: Duration) -> Self {
        self.api_timeout = timeout;
        self
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.ensure(
            "default_persistence",
            self.default_persistence != Persistence::Auto,
            "must be `persistent` or `ephemeral` (it is what `auto` means on nats)",
        )?;
        fields.ensure(
            "api_timeout",
            !self.api_timeout.is_zero(),
            "must be positive",
        )?;
        Ok(())
    }

    /// Whether a topic with `persistence` lives in a stream.
    pub(crate) fn is_persistent(&self, persistence: Persistence) -> bool {
        match persistence {
            Persistence::Persistent => true,
            Persistence::Ephemeral => false,
            _ => self.default_persistence == Persistence::Persistent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_from_yaml() {
        let js: JetStreamOptions = serde_yaml_ng::from_str(
            "stream_strategy: create_only\ndefault_persistence: ephemeral\nwire_format: json\napi_timeout: 2s\n",
        )
        .unwrap();
        assert_eq!(js.stream_strategy, StreamStrategy::CreateOnly);
        assert_eq!(js.default_persistence, Persistence::Ephemeral);
        assert_eq!(js.wire_format, WireFormat::Json);
        assert_eq!(js.api_timeout, Duration::from_secs(2));
        let text = serde_yaml_ng::to_string(&js).unwrap();
        assert_eq!(
            serde_yaml_ng::from_str::<JetStreamOptions>(&text).unwrap(),
            js
        );
    }

    #[test]
    fn auto_is_what_the_default_says() {
        let js = JetStreamOptions::default();
        assert!(js.is_persistent(Persistence::Auto));
        assert!(!js.is_persistent(Persistence::Ephemeral));
        let js = js.default_persistence(Persistence::Ephemeral);
        assert!(!js.is_persistent(Persistence::Auto));
        assert!(js.is_persistent(Persistence::Persistent));
        assert_eq!(
            JetStreamOptions::default()
                .api_timeout(Duration::ZERO)
                .validate("j")
                .unwrap_err()
                .field(),
            Some("j.api_timeout")
        );
    }
}
