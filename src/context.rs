//! What a handler sees besides its message: the delivery [`Context`], and
//! [`Event`], an envelope together with its context.
//!
//! Every handler gets one way to see the topic a record came from, which
//! attempt this is, how often a broker redelivered it and, from a
//! partitioned broker (Kafka), its partition and offset: plain handlers
//! through [`Message::context`](crate::Message::context), envelope handlers
//! by taking [`Event`] instead of `Envelope` or `Arc<Envelope>`. An `Event`
//! shares the lane's envelope (no copy per attempt) and dereferences to
//! [`Envelope`], so `ev.aggregate_id` reads as it does on an envelope.
//!
//! # Invariants
//!
//! - `attempt() >= 1` and `attempt() > redelivered()`: the attempt counts
//!   the broker's earlier deliveries plus this subscription's local tries.
//! - Building a context costs one reference-count increment (the topic) on
//!   the hot path; nothing is copied.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

use crate::pipeline::dead_letter::DeadLetterInfo;
use crate::{Envelope, Headers};

/// Where and how a record is being delivered: its topic, the attempt number,
/// the broker's redelivery count and, from Kafka, its partition and offset.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, HandlerError, Message};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::memory();
/// let _sub = bus
///     .subscribe("jobs", |msg: Message| async move {
///         let ctx = msg.context();
///         // Fail the first two attempts on purpose.
///         if ctx.attempt() <= 2 {
///             return Err(HandlerError::retryable("not yet"));
///         }
///         assert_eq!(ctx.topic(), "jobs");
///         Ok(())
///     })
///     .await?;
/// bus.publish("jobs", "work").await?;
/// bus.close().await?;
/// assert_eq!(bus.stats().total.retried, 2);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    topic: Arc<str>,
    attempt: u32,
    redelivered: u32,
    position: Option<(i32, i64)>,
    recovering: bool,
}

impl Context {
    pub(crate) fn new(
        topic: Arc<str>,
        attempt: u32,
        redelivered: u32,
        position: Option<(i32, i64)>,
        recovering: bool,
    ) -> Self {
        Self {
            topic,
            attempt,
            redelivered,
            position,
            recovering,
        }
    }

    /// True when the subscription was in recovery mode as this attempt
    /// began: catching up on a backlog (see
    /// [`BacklogOptions`](crate::BacklogOptions)), or set so by hand
    /// ([`Subscription::set_recovering`](crate::Subscription::set_recovering)).
    /// A handler may, for example, hold back notifications while it
    /// replays. Always false without either.
    pub fn recovering(&self) -> bool {
        self.recovering
    }

    /// The topic the record was published to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Which delivery of this record to this subscription this is, from 1:
    /// the broker's earlier deliveries plus local retries.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How often a broker delivered this record before (always 0 on the
    /// memory transport).
    pub fn redelivered(&self) -> u32 {
        self.redelivered
    }

    /// The partition the record was consumed from, on a partitioned broker
    /// (Kafka); `None` on the memory transport and on NATS.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Bus, Message};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::memory();
    /// let _sub = bus
    ///     .subscribe("jobs", |msg: Message| async move {
    ///         // In-process records have no partition or offset.
    ///         assert_eq!(msg.context().partition(), None);
    ///         assert_eq!(msg.context().offset(), None);
    ///         Ok::<(), lanebus::HandlerError>(())
    ///     })
    ///     .await?;
    /// bus.publish("jobs", "work").await?;
    /// bus.close().await?;
    /// # Ok(()) }
    /// ```
    pub fn partition(&self) -> Option<i32> {
        self.position.map(|(partition, _)| partition)
    }

    /// The record's offset in its [`partition`](Self::partition), on a
    /// partitioned broker (Kafka); `None` on the memory transport and on
    /// NATS.
    pub fn offset(&self) -> Option<i64> {
        self.position.map(|(_, offset)| offset)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("topic", &self.topic)
            .field("attempt", &self.attempt)
            .field("redelivered", &self.redelivered)
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish()
    }
}

/// An envelope as a handler receives it, with its delivery [`Context`].
///
/// Dereferences to [`Envelope`]. The envelope is shared with the lane (as
/// with `Arc<Envelope>` handlers), so taking `Event` costs no copy per
/// attempt.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, Envelope, Event, HandlerError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::memory();
/// let _sub = bus
///     .subscribe_envelope("orders.events", |ev: Event| async move {
///         println!(
///             "{} of {} on {}, attempt {}",
///             ev.event_type,
///             ev.aggregate_id,
///             ev.context().topic(),
///             ev.context().attempt()
///         );
///         Ok::<(), HandlerError>(())
///     })
///     .await?;
/// bus.publish_envelope("orders.events", Envelope::new("order-1", "OrderPlaced", 1, "{}"))
///     .await?;
/// bus.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    envelope: Arc<Envelope>,
    context: Context,
    record_headers: Headers,
}

