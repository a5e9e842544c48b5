//! Topics on a NATS bus, against a real `nats-server`: configured
//! persistent topics become streams when the bus connects, the topic
//! methods read, list and remove the server's streams, `validate_only`
//! refuses a missing or different stream at connect, health names a
//! missing stream, and ephemeral topics go over core NATS, store nothing,
//! and lose nothing to a publisher that never yields on its own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use super::super::test_support::{self, step};
use crate::transport::tests::collect;
use crate::{
    BuildError, Bus, BusConfig, Discard, HandlerError, HealthError, Message, Persistence, Storage,
    SubscribeOptions, TopicOptions,
};

fn config(extra: &str) -> BusConfig {
    test_support::config("topic-test", extra)
}

async fn bus(extra: &str) -> Bus {
    test_support::bus("topic-test", extra).await
}

async fn js() -> jetstream::Context {
    test_support::raw().await.1
}

#[tokio::test]
async fn configured_topics_are_streams_read_back_listed_and_removed() {
    let bus = bus("topics:\n  jt1.orders:\n    persistence: persistent\n    retention: { max_age: 1h, max_messages: 1000 }\n    storage: memory\n    discard: new\n  jt1.pings: { persistence: ephemeral }\n").await;
    // The stream exists as soon as the bus does.
    let js = js().await;
    let mut stream = js.get_stream("jt1_orders").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, ["jt1.orders"]);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.config.max_messages, 1000);

    let back = bus.topic_config("jt1.orders").await.unwrap().unwrap();
    assert_eq!(back.persistence, Persistence::Persistent);
    assert_eq!(back.retention.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(back.retention.max_messages, Some(1000));
    assert_eq!(back.storage, Storage::Memory);
    assert_eq!(back.discard, Discard::New);
    // An ephemeral topic reads back as configured.
    assert_eq!(
        bus.topic_config("jt1.pings")
            .await
            .unwrap()
            .unwrap()
            .persistence,
        Persistence::Ephemeral
    );

    bus.configure_topic("jt1.more", TopicOptions::persistent().max_bytes(1 << 20))
        .await
        .unwrap();
    let listed = bus.list_topics().await.unwrap();
    for topic in ["jt1.more", "jt1.orders", "jt1.pings"] {
        assert!(listed.iter().any(|t| t == topic), "{topic} in {listed:?}");
    }

    bus.publish("jt1.orders", "kept until removed")
        .await
        .unwrap();
    assert!(bus.remove_topic("jt1.orders").await.unwrap());
    assert!(js.get_stream("jt1_orders").await.is_err(), "stream deleted");
    assert!(!bus.remove_topic("jt1.orders").await.unwrap());
    assert_eq!(bus.topic_config("jt1.orders").await.unwrap(), None);
    bus.close().await.unwrap();
}

#[tokio::test]
async fn validate_only_refuses_a_missing_or_different_stream_at_connect() {
    let topics = "topics:\n  jt2.orders: { persistence: persistent, retention: { max_age: 2h } }\n";
    let strict = format!("  jetstream: {{ stream_strategy: validate_only }}\n{topics}");
    match Bus::connect(config(&strict)).await {
        Err(BuildError::Transport(e)) => {
            assert!(e.to_string().contains("does not exist"), "{e}")
        }
        other => panic!("expected a missing-stream error, got {other:?}"),
    }
    // Made by a bus with the default strategy, with another max_age.
    let other = "topics:\n  jt2.orders: { persistence: persistent, retention: { max_age: 1h } }\n";
    bus(other).await.close().await.unwrap();
    match Bus::connect(config(&strict)).await {
        Err(BuildError::Transport(e)) => {
            assert!(e.to_string().contains("retention.max_age"), "{e}")
        }
        other => panic!("expected a difference error, got {other:?}"),
    }
    // Equal: accepted.
    let equal = format!(
        "  jetstream: {{ stream_strategy: validate_only }}\n{}",
        other
    );
    bus(&equal).await.close().await.unwrap();
}

#[tokio::test]
async fn health_names_a_missing_stream() {
    let bus = bus("  jetstream: { stream_strategy: skip }\ntopics:\n  jt3.orders: { persistence: persistent }\n").await;
    match bus.health_check().await {
        Err(HealthError::Transport(e)) => {
            assert!(e.to_string().contains("jt3_orders"), "{e}")
        }
        other => panic!("expected a missing-stream error, got {other:?}"),
    }
    bus.close().await.unwrap();
}

