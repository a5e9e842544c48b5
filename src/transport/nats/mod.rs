//! The NATS transport: core NATS for ephemeral topics, JetStream for
//! persistent ones, on one connection.
//!
//! ```text
//!              Bus ── Transport::Nats(Nats)            (flavor)
//!               │            │
//!        ephemeral topic     persistent topic
//!               │            │
//!          NatsCore       JetStream ── Streams         (pubsub, jetstream, streams)
//!     publish / subscribe    │  publish + server ack, one stream per topic
//!     queue groups           └─ durable pull consumer  (consumer)
//!     wildcards                 → lanes, JsAck + pacer (ack)
//! ```
//!
//! The parts:
//!
//! - [`NatsOptions`] and [`JetStreamOptions`] (always compiled, plain
//!   data): server URLs, client name, connect timeout, reconnect policy
//!   ([`NatsReconnect`]), authentication ([`NatsAuth`]: token,
//!   user/password, NKey seed, creds file), TLS ([`NatsTls`]), and how
//!   persistent topics use JetStream (stream strategy, default
//!   persistence, envelope wire form, API timeout).
//! - `connect`: opens an async-nats client from the options and forwards
//!   its connection events, as [`ConnectionEvent`]s, to a
//!   `tokio::sync::broadcast` channel.
//! - `flavor` (`Nats`): the `Transport::Nats` flavor; picks core NATS or
//!   JetStream per topic from the topic's `persistence` (`auto` and
//!   unconfigured topics: `nats.jetstream.default_persistence`, by default
//!   `persistent`).
//! - `pubsub` (`NatsCore`): core NATS publish/subscribe (no stream, no ack,
//!   at-most-once); wildcard subscriptions always use it.
//! - `jetstream`, `streams`, `consumer`, `ack`: persistent topics — the
//!   stream per topic (name derived from the topic, or
//!   `TopicOptions::stream`), publish after the server's ack, a durable
//!   pull consumer per subscription, explicit acks, in-progress acks.
//!
//! Consumer names (JetStream): the subscribe option `consumer`, else the
//! group, else `<client name>-<topic>` (`.` written as `_`; client name
//! `lanebus` by default). Whoever opens the same name on the same stream
//! shares its records, so two processes in one group split the work and a
//! restarted process resumes where its consumer stood. The server gives
//! no key affinity across the processes sharing one consumer: per-key
//! order holds within one process (its lanes), not between two.
//!
//! # Algorithm
//!
//! `connect` validates the options, refuses what this build cannot do
//! (websocket URLs: async-nats's `websockets` feature is off), checks that
//! every file the options name can be read, maps each option onto
//! `async_nats::ConnectOptions`, and connects once to the servers (each URL
//! tried once, in a random order; the first attempt does not retry, so a
//! wrong password or an unreachable server is an error at once, not an
//! endless loop). A failure becomes a [`TransportError`] whose message
//! names the cause: `authorization failed`, `authentication failed`, `tls
//! handshake failed`, `tls setup failed`, `connect timed out`, `connection
//! refused`, `cannot resolve`, or a file that cannot be read.
//!
//! After the first connection async-nats reconnects by itself, pausing per
//! [`NatsReconnect::delay`] between attempts; subscriptions are renewed by
//! the client on each reconnect.
//!
//! Events: the caller makes the channel (`event_channel`) and hands its
//! sender to `connect`; anyone holding the sender calls `subscribe()` for a
//! receiver. A broadcast channel rather than a callback, because several
//! parts (the bus's health check, the user) want the same events, and a
//! slow receiver must not hold up the client: it loses the oldest events
//! and learns how many (`RecvError::Lagged`) instead. A receiver made
//! before `connect` sees the first `Connected`.
//!
//! # Invariants
//!
//! - async-nats reports every connection as `Connected`; the first one is
//!   forwarded as [`ConnectionEvent::Connected`] and every later one as
//!   [`ConnectionEvent::Reconnected`], so a `Reconnected` always follows a
//!   `Disconnected`.
//! - No error message carries a secret: URLs are shown with their password
//!   redacted, and credentials are named, never quoted.
//!
//! [`TransportError`]: crate::TransportError

use std::fmt;

#[cfg(feature = "nats")]
mod connect;
#[cfg(feature = "nats")]
mod flavor;
mod jetstream;
mod options;
#[cfg(feature = "nats")]
mod pubsub;

#[cfg(feature = "nats")]
pub(crate) use connect::{connect, event_channel};
#[cfg(feature = "nats")]
pub(crate) use flavor::Nats;
pub use jetstream::{JetStreamOptions, StreamStrategy};
pub use options::{NatsAuth, NatsOptions, NatsReconnect, NatsTls, DEFAULT_NATS_URL};
#[cfg(feature = "nats")]
pub(crate) use pubsub::NatsCore;

#[cfg(all(test, feature = "nats"))]
mod bus_tests;
#[cfg(all(test, feature = "nats"))]
mod handler_tests;
#[cfg(all(test, feature = "nats"))]
mod health_tests;
#[cfg(all(test, feature = "nats"))]
mod test_support;
#[cfg(all(test, feature = "nats"))]
mod tests;

/// A change in the state of a NATS connection, as the client reports it.
///
/// Received from the connection's broadcast channel; a receiver that falls
/// more than the channel's capacity behind loses the oldest events and is
/// told how many.
///
/// # Examples
///
/// ```
/// use lanebus::ConnectionEvent;
///
/// let e = ConnectionEvent::Error("connection refused".into());
/// assert_eq!(e.to_string(), "client error: connection refused");
/// assert_eq!(ConnectionEvent::Reconnected.to_string(), "reconnected");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The first connection is up.
    Connected,
    /// The connection is up again after a [`Disconnected`](Self::Disconnected)
    /// (subscriptions are renewed on it).
    Reconnected,
    /// The connection was lost; the client reconnects by itself, per the
    /// reconnect policy.
    Disconnected,
    /// The server is shutting down soon (lame duck mode); the client will
    /// move to another server.
    LameDuck,
    /// A subscription (by its client-side ID) could not keep up and the
    /// client dropped messages for it (core NATS only).
    SlowConsumer {
        /// The subscription's ID in the client.
        subscription: u64,
    },
    /// The server reported an error (`-ERR`), such as a permission
    /// violation.
    ServerError(String),
    /// The client reported an error, such as a failed reconnect attempt,
    /// or that it gave up after the last allowed attempt.
    Error(String),
    /// The client is draining: it stops taking new messages and flushes.
    Draining,
    /// The connection is closed for good.
    Closed,
}

impl fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connected => f.write_str("connected"),
            Self::Reconnected => f.write_str("reconnected"),
            Self::Disconnected => f.write_str("disconnected"),
            Self::LameDuck => f.write_str("server in lame duck mode"),
            Self::SlowConsumer { subscription } => {
                write!(f, "slow consumer on subscription {subscription}")
            }
            Self::ServerError(e) => write!(f, "server error: {e}"),
            Self::Error(e) => write!(f, "client error: {e}"),
            Self::Draining => f.write_str("draining"),
            Self::Closed => f.write_str("closed"),
        }
    }
}
