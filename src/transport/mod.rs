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

#[cfg(all(test, any(feature = "nats", feature = "kafka")))]
pub(crate) mod handler_scenarios;
pub(crate) mod kafka;
pub(crate) mod memory;
#[cfg(any(feature = "nats", feature = "kafka"))]
pub(crate) mod names;
pub(crate) mod nats;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The transport a bus runs on, one variant per flavor (as
/// crossbeam-channel picks a channel flavor by enum): the publish path
/// matches on it, memory first, so the memory flavor costs no indirection.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Transport {
    /// In-process: the engine's rings are the transport.
    Memory(memory::Memory),
    /// NATS: core NATS for ephemeral topics, JetStream for persistent
    /// ones.
    #[cfg(feature = "nats")]
    Nats(Box<nats::Nats>),
    /// Kafka: every topic a Kafka topic.
    #[cfg(feature = "kafka")]
    Kafka(Box<kafka::Kafka>),
}

impl Transport {
    /// Its name, as health reports and errors give it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Transport::Memory(_) => "memory",
            #[cfg(feature = "nats")]
            Transport::Nats(_) => "nats",
            #[cfg(feature = "kafka")]
            Transport::Kafka(_) => "kafka",
        }
    }
}

/// A broker subscription's consumer task, which feeds the subscription's
/// lanes, and the signal that stops it.
///
/// Stopping (or dropping the signal) makes the task stop taking new
/// records from the broker, deliver what its client already holds, and
/// then close the subscription's lanes, which the lane workers drain as
/// they do on the memory transport.
#[derive(Debug)]
pub(crate) struct Feed {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    /// What the broker reports about the subscription's consumer.
    gauges: Option<Arc<crate::pipeline::metrics::BrokerGauges>>,
    /// How the consumer stands in its broker (a Kafka group member), for
    /// the bus's health check.
    health: Option<Arc<dyn FeedHealth>>,
}

/// The state of a broker subscription's consumer, as the bus's health
/// check reads it (without waiting on the consumer).
pub(crate) trait FeedHealth: Send + Sync + fmt::Debug {
    /// `Err` names what is wrong: the consumer task ended (`task_ended`)
    /// while the subscription is live, a group not joined, a stalled
    /// consumer.
    fn check(&self, task_ended: bool) -> Result<(), TransportError>;
}

impl Feed {
    /// A consumer task and its stop signal.
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))] // built by broker adapters
    pub(crate) fn new(
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            stop: Some(stop),
            task,
            gauges: None,
            health: None,
        }
    }

    /// The feed with a health check of its consumer: the bus's health
    /// check then also fails when the consumer task ended while the
    /// subscription is live.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn with_health(mut self, health: Arc<dyn FeedHealth>) -> Self {
        self.health = Some(health);
        self
    }

    /// The consumer's health, when the feed has a check (else `Ok`).
    pub(crate) fn health(&self) -> Result<(), TransportError> {
        match &self.health {
            Some(health) => health.check(self.task.is_finished()),
            None => Ok(()),
        }
    }

    /// The feed with the broker's figures for its consumer.
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))]
    pub(crate) fn with_gauges(
        mut self,
        gauges: Arc<crate::pipeline::metrics::BrokerGauges>,
    ) -> Self {
        self.gauges = Some(gauges);
        self
    }

    /// The live gauges behind [`broker_stats`](Self::broker_stats) (the
    /// backlog monitor reads them).
    pub(crate) fn gauges(&self) -> Option<Arc<crate::pipeline::metrics::BrokerGauges>> {
        self.gauges.clone()
    }

    /// The broker's figures for its consumer, when it reports any.
    pub(crate) fn broker_stats(&self) -> Option<crate::BrokerStats> {
        self.gauges.as_ref().map(|g| g.read())
    }

    /// Tells the task to stop; returns it, to be awaited.
    pub(crate) fn stop(mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already (its broker subscription
            // closed): nothing to tell then.
            let _ = stop.send(());
        }
        self.task
    }
}

/// A boxed, sendable future, as broker acknowledgements return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error from a transport's client library, wrapped. One pointer wide,
/// so that publish errors, which carry it beside the value they hand back,
/// stay small.
///
/// # Examples
///
/// ```
/// use lanebus::TransportError;
///
/// let e = TransportError::new("nats", "no responders", None);
/// assert_eq!(e.transport(), "nats");
/// assert_eq!(e.to_string(), "nats transport: no responders");
/// ```
pub struct TransportError(Box<TransportErrorInner>);

struct TransportErrorInner {
    transport: &'static str,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TransportError {
    /// An error of `transport` with a message and an optional cause.
    pub fn new(
        transport: &'static str,
        message: impl Into<String>,
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self(Box::new(TransportErrorInner {
            transport,
            message: message.into(),
            source,
        }))
    }

    /// Which transport failed (`nats`, `kafka`).
    pub fn transport(&self) -> &'static str {
        self.0.transport
    }

    /// What failed.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} transport: {}", self.0.transport, self.0.message)
    }
}

