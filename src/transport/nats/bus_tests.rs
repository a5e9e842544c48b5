//! The bus on NATS with its defaults, end to end against a real
//! `nats-server` (the integration tests' harness, through
//! `test_support.rs`). Topics are persistent by default, so these run on
//! JetStream (streams, durable consumers, acks); wildcard subscriptions
//! run on core NATS. Publish to a handler, per-aggregate order over 8
//! lanes, two groups (two durable consumers) each getting every message
//! and sharing it inside, wildcard subjects, dead letters on the `.dlq`
//! stream, the close and unsubscribe drain (the rest stays with the
//! consumer), the config path (`type: nats` +
//! `Bus::connect`), and health and subscriptions across a server restart.
//! Core NATS (ephemeral topics) is covered by `js_topic_tests`.
//!
//! Each test uses its own subject prefix on the binary's shared server (the
//! restart test has a server of its own).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::test_support::{bus_on, off_thread, recv, step, yaml as nats_yaml, NatsServer, STEP};
use crate::transport::tests::collect;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::pipeline::dead_letter::{HEADER_ERROR_CLASS, HEADER_SOURCE_TOPIC};
use crate::{
    BuildError, Bus, BusConfig, Envelope, HandlerError, Message, OutboundMessage, PublishError,
    SubscribeOptions, TransportKind, TryPublishError,
};

fn yaml(url: &str) -> String {
    nats_yaml(url, "lanebus-bus-test", "")
}

/// A bus on the shared server, built from YAML as a user would.
async fn nats_bus() -> Bus {
    super::test_support::bus("lanebus-bus-test", "").await
}

