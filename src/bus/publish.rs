//! The publish steps that never wait (the memory transport's up to a
//! full lane, a broker's up to its client), and the envelope publish
//! future built on them.
//!
//! # Algorithm
//!
//! A publish on the memory transport waits only when a lane is full. Up
//! to that point it is synchronous ([`BusInner::memory_now`]): enter the
//! in-flight guard, check the closed flag, route through the registry
//! snapshot into the lanes (a first publish to a name is checked and, when
//! wildcard subscriptions may match it, materialised), count an unrouted
//! publish. A full lane hands back its pending records with the guard, and
//! [`BusInner::finish_wait`] completes them.
//!
//! A broker publish, likewise ([`BusInner::broker_now`]): enter the
//! in-flight guard, check the closed flag, and on NATS complete a core
//! NATS publish in place when the client's queue has room; anything that
//! waits (a stream's ack, a full client queue, Kafka's delivery report)
//! continues in [`BusInner::broker_rest`] with the guard.
//!
//! Both publish paths use these steps: the `async` route of
//! [`BusInner`] (plain messages, and envelopes with a trace hook or rate
//! limit), and [`PublishEnvelope`], a hand-written future for an envelope
//! publish. Its envelope already sits in its
//! shared allocation, so the future is the bus, the topic, one pointer and
//! its state (48 bytes, moved cheaply by the caller's `.await`), and its
//! first poll runs the whole publish in place; only a publish that waits
//! (a full lane, a broker's answer, or the general route) boxes the rest,
//! once. Before, the
//! `async` route's state machine inside a map to the public error was
//! several times that size, copied with `memcpy` when the caller awaited
//! it, and the success was written as a whole `Result` (its error variant
//! holds an envelope) and copied out. Keyed row of the bench tool:
//! 148 fewer instructions per publish (cachegrind), +6% median and +11%
//! best run over 8 alternations.
//!
//! # Invariants
//!
//! - The flight guard is held from before the closed check until the
//!   records are in their lanes, waits included (`close`'s drain relies on
//!   it; the flight protocol is loom-checked in `engine::flight`).
//! - Nothing is published before the future is first polled (futures are
//!   lazy); dropping it before then drops the envelope.
//! - A publish that was refused hands its envelope back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use crate::engine::flight::FlightGuard;
use crate::engine::lanes::Body;
use crate::engine::pattern::validate_publish_name;
use crate::engine::route::{RouteNow, Routed, Waiting as LaneWait};
use crate::engine::sync::DataArc;
use crate::transport::memory::Memory;
use crate::transport::{BoxFuture, Transport};
#[cfg(any(feature = "nats", feature = "kafka"))]
use crate::TopicOptions;
use crate::{Envelope, PublishError};
#[cfg(any(feature = "nats", feature = "kafka"))]
use std::sync::Arc;

use super::inner::{BusInner, Refused, Waiting};

/// The outcome of [`BusInner::memory_now`].
pub(super) enum MemoryNow<'a> {
    /// Finished: routed, or refused.
    Done(Result<Routed, Refused>),
    /// A lane was full: finish with [`BusInner::finish_wait`], which keeps
    /// the flight guard until then.
    Wait(Box<LaneWait>, FlightGuard<'a>),
}

