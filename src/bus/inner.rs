//! The bus instance behind every [`Bus`](super::Bus) handle: publish
//! routing, subscription bookkeeping and the close drain.
//!
//! # Algorithm
//!
//! - **Publish**: check the envelope (envelope publishes), stamp the
//!   `traceparent` header when the config has a trace-context hook
//!   (`pipeline::trace`; user publishes only), enter the in-flight guard,
//!   check the closed flag, match the transport's flavor (memory first).
//!   Memory: route through the registry snapshot into the lanes; only a
//!   publish that meets a full lane pays for a boxed wait. A first publish
//!   to a name the snapshot does not know is checked once, and
//!   materialised when wildcard subscriptions may match it. Brokers: check
//!   the name, publish through the client in a boxed future (so the memory
//!   path's future stays small), except that a core NATS publish (an
//!   ephemeral topic) is first polled once in place and needs no box when
//!   the client's queue has room; a task out of tokio's cooperative budget
//!   yields before that poll, as an await on the client would make it.
//! - **Subscribe** and **detach**: see `bus::subscribe`; this file keeps
//!   the live subscriptions ([`Live`]) they add and remove.
//! - **Close**: store the closed flag, stop the broker feeds (each delivers
//!   what its client holds first), wait until no publish is in flight
//!   and every lane has processed what it accepted (with no new claim
//!   during a full scan), close the lanes, join the workers within the
//!   deadline, keep the subscriptions' final counts, flush the broker
//!   client (acks, and dead letters published during the drain) and close
//!   its connection. It runs once; later
//!   calls get its outcome. Dead letters published during the drain to a
//!   broker topic reach the broker but no longer this bus's stopped feeds.
//!
//! # Invariants
//!
//! - A publish that passed the closed check completes before `close`
//!   decides the lanes are drained (the flight protocol, loom-checked).
//! - Dead letters (internal routes) still flow while `close` drains, and
//!   are counted apart from user publishes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::engine::flight::InFlight;
use crate::engine::lanes::Body;
use crate::engine::pattern::validate_publish_name;
use crate::engine::registry::Registry;
use crate::engine::route::{Routed, TryRouteError};
use crate::engine::{SubscriptionCore, TopicEntry};
use crate::events::EventHub;
use crate::pipeline::dead_letter::{Republish, Republished};
use crate::pipeline::export::{Exporter, Exports};
use crate::pipeline::metrics::{LaneStats, ShardedCounter, SubscriptionStats};
use crate::pipeline::monitor::{MonitorHost, Watch};
use crate::pipeline::rate_limit::PublishLimits;
use crate::transport::BoxFuture;
use crate::transport::{Feed, Transport};
use crate::{BusConfig, CloseError, OutboundMessage, PublishError, TopicOptions, TryPublishError};

#[cfg(any(feature = "nats", feature = "kafka"))]
use super::publish::BrokerNow;
use super::publish::MemoryNow;
use super::subscription_stats;

/// A refused publish, boxed (see [`BusInner::route`]).
pub(super) type Refused = Box<PublishError<Body>>;

pub(super) struct Live {
    pub(super) core: Arc<SubscriptionCore>,
    pub(super) workers: Vec<JoinHandle<()>>,
    /// A broker subscription's consumer task (`None` on memory, and once
    /// `close` has stopped it).
    pub(super) feed: Option<Feed>,
    /// Recovery mode, stall clocks and the last backlog check.
    pub(super) watch: Arc<Watch>,
    /// The backlog monitor task (with `SubscribeOptions::backlog`).
    pub(super) monitor: Option<JoinHandle<()>>,
}

