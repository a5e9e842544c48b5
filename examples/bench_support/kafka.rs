//! The bench tool's Kafka rows (`--transport kafka`, cargo feature
//! `kafka`): lanebus on a real Apache Kafka broker, beside raw rdkafka
//! doing the same work in the same run.
//!
//! - `persistent`: plain messages keyed over 1,000 keys, each
//!   `publish_with` awaiting its delivery report with `--window` publishes
//!   in flight, handled by a subscription (a consumer group member) with
//!   `--lanes` lanes. Baseline: a `FutureProducer` with the same window of
//!   `send` futures (same keys), and a `BaseConsumer` in a group of its own
//!   (`enable.auto.commit=false`) polled on a thread that runs the same
//!   handler, stores each record's offset and commits the stored offsets
//!   every 1,000 records or 200 ms, whichever comes first
//!   (`kafka_raw.rs`) (lanebus commits its settled prefix every
//!   `commit_interval`, set to the same 200 ms).
//! - `keyed`: envelopes over 1,000 aggregate IDs (`publish_envelope`,
//!   `subscribe_envelope` on `--keyed-lanes` lanes), each aggregate's
//!   versions checked to arrive 1, 2, 3, … Baseline: the envelopes'
//!   `encode()` bytes produced raw keyed by aggregate ID, decoded by the
//!   raw consumer, same order check.
//! - `plain`: unkeyed plain messages (the producer spreads them over the
//!   partitions, lanebus over its lanes); baseline: the same records raw.
//!
//! Every topic has [`PARTITIONS`] partitions. Every row also measures
//! latency (p50/p99, publish → handler; the baseline's in the `base
//! p50`/`base p99` columns) at half the throughput lanebus reached in that
//! run, both sides at that rate (`--no-latency` skips it).
//!
//! With the default window (256) both sides are bound by the delivery
//! round trip (`linger.ms` 5 plus the broker's append), near 40,000
//! msgs/s here. Larger windows (`--window 2048`) make the broker the
//! bound; on a 2-core machine its JVM's C2 compiler then competes with
//! both clients for the cores for minutes (a third of the CPU samples),
//! and the side using more client CPU per record loses more:
//! `KAFKA_JVM_OPTS=-XX:TieredStopAtLevel=1` (read by `scripts/kafka.sh`)
//! keeps to the C1 compiler and steadies the rows. `--verbose` prints
//! each phase's publish and last-handled times: a consumer that keeps up
//! handles its last record within milliseconds of the last delivery
//! report.
//!
//! # Algorithm
//!
//! - Broker: the one `--brokers` names, else one started here through the
//!   integration tests' harness (`tests/common/kafka.rs`: a single-node
//!   KRaft `kafka.Kafka` from the jars `scripts/kafka.sh fetch` put in
//!   `.cache/kafka`, on free loopback ports, temporary storage), killed at
//!   the end.
//! - Phases: a phase is one side's throughput or latency measurement. Each
//!   has a topic of its own, `bench.<row>.<pid>.<n>`, created through the
//!   admin API (`configure_topic`, [`PARTITIONS`] partitions) before its
//!   clock starts and removed after it (`remove_topic`): by the phase's bus
//!   on the lanebus side, by a lanebus bus kept for that on the raw side.
//!   Each consumer is in a group of its own, with a 6 s session timeout.
//! - Warm-up: before the clock starts, one warm-up record (payload
//!   [`WARMUP`], or an envelope of type `WarmUp`) is published and the
//!   phase waits until its handler saw it: the group has joined and has its
//!   partitions. Handlers do not count it.
//! - Publishing: as on NATS (`publish.rs`): one task keeps up to
//!   `--window` publishes in flight, each waiting for its delivery report;
//!   paced in latency phases; keyed messages released in per-aggregate
//!   order.
//! - Waiting and runs: shared with the NATS rows (`broker.rs`). A phase
//!   ends when every message was handled, or when nothing has been handled
//!   for 10 s; first one unmeasured throughput phase of each side (the
//!   broker's JVM warms up), then every run measures both sides, lanebus
//!   first in even runs and the baseline first in odd ones; the table
//!   gives the medians.
//!
//! # Invariants
//!
//! - Nothing is dropped to go faster: every publish on both sides waits
//!   for its delivery report (`acks=all`, idempotent producer, `linger.ms`
//!   5 on both sides: lanebus's defaults), and both consumers commit.
//! - The raw consumer's commits are checked: at its close, the broker's
//!   committed offsets of its group add up to every record it took.
//! - A lost message or a per-key order violation fails the tool after the
//!   table is printed (with the violations listed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanebus::{Bus, BusConfig, Envelope, HandlerError, Message, OutboundMessage, TopicOptions};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::broker::{self, close_bus, side, Broker, Common, Payloads, Scenario};
use super::measure::{OrderCheck, Probe, Report};
use super::publish::{drive, OrSay};
use super::{lane_options, Args};