impl BusInner {
    /// Enters the in-flight guard for a publish, then checks the closed
    /// flag: `None` (the publish is refused, and counted so) once `close`
    /// began, except for `internal` ones (dead letters from lane workers,
    /// which still flow while `close` drains, and are counted apart from
    /// user publishes).
    #[inline(always)]
    pub(super) fn enter_route(&self, internal: bool) -> Option<FlightGuard<'_>> {
        let flight = self.flight.enter();
        if internal {
            self.republished.add(1);
        } else if self.closed.load(Ordering::SeqCst) {
            self.refused.add(1);
            return None;
        }
        Some(flight)
    }

    /// The memory transport's publish up to its first wait (see the module
    /// docs). `internal` marks a dead letter from a lane worker: it still
    /// flows while `close` drains the lanes, and it is counted apart from
    /// user publishes.
    #[inline(always)]
    pub(super) fn memory_now(
        &self,
        memory: &Memory,
        topic: &str,
        body: Body,
        internal: bool,
    ) -> MemoryNow<'_> {
        // The body is moved into its slot before the flight guard's fence,
        // which drains the stores: the lookup then reads it from the cache.
        // (Moved after it, the copy's wide loads met its narrow stores still
        // in the store buffer: a store-forwarding stall that took most of
        // an envelope publish's own time.)
        let mut slot = Some(body);
        let Some(flight) = self.enter_route(internal) else {
            let body = slot.take().expect("the body is in its slot");
            return MemoryNow::Done(Err(Box::new(PublishError::Closed(body))));
        };
        let routed = match memory.route_now(self.id, &self.registry, topic, &mut slot) {
            RouteNow::Delivered(n) => Routed::Delivered(n),
            RouteNow::Unrouted => Routed::Unrouted,
            RouteNow::Wait(w) => return MemoryNow::Wait(w, flight),
            RouteNow::Unknown => match self.first_publish(memory, topic, slot, internal) {
                Ok(RouteNow::Delivered(n)) => Routed::Delivered(n),
                Ok(RouteNow::Unrouted | RouteNow::Unknown) => Routed::Unrouted,
                Ok(RouteNow::Wait(w)) => return MemoryNow::Wait(w, flight),
                Err(refused) => return MemoryNow::Done(Err(refused)),
            },
        };
        if !internal {
            self.count_unrouted(routed);
        }
        MemoryNow::Done(Ok(routed))
    }

    /// A publish to a name the snapshot does not know (`slot` holds its
    /// body): check the name, then let the wildcard subscriptions matching
    /// it (if any) have an entry made for it, and route again. Out of
    /// line: it runs once per name, and inlined it made the common path's
    /// lookup a call.
    #[cold]
    #[inline(never)]
    fn first_publish(
        &self,
        memory: &Memory,
        topic: &str,
        mut slot: Option<Body>,
        internal: bool,
    ) -> Result<RouteNow, Refused> {
        let Some(body) = slot.take() else {
            return Ok(RouteNow::Unknown);
        };
        if let Err(e) = validate_publish_name(topic) {
            if !internal {
                self.refused.add(1);
            }
            return Err(Box::new(PublishError::InvalidTopic(body, e)));
        }
        if !self.registry.materialise(topic) {
            return Ok(RouteNow::Unknown);
        }
        slot = Some(body);
        Ok(memory.route_now(self.id, &self.registry, topic, &mut slot))
    }

    /// Finishes a publish that met a full lane, holding its flight guard
    /// until the records are in.
    pub(super) async fn finish_wait(
        &self,
        wait: Box<LaneWait>,
        flight: FlightGuard<'_>,
        internal: bool,
    ) -> Result<Routed, Refused> {
        let _waiting = Waiting::enter(self);
        let routed = wait.finish().await;
        if !internal {
            self.count_unrouted(routed);
        }
        // Counted before the publish ends, as a publish that did not wait.
        drop(flight);
        Ok(routed)
    }

    /// A broker's publish up to its first wait (see the module docs).
    #[cfg(any(feature = "nats", feature = "kafka"))]
    pub(super) fn broker_now(&self, topic: &str, body: Body, internal: bool) -> BrokerNow<'_> {
        let Some(flight) = self.enter_route(internal) else {
            return BrokerNow::Done(Err(Box::new(PublishError::Closed(body))));
        };
        #[cfg(feature = "nats")]
        let (body, config) = match self.route_broker_now(topic, body, internal) {
            Ok(done) => return BrokerNow::Done(done.map_err(Box::new)),
            Err(rest) => rest,
        };
        #[cfg(not(feature = "nats"))]
        let config = {
            let _ = topic;
            None
        };
        BrokerNow::Rest(body, config, flight)
    }

    /// Finishes a broker publish that waits, holding its flight guard until
    /// the broker has it.
    #[cfg(any(feature = "nats", feature = "kafka"))]
    pub(super) async fn broker_rest(
        &self,
        topic: &str,
        config: Option<Arc<TopicOptions>>,
        body: Body,
        flight: FlightGuard<'_>,
        internal: bool,
    ) -> Result<Routed, Refused> {
        let _waiting = Waiting::enter(self);
        let routed = self.route_broker(topic, config, body, internal).await;
        drop(flight);
        routed.map_err(Box::new)
    }

    /// True when a publish has nothing to do before routing: no trace hook
    /// to stamp and no publish rate limit to wait for.
    #[inline]
    fn nothing_first(&self) -> bool {
        self.config.trace_context.is_none() && !self.publish_limits.is_active()
    }
}

