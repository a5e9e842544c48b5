//! The dual-bus scenario: two independent buses in one service, on the
//! memory transport (the default), on NATS or on Kafka.
//!
//! - **Domain bus**: order events as envelopes on `orders.events`. Every
//!   order (aggregate) publishes versions 1..=N; the handler checks that each
//!   order's versions arrive strictly in order while different orders run in
//!   parallel on keyed lanes. One event per run is a poison message the
//!   handler rejects as permanent: it lands on `orders.events.dlq`.
//! - **Notification bus**: plain messages on `notifications`, published by
//!   two tasks and handled concurrently over lanes, no envelope.
//!
//! Prints the transport, what happened, whether order held, and the
//! throughput of each.
//!
//! ```text
//! cargo run --release --example dual_bus [-- <orders> <events-per-order> <notifications>]
//! cargo run --release --features nats --example dual_bus -- --transport nats [--url nats://HOST:PORT] [<orders> <events-per-order> <notifications>]
//! cargo run --release --features kafka --example dual_bus -- --transport kafka [--brokers HOST:PORT] [<orders> <events-per-order> <notifications>]
//! ```
//!
//! On NATS (cargo feature `nats`) the domain bus keeps `orders.events` and
//! its dead-letter topic `orders.events.dlq` on JetStream (persistent
//! topics: each publish returns after the server's ack, the subscription is
//! a durable consumer), and the notification bus keeps `notifications` on
//! core NATS (an ephemeral topic: at-most-once, so a notification the
//! client drops for a subscription that falls behind is reported as lost,
//! not as a failure). Without `--url` the example starts its own
//! `nats-server -js` on a free loopback port with a temporary store (the
//! integration tests' harness) and stops it at the end. The defaults are
//! smaller on NATS (200 orders × 50 versions, 200,000 notifications): the
//! domain publisher awaits each ack in turn. At the end the domain bus
//! removes its two topics, which on JetStream deletes their streams, so a
//! server given by `--url` starts the next run clean.
//!
//! On Kafka (cargo feature `kafka`) both buses are Kafka clients of their
//! own: `orders.events`, `orders.events.dlq` and `notifications` are Kafka
//! topics of 8 partitions, created through the admin API at connect
//! (configured topics) and removed at the end. Each subscription is a
//! consumer group member; every publish returns after its delivery report
//! (`acks=all`, idempotent producer), so both buses publish from 64 tasks
//! at once (the domain tasks each owning a share of the orders, in version
//! order), and the example waits until every notification was handled
//! before it closes the notification bus (nothing may be lost there
//! either). The timings include the consumer groups' joins. Without
//! `--brokers` the example starts its own single-node broker (the
//! integration tests' harness, jars from `scripts/kafka.sh fetch`) and
//! stops it at the end. Defaults as on NATS, with 100,000 notifications.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanebus::{Bus, Envelope, HandlerError, Message, SubscribeOptions};
use parking_lot::Mutex;

// The example uses the start, the URL and the drop of the harness.
#[cfg(feature = "nats")]
#[allow(dead_code)]
#[path = "../tests/common/nats.rs"]
mod nats_server;

// The example uses the start, the bootstrap address and the drop of the
// harness.
#[cfg(feature = "kafka")]
#[allow(dead_code)]
#[path = "../tests/common/kafka.rs"]
mod kafka_broker;

/// How long the domain bus may go without handling anything before the
/// example stops waiting for the rest (a hang guard, not a speed check).
const STALL: Duration = Duration::from_secs(10);
/// Tasks publishing at once on a broker (each publish waits for the
/// server's ack or the delivery report): domain events on NATS and Kafka,
/// notifications on Kafka.
const BROKER_PUBLISHERS: usize = 64;

/// Where the two buses run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Memory,
    Nats,
    Kafka,
}

/// The command line: `--transport`, `--url` or `--brokers`, then the
/// three counts.
struct Args {
    transport: Transport,
    url: Option<String>,
    brokers: Option<String>,
    counts: Vec<usize>,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args {
        transport: Transport::Memory,
        url: None,
        brokers: None,
        counts: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--transport" => match it.next().as_deref() {
                Some("memory") => args.transport = Transport::Memory,
                Some("nats") => args.transport = Transport::Nats,
                Some("kafka") => args.transport = Transport::Kafka,
                Some(other) => {
                    return Err(format!(
                        "unknown transport `{other}` (available: memory, nats, kafka)"
                    )
                    .into())
                }
                None => return Err("--transport needs a value".into()),
            },
            "--url" => args.url = Some(it.next().ok_or("--url needs a value")?),
            "--brokers" => args.brokers = Some(it.next().ok_or("--brokers needs a value")?),
            "-h" | "--help" => {
                println!("dual_bus [--transport memory|nats|kafka] [--url nats://HOST:PORT] [--brokers HOST:PORT] [<orders> <events-per-order> <notifications>]");
                std::process::exit(0);
            }
            count => args.counts.push(count.parse()?),
        }
    }
    if args.url.is_some() && args.transport != Transport::Nats {
        return Err("--url is for --transport nats".into());
    }
    if args.brokers.is_some() && args.transport != Transport::Kafka {
        return Err("--brokers is for --transport kafka".into());
    }
    Ok(args)
}

