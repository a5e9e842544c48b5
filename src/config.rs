//! Typed configuration: [`BusConfig`], readable from YAML or TOML.
//!
//! Every struct has a `Default`, unknown fields are rejected (a typo is an
//! error, not a silent default), and `validate()` names the bad field by its
//! path, e.g. `subscribe.retry.max_attempts`. Durations carry a unit:
//! `"250ms"`, `"10s"`, `"1m30s"`, `"2h"`, `"7d"`; a bare number such as
//! `close_timeout: 10` is an error (seconds or milliseconds?).
//!
//! ```yaml
//! type: memory
//! close_timeout: 10s
//! subscribe:
//!   lanes: 8
//!   ring_capacity: 1024
//!   retry: { max_attempts: 5, initial_backoff: 20ms, max_backoff: 2s }
//!   dead_letter: default        # or `disabled`, or { topic: orders.failed }
//! topics:
//!   orders.events:
//!     persistence: persistent
//!     retention: { max_age: 7d, max_messages: 1000000 }
//! ```
//!
//! A NATS bus (`type: nats`, cargo feature `nats`) reads its connection
//! from the `nats` section and is built with
//! [`Bus::connect`](crate::Bus::connect):
//!
//! ```yaml
//! type: nats
//! nats:
//!   urls: [nats://127.0.0.1:4222]
//!   name: orders-service
//!   auth: { type: token, token: s3cret }
//! ```
//!
//! # Algorithm
//!
//! Both formats deserialize through `serde_path_to_error`, which records the
//! dotted path of the field being read; the parser's own error gives the
//! position (YAML's location, TOML's byte span turned into a line and a
//! column). Both go into [`ConfigError::Parse`], so a wrong type reads the
//! same in either format: ``cannot parse toml config at
//! `subscribe.retry.max_attempts` (line 6, column 16): invalid value: …``.
//! Then [`BusConfig::validate`] checks the ranges and names the field.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields, TransportKind};
use crate::{KafkaOptions, NatsOptions, SubscribeOptions, TopicOptions};

/// Configuration of one bus.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, BusConfig};
///
/// let config = BusConfig::from_yaml_str(
///     "type: memory\nsubscribe:\n  lanes: 4\n",
/// )?;
/// assert_eq!(config.subscribe.lanes, 4);
///
/// let bad = BusConfig::from_toml_str("type = \"memory\"\n[subscribe]\nlanes = 0\n");
/// assert!(bad.unwrap_err().to_string().contains("subscribe.lanes"));
/// # Ok::<(), lanebus::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BusConfig {
    /// The transport (`type: memory`, `nats` or `kafka`).
    #[serde(rename = "type")]
    pub transport: TransportKind,
    /// Where and how a NATS bus connects (read only when `type: nats`,
    /// validated always).
    pub nats: NatsOptions,
    /// Where and how a Kafka bus connects, produces and consumes (read only
    /// when `type: kafka`, validated always).
    pub kafka: KafkaOptions,
    /// How long `close()` waits for lanes to drain.
    #[serde(with = "duration")]
    pub close_timeout: Duration,
    /// Defaults for every subscription made without explicit options.
    pub subscribe: SubscribeOptions,
    /// Topics configured when the bus is built.
    pub topics: BTreeMap<String, TopicOptions>,
    /// Publishes allowed per period on this bus, all topics together
    /// (dead letters excepted); `publish` waits for a token, `try_publish`
    /// returns `RateLimited`. Per topic: `TopicOptions::publish_rate_limit`.
    /// `None` (the default): no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_rate_limit: Option<crate::RateLimit>,
    /// Export through the `metrics` facade (off by default); see
    /// [`MetricsOptions`](crate::MetricsOptions).
    #[serde(skip_serializing_if = "crate::MetricsOptions::is_default")]
    pub metrics: crate::MetricsOptions,
    /// Returns the publisher's current W3C `traceparent`, stamped on each
    /// publish that has none (not serialized: set it in code); see
    /// [`TraceContext`](crate::TraceContext). `None` by default.
    #[serde(skip)]
    pub trace_context: Option<crate::TraceContext>,
    /// Publisher-side backlog reporting: publishes waiting (on a full lane,
    /// or for a broker's ack) above a threshold are sent as
    /// [`BusEvent::PublisherBacklog`](crate::BusEvent). `None` (the
    /// default): off (the count is kept either way; see
    /// [`BusStats::publishes_waiting`](crate::BusStats)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher_backlog: Option<crate::PublisherBacklogOptions>,
    /// The health check's end-to-end probe and background loop; see
    /// [`HealthOptions`](crate::HealthOptions). `None` (the default):
    /// neither.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::HealthOptions>,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            transport: TransportKind::Memory,
            nats: NatsOptions::default(),
            kafka: KafkaOptions::default(),
            close_timeout: Duration::from_secs(30),
            subscribe: SubscribeOptions::default(),
            topics: BTreeMap::new(),
            publish_rate_limit: None,
            metrics: crate::MetricsOptions::default(),
            trace_context: None,
            publisher_backlog: None,
            health: None,
        }
    }
}

impl BusConfig {
    /// The default configuration of a memory bus.
    pub fn memory() -> Self {
        Self::default()
    }

