//! What every options struct builds on: [`ConfigError`], the field checks
//! that name a bad field by its dotted path, [`TransportKind`], and the
//! duration format ([`duration`]).
//!
//! The options structs ([`TopicOptions`](crate::TopicOptions),
//! [`SubscribeOptions`](crate::SubscribeOptions),
//! [`RetryPolicy`](crate::RetryPolicy)) and [`BusConfig`](crate::BusConfig)
//! depend on this module; it depends on none of them, so the config tree
//! has one direction: `config` → options structs → `options`.
//!
//! # Algorithm
//!
//! A `validate(prefix)` method makes one [`Fields`] for its prefix (say
//! `subscribe.retry`) and runs one check per rule through it; the first
//! failing check returns [`ConfigError::Invalid`] naming `prefix.field`.
//! A range check writes its reason from the range itself ("must be at
//! least 1", "must be between 1 and 4096"), so the text and the bound
//! cannot drift apart.
//!
//! # Invariants
//!
//! - Every `Invalid` error names the full dotted path of one field.
//! - Every `Parse` error keeps the parser's message, and the field path and
//!   1-based line/column whenever the parser knows them.

use std::fmt::{self, Display};
use std::ops::{Bound, RangeBounds};

use serde::{Deserialize, Serialize};

pub(crate) mod duration;

/// Which transport a bus runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportKind {
    /// The in-process transport: the engine's rings are the transport.
    #[default]
    Memory,
    /// NATS (`type: nats`): core NATS publish/subscribe, configured by the
    /// config's `nats` section. Needs lanebus's `nats` cargo feature; a bus
    /// on it is built with [`Bus::connect`](crate::Bus::connect).
    Nats,
    /// Kafka (`type: kafka`), configured by the config's `kafka` section.
    /// Needs lanebus's `kafka` cargo feature; built with
    /// [`Bus::connect`](crate::Bus::connect).
    Kafka,
}

impl TransportKind {
    /// Its name in a config (`memory`, `nats`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Nats => "nats",
            Self::Kafka => "kafka",
        }
    }
}

/// A configuration that cannot be used.
///
/// # Examples
///
/// ```
/// use lanebus::{BusConfig, ConfigError};
///
/// let err = BusConfig::from_toml_str("[subscribe]\nlanes = -1\n").unwrap_err();
/// assert!(matches!(err, ConfigError::Parse { format: "toml", .. }));
/// assert_eq!(err.field(), Some("subscribe.lanes"));
/// assert_eq!(err.line(), Some(2));
///
/// let err = BusConfig::from_yaml_str("subscribe:\n  lanes: 0\n").unwrap_err();
/// assert_eq!(err.field(), Some("subscribe.lanes"));
/// ```
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
    /// The text is not valid YAML/TOML for this structure (syntax, unknown
    /// fields, wrong types, durations without a unit).
    #[error("cannot parse {format} config{}: {message}", Where::of(.path, .line, .column))]
    #[non_exhaustive]
    Parse {
        /// `yaml` or `toml`.
        format: &'static str,
        /// Dotted path of the field being read, e.g.
        /// `subscribe.retry.max_attempts`; `None` at the top level.
        path: Option<String>,
        /// 1-based line of the error, when the parser knows it.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
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

/// Writes ` at `path` (line L, column C)` for whatever is known.
struct Where<'a> {
    path: Option<&'a str>,
    line: Option<usize>,
    column: Option<usize>,
}

impl<'a> Where<'a> {
    fn of(path: &'a Option<String>, line: &Option<usize>, column: &Option<usize>) -> Self {
        Self {
            path: path.as_deref(),
            line: *line,
            column: *column,
        }
    }
}

impl Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(path) = self.path {
            write!(f, " at `{path}`")?;
        }
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
            (Some(line), None) => write!(f, " (line {line})"),
            _ => Ok(()),
        }
    }
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn parse(
        format: &'static str,
        path: Option<String>,
        position: Option<(usize, usize)>,
        message: impl Into<String>,
    ) -> Self {
        Self::Parse {
            format,
            path,
            line: position.map(|p| p.0),
            column: position.map(|p| p.1),
            message: message.into(),
        }
    }

    /// The dotted path of the offending field: the field of `Invalid`, or
    /// the field a `Parse` error was reading (if it was inside one).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::Parse { path, .. } => path.as_deref(),
            Self::Io { .. } => None,
        }
    }

    /// The 1-based line of a `Parse` error, when the parser knows it.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Parse { line, .. } => *line,
            _ => None,
        }
    }

    /// The 1-based column of a `Parse` error, when the parser knows it.
    pub fn column(&self) -> Option<usize> {
        match self {
            Self::Parse { column, .. } => *column,
            _ => None,
        }
    }
}