pub(crate) struct BusInner {
    /// Unique in the process (never reused): keys per-thread snapshot caches.
    pub(super) id: u64,
    pub(super) registry: Registry<TopicEntry>,
    pub(super) closed: AtomicBool,
    /// Publishes in progress / finished (the close protocol's read side).
    pub(super) flight: InFlight,
    /// Finished publishes that were refused (closed, invalid).
    pub(super) refused: ShardedCounter,
    pub(super) unrouted: ShardedCounter,
    /// Dead-letter publishes the lane workers made (not user publishes).
    pub(super) republished: ShardedCounter,
    pub(super) next_id: AtomicU64,
    pub(super) live: Mutex<HashMap<u64, Live>>,
    pub(super) retired: Arc<crate::sync::std_impl::Mutex<LaneStats>>,
    /// Final counts of the subscriptions `close` stopped, by ID.
    pub(super) closed_subs: Mutex<Vec<SubscriptionStats>>,
    /// The outcome of the one drain `close` runs; later calls return it.
    pub(super) close_outcome: tokio::sync::OnceCell<Result<(), CloseError>>,
    pub(super) config: BusConfig,
    /// Publish rate limits (bus-wide and per topic).
    pub(super) publish_limits: PublishLimits,
    /// The transport, chosen by `config.transport`.
    pub(crate) transport: Transport,
    /// The metrics exporter (`None` with metrics off).
    pub(super) exporter: Option<Exporter>,
    /// State-change events (backlog, recovery, stalls, connection).
    pub(crate) events: EventHub,
    /// Publishes waiting now: on a full lane, or for a broker's ack.
    pub(super) publishes_waiting: AtomicU64,
    /// True once the background tasks (publisher monitor, health loop)
    /// were started.
    pub(super) background: AtomicBool,
    /// The health probe's subscription, made at the first probe.
    pub(super) probe: tokio::sync::OnceCell<super::health::Probe>,
    /// The last nonce the health probe published.
    pub(super) probe_nonce: AtomicU64,
    /// A random token naming this bus (the default health topic).
    pub(super) token: u64,
    /// Reconnects of the broker connection so far (NATS).
    pub(super) reconnects: Arc<AtomicU64>,
    pub(super) this: Weak<BusInner>,
}

/// Counts a publish as waiting while it lives (cancel-safe), when the
/// publisher backlog is watched (`BusConfig::publisher_backlog`); costs an
/// `Option` check otherwise.
pub(super) struct Waiting<'a>(Option<&'a AtomicU64>);

impl<'a> Waiting<'a> {
    #[inline]
    pub(super) fn enter(bus: &'a BusInner) -> Self {
        if bus.config.publisher_backlog.is_none() {
            return Self(None);
        }
        bus.publishes_waiting.fetch_add(1, Ordering::Relaxed);
        Self(Some(&bus.publishes_waiting))
    }
}

impl Drop for Waiting<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(count) = self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl MonitorHost for BusInner {
    fn events(&self) -> &EventHub {
        &self.events
    }

    fn closing(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn publishes_waiting(&self) -> u64 {
        self.waiting_now()
    }
}

impl BusInner {
    /// User publishes accepted so far (dead letters not included).
    pub(super) fn published(&self) -> u64 {
        self.flight
            .finished()
            .wrapping_sub(self.refused.get())
            .wrapping_sub(self.republished.get())
    }

    /// Publishes waiting now: the count of publishes waiting on a full
    /// lane or for a broker's ack; on Kafka at least the producer's
    /// in-flight count (its queue and unacked records, which includes
    /// `try_publish`es).
    pub(crate) fn waiting_now(&self) -> u64 {
        let counted = self.publishes_waiting.load(Ordering::Relaxed);
        match &self.transport {
            #[cfg(feature = "kafka")]
            Transport::Kafka(k) => counted.max(k.in_flight()),
            _ => counted,
        }
    }

    /// Routes one record. `internal` marks a dead letter from a lane
    /// worker: it still flows while `close` drains the lanes, and it is
    /// counted apart from user publishes. An envelope publish checks its
    /// envelope before it comes here (see `bus::publish`).
    ///
    /// The refusal is boxed: the result then fits in two registers, so the
    /// common outcome is not written to memory and read back by the caller
    /// with loads of other widths than the stores (a store-forwarding
    /// stall that `perf` showed as the publish loop's hottest instruction
    /// with the refusal inline). Refusals are rare and pay an allocation.
    pub(super) async fn route(
        &self,
        topic: &str,
        body: Body,
        internal: bool,
    ) -> Result<Routed, Refused> {
        let body = match &self.config.trace_context {
            Some(hook) if !internal => crate::pipeline::trace::stamp_body(hook, body),
            _ => body,
        };
        // Waits outside the flight guard, so `close` never waits for it.
        if !internal && self.publish_limits.is_active() {
            Box::pin(self.publish_limits.acquire(topic)).await;
        }
        // A single flavor without the `nats` feature.
        #[allow(clippy::infallible_destructuring_match)]
        let memory = match &self.transport {
            Transport::Memory(m) => m,
            #[cfg(any(feature = "nats", feature = "kafka"))]
            _ => {
                // A task out of cooperative budget yields here (as the
                // client's await would) rather than take the boxed path.
                #[cfg(feature = "nats")]
                if !tokio::task::coop::has_budget_remaining() {
                    tokio::task::yield_now().await;
                }
                return match self.broker_now(topic, body, internal) {
                    BrokerNow::Done(routed) => routed,
                    BrokerNow::Rest(body, config, flight) => {
                        Box::pin(self.broker_rest(topic, config, body, flight, internal)).await
                    }
                };
            }
        };
        match self.memory_now(memory, topic, body, internal) {
            MemoryNow::Done(routed) => routed,
            // Only a publish that meets a full lane pays for a boxed wait,
            // which keeps the common path's future small.
            MemoryNow::Wait(wait, flight) => {
                Box::pin(self.finish_wait(wait, flight, internal)).await
            }
        }
    }

