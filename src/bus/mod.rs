//! The public [`Bus`]: publish, subscribe, configure, observe, close.
//!
//! A `Bus` is a cheap handle (`Arc`) on one independent bus instance;
//! instances share nothing, so a process can run several (the dual-bus
//! pattern: one for domain events, one for plain messages). The publish
//! path is: closed flag (one atomic load) → transport route (memory: the
//! registry snapshot and the lanes) → sharded counters. No lock is taken.
//!
//! `close()` refuses new publishes at once, waits until every lane has
//! processed everything it accepted (dead letters the workers publish
//! meanwhile still get through), closes the lanes, joins the workers and
//! returns; past the configured deadline it stops the workers and reports
//! how many records were left.
//!
//! On NATS and Kafka the same API keeps the broker's semantics: see the
//! transports' docs (`Bus::connect`, the README's sections on them).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::engine::flight::InFlight;
use crate::engine::lanes::Body;
use crate::engine::registry::Registry;
use crate::engine::SubscriptionCore;
use crate::pipeline::metrics::{ShardedCounter, SubscriptionStats};
use crate::transport::memory::Memory;
use crate::transport::Transport;
use crate::{
    BusConfig, BusStats, CloseError, ConfigError, Envelope, FromEnvelope, Handler, Message,
    OutboundMessage, PublishError, SubscribeError, SubscribeOptions, Subscription, TransportError,
    TransportKind, TryPublishError,
};

mod health;
mod inner;
mod publish;
mod subscribe;
mod topics;

pub use health::{HealthOptions, HealthPart, HealthStatus};

pub(crate) use inner::BusInner;

/// Why [`Bus::connect`] could not build a bus.
///
/// # Examples
///
/// ```
/// use lanebus::{BuildError, ConfigError};
///
/// let e = BuildError::from(ConfigError::Io { path: "bus.yaml".into(), message: "not found".into() });
/// assert!(matches!(e, BuildError::Config(_)));
/// assert_eq!(e.to_string(), "cannot read config file bus.yaml: not found");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not be set up (NATS: the connection failed;
    /// Kafka: the brokers did not answer; either: a configured topic's
    /// stream or topic could not be made ready).
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A handle on one event bus. Cloning is cheap; every clone drives the same
/// bus.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lanebus::{Bus, Envelope, HandlerError};
///
/// let bus = Bus::memory();
/// let sub = bus
///     .subscribe_envelope("orders.events", |ev: Envelope| async move {
///         println!("{} v{} of {}", ev.event_type, ev.event_version, ev.aggregate_id);
///         Ok::<(), HandlerError>(())
///     })
///     .await?;
/// bus.publish_envelope("orders.events", Envelope::new("order-1", "OrderPlaced", 1, "{}"))
///     .await?;
/// bus.close().await?;
/// assert_eq!(sub.stats().total.delivered, 1);
/// # Ok(()) }
/// ```
///
/// # On core NATS (`type: nats`, cargo feature `nats`)
///
/// Built with [`Bus::connect`]. Topics are NATS subjects with no stream
/// and no ack: at-most-once, as on the server itself.
///
/// - `publish` returns once the client has queued the message (the client
///   writes it out in the background); a failure is
///   [`PublishError::Transport`] with the value handed back. The routing
///   key travels in the `lanebus-key` header, other headers as NATS
///   headers; an envelope goes as its binary encoding, keyed by its
///   aggregate ID. The server alone knows the subscribers, so nothing is
///   counted as unrouted.
/// - `try_publish` never waits: when the client's queue has no room at that
///   moment it hands the value back as `Full`.
/// - A subscription is a client subscription (a queue subscription for a
///   group, so the server shares the work inside a group; `*` and `>`
///   subscribe natively, and handlers see the exact subject). Its consumer
///   task waits while the lanes are full; meanwhile the client buffers up
///   to 64 Ki messages per subscription and drops what exceeds that,
///   reporting [`ConnectionEvent::SlowConsumer`](crate::ConnectionEvent).
/// - Dead letters are published to their NATS subject like any record.
/// - `unsubscribe` and `close` first let each subscription take what the
///   server sent it for this bus's earlier publishes (a server round trip),
///   then drain the lanes as on the memory transport; `close` ends with a
///   round trip, so the dead letters of the drain are at the server.
///   Messages other connections publish while a subscription stops may be
///   lost.
/// - [`Bus::flush`] waits for the records already in the lanes; records
///   still on their way through the server are not waited for.
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
}