impl Event {
    pub(crate) fn new(envelope: Arc<Envelope>, context: Context, record_headers: Headers) -> Self {
        Self {
            envelope,
            context,
            record_headers,
        }
    }

    /// The delivery context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The shared envelope.
    pub fn envelope(&self) -> &Arc<Envelope> {
        &self.envelope
    }

    /// Takes the shared envelope out.
    pub fn into_envelope(self) -> Arc<Envelope> {
        self.envelope
    }

    /// The headers of the record that carried the envelope, apart from the
    /// envelope's own [`headers`](Envelope::headers): a broker's message
    /// headers, or the error headers of a dead letter. Empty for envelopes
    /// published in-process with [`Bus::publish_envelope`](crate::Bus::publish_envelope).
    pub fn record_headers(&self) -> &Headers {
        &self.record_headers
    }

    /// Why the envelope was dead-lettered, when this event was consumed from
    /// a dead-letter topic (read from [`record_headers`](Self::record_headers)).
    pub fn dead_letter(&self) -> Option<DeadLetterInfo> {
        DeadLetterInfo::from_headers(&self.record_headers)
    }
}

impl Deref for Event {
    type Target = Envelope;

    fn deref(&self) -> &Envelope {
        &self.envelope
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("envelope", &self.envelope)
            .field("context", &self.context)
            .field("record_headers", &self.record_headers)
            .finish()
    }
}

/// One record as the lane worker hands it to a message type's constructor:
/// the engine's record seen through public types only, so that handler
/// types never depend on the engine. The context is built only by the
/// message types that carry one (no reference-count traffic for
/// `Envelope` and `Arc<Envelope>` handlers).
pub(crate) struct Inbound<'a> {
    pub(crate) body: InboundBody<'a>,
    pub(crate) topic: &'a Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) redelivered: u32,
    /// Partition and offset, from a partitioned broker.
    pub(crate) position: Option<(i32, i64)>,
    /// The subscription's recovery mode as the attempt began.
    pub(crate) recovering: bool,
}

impl Inbound<'_> {
    /// The delivery context of this record.
    #[inline]
    pub(crate) fn context(&self) -> Context {
        Context::new(
            self.topic.clone(),
            self.attempt,
            self.redelivered,
            self.position,
            self.recovering,
        )
    }
}

/// The record's content.
#[derive(Clone, Copy)]
pub(crate) enum InboundBody<'a> {
    /// Payload bytes, with key and headers when the record has them.
    Plain {
        payload: &'a Bytes,
        key: Option<&'a Arc<str>>,
        headers: Option<&'a Headers>,
    },
    /// An envelope published in-process.
    Envelope(&'a Arc<Envelope>),
}

impl InboundBody<'_> {
    /// Payload, key and headers, cloned (reference counts; headers only
    /// when present). For an envelope: its binary encoding, aggregate ID and
    /// headers.
    // Always inlined into the lane worker (its plain arm is a few reference
    // counts); the envelope arm, rare here, is out of line.
    #[inline(always)]
    pub(crate) fn parts(self) -> (Bytes, Option<Arc<str>>, Headers) {
        match self {
            InboundBody::Plain {
                payload,
                key,
                headers,
            } => (
                payload.clone(),
                key.cloned(),
                headers.cloned().unwrap_or_default(),
            ),
            InboundBody::Envelope(e) => envelope_parts(e),
        }
    }
}

/// [`InboundBody::parts`] of an envelope: its binary encoding, aggregate
/// ID and headers.
#[cold]
fn envelope_parts(e: &Envelope) -> (Bytes, Option<Arc<str>>, Headers) {
    (
        e.encode(),
        Some(Arc::from(e.aggregate_id.as_str())),
        e.headers.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_built() {
        let topic: Arc<str> = Arc::from("orders");
        for (redelivered, recovering, position) in [
            (0, false, None),
            (0, true, None),
            (7, true, Some((3, 42))),
            (u32::MAX, false, Some((i32::MAX, i64::MAX))),
            (u32::MAX, true, Some((-1, i64::MIN))),
        ] {
            let c = Context::new(topic.clone(), 9, redelivered, position, recovering);
            assert_eq!(c.topic(), "orders");
            assert_eq!(c.attempt(), 9);
            assert_eq!(c.redelivered(), redelivered);
            assert_eq!(c.recovering(), recovering);
            assert_eq!(c.partition(), position.map(|p| p.0));
            assert_eq!(c.offset(), position.map(|p| p.1));
        }
    }
}
