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
//! - Waiting: a phase ends when every message was handled, or when nothing
//!   has been handled for [`STALL`]; the rate is handled messages over the
//!   time from the first publish to the last handled one, and what is
//!   missing is reported as lost.
//! - Runs: first one unmeasured throughput phase of each side (the
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanebus::{
    Bus, BusConfig, Envelope, HandlerError, Message, OutboundMessage, Subscription, TopicOptions,
};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::measure::{stamp, OrderCheck, Probe, Report};
use super::publish::{drive, OrSay};
use super::{lane_options, Args, AGGREGATES};

#[path = "kafka_raw.rs"]
mod raw;

use raw::{consume, raw_consumer, raw_producer, send};

// The bench uses the start, the bootstrap address and the drop of the
// harness.
#[allow(dead_code)]
#[path = "../../tests/common/kafka.rs"]
mod broker;

/// A phase gives up waiting when nothing was handled for this long.
const STALL: Duration = Duration::from_secs(10);

/// How long a phase waits for its warm-up record (the group join).
const WARM_UP_WITHIN: Duration = Duration::from_secs(60);

/// Partitions of every bench topic.
const PARTITIONS: u32 = 8;

/// How long a latency phase publishes for.
const LATENCY_SECS: f64 = 2.0;

/// Keys of the `persistent` row's messages.
const KEYS: usize = 1_000;

/// Messages of the unmeasured phases that warm the broker up.
const WARM_UP_MESSAGES: u64 = 100_000;

/// The payload of the plain rows' warm-up record.
const WARMUP: &[u8] = b"lanebus-bench-warm-up";

/// The event type of the keyed row's warm-up envelope.
const WARMUP_TYPE: &str = "WarmUp";

/// The Kafka rows, in order.
pub(crate) const SCENARIOS: [&str; 3] = ["persistent", "keyed", "plain"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Persistent,
    Keyed,
    Plain,
}