#[path = "kafka_raw.rs"]
mod raw;

use raw::{consume, raw_consumer, raw_producer, send};

// The bench uses the start, the bootstrap address and the drop of the
// harness.
#[allow(dead_code)]
#[path = "../../tests/common/kafka.rs"]
mod server;

/// How long a phase waits for its warm-up record (the group join).
const WARM_UP_WITHIN: Duration = Duration::from_secs(60);

/// Partitions of every bench topic.
const PARTITIONS: u32 = 8;

/// Keys of the `persistent` row's messages.
const KEYS: usize = 1_000;

/// Messages of the unmeasured phases that warm the broker up.
const WARM_UP_MESSAGES: u64 = 100_000;

/// The payload of the plain rows' warm-up record.
const WARMUP: &[u8] = b"lanebus-bench-warm-up";

/// The event type of the keyed row's warm-up envelope.
const WARMUP_TYPE: &str = "WarmUp";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Persistent,
    Keyed,
    Plain,
}

impl Scenario for Row {
    const TRANSPORT: &'static str = "kafka";
    const ALL: &'static [Row] = &[Row::Persistent, Row::Keyed, Row::Plain];

    fn name(self) -> &'static str {
        match self {
            Row::Persistent => "persistent",
            Row::Keyed => "keyed",
            Row::Plain => "plain",
        }
    }

    fn keyed(self) -> bool {
        self == Row::Keyed
    }
}

/// What every phase needs.
struct Ctx {
    brokers: String,
    common: Common,
    /// Creates and removes the raw side's topics.
    admin: Bus,
    /// The `persistent` row's keys.
    keys: Vec<String>,
}

/// A lanebus bus on `brokers`: lanebus's producer defaults, a 6 s session
/// timeout and commits every 200 ms.
async fn connect(brokers: &str, client_id: &str) -> Result<Bus, String> {
    let yaml = format!(
        "type: kafka\nkafka:\n  brokers: [\"{brokers}\"]\n  client_id: {client_id}\n  \
         consumer: {{ session_timeout: 6s, heartbeat_interval: 500ms, commit_interval: 200ms }}\n"
    );
    let config = BusConfig::from_yaml_str(&yaml).or_say("lanebus config")?;
    Bus::connect(config).await.or_say("lanebus connect")
}

fn topic_options() -> TopicOptions {
    TopicOptions::persistent().partitions(PARTITIONS)
}

/// What a phase's handlers report to.
#[derive(Clone)]
struct Seen {
    probe: Probe,
    order: Option<Arc<OrderCheck>>,
    /// Set when the warm-up record was handled.
    warm: Arc<AtomicBool>,
}

impl Seen {
    /// A plain message's payload.
    fn plain(&self, payload: &[u8]) {
        if payload == WARMUP {
            self.warm.store(true, Ordering::Release);
        } else {
            self.probe.hit(payload);
        }
    }

    /// An envelope, order-checked.
    fn envelope(&self, ev: &Envelope) {
        if ev.event_type == WARMUP_TYPE {
            self.warm.store(true, Ordering::Release);
            return;
        }
        if let Some(order) = &self.order {
            order.see(&ev.aggregate_id, ev.event_version);
        }
        self.probe.hit(&ev.payload);
    }