/// The outcome of [`BusInner::broker_now`].
#[cfg(any(feature = "nats", feature = "kafka"))]
pub(super) enum BrokerNow<'a> {
    /// Finished: sent (core NATS), or refused.
    Done(Result<Routed, Refused>),
    /// The publish waits for the broker: finish with
    /// [`BusInner::broker_rest`], with the topic's options (NATS) and the
    /// flight guard.
    Rest(Body, Option<Arc<TopicOptions>>, FlightGuard<'a>),
}

/// The future of [`Bus::publish_envelope`](super::Bus::publish_envelope)
/// (see the module docs).
///
/// Its state is two word-sized options rather than one enum: the first
/// poll, right after the caller built the future, then reads the envelope
/// with a load as wide as the store that wrote it (an enum's tag and
/// pointer were written as two words and read back as one 16-byte load,
/// a store-forwarding stall on every publish).
pub(super) struct PublishEnvelope<'a> {
    bus: &'a BusInner,
    topic: &'a str,
    /// The envelope, until the first poll.
    envelope: Option<DataArc<Envelope>>,
    /// The rest of the publish, while it waits (a full lane, or the
    /// general route).
    rest: Option<BoxFuture<'a, Result<Routed, Refused>>>,
}

/// The first poll's outcome: finished, or the rest of the publish.
type Started<'a> = Result<Result<Routed, Refused>, BoxFuture<'a, Result<Routed, Refused>>>;

impl<'a> PublishEnvelope<'a> {
    #[inline]
    pub(super) fn new(bus: &'a BusInner, topic: &'a str, envelope: DataArc<Envelope>) -> Self {
        Self {
            bus,
            topic,
            envelope: Some(envelope),
            rest: None,
        }
    }

    /// The first poll: the whole publish in place, or the rest of it.
    #[inline(always)]
    fn start(&self, envelope: DataArc<Envelope>) -> Started<'a> {
        let (bus, topic) = (self.bus, self.topic);
        if let Err(e) = bus.check_envelope(&envelope) {
            let body = Body::Envelope(envelope);
            return Ok(Err(Box::new(PublishError::InvalidEnvelope(body, e))));
        }
        let body = Body::Envelope(envelope);
        if !bus.nothing_first() {
            return Err(Box::pin(bus.route(topic, body, false)));
        }
        // A single flavor without a broker feature.
        #[allow(clippy::infallible_destructuring_match)]
        let memory = match &bus.transport {
            Transport::Memory(m) => m,
            #[cfg(any(feature = "nats", feature = "kafka"))]
            _ => return Self::start_broker(bus, topic, body),
        };
        match bus.memory_now(memory, topic, body, false) {
            MemoryNow::Done(routed) => Ok(routed),
            MemoryNow::Wait(wait, flight) => Err(Box::pin(bus.finish_wait(wait, flight, false))),
        }
    }

    /// [`start`](Self::start) on a broker, the envelope checked.
    #[cfg(any(feature = "nats", feature = "kafka"))]
    fn start_broker(bus: &'a BusInner, topic: &'a str, body: Body) -> Started<'a> {
        // A task out of cooperative budget takes the route, which yields
        // first (about one publish in 128 pays for its box).
        #[cfg(feature = "nats")]
        if !tokio::task::coop::has_budget_remaining() {
            return Err(Box::pin(bus.route(topic, body, false)));
        }
        match bus.broker_now(topic, body, false) {
            BrokerNow::Done(routed) => Ok(routed),
            BrokerNow::Rest(body, config, flight) => Err(Box::pin(
                bus.broker_rest(topic, config, body, flight, false),
            )),
        }
    }
}

