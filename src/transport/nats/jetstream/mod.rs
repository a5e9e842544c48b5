//! JetStream behind the bus: persistent topics, each a stream, published
//! with the server's ack and consumed by durable pull consumers.
//!
//! - `options` (always compiled, plain data): [`JetStreamOptions`], the
//!   stream strategy, default persistence, wire form and API timeout.
//! - `transport` (`JetStream`): publish after the server's ack, subscribe
//!   with a durable consumer.
//! - `streams`: the stream per topic (name, config, strategy, single
//!   flight, read back, list, remove).
//! - `consumer`: the durable pull consumer and the loop that feeds the
//!   lanes.
//! - `ack`: the ack handle and the in-progress pacer.
//!
//! [`JetStreamOptions`]: crate::JetStreamOptions

#[cfg(feature = "nats")]
mod ack;
#[cfg(feature = "nats")]
mod consumer;
mod options;
#[cfg(feature = "nats")]
pub(crate) mod streams;
#[cfg(feature = "nats")]
mod transport;

pub use options::{JetStreamOptions, StreamStrategy};
#[cfg(feature = "nats")]
pub(crate) use transport::JetStream;

#[cfg(all(test, feature = "nats"))]
mod backlog_tests;
#[cfg(all(test, feature = "nats"))]
mod dedup_tests;
#[cfg(all(test, feature = "nats"))]
mod fault_tests;
#[cfg(all(test, feature = "nats"))]
mod streams_tests;
#[cfg(all(test, feature = "nats"))]
mod tests;
#[cfg(all(test, feature = "nats"))]
mod topic_tests;