impl fmt::Debug for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportError")
            .field("transport", &self.0.transport)
            .field("message", &self.0.message)
            .field("source", &self.0.source)
            .finish()
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Settles one inbound broker record.
///
/// Implemented by broker adapters; the memory transport needs none.
///
/// The lane worker settles every record once: `ack` after success, skip or
/// dead-lettering; `nack` when it must come back. A handle dropped without
/// being settled (a close that timed out, an aborted worker) is nacked, so
/// a record never silently vanishes.
pub trait AckHandle: Send + Sync + 'static {
    /// The record is done with: never deliver it again.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>>;
    /// The record was not handled: deliver it again, after `delay` when one
    /// is given (a broker without delayed redelivery may ignore it).
    fn nack(
        self: Box<Self>,
        delay: Option<Duration>,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
    /// The record is still being worked on: reset the broker's redelivery
    /// timer (JetStream's in-progress ack). A no-op where the broker has
    /// none.
    fn progress(&self) -> BoxFuture<'static, Result<(), TransportError>>;
    /// The record must never be delivered again, though it was not handled
    /// (JetStream's term).
    fn terminate(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>>;
    /// True when the record must not be handled any more: its consumer let
    /// go of it (a Kafka partition revoked in a rebalance), and its next
    /// owner gets it. The lane worker then releases it unhandled.
    fn is_stale(&self) -> bool {
        false
    }
    /// The partition and offset the record came from, on a partitioned
    /// broker (Kafka); `None` elsewhere.
    fn position(&self) -> Option<(i32, i64)> {
        None
    }
}

/// What a record carries besides its body, when it carries anything: a
/// broker's settlement handle and how often the broker delivered it
/// before, and the exact topic of a record routed to a wildcard
/// subscription.
pub(crate) struct BrokerAck {
    pub(crate) handle: Option<Box<dyn AckHandle>>,
    pub(crate) redelivered: u32,
    pub(crate) topic: Option<Arc<str>>,
}

/// How an inbound record is settled (nothing to do for in-process records,
/// a broker handle otherwise) and, for wildcard subscriptions, its exact
/// topic. One pointer wide, so that a lane slot stays within one cache
/// line; in-process records to exact topics carry nothing.
#[derive(Default)]
pub(crate) struct Ack(Option<Box<BrokerAck>>);

impl Drop for Ack {
    /// An unsettled broker handle is nacked: on the current runtime when
    /// there is one, else it is logged (the broker then redelivers after
    /// its own timeout).
    fn drop(&mut self) {
        let Some(handle) = self.0.as_mut().and_then(|b| b.handle.take()) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = handle.nack(None).await {
                        tracing::warn!(error = %e, "nack of an unsettled record failed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                "an unsettled record was dropped outside a runtime; the broker redelivers it after its timeout"
            ),
        }
    }
}

impl Ack {
    /// Nothing to settle (the memory transport).
    pub(crate) const NONE: Ack = Ack(None);

    /// A broker record delivered `redelivered` times before.
    #[cfg(test)]
    pub(crate) fn broker(handle: Box<dyn AckHandle>, redelivered: u32) -> Self {
        Self::from_broker(Some(handle), redelivered, None)
    }

    /// A broker record delivered `redelivered` times before, settled by
    /// `handle` (none: nothing to settle), with its exact topic when it
    /// was routed to a wildcard subscription.
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))] // built by the broker adapters
    pub(crate) fn from_broker(
        handle: Option<Box<dyn AckHandle>>,
        redelivered: u32,
        topic: Option<&str>,
    ) -> Self {
        Ack(Some(Box::new(BrokerAck {
            handle,
            redelivered,
            topic: topic.map(Arc::from),
        })))
    }

    /// An in-process record published to `topic`, routed to a wildcard
    /// subscription (whose own topic is the pattern).
    pub(crate) fn in_topic(topic: &str) -> Self {
        Ack(Some(Box::new(BrokerAck {
            handle: None,
            redelivered: 0,
            topic: Some(Arc::from(topic)),
        })))
    }

    /// True when there is nothing to settle.
    #[inline]
    pub(crate) fn is_none(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.handle.is_none())
    }

    /// The exact topic, when the record was routed by a wildcard.
    #[inline]
    pub(crate) fn topic(&self) -> Option<&Arc<str>> {
        self.0.as_ref().and_then(|b| b.topic.as_ref())
    }

    /// Earlier deliveries by the broker (0 for in-process records).
    #[inline]
    pub(crate) fn redelivered(&self) -> u32 {
        self.0.as_ref().map_or(0, |b| b.redelivered)
    }

    /// True when the broker record must not be handled any more (see
    /// [`AckHandle::is_stale`]).
    #[inline]
    pub(crate) fn is_stale(&self) -> bool {
        self.0
            .as_ref()
            .and_then(|b| b.handle.as_ref())
            .is_some_and(|h| h.is_stale())
    }

    /// The partition and offset of a record from a partitioned broker
    /// (while it is unsettled); `None` for in-process records.
    #[inline]
    pub(crate) fn position(&self) -> Option<(i32, i64)> {
        self.0
            .as_ref()
            .and_then(|b| b.handle.as_ref())
            .and_then(|h| h.position())
    }

    /// Lets go of the record without settling it (a stale record: its
    /// broker hands it to another consumer).
    pub(crate) fn release(mut self) {
        drop(self.take_handle());
    }

    fn take_handle(&mut self) -> Option<Box<dyn AckHandle>> {
        self.0.as_mut().and_then(|b| b.handle.take())
    }

    pub(crate) async fn ack(mut self) -> Result<(), TransportError> {
        match self.take_handle() {
            None => Ok(()),
            Some(h) => h.ack().await,
        }
    }

    pub(crate) async fn nack(mut self) -> Result<(), TransportError> {
        match self.take_handle() {
            None => Ok(()),
            Some(h) => h.nack(None).await,
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Ack::NONE"),
            Some(b) => write!(
                f,
                "Ack {{ broker: {}, redelivered: {}, topic: {:?} }}",
                b.handle.is_some(),
                b.redelivered,
                b.topic
            ),
        }
    }
}
