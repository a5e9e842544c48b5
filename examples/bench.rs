//! The bench tool: end-to-end throughput and latency of the bus per
//! transport and scenario, beside raw crossbeam-channel moving the same
//! messages, with the same topology, in the same run.
//!
//! ```text
//! cargo run --release --example bench -- --transport memory [--json] [--runs 3] [--scale 1.0] [--metrics] [--scenario NAME]...
//! cargo run --release --features nats --example bench -- --transport nats [--url nats://HOST:PORT] [--window 256] [...]
//! cargo run --release --features kafka --example bench -- --transport kafka [--brokers HOST:PORT] [--window 256] [...]
//! ```
//!
//! Scenarios (memory):
//! - `plain`: 1 publisher → 1 subscription (4 lanes, `--lanes`), plain
//!   messages.
//! - `keyed`: envelopes over 1,000 aggregate IDs on 8 lanes (`--keyed-lanes`),
//!   to a handler taking `Arc<Envelope>`; per-key order is
//!   verified and reported.
//! - `fanout`: 1 publisher → 4 subscriptions on one topic.
//! - `contention`: 2 publishers → 1 subscription.
//!
//! Scenarios (nats, cargo feature `nats`; see `bench_support/nats.rs`):
//! `persistent` (JetStream, publish acked, handler; baseline raw
//! async-nats with a durable pull consumer acking each message), `keyed`
//! (envelopes over 1,000 aggregate IDs on JetStream, order checked) and
//! `ephemeral` (core NATS). Without `--url` the bench starts its own
//! `nats-server -js` on a free loopback port with a temporary store.
//!
//! Scenarios (kafka, cargo feature `kafka`; see `bench_support/kafka.rs`):
//! `persistent` (keyed plain messages, each publish awaiting its delivery
//! report, handled in a consumer group; baseline raw rdkafka: a
//! `FutureProducer` with the same window and a `BaseConsumer` committing
//! by hand), `keyed` (envelopes over 1,000 aggregate IDs on 8 partitions
//! and 8 lanes, order checked) and `plain` (unkeyed plain messages).
//! Without `--brokers` the bench starts its own single-node Kafka broker
//! (the integration tests' harness; the jars come from
//! `scripts/kafka.sh fetch`).
//!
//! Throughput is publish start → last message handled, unpaced. Latency
//! (p50/p99, publish → handler) comes from a second, paced run at half the
//! measured throughput, each message carrying its send time. The baseline
//! moves the same messages through bounded crossbeam channels to consumer
//! threads (one per lane or subscription) running the same trivial handler.
//! Each scenario runs `--runs` times. A run measures the bus's throughput
//! and the baseline's back to back (the bus first in even runs, the
//! baseline first in odd ones), then the bus's latency. Every figure
//! reported is the median over the runs, and the ratio is the median of
//! the runs' own ratios: this machine is shared and noisy, its speed
//! changes within seconds, and a ratio of two measurements taken side by
//! side is steadier than a ratio of two medians taken apart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanebus::{key_hash, Bus, Envelope, HandlerError, Message, OutboundMessage, SubscribeOptions};

#[path = "bench_support/measure.rs"]
mod measure;

#[cfg(any(feature = "nats", feature = "kafka"))]
#[path = "bench_support/publish.rs"]
mod publish;

#[cfg(any(feature = "nats", feature = "kafka"))]
#[path = "bench_support/broker.rs"]
mod broker;

#[cfg(feature = "nats")]
#[path = "bench_support/nats.rs"]
mod nats;

#[cfg(feature = "kafka")]
#[path = "bench_support/kafka.rs"]
mod kafka;

use measure::{stamp, OrderCheck, Probe, Report};

const AGGREGATES: usize = 1_000;

/// Lane ring capacity of every subscription the bench makes.
const RING: usize = 4096;