    pub(super) fn try_route(&self, topic: &str, body: Body) -> Result<(), TryPublishError<Body>> {
        let body = match &self.config.trace_context {
            Some(hook) => crate::pipeline::trace::stamp_body(hook, body),
            None => body,
        };
        if self.publish_limits.is_active() && !self.publish_limits.try_acquire(topic) {
            return Err(TryPublishError::RateLimited(body));
        }
        let Some(_flight) = self.enter_route(false) else {
            return Err(TryPublishError::Closed(body));
        };
        // A single flavor without the `nats` feature.
        #[allow(clippy::infallible_destructuring_match)]
        let memory = match &self.transport {
            Transport::Memory(m) => m,
            #[cfg(any(feature = "nats", feature = "kafka"))]
            _ => return self.try_route_broker(topic, body),
        };
        let routed = match memory.try_route(self.id, &self.registry, topic, body) {
            Ok(r) => r,
            Err(TryRouteError::Full(body)) => {
                self.refused.add(1);
                return Err(TryPublishError::Full(body));
            }
            Err(TryRouteError::Unknown(body)) => {
                if let Err(e) = validate_publish_name(topic) {
                    self.refused.add(1);
                    return Err(TryPublishError::InvalidTopic(body, e));
                }
                // First publish to this name: see `route`.
                if !self.registry.materialise(topic) {
                    Routed::Unrouted
                } else {
                    match memory.try_route(self.id, &self.registry, topic, body) {
                        Ok(r) => r,
                        Err(TryRouteError::Full(body)) => {
                            self.refused.add(1);
                            return Err(TryPublishError::Full(body));
                        }
                        Err(TryRouteError::Unknown(_)) => Routed::Unrouted,
                    }
                }
            }
        };
        self.count_unrouted(routed);
        Ok(())
    }

    /// Checks an envelope before it is published: `validate`, and on a bus
    /// that writes the JSON wire form, that the form can carry it.
    #[inline]
    pub(super) fn check_envelope(&self, e: &crate::Envelope) -> Result<(), crate::EnvelopeError> {
        e.validate()?;
        let json = match self.config.transport {
            crate::TransportKind::Nats => self.config.nats.jetstream.wire_format,
            crate::TransportKind::Kafka => self.config.kafka.wire_format,
            _ => crate::WireFormat::Binary,
        } == crate::WireFormat::Json;
        if json {
            return match e.validate_for(crate::WireFormat::Json) {
                Ok(()) => Ok(()),
                Err(crate::EncodeError::Invalid(e)) => Err(e),
                Err(other) => Err(crate::EnvelopeError::NotJsonForm(Box::new(other))),
            };
        }
        Ok(())
    }

    /// The configuration of `topic`, if it has one.
    pub(super) fn topic_options(&self, topic: &str) -> Option<Arc<TopicOptions>> {
        self.registry
            .load()
            .get(topic)
            .and_then(|e| e.config.clone())
    }

    /// `route` on a broker: the name is checked on every publish (no
    /// registry remembers it), then the broker's client publishes and waits
    /// for the broker to have it (NATS: queued for the connection, or the
    /// stream's ack for a persistent topic; Kafka: the delivery report).
    /// `config` is the topic's options as
    /// [`route_broker_now`](Self::route_broker_now) read them (NATS only).
    #[cfg(any(feature = "nats", feature = "kafka"))]
    pub(super) async fn route_broker(
        &self,
        topic: &str,
        config: Option<Arc<TopicOptions>>,
        body: Body,
        internal: bool,
    ) -> Result<Routed, PublishError<Body>> {
        if let Err(e) = validate_publish_name(topic) {
            if !internal {
                self.refused.add(1);
            }
            return Err(PublishError::InvalidTopic(body, e));
        }
        let sent = match &self.transport {
            #[cfg(feature = "nats")]
            Transport::Nats(n) => n.publish(topic, config.as_deref(), &body).await,
            #[cfg(feature = "kafka")]
            Transport::Kafka(k) => {
                drop(config);
                k.publish(topic, &body).await
            }
            Transport::Memory(_) => unreachable!("the memory transport routes in place"),
        };
        match sent {
            // Handed to the broker, which alone knows the subscribers.
            Ok(()) => Ok(Routed::Delivered(1)),
            Err(e) => {
                if !internal {
                    self.refused.add(1);
                }
                Err(PublishError::Transport(body, e))
            }
        }
    }

