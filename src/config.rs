//! Typed configuration: [`BusConfig`], readable from YAML or TOML.
//!
//! Every struct has a `Default`, unknown fields are rejected (a typo is an
//! error, not a silent default), and `validate()` names the bad field by its
//! path, e.g. `subscribe.retry.max_attempts`. Durations are written as
//! `"250ms"`, `"2s"`, `"1m"`, `"1h"` or as a number of milliseconds.
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

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{SubscribeOptions, TopicOptions};

/// Which transport a bus runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportKind {
    /// The in-process transport: the engine's rings are the transport.
    #[default]
    Memory,
}

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
    /// The transport (`type: memory`).
    #[serde(rename = "type")]
    pub transport: TransportKind,
    /// How long `close()` waits for lanes to drain.
    #[serde(with = "duration_serde")]
    pub close_timeout: Duration,
    /// Defaults for every subscription made without explicit options.
    pub subscribe: SubscribeOptions,
    /// Topics configured when the bus is built.
    pub topics: BTreeMap<String, TopicOptions>,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            transport: TransportKind::Memory,
            close_timeout: Duration::from_secs(30),
            subscribe: SubscribeOptions::default(),
            topics: BTreeMap::new(),
        }
    }
}

impl BusConfig {
    /// The default configuration of a memory bus.
    pub fn memory() -> Self {
        Self::default()
    }

    /// Parses YAML and validates the result.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse {
            format: "yaml",
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML and validates the result.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            format: "toml",
            message: e.message().to_string(),
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
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.close_timeout.is_zero() {
            return Err(ConfigError::invalid("close_timeout", "must be positive"));
        }
        self.subscribe.validate("subscribe")?;
        for (topic, options) in &self.topics {
            crate::topic::validate_topic_name(topic)
                .map_err(|e| ConfigError::invalid(format!("topics.{topic}"), e.to_string()))?;
            options.validate(&format!("topics.{topic}"))?;
        }
        Ok(())
    }
}

/// A configuration that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value out of range.
    #[error("invalid config field `{field}`: {reason}")]
    Invalid {
        /// Path of the field, e.g. `subscribe.lanes`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The text is not valid YAML/TOML for this structure (unknown fields
    /// and wrong types included; the message names the field).
    #[error("cannot parse {format} config: {message}")]
    Parse {
        /// `yaml` or `toml`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The path of the offending field, for `Invalid`.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// Serde for `Duration` as `"250ms"`, `"2s"`, `"1m"`, `"1h"`, `"7d"` or a
/// number of milliseconds. Writes the shortest exact unit.
pub(crate) mod duration_serde {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// `Option<Duration>` in the same format; `None` when absent or null.
    pub(crate) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format(*d)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            struct OptVisitor;
            impl<'de> Visitor<'de> for OptVisitor {
                type Value = Option<Duration>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a duration or null")
                }
                fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(None)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                    Ok(None)
                }
                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                    super::deserialize(d).map(Some)
                }
            }
            d.deserialize_option(OptVisitor)
        }
    }

    pub(crate) fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if d.subsec_nanos() % 1_000_000 != 0 {
            return format!("{}us", d.as_micros());
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms % size == 0 {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    pub(crate) fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (num, unit) = text.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration like 250ms, 2s, 1m"))?;
        let secs = match unit.trim() {
            "ns" => value / 1e9,
            "us" | "µs" => value / 1e6,
            "ms" | "" => value / 1e3,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            "d" => value * 86_400.0,
            other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
        };
        Duration::try_from_secs_f64(secs).map_err(|e| format!("`{text}`: {e}"))
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"250ms\", \"2s\" or a number of milliseconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_millis(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_millis)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v / 1e3).map_err(E::custom)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parse_and_format() {
            assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
            assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
            assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
            assert_eq!(parse("7d").unwrap(), Duration::from_secs(7 * 86_400));
            assert!(parse("5 parsecs").is_err());
            assert!(parse("-1s").is_err());
            for d in [1, 250, 1000, 60_000, 90_000, 86_400_000] {
                let d = Duration::from_millis(d);
                assert_eq!(parse(&format(d)).unwrap(), d);
            }
            assert_eq!(format(Duration::from_secs(120)), "2m");
        }
    }
}