/// `--no-latency`: throughput runs only (for profiling).
static SKIP_LATENCY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--metrics`: the memory buses under test export metrics (a Prometheus
/// recorder installed, no listener), to measure what that costs.
static METRICS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A memory bus, with metrics on under `--metrics`.
fn memory_bus() -> Bus {
    let mut config = lanebus::BusConfig::memory();
    config.metrics.enabled = METRICS.load(Ordering::Relaxed);
    Bus::from_config(config).expect("memory config")
}

struct Args {
    transport: String,
    json: bool,
    scale: f64,
    scenarios: Vec<String>,
    lanes: usize,
    keyed_lanes: usize,
    runs: usize,
    /// NATS: the server to use instead of starting one.
    url: Option<String>,
    /// Kafka: the brokers to use instead of starting one (`host:port`,
    /// comma-separated).
    brokers: Option<String>,
    /// NATS and Kafka: print each phase's publish and handle times (stderr).
    verbose: bool,
    /// NATS and Kafka: publishes in flight (awaiting their acks or
    /// delivery reports) at once.
    window: usize,
}

/// The value after `flag`, parsed.
fn value<T: std::str::FromStr>(
    it: &mut impl Iterator<Item = String>,
    flag: &str,
) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    it.next()
        .ok_or(format!("{flag} needs a value"))?
        .parse()
        .map_err(|e| format!("{flag}: {e}"))
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        transport: "memory".into(),
        json: false,
        scale: 1.0,
        scenarios: Vec::new(),
        lanes: 4,
        keyed_lanes: 8,
        runs: 3,
        url: None,
        brokers: None,
        verbose: false,
        window: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--transport" => args.transport = it.next().ok_or("--transport needs a value")?,
            "--json" => args.json = true,
            "--no-latency" => SKIP_LATENCY.store(true, Ordering::Relaxed),
            "--metrics" => {
                METRICS.store(true, Ordering::Relaxed);
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .install_recorder()
                    .map_err(|e| format!("--metrics: {e}"))?;
            }
            "--lanes" => args.lanes = value(&mut it, "--lanes")?,
            "--keyed-lanes" => args.keyed_lanes = value(&mut it, "--keyed-lanes")?,
            "--runs" => args.runs = value::<usize>(&mut it, "--runs")?.max(1),
            "--scale" => args.scale = value(&mut it, "--scale")?,
            "--url" => args.url = Some(it.next().ok_or("--url needs a value")?),
            "--brokers" => args.brokers = Some(it.next().ok_or("--brokers needs a value")?),
            "--verbose" => args.verbose = true,
            "--window" => args.window = value::<usize>(&mut it, "--window")?.max(1),
            "--scenario" => args
                .scenarios
                .push(it.next().ok_or("--scenario needs a value")?),
            "-h" | "--help" => {
                println!("bench --transport memory [--json] [--runs N] [--scale F] [--lanes N] [--keyed-lanes N] [--no-latency] [--metrics] [--scenario plain|keyed|fanout|contention]...");
                println!("bench --transport nats [--url nats://HOST:PORT] [--window N] [--verbose] [--json] [--runs N] [--scale F] [--lanes N] [--keyed-lanes N] [--no-latency] [--scenario persistent|keyed|ephemeral]...");
                println!("bench --transport kafka [--brokers HOST:PORT] [--window N] [--verbose] [--json] [--runs N] [--scale F] [--lanes N] [--keyed-lanes N] [--no-latency] [--scenario persistent|keyed|plain]...");
                println!("      (nats and kafka need their cargo features: cargo run --release --features nats --example bench -- --transport nats)");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.scenarios.is_empty() {
        args.scenarios = match args.transport.as_str() {
            "nats" => ["persistent", "keyed", "ephemeral"]
                .map(String::from)
                .into(),
            "kafka" => ["persistent", "keyed", "plain"].map(String::from).into(),
            _ => ["plain", "keyed", "fanout", "contention"]
                .map(String::from)
                .into(),
        };
    }
    Ok(args)
}

/// The options of every subscription the bench makes: `lanes` lanes of
/// [`RING`] records, drained 256 at a time.
fn lane_options(lanes: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .lanes(lanes)
        .ring_capacity(RING)
        .drain_batch(256)
}

async fn plain_subscription(
    bus: &Bus,
    topic: &str,
    lanes: usize,
    probe: &Probe,
) -> lanebus::Subscription {
    let p = probe.clone();
    bus.subscribe_with(topic, lane_options(lanes), move |m: Message| {
        p.hit(m.payload());
        std::future::ready(Ok::<(), HandlerError>(()))
    })
    .await
    .expect("subscribe")
}

/// An envelope subscription on `lanes` lanes whose handler checks each
/// aggregate's order with `order` and reports to `probe`.
async fn keyed_subscription(
    bus: &Bus,
    topic: &str,
    lanes: usize,
    probe: &Probe,
    order: Arc<OrderCheck>,
) -> lanebus::Subscription {
    let p = probe.clone();
    bus.subscribe_envelope_with(topic, lane_options(lanes), move |ev: Arc<Envelope>| {
        order.see(&ev.aggregate_id, ev.event_version);
        p.hit(&ev.payload);
        std::future::ready(Ok::<(), HandlerError>(()))
    })
    .await
    .expect("subscribe")
}

/// Publishes `n` plain messages from `publishers` tasks, then waits until
/// `expect` handler calls happened. Returns msgs/s of publishes.
async fn run_plain(
    bus: &Bus,
    topic: &'static str,
    publishers: u64,
    n: u64,
    probe: &Probe,
    expect: u64,
) -> f64 {
    let payload = Bytes::from_static(&[0u8; 32]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let bus = bus.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                for _ in 0..n / publishers {
                    bus.publish(topic, payload.clone()).await.expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher");
    }
    probe.wait(expect).await;
    (n / publishers * publishers) as f64 / start.elapsed().as_secs_f64()
}

/// Waits until `start + i / rate`: each message leaves at its own time, not
/// in bursts (yielding to other tasks while early).
async fn pace(start: Instant, i: u64, rate: f64) {
    let due = start + Duration::from_secs_f64(i as f64 / rate);
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// Publishes `n` stamped messages at `rate` msgs/s in all.
async fn paced_plain(
    bus: &Bus,
    topic: &'static str,
    publishers: u64,
    n: u64,
    rate: f64,
    base: Instant,
) {
    let per_publisher_rate = rate / publishers as f64;
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..n / publishers {
                    pace(start, i, per_publisher_rate).await;
                    bus.publish_with(topic, OutboundMessage::new(stamp(base)))
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher");
    }
}

/// Raw crossbeam-channel: `publishers` threads send `n` messages, each
/// routed to one of `lanes` channels (or copied to every channel with
/// `fanout`), consumer threads count them.
fn baseline(publishers: u64, lanes: usize, fanout: bool, n: u64) -> f64 {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..lanes)
        .map(|_| crossbeam_channel::bounded::<Bytes>(4096))
        .unzip();
    let payload = Bytes::from_static(&[0u8; 32]);
    let start = Instant::now();
    let consumers: Vec<_> = rxs
        .into_iter()
        .map(|rx| {
            std::thread::spawn(move || {
                let mut k = 0u64;
                while let Ok(m) = rx.recv() {
                    std::hint::black_box(&m);
                    k += 1;
                }
                k
            })
        })
        .collect();
    std::thread::scope(|s| {
        for p in 0..publishers {
            let txs = &txs;
            let payload = &payload;
            s.spawn(move || {
                for i in 0..n / publishers {
                    if fanout {
                        for tx in txs {
                            tx.send(payload.clone()).expect("send");
                        }
                    } else {
                        let lane = ((i + p) % txs.len() as u64) as usize;
                        txs[lane].send(payload.clone()).expect("send");
                    }
                }
            });
        }
    });
    drop(txs);
    let total: u64 = consumers
        .into_iter()
        .map(|c| c.join().expect("consumer"))
        .sum();
    let _ = total;
    (n / publishers * publishers) as f64 / start.elapsed().as_secs_f64()
}

/// When run `run` measures the baseline's throughput, right beside the
/// bus's (see the module docs): `Some(true)` before it (odd runs),
/// `Some(false)` after it, `None` with `--no-latency` (no baseline).
fn baseline_first(run: usize) -> Option<bool> {
    (!SKIP_LATENCY.load(Ordering::Relaxed)).then_some(run % 2 == 1)
}

async fn plain_like(
    scenario: &'static str,
    publishers: u64,
    subscriptions: usize,
    lanes: usize,
    n: u64,
    base: Instant,
    run: usize,
) -> Report {
    let fanout = subscriptions > 1;
    let measure_baseline = move || {
        tokio::task::spawn_blocking(move || {
            baseline(
                publishers,
                if fanout { subscriptions } else { lanes },
                fanout,
                n,
            )
        })
    };
    let turn = baseline_first(run);
    let mut baseline_rate = f64::NAN;
    if turn == Some(true) {
        baseline_rate = measure_baseline().await.expect("baseline");
    }
    // Throughput.
    let bus = memory_bus();
    let probe = Probe::new(base);
    let mut subs = Vec::new();
    for _ in 0..subscriptions {
        subs.push(plain_subscription(&bus, "bench", lanes, &probe).await);
    }
    let expect = n / publishers * publishers * subscriptions as u64;
    let rate = run_plain(&bus, "bench", publishers, n, &probe, expect).await;
    if turn == Some(false) {
        baseline_rate = measure_baseline().await.expect("baseline");
    }
    // Latency at half that rate.
    if turn.is_none() {
        bus.close().await.expect("close");
        drop(subs);
        return Report::throughput_only(scenario, n, rate, None);
    }
    probe.timing.store(true, Ordering::Relaxed);
    let lat_n = (rate * 0.5 * 0.4).clamp(10_000.0, 1_000_000.0) as u64; // ~0.4 s
    let before = probe.handled.load();
    paced_plain(&bus, "bench", publishers, lat_n, rate * 0.5, base).await;
    probe
        .wait(before + lat_n / publishers * publishers * subscriptions as u64)
        .await;
    bus.close().await.expect("close");
    drop(subs);
    Report {
        scenario,
        messages: n,
        msgs_per_sec: rate,
        p50_us: probe.hist.quantile_us(0.50),
        p99_us: probe.hist.quantile_us(0.99),
        baseline_msgs_per_sec: baseline_rate,
        order_ok: None,
        ..Report::throughput_only(scenario, n, rate, None)
    }
}

/// Versions `1..=per_key` of every aggregate in `ids`, interleaved across
/// the aggregates: the keyed row's messages.
fn keyed_events(ids: &[String], per_key: usize) -> Vec<Envelope> {
    let mut v = Vec::with_capacity(per_key * ids.len());
    for version in 1..=per_key as i64 {
        for id in ids {
            v.push(Envelope::new(
                id.as_str(),
                "Updated",
                version,
                Bytes::from_static(&[0u8; 8]),
            ));
        }
    }
    v
}

/// The keyed row's baseline: the same envelopes through `lanes` crossbeam
/// channels by key hash, each consumer thread checking per-key order.
async fn keyed_baseline(lanes: usize, events: Vec<Envelope>) -> f64 {
    tokio::task::spawn_blocking(move || {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| crossbeam_channel::bounded::<Envelope>(4096))
            .unzip();
        let start = Instant::now();
        let consumers: Vec<_> = rxs
            .into_iter()
            .map(|rx| {
                std::thread::spawn(move || {
                    let mut last = vec![0i64; AGGREGATES];
                    let mut bad = 0u64;
                    while let Ok(ev) = rx.recv() {
                        let idx: usize = ev.aggregate_id[4..].parse().unwrap_or(0);
                        if last[idx] + 1 != ev.event_version {
                            bad += 1;
                        }
                        last[idx] = ev.event_version;
                    }
                    bad
                })
            })
            .collect();
        let n = events.len() as f64;
        for ev in events {
            let lane = (key_hash(ev.aggregate_id.as_bytes()) % lanes as u64) as usize;
            txs[lane].send(ev).expect("send");
        }
        drop(txs);
        let bad: u64 = consumers
            .into_iter()
            .map(|c| c.join().expect("consumer"))
            .sum();
        assert_eq!(bad, 0, "baseline keeps per-key order");
        n / start.elapsed().as_secs_f64()
    })
    .await
    .expect("baseline")
}

async fn keyed(lanes: usize, n: u64, base: Instant, run: usize) -> Report {
    let ids: Vec<String> = (0..AGGREGATES).map(|i| format!("agg-{i}")).collect();
    let per_key = (n as usize / AGGREGATES).max(1);
    let turn = baseline_first(run);
    let mut baseline_rate = f64::NAN;
    if turn == Some(true) {
        baseline_rate = keyed_baseline(lanes, keyed_events(&ids, per_key)).await;
    }
    let bus = memory_bus();
    let probe = Probe::new(base);
    let order = Arc::new(OrderCheck::new(AGGREGATES));
    let sub = keyed_subscription(&bus, "keyed", lanes, &probe, order.clone()).await;
    let events = keyed_events(&ids, per_key);
    let total = events.len() as u64;
    let start = Instant::now();
    for ev in events {
        bus.publish_envelope("keyed", ev).await.expect("publish");
    }
    probe.wait(total).await;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    if turn == Some(false) {
        baseline_rate = keyed_baseline(lanes, keyed_events(&ids, per_key)).await;
    }
    // No aggregate was seen out of order, and each one's versions arrived
    // up to the last one published.
    let order_held = |published: &[i64]| order.held(published);
    if turn.is_none() {
        bus.close().await.expect("close");
        drop(sub);
        let published = vec![per_key as i64; AGGREGATES];
        return Report::throughput_only("keyed", total, rate, Some(order_held(&published)));
    }

    // Latency run, paced at half the rate; the send stamp rides in the payload.
    probe.timing.store(true, Ordering::Relaxed);
    let lat_keys = ((rate * 0.5 * 0.4) as usize / AGGREGATES).clamp(10, per_key.max(10));
    let mut sent = 0usize;
    let mut published = vec![per_key as i64; AGGREGATES];
    let mut key = 0usize;
    let paced_from = Instant::now();
    while sent < lat_keys * AGGREGATES {
        pace(paced_from, sent as u64, rate * 0.5).await;
        published[key] += 1;
        let ev = Envelope::new(ids[key].as_str(), "Updated", published[key], stamp(base));
        bus.publish_envelope("keyed", ev).await.expect("publish");
        sent += 1;
        key = (key + 1) % AGGREGATES;
    }
    probe.wait(total + sent as u64).await;
    bus.close().await.expect("close");
    drop(sub);
    let order_ok = order_held(&published);

    Report {
        scenario: "keyed",
        messages: total,
        msgs_per_sec: rate,
        p50_us: probe.hist.quantile_us(0.50),
        p99_us: probe.hist.quantile_us(0.99),
        baseline_msgs_per_sec: baseline_rate,
        order_ok: Some(order_ok),
        ..Report::throughput_only("keyed", total, rate, None)
    }
}

pub(crate) fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    match args.transport.as_str() {
        "memory" => {}
        #[cfg(feature = "nats")]
        "nats" => {}
        #[cfg(feature = "kafka")]
        "kafka" => {}
        // A broker transport whose feature is off (a guard, not a pattern:
        // with both features on, the arm is never taken).
        name if ["nats", "kafka"].contains(&name) => {
            return Err(format!(
                "the {name} transport needs the cargo feature `{name}`: \
                 cargo run --release --features {name} --example bench -- --transport {name}"
            )
            .into())
        }
        other => {
            return Err(
                format!("unknown transport `{other}` (available: memory, nats, kafka)").into(),
            )
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base = Instant::now();
    #[cfg(any(feature = "nats", feature = "kafka"))]
    {
        let latency = !SKIP_LATENCY.load(Ordering::Relaxed);
        let reports = match args.transport.as_str() {
            #[cfg(feature = "nats")]
            "nats" => Some(nats::run(&args, &rt, base, latency)?),
            #[cfg(feature = "kafka")]
            "kafka" => Some(kafka::run(&args, &rt, base, latency)?),
            _ => None,
        };
        if let Some(reports) = reports {
            if args.json {
                for r in &reports {
                    println!("{}", json_line(&args.transport, r));
                }
            }
            return print_reports(&args, &reports);
        }
    }
    let scale = args.scale;
    let scaled = move |n: f64| (n * scale).max(10_000.0) as u64;
    let mut reports = Vec::new();
    for s in &args.scenarios {
        // Every scenario runs on a runtime worker (as a service's code would),
        // not on this thread.
        let (lanes, keyed_lanes) = (args.lanes, args.keyed_lanes);
        let mut runs = Vec::with_capacity(args.runs);
        for run in 0..args.runs {
            let name = s.clone();
            runs.push(rt.block_on(rt.spawn(async move {
                match name.as_str() {
                    "plain" => {
                        Ok(plain_like("plain", 1, 1, lanes, scaled(4_000_000.0), base, run).await)
                    }
                    "keyed" => Ok(keyed(keyed_lanes, scaled(1_000_000.0), base, run).await),
                    "fanout" => {
                        Ok(plain_like("fanout", 1, 4, 1, scaled(1_000_000.0), base, run).await)
                    }
                    "contention" => {
                        Ok(
                            plain_like("contention", 2, 1, lanes, scaled(4_000_000.0), base, run)
                                .await,
                        )
                    }
                    other => Err(format!("unknown scenario `{other}`")),
                }
            }))??);
        }
        let r = Report::median(runs);
        if args.json {
            println!("{}", json_line(&args.transport, &r));
        }
        reports.push(r);
    }
    print_reports(&args, &reports)
}

/// One report as a JSON object on one line; broker rows (NATS, Kafka) add
/// the baseline's latency and the lost and out-of-order counts.
fn json_line(transport: &str, r: &Report) -> String {
    let nats = if transport != "memory" {
        format!(
            ",\"baseline_p50_us\":{:.2},\"baseline_p99_us\":{:.2},\"lost\":{},\"disorder\":{}",
            r.baseline_p50_us, r.baseline_p99_us, r.lost, r.disorder
        )
    } else {
        String::new()
    };
    format!(
        "{{\"transport\":\"{}\",\"scenario\":\"{}\",\"messages\":{},\"msgs_per_sec\":{:.0},\"p50_us\":{:.2},\"p99_us\":{:.2},\"baseline_msgs_per_sec\":{:.0},\"ratio\":{:.3}{}{nats}}}",
        transport,
        r.scenario,
        r.messages,
        r.msgs_per_sec,
        r.p50_us,
        r.p99_us,
        r.baseline_msgs_per_sec,
        r.ratio(),
        r.order_ok.map(|o| format!(",\"order_ok\":{o}")).unwrap_or_default(),
    )
}

/// Prints the table (unless `--json`), then fails when order broke or a
/// message was lost on a row that must lose none (every row but NATS's
/// at-most-once `ephemeral`).
fn print_reports(args: &Args, reports: &[Report]) -> Result<(), Box<dyn std::error::Error>> {
    let nats = args.transport != "memory";
    if !args.json {
        let (base_head, lost_head) = if nats {
            (
                format!(" {:>10} {:>10}", "base p50", "base p99"),
                format!(" {:>6}", "lost"),
            )
        } else {
            (String::new(), String::new())
        };
        println!(
            "{:<10} {:<11} {:>10} {:>14} {:>9} {:>9} {:>16}{base_head} {:>7} {:>8}{lost_head}",
            "transport",
            "scenario",
            "messages",
            "msgs/s",
            "p50 us",
            "p99 us",
            "baseline msgs/s",
            "ratio",
            "order"
        );
        for r in reports {
            let (base, lost) = if nats {
                (
                    format!(" {:>10.2} {:>10.2}", r.baseline_p50_us, r.baseline_p99_us),
                    format!(" {:>6}", r.lost),
                )
            } else {
                (String::new(), String::new())
            };
            let order = match r.order_ok {
                Some(true) => "held",
                Some(false) => "BROKEN",
                None => "-",
            };
            let (transport, ratio) = (&args.transport, r.ratio());
            let Report {
                scenario,
                messages,
                msgs_per_sec,
                p50_us,
                p99_us,
                baseline_msgs_per_sec,
                ..
            } = r;
            println!(
                "{transport:<10} {scenario:<11} {messages:>10} {msgs_per_sec:>14.0} {p50_us:>9.2} \
                 {p99_us:>9.2} {baseline_msgs_per_sec:>16.0}{base} {ratio:>7.3} {order:>8}{lost}"
            );
        }
    }
    if reports.iter().any(|r| r.order_ok == Some(false)) {
        return Err("per-key order broke".into());
    }
    if let Some(r) = reports
        .iter()
        .find(|r| r.lost > 0 && r.scenario != "ephemeral")
    {
        return Err(format!("{} lost {} messages", r.scenario, r.lost).into());
    }
    Ok(())
}