/// What [`Bus::health`] and [`Bus::health_check`] found: an overall
/// status and one entry per part (see [`HealthPart`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// The transport's name.
    pub transport: &'static str,
    /// Live subscriptions (the health probe's own not counted).
    pub subscriptions: usize,
    /// Their lanes in all.
    pub lanes: usize,
    /// Round trip of a probe record through a lane ring.
    #[serde(with = "crate::options::duration")]
    pub round_trip: Duration,
    /// The worst part's status.
    pub status: HealthStatus,
    /// Each part checked, in order: bus, transport, subscriptions, lanes,
    /// publishers, probe.
    pub parts: Vec<HealthPart>,
    /// The end-to-end probe's round trip through the transport, when it
    /// ran and came back ([`HealthOptions::probe`]).
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub probe: Option<Duration>,
    /// Reconnects of the broker connection since the bus was built (NATS;
    /// 0 elsewhere).
    pub reconnects: u64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("transport", &self.inner.config.transport)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A new in-process bus with the default configuration.
    pub fn memory() -> Self {
        Self::build(BusConfig::memory(), Transport::Memory(Memory))
    }

    /// A bus built from a configuration (validated first), on any
    /// transport: the way to build a NATS bus, since it connects to the
    /// servers before it returns.
    ///
    /// `type: memory` builds at once, as [`from_config`](Self::from_config)
    /// does. `type: nats` (cargo feature `nats`) connects once with the
    /// config's `nats` options (the first attempt does not retry: a wrong
    /// password or an unreachable server is an error at once) and from then
    /// on reconnects by itself; its events come from `Bus::connection_events`.
    ///
    /// # Errors
    ///
    /// [`BuildError::Config`] for an invalid config (including `type: nats`
    /// on a build without the `nats` feature), [`BuildError::Transport`]
    /// when the connection fails (its message names the cause).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lanebus::BuildError> {
    /// use lanebus::{Bus, BusConfig};
    ///
    /// let bus = Bus::connect(BusConfig::from_yaml_str("type: memory\n")?).await?;
    /// assert_eq!(bus.health_check().await.unwrap().transport, "memory");
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: BusConfig) -> Result<Self, BuildError> {
        config.validate()?;
        let transport = match config.transport {
            TransportKind::Memory => Transport::Memory(Memory),
            #[cfg(feature = "nats")]
            TransportKind::Nats => {
                let nats = crate::transport::nats::Nats::connect(&config.nats).await?;
                // The streams of the configured persistent topics are made
                // ready (or checked, per the strategy) before the bus is.
                for (topic, options) in &config.topics {
                    if nats.is_persistent(Some(options)) {
                        nats.streams().ensure(topic, options).await?;
                    }
                }
                Transport::Nats(Box::new(nats))
            }
            #[cfg(not(feature = "nats"))]
            TransportKind::Nats => unreachable!("validate refuses nats without the feature"),
            #[cfg(feature = "kafka")]
            TransportKind::Kafka => {
                let kafka = crate::transport::kafka::Kafka::connect(&config.kafka).await?;
                // Configured topics are made ready (or checked) first.
                for (topic, options) in &config.topics {
                    kafka.topics().ensure(topic, options).await?;
                }
                Transport::Kafka(Box::new(kafka))
            }
            #[cfg(not(feature = "kafka"))]
            TransportKind::Kafka => unreachable!("validate refuses kafka without the feature"),
        };
        Ok(Self::build(config, transport))
    }

    /// A bus built from a configuration (validated first), without
    /// connecting anywhere: memory only. A config with `type: nats` is an
    /// error on the field `type` that points to [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Bus, BusConfig};
    ///
    /// let bus = Bus::from_config(BusConfig::from_yaml_str("type: memory\n")?)?;
    /// # let _ = bus;
    /// # Ok::<(), lanebus::ConfigError>(())
    /// ```
    pub fn from_config(config: BusConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        match config.transport {
            TransportKind::Memory => Ok(Self::build(config, Transport::Memory(Memory))),
            TransportKind::Nats => Err(ConfigError::invalid(
                "type",
                "a nats bus connects to its servers: build it with `Bus::connect(config).await`",
            )),
            TransportKind::Kafka => Err(ConfigError::invalid(
                "type",
                "a kafka bus connects to its brokers: build it with `Bus::connect(config).await`",
            )),
        }
    }

    fn build(config: BusConfig, transport: Transport) -> Self {
        let topics: Vec<_> = config
            .topics
            .iter()
            .map(|(t, o)| (t.clone(), o.clone()))
            .collect();
        static NEXT_BUS_ID: AtomicU64 = AtomicU64::new(1);
        let inner = Arc::new_cyclic(|this| BusInner {
            id: NEXT_BUS_ID.fetch_add(1, Ordering::Relaxed),
            registry: Registry::new(),
            closed: AtomicBool::new(false),
            flight: InFlight::default(),
            refused: ShardedCounter::default(),
            unrouted: ShardedCounter::default(),
            republished: ShardedCounter::default(),
            next_id: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
            retired: Arc::default(),
            closed_subs: Mutex::new(Vec::new()),
            close_outcome: tokio::sync::OnceCell::new(),
            publish_limits: crate::pipeline::rate_limit::PublishLimits::new(
                config.publish_rate_limit.as_ref(),
            ),
            exporter: crate::pipeline::export::Exporter::new(&config.metrics),
            transport,
            config,
            events: crate::events::EventHub::default(),
            publishes_waiting: AtomicU64::new(0),
            background: AtomicBool::new(false),
            probe: tokio::sync::OnceCell::new(),
            probe_nonce: AtomicU64::new(0),
            token: rand::random(),
            reconnects: Arc::new(AtomicU64::new(0)),
            this: this.clone(),
        });
        if let (Some(exporter), Ok(runtime)) =
            (&inner.exporter, tokio::runtime::Handle::try_current())
        {
            // Otherwise the first `subscribe` (always on a runtime) starts it.
            exporter.start(&runtime, Arc::downgrade(&inner));
        }
        for (topic, options) in topics {
            crate::topic::warn_unhonoured(&topic, &options, &inner.config);
            inner.set_topic_config(&topic, Some(options));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            inner.start_background(&runtime);
            #[cfg(feature = "nats")]
            if let Transport::Nats(n) = &inner.transport {
                crate::events::forward_connection_events(
                    &runtime,
                    n.events(),
                    inner.events.sender(),
                    inner.reconnects.clone(),
                );
            }
        }
        Self { inner }
    }

    /// The connection's events from now on ([`ConnectionEvent`]:
    /// disconnects, reconnects, slow consumers, errors) on a NATS bus;
    /// `None` on the memory transport. A receiver that falls more than 64
    /// events behind loses the oldest and is told how many.
    ///
    /// [`ConnectionEvent`]: crate::ConnectionEvent
    #[cfg(feature = "nats")]
    pub fn connection_events(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::ConnectionEvent>> {
        match &self.inner.transport {
            #[cfg(feature = "nats")]
            Transport::Nats(n) => Some(n.events()),
            _ => None,
        }
    }

    /// The configuration this bus was built with.
    pub fn config(&self) -> &BusConfig {
        &self.inner.config
    }

    /// Publishes a plain message, waiting while a lane is full.
    ///
    /// A topic without subscribers accepts it and counts it as unrouted.
    ///
    /// A plain message has no key, so its records are spread over the
    /// lanes. That holds for an envelope encoded to bytes too (say, the Go
    /// JSON form): an envelope subscription decodes it, but its lane was
    /// picked without the aggregate ID, so per-aggregate order is not kept.
    /// Publish such bytes with the aggregate ID as the key
    /// ([`publish_with`](Self::publish_with) and
    /// [`OutboundMessage::with_key`]), or decode them and use
    /// [`publish_envelope`](Self::publish_envelope).
    // Not an `async fn`: its state machine moved the whole result (the
    // error's room included) through two stack copies on every `Ok`; the
    // mapped route future writes `Ok(())` once.
    pub fn publish<'a>(
        &'a self,
        topic: &'a str,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<(), PublishError<Bytes>>> + Send + 'a {
        let body = Body::plain(payload.into());
        futures_util::FutureExt::map(
            self.inner.route(topic, body, false),
            |routed| match routed {
                Ok(_) => Ok(()),
                Err(e) => Err((*e).map_value(Body::into_payload)),
            },
        )
    }

    /// Publishes a plain message with a key and/or headers.
    pub async fn publish_with(
        &self,
        topic: &str,
        msg: OutboundMessage,
    ) -> Result<(), PublishError<OutboundMessage>> {
        match self
            .inner
            .route(topic, Body::from_outbound(msg), false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err((*e).map_value(Body::into_outbound)),
        }
    }

    /// Publishes without waiting: `Full` hands the payload back when a lane
    /// is full (nothing is delivered to any subscriber then). On NATS,
    /// `Full` means the client's outgoing queue has no room at that moment
    /// (nothing was sent); see [`Bus`]'s section on core NATS.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<(), TryPublishError<Bytes>> {
        let body = Body::plain(payload.into());
        self.inner
            .try_route(topic, body)
            .map_err(|e| e.map_value(Body::into_payload))
    }

    /// [`try_publish`](Self::try_publish) with a key and/or headers.
    pub fn try_publish_with(
        &self,
        topic: &str,
        msg: OutboundMessage,
    ) -> Result<(), TryPublishError<OutboundMessage>> {
        self.inner
            .try_route(topic, Body::from_outbound(msg))
            .map_err(|e| e.map_value(Body::into_outbound))
    }

    /// Validates and publishes an envelope; every event of one aggregate
    /// goes to the same lane of each subscription, in publish order.
    ///
    /// The payload is opaque here: the memory transport hands envelopes
    /// over without encoding them, so any payload bytes are accepted. A
    /// transport that writes the Go-compatible JSON form refuses, at
    /// publish, an envelope that form cannot carry (a payload that is not
    /// one JSON value; see [`Envelope::encode_json`]).
    ///
    /// The envelope moves into a shared allocation when this is called, so
    /// the returned future holds one pointer rather than the envelope;
    /// nothing is validated or published until it is polled.
    // The error hands the envelope back by value, as every publish error
    // hands its value back. Inlined into the caller, with the move into
    // the shared allocation a call that returns one pointer: returned from
    // a call, the future was written to memory and read back with wider
    // loads than its stores (a store-forwarding stall that was the hottest
    // instruction of the bench tool's keyed publish loop).
    #[allow(clippy::result_large_err)]
    #[inline(always)]
    pub fn publish_envelope<'a>(
        &'a self,
        topic: &'a str,
        envelope: Envelope,
    ) -> impl Future<Output = Result<(), PublishError<Envelope>>> + Send + 'a {
        publish::PublishEnvelope::new(&self.inner, topic, crate::engine::recycle::share(envelope))
    }

    /// [`publish_envelope`](Self::publish_envelope) without waiting.
    // The error hands the envelope back by value, as every publish error
    // hands its value back; boxing it would allocate on the refusal path.
    #[allow(clippy::result_large_err)]
    pub fn try_publish_envelope(
        &self,
        topic: &str,
        envelope: Envelope,
    ) -> Result<(), TryPublishError<Envelope>> {
        if let Err(e) = self.inner.check_envelope(&envelope) {
            return Err(TryPublishError::InvalidEnvelope(envelope, e));
        }
        self.inner
            .try_route(
                topic,
                Body::Envelope(crate::engine::recycle::share(envelope)),
            )
            .map_err(|e| e.map_value(Body::into_envelope))
    }

    /// Subscribes a plain-message handler with the bus's default options.
    pub async fn subscribe<H: Handler<Message>>(
        &self,
        topic: &str,
        handler: H,
    ) -> Result<Subscription, SubscribeError> {
        let options = self.inner.config.subscribe.clone();
        self.inner
            .subscribe::<Message, H>(topic, options, handler)
            .await
    }

    /// Subscribes a plain-message handler with these options.
    pub async fn subscribe_with<H: Handler<Message>>(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: H,
    ) -> Result<Subscription, SubscribeError> {
        self.inner
            .subscribe::<Message, H>(topic, options, handler)
            .await
    }

    /// Subscribes an envelope handler with the bus's default options.
    /// Records that do not decode as envelopes are dead-lettered as
    /// `malformed`.
    ///
    /// Per-aggregate order holds for envelopes published with
    /// [`publish_envelope`](Self::publish_envelope), and for encoded
    /// envelopes published with their aggregate ID as the key; encoded
    /// envelopes published without a key are spread over the lanes (see
    /// [`publish`](Self::publish)).
    ///
    /// The handler takes `Envelope` (its own copy per attempt) or
    /// `Arc<Envelope>` (shared with the lane, no copy); see
    /// [`FromEnvelope`].
    pub async fn subscribe_envelope<M: FromEnvelope, H: Handler<M>>(
        &self,
        topic: &str,
        handler: H,
    ) -> Result<Subscription, SubscribeError> {
        let options = self.inner.config.subscribe.clone();
        self.inner.subscribe::<M, H>(topic, options, handler).await
    }

    /// Subscribes an envelope handler with these options.
    pub async fn subscribe_envelope_with<M: FromEnvelope, H: Handler<M>>(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: H,
    ) -> Result<Subscription, SubscribeError> {
        self.inner.subscribe::<M, H>(topic, options, handler).await
    }

    /// The health of each live subscription's broker consumer, as
    /// [`health_check`](Self::health_check) reads it (for tests).
    #[cfg(all(test, feature = "kafka"))]
    pub(crate) fn feed_health(&self) -> Vec<Result<(), crate::TransportError>> {
        let live = self.inner.live.lock();
        live.values()
            .filter_map(|l| l.feed.as_ref().map(|f| f.health()))
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> BusStats {
        let subs: Vec<SubscriptionStats> = self
            .inner
            .live
            .lock()
            .values()
            .map(|l| {
                let mut stats = subscription_stats(&l.core, &l.watch);
                stats.broker = l.feed.as_ref().and_then(|f| f.broker_stats());
                stats
            })
            .collect();
        let mut stats = BusStats::new(self.inner.published(), self.inner.unrouted.get(), subs);
        stats.publishes_waiting = self.inner.waiting_now();
        stats.absorb_retired(&self.inner.retired.lock());
        // Subscriptions `close` stopped: listed with their final counts,
        // which the retired totals already hold.
        stats.list_closed(&self.inner.closed_subs.lock());
        stats
    }

    /// Writes the bus's figures to the `metrics` facade now, as the export
    /// task does every `metrics.interval`; does nothing with metrics off
    /// (see [`MetricsOptions`](crate::MetricsOptions)). After
    /// [`flush`](Self::flush), with no publish under way, the exported
    /// counters equal [`stats`](Self::stats).
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{Bus, BusConfig, MetricsOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut config = BusConfig::memory();
    /// config.metrics = MetricsOptions::on("orders");
    /// let bus = Bus::from_config(config)?;
    /// bus.publish("nowhere", "x").await?;
    /// bus.export_metrics(); // lanebus_unrouted_total{bus="orders"} = 1
    /// # Ok(()) }
    /// ```
    pub fn export_metrics(&self) {
        self.inner.export_metrics();
    }

    /// True once [`close`](Self::close) has begun.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Closes the bus with the configured deadline (`close_timeout`).
    pub async fn close(&self) -> Result<(), CloseError> {
        self.close_within(self.inner.config.close_timeout).await
    }

    /// Refuses new publishes, drains every lane within `deadline`, stops the
    /// workers and returns. Nothing accepted before is lost unless the
    /// deadline passes, which `CloseError::Timeout` reports.
    ///
    /// The drain runs once: calling `close` again (or on a clone) waits for
    /// that drain and returns its outcome, so a close that timed out keeps
    /// reporting `Timeout` (the records it left were never handled).
    pub async fn close_within(&self, deadline: Duration) -> Result<(), CloseError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        inner
            .close_outcome
            .get_or_init(|| inner.drain_and_stop(deadline))
            .await
            .clone()
    }

    /// Waits until every record accepted so far (every publish that has
    /// returned `Ok`, on every subscription) has been handled, skipped or
    /// dead-lettered, without closing the bus. Records published while it
    /// waits are not waited for, nor are the dead letters it causes to be
    /// handled on their own topic. Returns at once on a closed bus.
    ///
    /// On a broker (NATS), "accepted" means delivered into this bus's
    /// lanes: records the server holds or has in flight are not waited for.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use lanebus::{Bus, HandlerError, Message};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::memory();
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = seen.clone();
    /// let _sub = bus
    ///     .subscribe("ticks", move |_m: Message| {
    ///         let counter = counter.clone();
    ///         async move {
    ///             counter.fetch_add(1, Ordering::Relaxed);
    ///             Ok::<(), HandlerError>(())
    ///         }
    ///     })
    ///     .await?;
    /// for _ in 0..100 {
    ///     bus.publish("ticks", "t").await?;
    /// }
    /// bus.flush().await;
    /// assert_eq!(seen.load(Ordering::Relaxed), 100);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) {
        let marks: Vec<(Arc<SubscriptionCore>, Vec<u64>)> = self
            .inner
            .live
            .lock()
            .values()
            .map(|l| {
                let claimed = l
                    .core
                    .lanes
                    .iter()
                    .map(|lane| lane.ring.claimed())
                    .collect();
                (l.core.clone(), claimed)
            })
            .collect();
        let mut pause = Duration::from_micros(50);
        loop {
            let done = marks.iter().all(|(core, claimed)| {
                core.lanes
                    .iter()
                    .zip(claimed)
                    .all(|(lane, &mark)| lane.processed() >= mark)
            });
            if done || self.inner.close_outcome.initialized() {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }
}

#[cfg(feature = "bench-internals")]
impl Bus {
    /// The bus's ID and registry, for the benches' lookup (`__bench`).
    pub(crate) fn topics(&self) -> (u64, &Registry<crate::engine::TopicEntry>) {
        (self.inner.id, &self.inner.registry)
    }
}

pub(crate) fn subscription_stats(
    core: &SubscriptionCore,
    watch: &crate::pipeline::monitor::Watch,
) -> SubscriptionStats {
    let mut stats = SubscriptionStats::new(
        core.id,
        core.topic.to_string(),
        core.kind,
        core.lanes.stats(),
    );
    stats.recovering = watch.recovering();
    let last = watch.snapshot();
    if last.checked {
        let mut backlog = crate::BacklogStats::default();
        backlog.backlog = last.backlog;
        backlog.oldest_age = last.oldest_age;
        backlog.stalled = last
            .stalled
            .iter()
            .map(|&(lane, age)| crate::StalledLane::new(lane, age))
            .collect();
        stats.backlog = Some(backlog);
    }
    stats
}