    /// `route` on a broker when it completes without waiting (core NATS
    /// with room in the client's queue), so that the common case of an
    /// ephemeral publish needs no boxed future. `Err` hands the body back
    /// when the publish must wait (a stream's ack, a full queue, Kafka's
    /// delivery report), with the topic's options for
    /// [`route_broker`](Self::route_broker), so a stream publish looks them
    /// up once.
    #[cfg(feature = "nats")]
    #[inline]
    #[allow(clippy::type_complexity)]
    pub(super) fn route_broker_now(
        &self,
        topic: &str,
        body: Body,
        internal: bool,
    ) -> Result<Result<Routed, PublishError<Body>>, (Body, Option<Arc<TopicOptions>>)> {
        let Transport::Nats(n) = &self.transport else {
            return Err((body, None));
        };
        let (stream, config) =
            crate::engine::reader::with_topic(self.id, &self.registry, topic, |e| {
                let config = e.and_then(|e| e.config.as_ref());
                let stream = n.is_persistent(config.map(|c| &**c));
                (stream, config.filter(|_| stream).cloned())
            });
        if stream {
            return Err((body, config));
        }
        if let Err(e) = validate_publish_name(topic) {
            if !internal {
                self.refused.add(1);
            }
            return Ok(Err(PublishError::InvalidTopic(body, e)));
        }
        match n.core().publish_now(topic, &body) {
            // The client's queue is full: the awaited publish needs the
            // options too (a second lookup, on this rare path only).
            None => Err((body, self.topic_options(topic))),
            Some(Ok(())) => Ok(Ok(Routed::Delivered(1))),
            Some(Err(e)) => {
                if !internal {
                    self.refused.add(1);
                }
                Ok(Err(PublishError::Transport(body, e)))
            }
        }
    }

    /// `try_route` on a broker: `Full` when the client has no room now.
    #[cfg(any(feature = "nats", feature = "kafka"))]
    fn try_route_broker(&self, topic: &str, body: Body) -> Result<(), TryPublishError<Body>> {
        if let Err(e) = validate_publish_name(topic) {
            self.refused.add(1);
            return Err(TryPublishError::InvalidTopic(body, e));
        }
        let sent = match &self.transport {
            #[cfg(feature = "nats")]
            Transport::Nats(n) => {
                let config = self.topic_options(topic);
                n.try_publish(topic, config.as_deref(), body)
            }
            #[cfg(feature = "kafka")]
            Transport::Kafka(k) => k.try_publish(topic, body),
            Transport::Memory(_) => unreachable!("the memory transport routes in place"),
        };
        match sent {
            Ok(None) => Ok(()),
            Ok(Some(body)) => {
                self.refused.add(1);
                Err(TryPublishError::Full(body))
            }
            Err((body, e)) => {
                self.refused.add(1);
                Err(TryPublishError::Transport(body, e))
            }
        }
    }

    #[inline]
    pub(super) fn count_unrouted(&self, routed: Routed) {
        if routed == Routed::Unrouted {
            self.unrouted.add(1);
        }
    }

    pub(super) fn set_topic_config(&self, topic: &str, options: Option<TopicOptions>) -> bool {
        let limit = options.as_ref().and_then(|o| o.publish_rate_limit.as_ref());
        self.publish_limits.set_topic(topic, limit);
        self.registry.update(topic, |entry| {
            let mut e = entry.cloned().unwrap_or_default();
            let had = e.config.is_some();
            e.config = options.map(Arc::new);
            (if e.is_empty() { None } else { Some(e) }, had)
        })
    }

    /// The configured topics and their options, sorted by topic.
    pub(super) fn configured_topics(&self) -> Vec<(String, TopicOptions)> {
        let snapshot = self.registry.load();
        let mut topics: Vec<(String, TopicOptions)> = snapshot
            .iter()
            .filter_map(|(t, e)| Some((t.to_owned(), e.config.as_deref()?.clone())))
            .collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        topics
    }