#[tokio::test]
async fn yaml_config_connects_and_reports_health() {
    let url = NatsServer::shared().url();
    let config = BusConfig::from_yaml_str(&yaml(&url)).unwrap();
    assert_eq!(config.transport, TransportKind::Nats);

    // `from_config` cannot connect, and says what to use instead.
    let e = Bus::from_config(config.clone()).unwrap_err();
    assert_eq!(e.field(), Some("type"));
    assert!(e.to_string().contains("Bus::connect"), "{e}");

    let bus = step("connect", Bus::connect(config)).await.unwrap();
    assert!(bus.connection_events().is_some());
    // Subscribing can run on any task (its future is `Send`).
    let sub = {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.subscribe("t0.any", |_m: Message| async { Ok::<(), HandlerError>(()) })
                .await
        })
    };
    let sub = step("spawned subscribe", sub).await.unwrap().unwrap();
    assert_eq!(sub.topic(), "t0.any");
    let report = step("health", bus.health_check()).await.unwrap();
    assert_eq!(report.transport, "nats");
    bus.close().await.unwrap();

    // A server that is not there is a transport error at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = BusConfig::from_yaml_str(&yaml(&format!("nats://127.0.0.1:{port}"))).unwrap();
    match step("connect", Bus::connect(config)).await {
        Err(BuildError::Transport(e)) => {
            assert_eq!(e.transport(), "nats");
            assert!(e.message().contains("connection refused"), "{e}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_plain_publish_reaches_the_handler_with_key_and_headers() {
    let bus = nats_bus().await;
    let (_sub, mut rx) = collect(&bus, "t1.greetings", SubscribeOptions::default()).await;
    bus.publish("t1.greetings", "hello").await.unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(m.payload().as_ref(), b"hello");
    assert_eq!(m.topic(), "t1.greetings");
    assert_eq!(m.key(), None);
    assert!(m.headers().is_empty());

    let out = OutboundMessage::new("with meta")
        .with_key("customer-7")
        .with_header("trace", "abc")
        .with_header("tenant", "eu");
    bus.publish_with("t1.greetings", out).await.unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(m.payload().as_ref(), b"with meta");
    assert_eq!(m.key(), Some("customer-7"));
    assert_eq!(m.headers().get("trace"), Some("abc"));
    assert_eq!(m.headers().get("tenant"), Some("eu"));
    assert_eq!(m.headers().get(super::pubsub::KEY_HEADER), None);

    // Without waiting: the client's queue has room.
    bus.try_publish("t1.greetings", "now").unwrap();
    assert_eq!(recv(&mut rx).await.payload().as_ref(), b"now");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn what_nats_cannot_carry_is_handed_back() {
    let bus = nats_bus().await;
    let bad = OutboundMessage::new("x").with_header("bad:name", "v");
    match bus.publish_with("t2.x", bad).await {
        Err(PublishError::Transport(back, e)) => {
            assert_eq!(back.payload().as_ref(), b"x");
            assert_eq!(back.headers().get("bad:name"), Some("v"));
            assert!(e.message().contains("bad:name"), "{e}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    let bad = OutboundMessage::new("y").with_header("h", "line\nbreak");
    assert!(matches!(
        bus.try_publish_with("t2.x", bad),
        Err(TryPublishError::Transport(..))
    ));
    assert!(matches!(
        bus.publish("t2..x", "z").await,
        Err(PublishError::InvalidTopic(..))
    ));
    assert_eq!(bus.stats().published, 0);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn envelopes_keep_per_aggregate_order_over_8_lanes() {
    const AGGREGATES: i64 = 20;
    const EVENTS: i64 = 40;
    let bus = nats_bus().await;
    let seen: Arc<Mutex<HashMap<String, Vec<i64>>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicU64::new(0));
    let _sub = {
        let seen = seen.clone();
        let calls = calls.clone();
        bus.subscribe_envelope_with(
            "t3.orders",
            SubscribeOptions::default().lanes(8),
            move |ev: Envelope| {
                let (seen, done_tx, calls) = (seen.clone(), done_tx.clone(), calls.clone());
                async move {
                    // A pseudo-random delay of 0 to 2 ms per call.
                    let n = calls.fetch_add(1, Ordering::Relaxed);
                    let delay = n.wrapping_mul(2_654_435_761) % 3;
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    seen.lock()
                        .entry(ev.aggregate_id.to_string())
                        .or_default()
                        .push(ev.event_version);
                    let _ = done_tx.send(());
                    Ok::<(), HandlerError>(())
                }
            },
        )
        .await
        .unwrap()
    };
    for version in 1..=EVENTS {
        for agg in 0..AGGREGATES {
            let ev = Envelope::new(format!("order-{agg}"), "OrderChanged", version, "{}");
            bus.publish_envelope("t3.orders", ev).await.unwrap();
        }
    }
    for _ in 0..AGGREGATES * EVENTS {
        step("all events", done.recv()).await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock());
    assert_eq!(seen.len() as i64, AGGREGATES);
    let expected: Vec<i64> = (1..=EVENTS).collect();
    for (agg, versions) in seen.iter() {
        assert_eq!(versions, &expected, "order of {agg}");
    }
    bus.close().await.unwrap();
}

#[tokio::test]
async fn two_groups_each_get_every_message_and_share_it_inside() {
    const N: usize = 200;
    let bus = nats_bus().await;
    let opts = |g: &str| SubscribeOptions::default().group(g).lanes(2);
    let (_a1, mut a1) = collect(&bus, "t4.jobs", opts("a")).await;
    let (_a2, mut a2) = collect(&bus, "t4.jobs", opts("a")).await;
    let (_b1, mut b1) = collect(&bus, "t4.jobs", opts("b")).await;
    let (_b2, mut b2) = collect(&bus, "t4.jobs", opts("b")).await;
    for i in 0..N {
        bus.publish("t4.jobs", i.to_string()).await.unwrap();
    }
    for (name, first, second) in [("a", &mut a1, &mut a2), ("b", &mut b1, &mut b2)] {
        let mut got = HashSet::new();
        let (mut from_first, mut from_second) = (0, 0);
        while got.len() < N {
            let m = tokio::select! {
                m = first.recv() => { from_first += 1; m }
                m = second.recv() => { from_second += 1; m }
                _ = tokio::time::sleep(STEP) => panic!("group {name}: {} of {N}", got.len()),
            };
            let m = m.expect("channel open");
            let i: usize = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
            assert!(got.insert(i), "group {name} got {i} twice");
        }
        assert_eq!(from_first + from_second, N);
        assert!(
            from_first > 0 && from_second > 0,
            "group {name} did not share: {from_first} / {from_second}"
        );
    }
    bus.close().await.unwrap();
}

#[tokio::test]
async fn wildcard_subscriptions_see_the_exact_subject() {
    let bus = nats_bus().await;
    let (_one, mut one) = collect(&bus, "t5.orders.*", SubscribeOptions::default()).await;
    let (_all, mut all) = collect(&bus, "t5.orders.>", SubscribeOptions::default()).await;
    bus.publish("t5.orders.eu", "1").await.unwrap();
    bus.publish("t5.orders.eu.de", "2").await.unwrap();
    let m = recv(&mut one).await;
    assert_eq!(
        (m.topic(), m.payload().as_ref()),
        ("t5.orders.eu", &b"1"[..])
    );
    let mut topics = vec![
        recv(&mut all).await.topic().to_owned(),
        recv(&mut all).await.topic().to_owned(),
    ];
    topics.sort();
    assert_eq!(topics, ["t5.orders.eu", "t5.orders.eu.de"]);
    // `*` matches one token only: nothing more arrives there.
    bus.close().await.unwrap();
    assert!(step("end of stream", one.recv()).await.is_none());
}

#[tokio::test]
async fn a_permanent_failure_lands_on_the_dlq_subject_with_its_headers() {
    let bus = nats_bus().await;
    let (_dlq, mut dead) = collect(&bus, "t6.jobs.dlq", SubscribeOptions::default()).await;
    let _sub = bus
        .subscribe("t6.jobs", |_m: Message| async {
            Err::<(), _>(HandlerError::permanent("bad job"))
        })
        .await
        .unwrap();
    let out = OutboundMessage::new("poison")
        .with_key("k-1")
        .with_header("trace", "t-9");
    bus.publish_with("t6.jobs", out).await.unwrap();
    let m = recv(&mut dead).await;
    assert_eq!(m.topic(), "t6.jobs.dlq");
    assert_eq!(m.payload().as_ref(), b"poison");
    assert_eq!(m.key(), Some("k-1"));
    assert_eq!(m.headers().get("trace"), Some("t-9"));
    assert_eq!(m.headers().get(HEADER_SOURCE_TOPIC), Some("t6.jobs"));
    assert_eq!(m.headers().get(HEADER_ERROR_CLASS), Some("permanent"));
    let info = m.dead_letter().expect("dead-letter headers");
    assert_eq!(info.source_topic, "t6.jobs");
    assert!(info.error.contains("bad job"), "{}", info.error);
    bus.close().await.unwrap();
}

/// Handles `topic` on `bus` with one narrow lane, recording payloads.
async fn narrow_recorder(
    bus: &Bus,
    topic: &str,
    seen: &Arc<Mutex<Vec<String>>>,
) -> crate::Subscription {
    let seen = seen.clone();
    // One lane of 8 slots, named consumer: most records wait in the
    // client or on the server when the subscription stops.
    let narrow = SubscribeOptions::default()
        .lanes(1)
        .ring_capacity(8)
        .consumer("drainer");
    bus.subscribe_with(topic, narrow, move |m: Message| {
        let seen = seen.clone();
        async move {
            tokio::task::yield_now().await;
            seen.lock()
                .push(String::from_utf8_lossy(m.payload()).into_owned());
            Ok::<(), HandlerError>(())
        }
    })
    .await
    .unwrap()
}

/// Close and unsubscribe on JetStream: the lanes are drained and acked,
/// records not yet pulled (or held by the client, which nacks them) stay
/// with the durable consumer, so the next subscription under the same
/// consumer name gets exactly the rest: nothing lost, nothing handled
/// twice.
#[tokio::test]
async fn close_and_unsubscribe_drain_and_leave_the_rest_to_the_consumer() {
    const N: usize = 300;
    for (topic, by_close) in [("t7.work", true), ("t7.more", false)] {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let bus = nats_bus().await;
        let sub = narrow_recorder(&bus, topic, &seen).await;
        for i in 0..N {
            bus.publish(topic, i.to_string()).await.unwrap();
        }
        if by_close {
            step("close", bus.close()).await.unwrap();
            assert_eq!(sub.stats().total.delivered as usize, seen.lock().len());
        } else {
            step("unsubscribe", sub.unsubscribe()).await;
            bus.close().await.unwrap();
        }
        let first = seen.lock().len();
        let bus = nats_bus().await;
        let _rest = narrow_recorder(&bus, topic, &seen).await;
        step("the rest", async {
            while seen.lock().len() < N {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let all = seen.lock().clone();
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), N, "every record handled ({topic})");
        assert_eq!(
            all.len(),
            N,
            "none twice ({topic}; {first} before the stop)"
        );
        bus.close().await.unwrap();
    }
}

/// Waits for the first `wanted` event, skipping the others.
async fn until_event(
    rx: &mut tokio::sync::broadcast::Receiver<crate::ConnectionEvent>,
    wanted: crate::ConnectionEvent,
) {
    loop {
        match step("a connection event", rx.recv()).await {
            Ok(e) if e == wanted => return,
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("events ended before {wanted}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_connection_and_subscriptions_carry_on_after_a_restart() {
    let server = NatsServer::start();
    let reconnect = "  reconnect: { initial_delay: 20ms, max_delay: 200ms }\n";
    let bus = bus_on(&server.url(), "lanebus-bus-test", reconnect).await;
    let mut events = bus.connection_events().expect("a nats bus has events");
    let (_sub, mut rx) = collect(&bus, "t8.news", SubscribeOptions::default()).await;
    bus.publish("t8.news", "before").await.unwrap();
    assert_eq!(recv(&mut rx).await.payload().as_ref(), b"before");

    let server = off_thread(server, NatsServer::kill).await;
    until_event(&mut events, crate::ConnectionEvent::Disconnected).await;
    match step("health while down", bus.health_check()).await {
        Err(crate::HealthError::Transport(e)) => assert_eq!(e.transport(), "nats"),
        other => panic!("expected a transport health error, got {other:?}"),
    }

    let server = off_thread(server, NatsServer::start_again).await;
    until_event(&mut events, crate::ConnectionEvent::Reconnected).await;
    step("health after", bus.health_check()).await.unwrap();
    // The client renewed the subscription on the new connection.
    bus.publish("t8.news", "after").await.unwrap();
    assert_eq!(recv(&mut rx).await.payload().as_ref(), b"after");
    bus.close().await.unwrap();
    drop(server);
}