    /// Parses YAML and validates the result.
    ///
    /// A parse error names the field path and the line and column.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(de).map_err(yaml_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML and validates the result.
    ///
    /// A parse error names the field path and the line and column.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(text, None, e))?;
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = field_path(e.path());
            toml_error(text, path, e.into_inner())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.yaml`/`.yml` or `.toml` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::from_toml_str(&text),
            Some("yaml" | "yml") => Self::from_yaml_str(&text),
            _ => Err(ConfigError::Io {
                path: path.display().to_string(),
                message: "unknown extension (expected .yaml, .yml or .toml)".into(),
            }),
        }
    }

    /// Checks every field; the error names the first bad one.
    ///
    /// `type: nats` or `type: kafka` on a build without that cargo feature
    /// is an error on the field `type` that names the feature.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Fields::at("").ensure(
            "type",
            self.transport != TransportKind::Nats || cfg!(feature = "nats"),
            "the nats transport needs lanebus built with the `nats` cargo feature",
        )?;
        Fields::at("").ensure(
            "type",
            self.transport != TransportKind::Kafka || cfg!(feature = "kafka"),
            "the kafka transport needs lanebus built with the `kafka` cargo feature",
        )?;
        self.nats.validate("nats")?;
        self.kafka.validate("kafka")?;
        Fields::at("").ensure(
            "close_timeout",
            !self.close_timeout.is_zero(),
            "must be positive",
        )?;
        self.subscribe.validate("subscribe")?;
        if let Some(limit) = &self.publish_rate_limit {
            limit.validate("publish_rate_limit")?;
        }
        self.metrics.validate("metrics")?;
        if let Some(p) = &self.publisher_backlog {
            p.validate("publisher_backlog")?;
        }
        if let Some(h) = &self.health {
            h.validate("health")?;
        }
        for (topic, options) in &self.topics {
            crate::topic::validate_topic_name(topic)
                .map_err(|e| ConfigError::invalid(format!("topics.{topic}"), e.to_string()))?;
            options.validate(&format!("topics.{topic}"))?;
        }
        Ok(())
    }
}

/// The dotted path of the field an error sits in; `None` at the top level
/// or where the parser failed before reaching a field (a syntax error).
fn field_path(path: &serde_path_to_error::Path) -> Option<String> {
    let known = path
        .iter()
        .any(|s| !matches!(s, serde_path_to_error::Segment::Unknown));
    known.then(|| path.to_string())
}

fn yaml_error(e: serde_path_to_error::Error<serde_yaml_ng::Error>) -> ConfigError {
    let path = field_path(e.path());
    let inner = e.into_inner();
    let position = inner.location().map(|l| (l.line(), l.column()));
    // serde_yaml_ng writes `<its path>: <message> at line L column C` (a
    // syntax error: `<message> at line L column C, while parsing …`); the
    // path and position go into their own fields, the message stays.
    let mut text = inner.to_string();
    if let Some((line, column)) = position {
        text = text.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    let mut message = text.as_str();
    // Its path is ours or, for an unknown key, our path's parent.
    let mut prefix = path.as_deref().unwrap_or("");
    while !prefix.is_empty() {
        if let Some(rest) = message
            .strip_prefix(prefix)
            .and_then(|m| m.strip_prefix(": "))
        {
            message = rest;
            break;
        }
        prefix = prefix.rfind('.').map_or("", |dot| &prefix[..dot]);
    }
    ConfigError::parse("yaml", path, position, message)
}

fn toml_error(text: &str, path: Option<String>, e: toml::de::Error) -> ConfigError {
    let position = e.span().map(|span| line_column(text, span.start));
    ConfigError::parse("toml", path, position, e.message())
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_counts_from_one() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, text.find('x').unwrap()), (2, 6));
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn yaml_errors_keep_the_message_once() {
        let e = BusConfig::from_yaml_str("subscribe:\n  lanes: 4\n lanes: 5\n").unwrap_err();
        assert_eq!(
            e,
            ConfigError::parse(
                "yaml",
                None,
                Some((3, 2)),
                "did not find expected key, while parsing a block mapping"
            )
        );
        let e = BusConfig::from_yaml_str("subscribe:\n  lane: 4\n").unwrap_err();
        assert_eq!(e.field(), Some("subscribe.lane"));
        let shown = e.to_string();
        assert!(
            shown.contains("(line 2, column 3): unknown field `lane`, expected one of `lanes`"),
            "{shown}"
        );
    }

    #[cfg(not(feature = "nats"))]
    #[test]
    fn nats_without_the_feature_is_a_clear_error() {
        let e = BusConfig::from_yaml_str("type: nats\n").unwrap_err();
        assert_eq!(e.field(), Some("type"));
        assert!(e.to_string().contains("`nats` cargo feature"), "{e}");
        let e = BusConfig::from_toml_str("type = \"nats\"\n").unwrap_err();
        assert_eq!(e.field(), Some("type"));
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_reads_its_section() {
        let c = BusConfig::from_yaml_str(
            "type: nats\nnats:\n  urls: [nats://127.0.0.1:4333]\n  name: svc\n",
        )
        .unwrap();
        assert_eq!(c.transport, TransportKind::Nats);
        assert_eq!(c.nats.urls, ["nats://127.0.0.1:4333"]);
        assert_eq!(c.nats.name.as_deref(), Some("svc"));
    }

    #[test]
    fn the_nats_section_is_validated_under_its_name() {
        let e = BusConfig::from_yaml_str("nats:\n  urls: []\n").unwrap_err();
        assert!(e.field().is_some_and(|f| f.starts_with("nats.")), "{e}");
    }
}