#[tokio::test]
async fn ephemeral_topics_use_core_nats_and_store_nothing() {
    let bus = bus("  jetstream: { default_persistence: ephemeral }\n").await;
    // No subscriber: the message is gone, and no stream was made.
    bus.publish("jt4.pings", "unheard").await.unwrap();
    let js = js().await;
    assert!(js.get_stream("jt4_pings").await.is_err());

    let (_all, mut all) = collect(&bus, "jt4.pings", SubscribeOptions::default()).await;
    let shared = Arc::new(AtomicUsize::new(0));
    let member = |shared: Arc<AtomicUsize>| {
        move |_m: Message| {
            let shared = shared.clone();
            async move {
                shared.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let group = SubscribeOptions::default().group("pingers");
    let _a = bus
        .subscribe_with("jt4.pings", group.clone(), member(shared.clone()))
        .await
        .unwrap();
    let _b = bus
        .subscribe_with("jt4.pings", group, member(shared.clone()))
        .await
        .unwrap();
    for i in 0..100 {
        bus.publish("jt4.pings", i.to_string()).await.unwrap();
    }
    for _ in 0..100 {
        step("a ping", all.recv()).await.unwrap();
    }
    step("the group's share", async {
        while shared.load(Ordering::Relaxed) < 100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        shared.load(Ordering::Relaxed),
        100,
        "each message once in the group"
    );
    assert!(js.get_stream("jt4_pings").await.is_err(), "still no stream");
    assert!(bus.stats().subscriptions.iter().all(|s| s.broker.is_none()));
    bus.close().await.unwrap();
}

/// An ephemeral publish completes on its first poll when the client has
/// room, and otherwise waits like the client's own publish: a loop of
/// publishes on a one-thread runtime that awaits nothing else still lets
/// the client's connection task and the subscription's lane run (the
/// publish yields once the task's cooperative budget is spent, and waits
/// when the client's queue is full), so every message arrives, in order.
#[tokio::test(flavor = "current_thread")]
async fn a_tight_ephemeral_publish_loop_on_one_thread_yields_and_loses_nothing() {
    const N: usize = 20_000;
    let bus = bus("  jetstream: { default_persistence: ephemeral }\n").await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(N)));
    let s = seen.clone();
    let _sub = bus
        .subscribe_with(
            "jt5.ticks",
            SubscribeOptions::default().lanes(1),
            move |m: Message| {
                let n: usize = std::str::from_utf8(m.payload()).unwrap().parse().unwrap();
                s.lock().push(n);
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )
        .await
        .unwrap();
    for i in 0..N {
        bus.publish("jt5.ticks", i.to_string()).await.unwrap();
    }
    step("every tick", async {
        while seen.lock().len() < N {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(*seen.lock(), (0..N).collect::<Vec<_>>(), "all, in order");
    bus.close().await.unwrap();
}

/// The same for envelopes: `publish_envelope`'s future takes the same
/// in-place step on core NATS (and yields the same way out of budget), so
/// a tight loop of envelope publishes on one thread loses nothing and
/// keeps each aggregate's order.
#[tokio::test(flavor = "current_thread")]
async fn a_tight_ephemeral_envelope_loop_on_one_thread_yields_and_loses_nothing() {
    const N: i64 = 20_000;
    let bus = bus("  jetstream: { default_persistence: ephemeral }\n").await;
    let seen = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(N as usize)));
    let s = seen.clone();
    let _sub = bus
        .subscribe_envelope_with(
            "jt6.events",
            SubscribeOptions::default().lanes(1),
            move |ev: Arc<crate::Envelope>| {
                s.lock().push(ev.event_version);
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )
        .await
        .unwrap();
    for version in 1..=N {
        let ev = crate::Envelope::new("agg-1", "Ticked", version, "{}");
        bus.publish_envelope("jt6.events", ev).await.unwrap();
    }
    step("every event", async {
        while (seen.lock().len() as i64) < N {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(*seen.lock(), (1..=N).collect::<Vec<_>>(), "all, in order");
    bus.close().await.unwrap();
}