impl Row {
    fn parse(name: &str) -> Result<Row, String> {
        match name {
            "persistent" => Ok(Row::Persistent),
            "keyed" => Ok(Row::Keyed),
            "plain" => Ok(Row::Plain),
            other => Err(format!(
                "unknown kafka scenario `{other}` (available: {})",
                SCENARIOS.join(", ")
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Row::Persistent => "persistent",
            Row::Keyed => "keyed",
            Row::Plain => "plain",
        }
    }
}

/// What every phase needs.
struct Ctx {
    brokers: String,
    window: usize,
    lanes: usize,
    keyed_lanes: usize,
    base: Instant,
    latency: bool,
    /// `--verbose`: each phase's timings on stderr.
    verbose: bool,
    /// Creates and removes the raw side's topics.
    admin: Bus,
    /// The `persistent` row's keys.
    keys: Vec<String>,
    /// The keyed row's aggregate IDs.
    ids: Vec<String>,
}

/// A fresh topic name, never used before by this process.
fn fresh_topic(row: Row) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench.{}.{}.{}",
        row.name(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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
        sub: Subscription,
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
                lane_options(ctx.keyed_lanes),
                move |ev: Arc<Envelope>| {
                    s.envelope(&ev);
                    std::future::ready(Ok::<(), HandlerError>(()))
                },
            )
            .await
        } else {
            bus.subscribe_with(topic, lane_options(ctx.lanes), move |m: Message| {
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
            Sink::Bus { bus, sub } => {
                sub.unsubscribe().await;
                bus.remove_topic(topic)
                    .await
                    .or_say("lanebus remove_topic")?;
                bus.close().await.or_say("lanebus close")
            }
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

/// What one phase measured.
struct Phase {
    rate: f64,
    lost: u64,
    probe: Probe,
    order: Option<Arc<OrderCheck>>,
    /// Whether each aggregate's versions all arrived, in order.
    order_held: Option<bool>,
}

/// One side's throughput (`rate: None`) or latency (`rate: Some`) phase.
async fn phase(
    ctx: &Ctx,
    row: Row,
    lanebus: bool,
    n: u64,
    rate: Option<f64>,
) -> Result<Phase, String> {
    let topic = fresh_topic(row);
    let probe = Probe::new(ctx.base);
    probe.timing.store(rate.is_some(), Ordering::Relaxed);
    let order = (row == Row::Keyed).then(|| Arc::new(OrderCheck::new(AGGREGATES)));
    let seen = Seen {
        probe: probe.clone(),
        order: order.clone(),
        warm: Arc::default(),
    };
    let sink = if lanebus {
        Sink::bus(ctx, row, &topic, &seen).await?
    } else {
        ctx.admin
            .configure_topic(&topic, topic_options())
            .await
            .or_say("raw configure topic")?;
        Sink::raw(ctx, &topic, &seen)?
    };
    let warmed = match sink.warm_up(row, &topic).await {
        Ok(()) => seen.wait_warm().await,
        Err(e) => Err(e),
    };
    if let Err(e) = warmed {
        let _ = sink.close(ctx, &topic, 0).await;
        return Err(format!("{} ({}): {e}", row.name(), side(lanebus)));
    }
    let (base, window, topic_ref) = (ctx.base, ctx.window, topic.as_str());
    let (keys, ids) = (&ctx.keys, &ctx.ids);
    let plain = move || {
        if rate.is_some() {
            stamp(base)
        } else {
            Bytes::from_static(&[0u8; 32])
        }
    };
    let envelope = |i: u64| {
        let payload = if rate.is_some() {
            stamp(base)
        } else {
            Bytes::from_static(&[0u8; 8])
        };
        let (agg, version) = (i as usize % AGGREGATES, i / AGGREGATES as u64 + 1);
        Envelope::new(ids[agg].as_str(), "Updated", version as i64, payload)
    };
    let key = |i: u64| keys[i as usize % KEYS].as_str();
    let start = Instant::now();
    let published = match (&sink, row) {
        (Sink::Bus { bus, .. }, Row::Persistent) => {
            drive(n, rate, window, false, |i| {
                bus.publish_with(topic_ref, OutboundMessage::new(plain()).with_key(key(i)))
            })
            .await
        }
        (Sink::Bus { bus, .. }, Row::Keyed) => {
            drive(n, rate, window, true, |i| {
                bus.publish_envelope(topic_ref, envelope(i))
            })
            .await
        }
        (Sink::Bus { bus, .. }, Row::Plain) => {
            drive(n, rate, window, false, |_| bus.publish(topic_ref, plain())).await
        }
        (Sink::Raw { producer, .. }, Row::Persistent) => {
            drive(n, rate, window, false, |i| {
                let (payload, key) = (plain(), key(i));
                async move {
                    let record = FutureRecord::to(topic_ref).key(key).payload(&payload[..]);
                    send(producer, record).await
                }
            })
            .await
        }
        (Sink::Raw { producer, .. }, Row::Keyed) => {
            drive(n, rate, window, true, |i| {
                let ev = envelope(i);
                async move {
                    let payload = ev.encode();
                    let record = FutureRecord::to(topic_ref)
                        .key(ev.aggregate_id.as_str())
                        .payload(&payload[..]);
                    send(producer, record).await
                }
            })
            .await
        }
        (Sink::Raw { producer, .. }, Row::Plain) => {
            drive(n, rate, window, false, |_| {
                let payload = plain();
                async move {
                    let record = FutureRecord::<[u8], [u8]>::to(topic_ref).payload(&payload[..]);
                    send(producer, record).await
                }
            })
            .await
        }
    };
    if let Err(e) = published {
        let _ = sink.close(ctx, &topic, 0).await;
        return Err(format!("{} ({}): {e}", row.name(), side(lanebus)));
    }
    let published_in = start.elapsed().as_secs_f64();
    let (handled, last) = probe.wait_or_stall(n, STALL).await;
    let elapsed = last.saturating_duration_since(start).as_secs_f64();
    if ctx.verbose {
        // Where the time went: a consumer that keeps up handles its last
        // message just after the last delivery report.
        eprintln!(
            "{:<10} {:<8} {:<10} {n:>7} messages: published in {published_in:.3} s, \
             last handled at {elapsed:.3} s ({:.0} msgs/s)",
            row.name(),
            side(lanebus),
            if rate.is_some() {
                "latency"
            } else {
                "throughput"
            },
            handled as f64 / elapsed
        );
    }
    sink.close(ctx, &topic, handled).await?;
    // Keyed phases publish whole rounds: every aggregate up to n / 1000.
    let order_held = order
        .as_ref()
        .map(|o| o.held(&vec![(n / AGGREGATES as u64) as i64; AGGREGATES]));
    if let Some(o) = order.as_ref().filter(|o| o.disorder() > 0) {
        eprintln!(
            "{} ({}): {} per-aggregate order violations; the first:",
            row.name(),
            side(lanebus),
            o.disorder()
        );
        for line in o.examples() {
            eprintln!("  {line}");
        }
    }
    if handled < n {
        eprintln!(
            "{} ({}): {} of {n} messages handled, {} lost (nothing handled for {STALL:?})",
            row.name(),
            side(lanebus),
            handled,
            n - handled
        );
    }
    Ok(Phase {
        rate: handled as f64 / elapsed,
        lost: n - handled.min(n),
        probe,
        order,
        order_held,
    })
}

fn side(lanebus: bool) -> &'static str {
    if lanebus {
        "lanebus"
    } else {
        "baseline"
    }
}

/// Both sides' phases, lanebus first when `bus_first`.
async fn both(
    ctx: &Ctx,
    row: Row,
    n: u64,
    rate: Option<f64>,
    bus_first: bool,
) -> Result<(Phase, Phase), String> {
    if bus_first {
        let ours = phase(ctx, row, true, n, rate).await?;
        Ok((ours, phase(ctx, row, false, n, rate).await?))
    } else {
        let theirs = phase(ctx, row, false, n, rate).await?;
        Ok((phase(ctx, row, true, n, rate).await?, theirs))
    }
}

/// One run of one row: throughput of both sides, then latency of both at
/// half lanebus's throughput.
async fn run_row(ctx: &Ctx, row: Row, n: u64, run: usize) -> Result<Report, String> {
    let bus_first = run.is_multiple_of(2);
    let (ours, theirs) = both(ctx, row, n, None, bus_first).await?;
    let mut report = Report {
        baseline_msgs_per_sec: theirs.rate,
        lost: ours.lost + theirs.lost,
        disorder: [&ours, &theirs]
            .iter()
            .filter_map(|p| p.order.as_ref().map(|o| o.disorder()))
            .sum(),
        ..Report::throughput_only(
            row.name(),
            n,
            ours.rate,
            ours.order_held.zip(theirs.order_held).map(|(a, b)| a && b),
        )
    };
    if !ctx.latency {
        return Ok(report);
    }
    let rate = ours.rate * 0.5;
    let mut lat_n = (rate * LATENCY_SECS).clamp(2_000.0, 200_000.0) as u64;
    if row == Row::Keyed {
        lat_n = lat_n.div_ceil(AGGREGATES as u64) * AGGREGATES as u64;
    }
    let (ours, theirs) = both(ctx, row, lat_n, Some(rate), bus_first).await?;
    report.p50_us = ours.probe.hist.quantile_us(0.50);
    report.p99_us = ours.probe.hist.quantile_us(0.99);
    report.baseline_p50_us = theirs.probe.hist.quantile_us(0.50);
    report.baseline_p99_us = theirs.probe.hist.quantile_us(0.99);
    report.lost += ours.lost + theirs.lost;
    for p in [&ours, &theirs] {
        if let Some(o) = &p.order {
            report.disorder += o.disorder();
        }
    }
    if let (Some(held), Some(a), Some(b)) = (report.order_ok, ours.order_held, theirs.order_held) {
        report.order_ok = Some(held && a && b);
    }
    Ok(report)
}

/// Runs the Kafka rows `args` asks for on `rt` and returns one report per
/// row (medians over `--runs`).
pub(crate) fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    base: Instant,
    latency: bool,
) -> Result<Vec<Report>, Box<dyn std::error::Error>> {
    let rows = args
        .scenarios
        .iter()
        .map(|s| Row::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    // Started before the first row, killed when this returns.
    let (own_broker, started_in) = match &args.brokers {
        Some(_) => (None, Duration::ZERO),
        None => {
            let t = Instant::now();
            (Some(broker::KafkaBroker::start()), t.elapsed())
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
        window: args.window,
        lanes: args.lanes,
        keyed_lanes: args.keyed_lanes,
        base,
        latency,
        verbose: args.verbose,
        admin,
        keys: (0..KEYS).map(|i| format!("key-{i}")).collect(),
        ids: (0..AGGREGATES).map(|i| format!("agg-{i}")).collect(),
    });
    // A fresh broker's JVM is cold (the first run's first phase went at a
    // quarter of the rate of the next ones, and with `--window 2048` the
    // first 200,000 records were still slower): one unmeasured phase of
    // each side first.
    if let Some(&first) = rows.first() {
        let ctx = ctx.clone();
        rt.block_on(
            rt.spawn(async move { both(&ctx, first, WARM_UP_MESSAGES, None, true).await }),
        )??;
    }
    let mut reports = Vec::new();
    for row in rows {
        let n = match row {
            // Whole rounds over the aggregates.
            Row::Keyed => {
                ((100_000.0 * args.scale) as u64 / AGGREGATES as u64).max(10) * AGGREGATES as u64
            }
            _ => ((100_000.0 * args.scale) as u64).max(10_000),
        };
        let mut runs = Vec::with_capacity(args.runs);
        for run in 0..args.runs {
            let ctx = ctx.clone();
            runs.push(rt.block_on(rt.spawn(async move { run_row(&ctx, row, n, run).await }))??);
        }
        reports.push(Report::median(runs));
    }
    rt.block_on(ctx.admin.close())?;
    drop(own_broker);
    Ok(reports)
}