/// The two buses, and the server the example started (kept until the
/// end).
struct Buses {
    domain: Bus,
    fast: Bus,
    transport: String,
    #[cfg(feature = "nats")]
    _server: Option<nats_server::NatsServer>,
    #[cfg(feature = "kafka")]
    _broker: Option<kafka_broker::KafkaBroker>,
}

#[cfg(feature = "nats")]
async fn nats_buses(url: Option<String>) -> Result<Buses, Box<dyn std::error::Error>> {
    let server = match url {
        Some(_) => None,
        None => Some(nats_server::NatsServer::start()),
    };
    let (url, origin) = match (url, &server) {
        (Some(url), _) => (url, "--url"),
        (None, Some(s)) => (s.url(), "nats-server -js started by the example"),
        (None, None) => unreachable!("a server was started"),
    };
    let config = |name: &str, default: &str, topics: &str| {
        lanebus::BusConfig::from_yaml_str(&format!(
            "type: nats\nnats:\n  urls: [\"{url}\"]\n  name: {name}\n  \
             jetstream: {{ default_persistence: {default} }}\ntopics:\n{topics}"
        ))
    };
    let domain = Bus::connect(config(
        "dual-bus-domain",
        "persistent",
        "  orders.events: { persistence: persistent }\n  \
         orders.events.dlq: { persistence: persistent }\n",
    )?)
    .await?;
    let fast = Bus::connect(config(
        "dual-bus-notifications",
        "ephemeral",
        "  notifications: { persistence: ephemeral }\n",
    )?)
    .await?;
    Ok(Buses {
        domain,
        fast,
        transport: format!("nats at {url} ({origin})"),
        _server: server,
        #[cfg(feature = "kafka")]
        _broker: None,
    })
}