/// The reason given for an optional limit set to zero.
pub(crate) const NO_ZERO_LIMIT: &str = "must be positive (omit it for no limit)";

/// The fields of one options struct at `prefix` in a config, and the checks
/// that name them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields<'a> {
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    /// The fields under `prefix` (`""` for the top level).
    pub(crate) fn at(prefix: &'a str) -> Self {
        Self { prefix }
    }

    /// The dotted path of `field`.
    pub(crate) fn path(&self, field: &str) -> String {
        if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        }
    }

    /// `Invalid` naming `field` with `reason`, unless `ok`.
    pub(crate) fn ensure(&self, field: &str, ok: bool, reason: &str) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::invalid(self.path(field), reason))
        }
    }

    /// `Invalid` naming `field` unless `value` lies in `range`; the reason
    /// is written from the range.
    pub(crate) fn range<T: PartialOrd + Display>(
        &self,
        field: &str,
        value: T,
        range: impl RangeBounds<T>,
    ) -> Result<(), ConfigError> {
        if range.contains(&value) {
            return Ok(());
        }
        let reason = match (range.start_bound(), range.end_bound()) {
            (Bound::Included(lo), Bound::Included(hi)) => format!("must be between {lo} and {hi}"),
            (Bound::Included(lo), Bound::Excluded(hi)) => {
                format!("must be at least {lo} and less than {hi}")
            }
            (Bound::Included(lo), Bound::Unbounded) => format!("must be at least {lo}"),
            (Bound::Excluded(lo), Bound::Unbounded) => format!("must be more than {lo}"),
            (Bound::Unbounded, Bound::Included(hi)) => format!("must be at most {hi}"),
            (Bound::Unbounded, Bound::Excluded(hi)) => format!("must be less than {hi}"),
            (Bound::Excluded(lo), Bound::Included(hi)) => {
                format!("must be more than {lo} and at most {hi}")
            }
            (Bound::Excluded(lo), Bound::Excluded(hi)) => {
                format!("must be more than {lo} and less than {hi}")
            }
            (Bound::Unbounded, Bound::Unbounded) => unreachable!("a full range holds every value"),
        };
        Err(ConfigError::invalid(self.path(field), reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks_name_the_field_and_the_bounds() {
        let f = Fields::at("subscribe");
        assert_eq!(f.range("lanes", 4usize, 1..=8), Ok(()));
        let e = f.range("lanes", 0usize, 1..=8).unwrap_err();
        assert_eq!(e.field(), Some("subscribe.lanes"));
        assert_eq!(
            e.to_string(),
            "invalid config field `subscribe.lanes`: must be between 1 and 8"
        );
        let e = f.range("drain_batch", 0u32, 1..).unwrap_err();
        assert_eq!(
            e,
            ConfigError::invalid("subscribe.drain_batch", "must be at least 1")
        );
        assert!(f.range("x", 9, ..9).is_err());
        assert_eq!(Fields::at("").path("close_timeout"), "close_timeout");
        let e = f.ensure("x", false, NO_ZERO_LIMIT).unwrap_err();
        assert_eq!(e, ConfigError::invalid("subscribe.x", NO_ZERO_LIMIT));
    }

    #[test]
    fn parse_errors_say_where() {
        let e = ConfigError::parse("toml", Some("a.b".into()), Some((3, 7)), "bad");
        assert_eq!(
            e.to_string(),
            "cannot parse toml config at `a.b` (line 3, column 7): bad"
        );
        assert_eq!(
            (e.field(), e.line(), e.column()),
            (Some("a.b"), Some(3), Some(7))
        );
        let e = ConfigError::parse("yaml", None, None, "bad");
        assert_eq!(e.to_string(), "cannot parse yaml config: bad");
    }
}
