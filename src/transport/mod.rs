//! The transport boundary.
//!
//! A transport moves records between publishers and the engine's lanes. The
//! engine owns ordering, retry, dead-lettering and metrics; a transport only
//!
//! - publishes an outbound record (memory: routes it straight into the
//!   subscribed lanes; brokers: produce to the broker), and
//! - feeds inbound records into a subscription's lanes, each carrying an
//!   [`Ack`] handle, a redelivery count and, for partitioned brokers, the
//!   partition and offset it came from.
//!
//! The lane worker settles every record exactly once after its outcome is
//! final: `ack` after success, skip or dead-lettering; `nack` when the
//! record must come back (the dead-letter publish failed, or the bus shut
//! down before handling it). For Kafka, acking marks an offset finished and
//! the adapter commits per partition only the contiguous prefix of finished
//! offsets, since lanes finish out of order.

pub(crate) mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future, as broker acknowledgements return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error from a transport's client library, wrapped.
#[derive(Debug, thiserror::Error)]
#[error("{transport} transport: {message}")]
#[non_exhaustive]
pub struct TransportError {
    /// Which transport.
    pub transport: &'static str,
    /// What failed.
    pub message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TransportError {
    /// An error of `transport` with a message and an optional cause.
    pub fn new(
        transport: &'static str,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            transport,
            message: message.into(),
            source,
        }
    }
}

/// Settles one inbound broker record.
///
/// Implemented by broker adapters; the memory transport needs none.
pub trait AckHandle: Send + 'static {
    /// The record is done with: never deliver it again.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>>;
    /// The record was not handled: deliver it again later.
    fn nack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>>;
}

/// How an inbound record is settled.
#[derive(Default)]
pub(crate) enum Ack {
    /// Nothing to settle (the memory transport).
    #[default]
    None,
    /// A broker record (built by the broker adapters).
    #[allow(dead_code)]
    Broker(Box<dyn AckHandle>),
}

impl Ack {
    pub(crate) async fn ack(self) -> Result<(), TransportError> {
        match self {
            Ack::None => Ok(()),
            Ack::Broker(h) => h.ack().await,
        }
    }

    pub(crate) async fn nack(self) -> Result<(), TransportError> {
        match self {
            Ack::None => Ok(()),
            Ack::Broker(h) => h.nack().await,
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ack::None => f.write_str("Ack::None"),
            Ack::Broker(_) => f.write_str("Ack::Broker(..)"),
        }
    }
}