impl Future for PublishEnvelope<'_> {
    type Output = Result<(), PublishError<Envelope>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is `Unpin` (the rest of the publish is boxed).
        let this = self.get_mut();
        if let Some(envelope) = this.envelope.take() {
            match this.start(envelope) {
                // Apart from the refusal: written in place, the success
                // is the output's tag alone (merged with it, the whole
                // output was copied).
                Ok(Ok(_)) => return Poll::Ready(Ok(())),
                Ok(Err(refused)) => return Poll::Ready(Err(hand_back(refused))),
                Err(rest) => this.rest = Some(rest),
            }
        }
        let Some(rest) = &mut this.rest else {
            panic!("`publish_envelope` polled after completion");
        };
        let routed = std::task::ready!(rest.as_mut().poll(cx));
        this.rest = None;
        Poll::Ready(match routed {
            Ok(_) => Ok(()),
            Err(refused) => Err(hand_back(refused)),
        })
    }
}

/// A refused envelope publish's error, with the envelope handed back.
// It takes the box the route returns (unboxing at the call would copy the
// error in the caller's hot function).
#[allow(clippy::boxed_local)]
#[cold]
#[inline(never)]
fn hand_back(refused: Refused) -> PublishError<Envelope> {
    (*refused).map_value(Body::into_envelope)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::{mpsc, Semaphore};

    use crate::{Bus, Envelope, HandlerError, PublishError, SubscribeOptions};

    /// An envelope subscription on one lane of `capacity` slots whose
    /// handler waits for a permit of `gate`, then reports the version.
    async fn gated(
        bus: &Bus,
        capacity: usize,
        gate: &Arc<Semaphore>,
    ) -> (crate::Subscription, mpsc::UnboundedReceiver<i64>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = gate.clone();
        let options = SubscribeOptions::default()
            .lanes(1)
            .ring_capacity(capacity)
            .drain_batch(1);
        let sub = bus
            .subscribe_envelope_with("ev", options, move |ev: Arc<Envelope>| {
                let (gate, tx) = (gate.clone(), tx.clone());
                async move {
                    gate.acquire().await.expect("gate").forget();
                    tx.send(ev.event_version).expect("receiver");
                    Ok::<(), HandlerError>(())
                }
            })
            .await
            .expect("subscribe");
        (sub, rx)
    }

    #[test]
    fn the_future_is_the_bus_the_topic_and_one_pointer() {
        let bus = Bus::memory();
        let future = bus.publish_envelope("ev", Envelope::new("a", "T", 1, "p"));
        assert!(
            std::mem::size_of_val(&future) <= 48,
            "publish_envelope's future is {} bytes",
            std::mem::size_of_val(&future)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_published_until_polled_and_a_dropped_publish_sends_nothing() {
        let bus = Bus::memory();
        let gate = Arc::new(Semaphore::new(100));
        let (_sub, mut rx) = gated(&bus, 8, &gate).await;
        let unpolled = bus.publish_envelope("ev", Envelope::new("a", "T", 1, "p"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(bus.stats().published, 0, "a future does nothing unpolled");
        drop(unpolled);
        bus.publish_envelope("ev", Envelope::new("a", "T", 2, "p"))
            .await
            .expect("publish");
        bus.flush().await;
        assert_eq!(rx.recv().await, Some(2));
        assert!(rx.try_recv().is_err(), "the dropped publish sent nothing");
        assert_eq!(bus.stats().published, 1);
        bus.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_that_meets_a_full_lane_waits_then_lands_in_order() {
        let bus = Bus::memory();
        let gate = Arc::new(Semaphore::new(0));
        let (_sub, mut rx) = gated(&bus, 2, &gate).await;
        // One record in the handler, the ring full behind it.
        let mut version = 0;
        loop {
            version += 1;
            let ev = Envelope::new("a", "T", version, "p");
            if bus.try_publish_envelope("ev", ev).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = tokio::spawn({
            let bus = bus.clone();
            async move {
                let ev = Envelope::new("a", "T", version, "p");
                bus.publish_envelope("ev", ev).await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the publish waits on the full lane");
        gate.add_permits(version as usize);
        waiting.await.expect("task").expect("publish");
        for expected in 1..=version {
            assert_eq!(rx.recv().await, Some(expected));
        }
        bus.close().await.expect("close");
        // After close the envelope comes back whole.
        let ev = Envelope::new("a", "T", version + 1, "kept");
        match bus.publish_envelope("ev", ev.clone()).await {
            Err(PublishError::Closed(back)) => assert_eq!(back, ev),
            other => panic!("{other:?}"),
        }
    }
}
