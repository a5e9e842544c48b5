//! Per-operation error types.
//!
//! Publishing errors hand the rejected value back (`err.into_inner()`), so a
//! caller never loses a message it could not publish. Every enum is
//! `#[non_exhaustive]`; `Display` texts are short and lower-case.

use std::fmt;

use crate::{ConfigError, EnvelopeError, TopicError, TransportError};

macro_rules! value_error_common {
    ($name:ident { $($variant:ident),* } $(, $inv:ident)*) => {
        impl<T> $name<T> {
            /// The value that was not published.
            pub fn into_inner(self) -> T {
                match self {
                    $(Self::$variant(v) => v,)*
                    $(Self::$inv(v, _) => v,)*
                }
            }

            /// The same error, holding `f` of the value (the engine's
            /// record turned back into what the caller passed).
            pub(crate) fn map_value<U>(self, f: impl FnOnce(T) -> U) -> $name<U> {
                match self {
                    $(Self::$variant(v) => $name::$variant(f(v)),)*
                    $(Self::$inv(v, e) => $name::$inv(f(v), e),)*
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant(_) => f.write_str(concat!(stringify!($variant), "(..)")),)*
                    $(Self::$inv(_, e) => f.debug_tuple(stringify!($inv)).field(&"..").field(e).finish(),)*
                }
            }
        }
    };
}

/// Why [`Bus::publish`](crate::Bus::publish) (and its envelope and
/// `_with` forms) failed. Holds the value back.
#[non_exhaustive]
pub enum PublishError<T> {
    /// The bus is closed or closing.
    Closed(T),
    /// The topic name is invalid.
    InvalidTopic(T, TopicError),
    /// The envelope failed validation.
    InvalidEnvelope(T, EnvelopeError),
    /// The transport could not take the message (a broker refused it or
    /// could not be reached); the value is handed back to retry with.
    Transport(T, TransportError),
}

value_error_common!(
    PublishError { Closed },
    InvalidTopic,
    InvalidEnvelope,
    Transport
);

impl<T> fmt::Display for PublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("bus is closed"),
            Self::InvalidTopic(_, e) => write!(f, "invalid topic: {e}"),
            Self::InvalidEnvelope(_, e) => write!(f, "invalid envelope: {e}"),
            Self::Transport(_, e) => write!(f, "transport failed: {e}"),
        }
    }
}

impl<T> std::error::Error for PublishError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidTopic(_, e) => Some(e),
            Self::InvalidEnvelope(_, e) => Some(e),
            Self::Transport(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Bus::try_publish`](crate::Bus::try_publish) failed. Holds the value
/// back.
#[non_exhaustive]
pub enum TryPublishError<T> {
    /// A lane the message must enter is full; nothing was delivered.
    Full(T),
    /// The bus is closed or closing.
    Closed(T),
    /// A publish rate limit (the bus's or the topic's) has no token now;
    /// nothing was delivered. `publish` would have waited for one.
    RateLimited(T),
    /// The topic name is invalid.
    InvalidTopic(T, TopicError),
    /// The envelope failed validation.
    InvalidEnvelope(T, EnvelopeError),
    /// The transport could not take the message; the value is handed back.
    Transport(T, TransportError),
}

value_error_common!(
    TryPublishError {
        Full,
        Closed,
        RateLimited
    },
    InvalidTopic,
    InvalidEnvelope,
    Transport
);

impl<T> TryPublishError<T> {
    /// True for `Full`.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full(_))
    }

    /// True for `RateLimited`.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, Self::RateLimited(_))
    }
}

impl<T> fmt::Display for TryPublishError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("lane is full"),
            Self::Closed(_) => f.write_str("bus is closed"),
            Self::RateLimited(_) => f.write_str("publish rate limit reached"),
            Self::InvalidTopic(_, e) => write!(f, "invalid topic: {e}"),
            Self::InvalidEnvelope(_, e) => write!(f, "invalid envelope: {e}"),
            Self::Transport(_, e) => write!(f, "transport failed: {e}"),
        }
    }
}

impl<T> std::error::Error for TryPublishError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidTopic(_, e) => Some(e),
            Self::InvalidEnvelope(_, e) => Some(e),
            Self::Transport(_, e) => Some(e),
            _ => None,
        }
    }
}

impl<T> From<PublishError<T>> for TryPublishError<T> {
    fn from(e: PublishError<T>) -> Self {
        match e {
            PublishError::Closed(v) => Self::Closed(v),
            PublishError::InvalidTopic(v, e) => Self::InvalidTopic(v, e),
            PublishError::InvalidEnvelope(v, e) => Self::InvalidEnvelope(v, e),
            PublishError::Transport(v, e) => Self::Transport(v, e),
        }
    }
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The bus is closed or closing.
    #[error("bus is closed")]
    Closed,
    /// The topic name is invalid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The options are invalid.
    #[error("invalid subscribe options: {0}")]
    InvalidOptions(#[from] ConfigError),
    /// Not called within a Tokio runtime (lane workers are Tokio tasks).
    #[error("no tokio runtime: subscribe must run inside a tokio runtime")]
    NoRuntime,
    /// The transport could not open the subscription (NATS: the client's
    /// subscribe failed).
    #[error("transport failed: {0}")]
    Transport(TransportError),
}

/// Why a topic could not be configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopicConfigError {
    /// The bus is closed or closing.
    #[error("bus is closed")]
    Closed,
    /// The topic name is invalid.
    #[error("invalid topic: {0}")]
    InvalidTopic(#[from] TopicError),
    /// The options are invalid.
    #[error("invalid topic options: {0}")]
    InvalidOptions(#[from] ConfigError),
    /// The broker refused or could not be reached (NATS: a stream call
    /// failed, or `validate_only` found the stream missing or different).
    #[error("transport failed: {0}")]
    Transport(TransportError),
}

/// Why [`Bus::close`](crate::Bus::close) could not drain everything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseError {
    /// The deadline passed with records still unprocessed; they were not
    /// acknowledged (a broker will redeliver them).
    #[error("close timed out with {pending} messages unprocessed")]
    Timeout {
        /// Records accepted but not processed when the deadline passed.
        pending: u64,
    },
}

/// Why [`Bus::health_check`](crate::Bus::health_check) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The bus is closed or closing.
    #[error("bus is closed")]
    Closed,
    /// A lane worker has stopped while its subscription is live.
    #[error("lane worker of topic {topic} stopped")]
    WorkerStopped {
        /// The subscription's topic.
        topic: String,
    },
    /// The transport is unhealthy (NATS: the connection is down, or the
    /// server did not answer a round trip in time; Kafka: the brokers did
    /// not answer a metadata request, or a subscription's consumer stopped
    /// or is not a steady member of its group).
    #[error("transport unhealthy: {0}")]
    Transport(TransportError),
    /// The end-to-end probe did not come back in time, or could not be
    /// sent ([`HealthOptions::probe`](crate::HealthOptions)).
    #[error("health probe failed: {0}")]
    Probe(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_hand_the_value_back() {
        let err = PublishError::Transport(
            "payload",
            TransportError::new("nats", "no responders", None),
        );
        assert_eq!(
            err.to_string(),
            "transport failed: nats transport: no responders"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err: TryPublishError<&str> = err.into();
        assert!(matches!(err, TryPublishError::Transport("payload", _)));
        assert_eq!(err.map_value(str::len).into_inner(), 7);
    }
}