    async fn wait_warm(&self) -> Result<(), String> {
        let until = Instant::now() + WARM_UP_WITHIN;
        while !self.warm.load(Ordering::Acquire) {
            if Instant::now() >= until {
                return Err(format!(
                    "the warm-up record was not handled within {WARM_UP_WITHIN:?} \
                     (the consumer group did not get its partitions)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}

/// What receives one phase's messages.
enum Sink {
    Bus {
        bus: Bus,
        sub: lanebus::Subscription,
    },
    Raw {
        producer: FutureProducer,
        stop: Arc<AtomicBool>,
        /// The consumer thread; returns the sum of its group's committed
        /// offsets.
        thread: std::thread::JoinHandle<Result<i64, String>>,
    },
}

impl Sink {
    /// A lanebus bus on its own connection, the topic created, and a
    /// subscription reporting to `seen`.
    async fn bus(ctx: &Ctx, row: Row, topic: &str, seen: &Seen) -> Result<Sink, String> {
        let bus = connect(&ctx.brokers, "lanebus-bench").await?;
        bus.configure_topic(topic, topic_options())
            .await
            .or_say("lanebus configure topic")?;
        let s = seen.clone();
        let sub = if row == Row::Keyed {
            bus.subscribe_envelope_with(
                topic,
                lane_options(ctx.common.keyed_lanes),
                move |ev: Arc<Envelope>| {
                    s.envelope(&ev);
                    std::future::ready(Ok::<(), HandlerError>(()))
                },
            )
            .await
        } else {
            bus.subscribe_with(topic, lane_options(ctx.common.lanes), move |m: Message| {
                s.plain(m.payload());
                std::future::ready(Ok::<(), HandlerError>(()))
            })
            .await
        }
        .or_say("lanebus subscribe")?;
        Ok(Sink::Bus { bus, sub })
    }

    /// Raw rdkafka: the topic created (through the admin bus), a producer,
    /// and a consumer thread reporting to `seen`.
    fn raw(ctx: &Ctx, topic: &str, seen: &Seen) -> Result<Sink, String> {
        let producer = raw_producer(&ctx.brokers)?;
        let consumer = raw_consumer(&ctx.brokers, &format!("{topic}.raw"), topic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("raw-consumer".into())
            .spawn(move || consume(consumer, &s, &halt))
            .or_say("raw consumer thread")?;
        Ok(Sink::Raw {
            producer,
            stop,
            thread,
        })
    }

    /// Publishes the warm-up record.
    async fn warm_up(&self, row: Row, topic: &str) -> Result<(), String> {
        let envelope = || Envelope::new("warm-up", WARMUP_TYPE, 1, Bytes::new());
        match (self, row) {
            (Sink::Bus { bus, .. }, Row::Keyed) => bus
                .publish_envelope(topic, envelope())
                .await
                .or_say("warm-up publish"),
            (Sink::Bus { bus, .. }, _) => bus
                .publish(topic, Bytes::from_static(WARMUP))
                .await
                .or_say("warm-up publish"),
            (Sink::Raw { producer, .. }, Row::Keyed) => {
                let ev = envelope();
                let payload = ev.encode();
                let record = FutureRecord::to(topic)
                    .key(ev.aggregate_id.as_str())
                    .payload(&payload[..]);
                send(producer, record).await.or_say("warm-up publish")
            }
            (Sink::Raw { producer, .. }, _) => {
                let record = FutureRecord::<[u8], [u8]>::to(topic).payload(WARMUP);
                send(producer, record).await.or_say("warm-up publish")
            }
        }
    }

    /// Tears down what the phase set up (see the module docs). On the raw
    /// side, first checks that the group's committed offsets cover the
    /// `handled` messages and the warm-up record.
    async fn close(self, ctx: &Ctx, topic: &str, handled: u64) -> Result<(), String> {
        match self {
            Sink::Bus { bus, sub } => close_bus(bus, sub, topic).await,
            Sink::Raw {
                producer,
                stop,
                thread,
            } => {
                stop.store(true, Ordering::Release);
                let committed = tokio::task::spawn_blocking(move || thread.join())
                    .await
                    .or_say("raw consumer join")?
                    .map_err(|_| "raw consumer thread panicked".to_owned())?;
                drop(producer);
                ctx.admin
                    .remove_topic(topic)
                    .await
                    .or_say("raw remove_topic")?;
                let committed = committed?;
                if committed != handled as i64 + 1 {
                    return Err(format!(
                        "raw consumer of {topic}: committed offsets add up to {committed}, \
                         not the {} records it handled (warm-up included)",
                        handled + 1
                    ));
                }
                Ok(())
            }
        }
    }
}

impl Broker for Ctx {
    type Row = Row;
    type Sink = Sink;

    const STALL: Duration = Duration::from_secs(10);

    fn common(&self) -> &Common {
        &self.common
    }

    /// Opens the side's sink (on the raw side, the topic created through
    /// the admin bus first), publishes the warm-up record and waits until
    /// a handler saw it.
    async fn open(
        &self,
        row: Row,
        lanebus: bool,
        topic: &str,
        probe: &Probe,
        order: Option<Arc<OrderCheck>>,
    ) -> Result<Sink, String> {
        let seen = Seen {
            probe: probe.clone(),
            order,
            warm: Arc::default(),
        };
        let sink = if lanebus {
            Sink::bus(self, row, topic, &seen).await?
        } else {
            self.admin
                .configure_topic(topic, topic_options())
                .await
                .or_say("raw configure topic")?;
            Sink::raw(self, topic, &seen)?
        };
        let warmed = match sink.warm_up(row, topic).await {
            Ok(()) => seen.wait_warm().await,
            Err(e) => Err(e),
        };
        if let Err(e) = warmed {
            let _ = sink.close(self, topic, 0).await;
            return Err(format!("{} ({}): {e}", row.name(), side(lanebus)));
        }
        Ok(sink)
    }

    async fn publish(
        &self,
        sink: &Sink,
        row: Row,
        topic: &str,
        n: u64,
        rate: Option<f64>,
        payloads: &Payloads<'_>,
    ) -> Result<(), String> {
        let window = self.common.window;
        let key = |i: u64| self.keys[i as usize % KEYS].as_str();
        match (sink, row) {
            (Sink::Bus { bus, .. }, Row::Persistent) => {
                drive(n, rate, window, false, |i| {
                    let message = OutboundMessage::new(payloads.plain()).with_key(key(i));
                    bus.publish_with(topic, message)
                })
                .await
            }
            (Sink::Bus { bus, .. }, Row::Keyed) => {
                drive(n, rate, window, true, |i| {
                    bus.publish_envelope(topic, payloads.envelope(i))
                })
                .await
            }
            (Sink::Bus { bus, .. }, Row::Plain) => {
                drive(n, rate, window, false, |_| {
                    bus.publish(topic, payloads.plain())
                })
                .await
            }
            (Sink::Raw { producer, .. }, Row::Persistent) => {
                drive(n, rate, window, false, |i| {
                    let (payload, key) = (payloads.plain(), key(i));
                    async move {
                        let record = FutureRecord::to(topic).key(key).payload(&payload[..]);
                        send(producer, record).await
                    }
                })
                .await
            }
            (Sink::Raw { producer, .. }, Row::Keyed) => {
                drive(n, rate, window, true, |i| {
                    let ev = payloads.envelope(i);
                    async move {
                        let payload = ev.encode();
                        let record = FutureRecord::to(topic)
                            .key(ev.aggregate_id.as_str())
                            .payload(&payload[..]);
                        send(producer, record).await
                    }
                })
                .await
            }
            (Sink::Raw { producer, .. }, Row::Plain) => {
                drive(n, rate, window, false, |_| {
                    let payload = payloads.plain();
                    async move {
                        let record = FutureRecord::<[u8], [u8]>::to(topic).payload(&payload[..]);
                        send(producer, record).await
                    }
                })
                .await
            }
        }
    }

    async fn close(&self, sink: Sink, topic: &str, handled: u64) -> Result<(), String> {
        sink.close(self, topic, handled).await
    }
}

/// Runs the Kafka rows `args` asks for on `rt` and returns one report per
/// row (medians over `--runs`).
pub(crate) fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    base: Instant,
    latency: bool,
) -> Result<Vec<Report>, Box<dyn std::error::Error>> {
    let rows = broker::parse_rows::<Row>(&args.scenarios)?;
    // Started before the first row, killed when this returns.
    let (own_broker, started_in) = match &args.brokers {
        Some(_) => (None, Duration::ZERO),
        None => {
            let t = Instant::now();
            (Some(server::KafkaBroker::start()), t.elapsed())
        }
    };
    let brokers = match (&args.brokers, &own_broker) {
        (Some(b), _) => b.clone(),
        (None, Some(b)) => b.bootstrap(),
        (None, None) => unreachable!("a broker was started"),
    };
    if !args.json {
        let origin = match &own_broker {
            Some(b) => format!(
                "single-node KRaft broker started by the bench in {:.1} s, {} MiB resident, \
                 temporary storage",
                started_in.as_secs_f64(),
                b.rss_kib().unwrap_or(0) / 1024
            ),
            None => "--brokers".to_owned(),
        };
        println!(
            "kafka: {brokers} ({origin}), {PARTITIONS} partitions per topic, window {} \
             publishes in flight",
            args.window
        );
    }
    let admin = rt.block_on(connect(&brokers, "lanebus-bench-admin"))?;
    let ctx = Arc::new(Ctx {
        brokers,
        common: Common::new(args, base, latency),
        admin,
        keys: (0..KEYS).map(|i| format!("key-{i}")).collect(),
    });
    // A fresh broker's JVM is cold (the first run's first phase went at a
    // quarter of the rate of the next ones, and with `--window 2048` the
    // first 200,000 records were still slower): one unmeasured phase of
    // each side first.
    if let Some(&first) = rows.first() {
        let ctx = ctx.clone();
        rt.block_on(rt.spawn(async move {
            broker::both(&*ctx, first, WARM_UP_MESSAGES, None, true).await
        }))??;
    }
    let reports = broker::run_rows(&ctx, &rows, args, rt)?;
    rt.block_on(ctx.admin.close())?;
    drop(own_broker);
    Ok(reports)
}
