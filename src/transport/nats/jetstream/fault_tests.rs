//! The bus on JetStream across a server crash, against a real
//! `nats-server` of the test's own: the server is killed with `SIGKILL`
//! mid-stream and started again on the same port and store. Every event
//! whose publish returned `Ok` must be handled (lost = 0), and per
//! aggregate the first handling of each event must come in version order.
//! The test prints published, handled, redelivered and lost counts.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::super::test_support::{bus_on, NatsServer};
use crate::{Bus, Envelope, Event, HandlerError, SubscribeOptions};

const AGGREGATES: usize = 16;
const EVENTS: usize = 3_000;

async fn bus(url: &str) -> Bus {
    let reconnect = "  reconnect: { initial_delay: 50ms, max_delay: 500ms }\n";
    bus_on(url, "fault-test", reconnect).await
}

/// What the handler saw.
#[derive(Default)]
struct Seen {
    /// Per aggregate, the versions in the order of their first handling.
    first: BTreeMap<String, Vec<i64>>,
    handled: HashSet<(String, i64)>,
    calls: u64,
    redelivered_calls: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_loses_nothing_that_was_acknowledged() {
    let mut server = NatsServer::start();
    let url = server.url();
    let consumer_bus = bus(&url).await;
    let publisher = bus(&url).await;
    consumer_bus
        .configure_topic("fault.orders", crate::TopicOptions::persistent())
        .await
        .unwrap();

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let _sub = {
        let seen = seen.clone();
        consumer_bus
            .subscribe_envelope_with(
                "fault.orders",
                SubscribeOptions::default()
                    .lanes(8)
                    .group("fault")
                    .ack_wait(Duration::from_secs(2)),
                move |ev: Event| {
                    let seen = seen.clone();
                    async move {
                        let mut s = seen.lock();
                        s.calls += 1;
                        if ev.context().redelivered() > 0 {
                            s.redelivered_calls += 1;
                        }
                        let id = (ev.aggregate_id.to_string(), ev.event_version);
                        if s.handled.insert(id) {
                            s.first
                                .entry(ev.aggregate_id.to_string())
                                .or_default()
                                .push(ev.event_version);
                        }
                        Ok::<(), HandlerError>(())
                    }
                },
            )
            .await
            .unwrap()
    };

    // The publisher: each event until its publish returns Ok (a retry
    // after a failure re-sends the same event ID, which the stream's
    // duplicate window drops if the first try was stored after all).
    let published = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let acknowledged: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (published, failures, acknowledged, done) = (
            published.clone(),
            failures.clone(),
            acknowledged.clone(),
            done.clone(),
        );
        let publisher = publisher.clone();
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let aggregate = format!("order-{}", i % AGGREGATES);
                let version = (i / AGGREGATES + 1) as i64;
                let ev = Envelope::new(aggregate.clone(), "OrderChanged", version, "{}");
                loop {
                    match publisher.publish_envelope("fault.orders", ev.clone()).await {
                        Ok(()) => break,
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                acknowledged.lock().push((aggregate, version));
                published.fetch_add(1, Ordering::Relaxed);
            }
            done.store(true, Ordering::Release);
        })
    };

    // Kill the server a third of the way in, keep it down a moment, and
    // start it again on the same port and store.
    let deadline = Instant::now() + Duration::from_secs(60);
    while published.load(Ordering::Relaxed) < EVENTS / 3 {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill();
    let at_kill = published.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.start_again();

    let deadline = Instant::now() + Duration::from_secs(90);
    while !done.load(Ordering::Acquire) {
        assert!(
            Instant::now() < deadline,
            "publishing did not finish after the restart ({} of {EVENTS})",
            published.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publishing.await.unwrap();
    let acknowledged = std::mem::take(&mut *acknowledged.lock());
    // Wait for every acknowledged event to be handled (or time out and
    // report what is missing).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = {
            let s = seen.lock();
            acknowledged
                .iter()
                .filter(|id| !s.handled.contains(*id))
                .count()
        };
        if missing == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = std::mem::take(&mut *seen.lock());
    let lost = acknowledged
        .iter()
        .filter(|id| !s.handled.contains(*id))
        .count();
    let out_of_order: Vec<&String> = s
        .first
        .iter()
        .filter(|(_, v)| v.windows(2).any(|w| w[0] >= w[1]))
        .map(|(a, _)| a)
        .collect();
    println!(
        "fault test: killed after {at_kill} publishes; published {} (Ok), publish retries {}, handled {} distinct in {} calls, redelivered calls {}, lost {lost}, aggregates out of order {}",
        acknowledged.len(),
        failures.load(Ordering::Relaxed),
        s.handled.len(),
        s.calls,
        s.redelivered_calls,
        out_of_order.len(),
    );
    assert_eq!(acknowledged.len(), EVENTS);
    assert_eq!(lost, 0, "acknowledged events were not handled");
    assert!(out_of_order.is_empty(), "order broken for {out_of_order:?}");
    consumer_bus.close().await.ok();
    publisher.close().await.ok();
}