#[cfg(feature = "kafka")]
async fn kafka_buses(brokers: Option<String>) -> Result<Buses, Box<dyn std::error::Error>> {
    let (broker, origin) = match brokers {
        Some(_) => (None, "--brokers".to_owned()),
        None => {
            let started = Instant::now();
            let broker = tokio::task::spawn_blocking(kafka_broker::KafkaBroker::start).await?;
            let origin = format!(
                "single-node broker started by the example in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            (Some(broker), origin)
        }
    };
    let brokers = match (brokers, &broker) {
        (Some(b), _) => b,
        (None, Some(b)) => b.bootstrap(),
        (None, None) => unreachable!("a broker was started"),
    };
    let config = |client_id: &str, topics: &str| {
        lanebus::BusConfig::from_yaml_str(&format!(
            "type: kafka\nkafka:\n  brokers: [\"{brokers}\"]\n  client_id: {client_id}\n  \
             consumer: {{ session_timeout: 6s, heartbeat_interval: 500ms, commit_interval: 200ms }}\n\
             topics:\n{topics}"
        ))
    };
    let topic = "{ persistence: persistent, partitions: 8 }";
    let domain = Bus::connect(config(
        "dual-bus-domain",
        &format!("  orders.events: {topic}\n  orders.events.dlq: {topic}\n"),
    )?)
    .await?;
    let fast = Bus::connect(config(
        "dual-bus-notifications",
        &format!("  notifications: {topic}\n"),
    )?)
    .await?;
    Ok(Buses {
        domain,
        fast,
        transport: format!("kafka at {brokers} ({origin})"),
        #[cfg(feature = "nats")]
        _server: None,
        _broker: broker,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let transport = args.transport;
    let (nats, kafka) = (transport == Transport::Nats, transport == Transport::Kafka);
    let buses = match transport {
        Transport::Nats => {
            #[cfg(feature = "nats")]
            {
                nats_buses(args.url).await?
            }
            #[cfg(not(feature = "nats"))]
            return Err(
                "the nats transport needs the cargo feature `nats`: \
                        cargo run --release --features nats --example dual_bus -- --transport nats"
                    .into(),
            );
        }
        Transport::Kafka => {
            #[cfg(feature = "kafka")]
            {
                kafka_buses(args.brokers).await?
            }
            #[cfg(not(feature = "kafka"))]
            return Err("the kafka transport needs the cargo feature `kafka`: \
                        cargo run --release --features kafka --example dual_bus -- --transport kafka"
                .into());
        }
        Transport::Memory => Buses {
            domain: Bus::memory(),
            fast: Bus::memory(),
            transport: "memory".to_owned(),
            #[cfg(feature = "nats")]
            _server: None,
            #[cfg(feature = "kafka")]
            _broker: None,
        },
    };
    let (default_orders, default_versions, default_notes) = match transport {
        Transport::Nats => (200, 50, 200_000),
        Transport::Kafka => (200, 50, 100_000),
        Transport::Memory => (1_000, 200, 2_000_000),
    };
    let mut counts = args.counts.into_iter();
    let orders = counts.next().unwrap_or(default_orders);
    let events_per_order = counts.next().unwrap_or(default_versions);
    let notifications = counts.next().unwrap_or(default_notes);
    let (domain, fast) = (&buses.domain, &buses.fast);
    let (domain_on, fast_on) = match transport {
        Transport::Nats => (" on JetStream", " on core NATS"),
        Transport::Kafka => (" on Kafka", " on Kafka"),
        Transport::Memory => ("", ""),
    };
    println!("transport: {}", buses.transport);

    // --- domain events: per-aggregate order ---------------------------------
    let last_version: Arc<Vec<AtomicI64>> =
        Arc::new((0..orders).map(|_| AtomicI64::new(0)).collect());
    let out_of_order = Arc::new(AtomicU64::new(0));
    let handled_events = Arc::new(AtomicU64::new(0));
    let events_sub = {
        let last = last_version.clone();
        let bad = out_of_order.clone();
        let handled = handled_events.clone();
        domain
            .subscribe_envelope_with(
                "orders.events",
                SubscribeOptions::default().lanes(8).ring_capacity(4096),
                move |ev: Envelope| {
                    let last = last.clone();
                    let bad = bad.clone();
                    let handled = handled.clone();
                    async move {
                        if ev.event_type == "OrderCorrupted" {
                            return Err(HandlerError::permanent("corrupted order event"));
                        }
                        let idx: usize = ev.aggregate_id["order-".len()..].parse()?;
                        let prev = last[idx].swap(ev.event_version, Ordering::Relaxed);
                        if prev + 1 != ev.event_version {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                        handled.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                },
            )
            .await?
    };
    // Dead letters are kept and reported under the domain bus's heading.
    let dead_letters = Arc::new(Mutex::new(Vec::new()));
    let dlq_sub = {
        let dead = dead_letters.clone();
        domain
            .subscribe("orders.events.dlq", move |m: Message| {
                let dead = dead.clone();
                async move {
                    if let Some(why) = m.dead_letter() {
                        dead.lock().push(why);
                    }
                    Ok::<(), HandlerError>(())
                }
            })
            .await?
    };

    // Build the envelopes first so the timing measures the bus.
    let mut events = Vec::with_capacity(orders * events_per_order + 1);
    for version in 1..=events_per_order as i64 {
        for order in 0..orders {
            events.push(
                Envelope::new(format!("order-{order}"), "OrderUpdated", version, "{}")
                    .with_trace_id(format!("trace-{order}")),
            );
        }
    }
    let regular_events = events.len();
    events.push(Envelope::new("order-poison", "OrderCorrupted", 1, "{}"));
    let total_events = events.len();

    let started = Instant::now();
    if nats || kafka {
        // Each publish waits for the server's ack (the delivery report on
        // Kafka): publish from several tasks at once, each owning a share
        // of the orders and publishing them in version order, so per-order
        // order is kept.
        let mut shares: Vec<Vec<Envelope>> = (0..BROKER_PUBLISHERS).map(|_| Vec::new()).collect();
        for ev in events {
            let share = lanebus::key_hash(ev.aggregate_id.as_bytes()) as usize % BROKER_PUBLISHERS;
            shares[share].push(ev);
        }
        let tasks: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let domain = domain.clone();
                tokio::spawn(async move {
                    for ev in share {
                        domain
                            .publish_envelope("orders.events", ev)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
    } else {
        for ev in events {
            domain.publish_envelope("orders.events", ev).await?;
        }
    }
    // A broker's consumer stops pulling at close: wait until every event
    // was handled or dead-lettered first (on memory, close would drain).
    let mut progress = (0, Instant::now());
    loop {
        let done = handled_events.load(Ordering::Relaxed) as usize + dead_letters.lock().len();
        if done >= total_events {
            break;
        }
        if done != progress.0 {
            progress = (done, Instant::now());
        } else if progress.1.elapsed() >= STALL {
            eprintln!("domain bus: nothing handled for {STALL:?}; {done} of {total_events} done");
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let domain_secs = started.elapsed().as_secs_f64();
    let stats = events_sub.stats();
    events_sub.unsubscribe().await;
    dlq_sub.unsubscribe().await;
    if nats || kafka {
        // Deletes the streams on JetStream, the topics on Kafka (see the
        // module docs).
        domain.remove_topic("orders.events").await?;
        domain.remove_topic("orders.events.dlq").await?;
    }
    domain.close().await?;

    // --- plain notifications: concurrent ------------------------------------
    let handled_notes = Arc::new(AtomicU64::new(0));
    let notes_sub = {
        let handled = handled_notes.clone();
        fast.subscribe_with(
            "notifications",
            SubscribeOptions::default()
                .lanes(4)
                .ring_capacity(8192)
                .drain_batch(256),
            move |_m: Message| {
                handled.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )
        .await?
    };
    // On NATS: how often the client reported dropping messages for a
    // subscription that fell behind (at least: the events come in a
    // broadcast channel, and a receiver that lags misses some).
    let slow_reports = Arc::new(AtomicU64::new(0));
    #[cfg(feature = "nats")]
    if let Some(mut events) = fast.connection_events() {
        let slow = slow_reports.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match events.recv().await {
                    Ok(lanebus::ConnectionEvent::SlowConsumer { .. }) => {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
    // Two tasks where a publish returns at once (memory, core NATS); on
    // Kafka each waits for its delivery report.
    let publishers = if kafka { BROKER_PUBLISHERS } else { 2 };
    let per_publisher = notifications / publishers;
    let payload = lanebus::Bytes::from_static(b"{\"kind\":\"email\",\"to\":\"customer\"}");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..publishers {
        let fast = fast.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_publisher {
                fast.publish("notifications", payload.clone()).await?;
            }
            Ok::<(), lanebus::PublishError<lanebus::Bytes>>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    // On memory, close drains the lanes (and the time includes it).
    let mut notes_secs = None;
    if kafka {
        // The consumer stops fetching at close: wait until every
        // notification was handled first.
        let published = (per_publisher * publishers) as u64;
        let mut progress = (0, Instant::now());
        loop {
            let done = handled_notes.load(Ordering::Relaxed);
            if done >= published {
                break;
            }
            if done != progress.0 {
                progress = (done, Instant::now());
            } else if progress.1.elapsed() >= STALL {
                eprintln!(
                    "notification bus: nothing handled for {STALL:?}; {done} of {published} handled"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        notes_secs = Some(started.elapsed().as_secs_f64());
        notes_sub.unsubscribe().await;
        fast.remove_topic("notifications").await?;
    }
    fast.close().await?;
    let notes_secs = notes_secs.unwrap_or_else(|| started.elapsed().as_secs_f64());

    // --- report -------------------------------------------------------------
    let handled = handled_events.load(Ordering::Relaxed);
    let disorder = out_of_order.load(Ordering::Relaxed);
    let complete = last_version
        .iter()
        .all(|v| v.load(Ordering::Relaxed) == events_per_order as i64);
    let dead = dead_letters.lock();
    println!("domain bus (envelopes, keyed lanes{domain_on}):");
    println!(
        "  published {total_events} events: {regular_events} for {orders} orders ({events_per_order} versions each) and 1 poison event"
    );
    println!(
        "  handled {handled}, dead-lettered {}, failed attempts {}",
        dead.len(),
        stats.total.failed
    );
    for why in dead.iter() {
        println!(
            "  dead letter from {}: {} ({}, {} attempt(s))",
            why.source_topic, why.error, why.error_class, why.attempts
        );
    }
    println!(
        "  per-order order: {} ({disorder} out-of-order deliveries; every order reached its last version: {complete})",
        if disorder == 0 && complete { "HELD" } else { "BROKEN" }
    );
    println!(
        "  throughput: {:.0} events/s publish->handled ({domain_secs:.3} s)",
        total_events as f64 / domain_secs
    );
    let notes = handled_notes.load(Ordering::Relaxed);
    println!("notification bus (plain messages, concurrent lanes{fast_on}):");
    let published = (per_publisher * publishers) as u64;
    println!("  published {published} from {publishers} tasks, handled {notes}");
    if nats && notes < published {
        println!(
            "  lost {} (core NATS is at-most-once: the client drops what overflows a slow \
             subscription's buffer; it reported that at least {} time(s))",
            published - notes,
            slow_reports.load(Ordering::Relaxed)
        );
    }
    println!(
        "  throughput: {:.0} msgs/s publish->handled ({notes_secs:.3} s)",
        notes as f64 / notes_secs
    );
    let notes_lost = notes != published && !nats;
    if disorder != 0 || !complete || notes_lost || dead.len() != 1 {
        return Err("the run lost or reordered messages".into());
    }
    Ok(())
}
