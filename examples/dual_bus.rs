//! The dual-bus scenario: two independent memory buses in one service.
//!
//! - **Domain bus**: order events as envelopes on `orders.events`. Every
//!   order (aggregate) publishes versions 1..=N; the handler checks that each
//!   order's versions arrive strictly in order while different orders run in
//!   parallel on keyed lanes. One event per run is a poison message the
//!   handler rejects as permanent: it lands on `orders.events.dlq`.
//! - **Notification bus**: plain messages on `notifications`, published by
//!   two tasks and handled concurrently over lanes, no envelope.
//!
//! Prints what happened, whether order held, and the throughput of each.
//!
//! `cargo run --release --example dual_bus [-- <orders> <events-per-order> <notifications>]`

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use lanebus::{Bus, Envelope, HandlerError, Message, SubscribeOptions};
use parking_lot::Mutex;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let orders = args.next().transpose()?.unwrap_or(1_000);
    let events_per_order = args.next().transpose()?.unwrap_or(200);
    let notifications = args.next().transpose()?.unwrap_or(2_000_000);

    let domain = Bus::memory();
    let fast = Bus::memory();

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
    let _dlq_sub = {
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

    let started = Instant::now();
    for ev in events {
        domain.publish_envelope("orders.events", ev).await?;
    }
    domain.close().await?;
    let domain_secs = started.elapsed().as_secs_f64();
    let stats = events_sub.stats();

    // --- plain notifications: concurrent ------------------------------------
    let handled_notes = Arc::new(AtomicU64::new(0));
    let _notes_sub = {
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
    let publishers = 2;
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
    fast.close().await?;
    let notes_secs = started.elapsed().as_secs_f64();

    // --- report -------------------------------------------------------------
    let handled = handled_events.load(Ordering::Relaxed);
    let disorder = out_of_order.load(Ordering::Relaxed);
    let complete = last_version
        .iter()
        .all(|v| v.load(Ordering::Relaxed) == events_per_order as i64);
    let dead = dead_letters.lock();
    let total_events = regular_events + 1;
    println!("domain bus (envelopes, keyed lanes):");
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
    println!("notification bus (plain messages, concurrent lanes):");
    println!(
        "  published {} from {publishers} tasks, handled {notes}",
        per_publisher * publishers
    );
    println!(
        "  throughput: {:.0} msgs/s publish->handled ({notes_secs:.3} s)",
        notes as f64 / notes_secs
    );
    if disorder != 0 || !complete || notes != (per_publisher * publishers) as u64 {
        return Err("the run lost or reordered messages".into());
    }
    Ok(())
}