    /// The one drain behind `close`: waits for quiescence, closes the lanes,
    /// joins the workers and keeps their subscriptions' final counts.
    pub(super) async fn drain_and_stop(&self, deadline: Duration) -> Result<(), CloseError> {
        let until = Instant::now() + deadline;
        let mut broker = HashMap::new();
        let feeds: Vec<JoinHandle<()>> = self
            .live
            .lock()
            .values_mut()
            .filter_map(|l| {
                let feed = l.feed.take()?;
                if let Some(stats) = feed.broker_stats() {
                    broker.insert(l.core.id, stats);
                }
                Some(feed.stop())
            })
            .collect();
        for task in feeds {
            let abort = task.abort_handle();
            let remaining = until.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, task).await.is_err() {
                abort.abort();
            }
        }
        let quiet = self.wait_quiescent(until).await;
        let live: Vec<Live> = {
            let mut map = self.live.lock();
            map.drain().map(|(_, l)| l).collect()
        };
        for l in &live {
            if let Some(monitor) = &l.monitor {
                monitor.abort();
            }
            l.core.lanes.close();
        }
        let mut pending = 0;
        let mut finals = Vec::with_capacity(live.len());
        for l in live {
            let remaining = until.saturating_duration_since(Instant::now());
            let mut timed_out = false;
            for w in l.workers {
                if timed_out {
                    w.abort();
                    continue;
                }
                let abort = w.abort_handle();
                if tokio::time::timeout(remaining, w).await.is_err() {
                    abort.abort();
                    timed_out = true;
                }
            }
            pending += l.core.pending();
            let mut stats = subscription_stats(&l.core, &l.watch);
            stats.broker = broker.remove(&l.core.id);
            finals.push(stats);
        }
        self.closed_subs.lock().extend(finals);
        #[cfg(feature = "nats")]
        if let Transport::Nats(n) = &self.transport {
            // Nacks of records dropped unsettled above are sent by tasks
            // of their own: let them queue theirs before the round trip.
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            n.close().await;
        }
        #[cfg(feature = "kafka")]
        if let Transport::Kafka(k) = &self.transport {
            k.close().await;
        }
        // The final figures, once the lanes are done.
        self.export_metrics();
        if quiet && pending == 0 {
            Ok(())
        } else {
            Err(CloseError::Timeout { pending })
        }
    }

    /// Waits until every lane has processed all it accepted and no new
    /// record arrived during a full scan. False if `until` passed first.
    pub(super) async fn wait_quiescent(&self, until: Instant) -> bool {
        let mut pause = Duration::from_micros(200);
        loop {
            let cores: Vec<Arc<SubscriptionCore>> =
                self.live.lock().values().map(|l| l.core.clone()).collect();
            let before: u64 = cores.iter().map(|c| c.claimed()).sum();
            let idle = self.flight.in_flight() == 0 && cores.iter().all(|c| c.is_idle());
            let after: u64 = cores.iter().map(|c| c.claimed()).sum();
            if idle && before == after {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }
}

impl BusInner {
    /// Writes the figures to the `metrics` facade now (metrics on only).
    pub(super) fn export_metrics(&self) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        let live = self.live.lock();
        exporter.export(self.published(), self.unrouted.get(), |id| {
            live.get(&id)
                .map(|l| l.feed.as_ref().and_then(|f| f.broker_stats()))
        });
    }
}

impl Exports for BusInner {
    fn export_tick(&self) -> bool {
        if self.close_outcome.initialized() {
            // `close` ran the final export.
            return false;
        }
        self.export_metrics();
        true
    }
}

impl Republish for BusInner {
    fn republish<'a>(
        &'a self,
        topic: &'a str,
        msg: OutboundMessage,
    ) -> BoxFuture<'a, Result<Republished, String>> {
        Box::pin(async move {
            match self.route(topic, Body::from_outbound(msg), true).await {
                Ok(Routed::Unrouted) => Ok(Republished::NoSubscriber),
                Ok(Routed::Delivered(_)) => Ok(Republished::Delivered),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

impl Drop for BusInner {
    fn drop(&mut self) {
        // The last handle is gone without close(): let the workers drain
        // what they hold and stop.
        for l in self.live.get_mut().values() {
            l.core.lanes.close();
        }
    }
}
