//! Delivery semantics of the memory bus: fan-out, unrouted, keyed order,
//! back-pressure, try_publish, independent instances, input checks.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{collect, collect_with, gated, one_lane, recv, settle, Gate, HResult};
use lanebus::{
    Bus, Envelope, EnvelopeError, Message, OutboundMessage, PublishError, SubscribeOptions,
    TopicError, TryPublishError,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscription() {
    let bus = Bus::memory();
    let (_a, mut ra) = collect(&bus, "news").await;
    let (_b, mut rb) = collect(&bus, "news").await;
    for i in 0..10u8 {
        bus.publish("news", vec![i]).await.unwrap();
    }
    let mut got_a: Vec<u8> = Vec::new();
    let mut got_b: Vec<u8> = Vec::new();
    for _ in 0..10 {
        got_a.push(recv(&mut ra).await.payload()[0]);
        got_b.push(recv(&mut rb).await.payload()[0]);
    }
    got_a.sort();
    got_b.sort();
    assert_eq!(got_a, (0..10).collect::<Vec<_>>());
    assert_eq!(got_b, (0..10).collect::<Vec<_>>());
    bus.close().await.unwrap();
    let stats = bus.stats();
    assert_eq!(stats.published, 10);
    assert_eq!(stats.unrouted, 0);
    assert_eq!(stats.total.delivered, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_subscriber_sees_only_later_messages() {
    let bus = Bus::memory();
    bus.publish("t", "early").await.unwrap();
    let (_s, mut rx) = collect(&bus, "t").await;
    bus.publish("t", "late").await.unwrap();
    assert_eq!(recv(&mut rx).await.payload().as_ref(), b"late");
    bus.close().await.unwrap();
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn publish_without_subscriber_is_unrouted() {
    let bus = Bus::memory();
    bus.publish("nobody.listens", "x").await.unwrap();
    bus.try_publish("nobody.listens", "y").unwrap();
    let stats = bus.stats();
    assert_eq!(stats.published, 2);
    assert_eq!(stats.unrouted, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_keep_per_aggregate_order() {
    let bus = Bus::memory();
    let seen: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let s2 = seen.clone();
    let _sub = bus
        .subscribe_envelope_with(
            "orders",
            SubscribeOptions::default().lanes(4).ring_capacity(8),
            move |ev: Envelope| {
                let seen = s2.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push((ev.aggregate_id.to_string(), ev.event_version));
                    HResult::Ok(())
                }
            },
        )
        .await
        .unwrap();
    for v in 1..=200i64 {
        for agg in 0..10 {
            bus.publish_envelope(
                "orders",
                Envelope::new(format!("order-{agg}"), "Changed", v, "{}"),
            )
            .await
            .unwrap();
        }
    }
    bus.close().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2000);
    let mut last = std::collections::HashMap::new();
    for (agg, v) in seen.iter() {
        let prev = last.insert(agg.clone(), *v).unwrap_or(0);
        assert_eq!(*v, prev + 1, "aggregate {agg} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_plain_messages_keep_order() {
    let bus = Bus::memory();
    let (_s, mut rx) = collect_with(&bus, "k", SubscribeOptions::default().lanes(8)).await;
    for i in 0..300u32 {
        let key = format!("user-{}", i % 3);
        bus.publish_with(
            "k",
            OutboundMessage::new(i.to_le_bytes().to_vec()).with_key(&key),
        )
        .await
        .unwrap();
    }
    let mut last: std::collections::HashMap<String, u32> = Default::default();
    for _ in 0..300 {
        let m = recv(&mut rx).await;
        let v = u32::from_le_bytes(m.payload()[..4].try_into().unwrap());
        if let Some(prev) = last.insert(m.key().unwrap().to_owned(), v) {
            assert!(v > prev, "key {} out of order", m.key().unwrap());
        }
    }
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_publish_full_hands_the_payload_back() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let _sub = gated(&bus, "slow", one_lane(2), &gate).await;
    // One message is taken by the worker (blocked in the handler), two fill
    // the ring; then the lane is full.
    let mut accepted = 0;
    let payload = loop {
        match bus.try_publish("slow", Bytes::from(format!("m{accepted}"))) {
            Ok(()) => accepted += 1,
            Err(TryPublishError::Full(p)) => break p,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(accepted <= 3, "ring of 2 plus one in the handler");
        settle().await;
    };
    assert_eq!(accepted, 3);
    assert_eq!(
        payload,
        Bytes::from("m3"),
        "the refused payload comes back intact"
    );
    gate.open(3);
    bus.close().await.unwrap();
    assert_eq!(bus.stats().total.delivered, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_wakes_a_blocked_publisher() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let _sub = gated(&bus, "bp", one_lane(1), &gate).await;
    // Fill the lane: one message blocked in the handler, the ring full.
    let mut accepted = 0;
    while bus.try_publish("bp", "fill").is_ok() {
        accepted += 1;
        settle().await;
    }
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish("bp", "last").await }
    });
    settle().await;
    assert!(
        !publisher.is_finished(),
        "publisher must wait while the lane is full"
    );
    gate.open(1);
    publisher.await.unwrap().unwrap();
    gate.open(accepted);
    bus.close().await.unwrap();
    assert_eq!(bus.stats().total.delivered, accepted as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_try_publish_is_all_or_nothing() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let (_fast, mut fast_rx) = collect(&bus, "fo").await;
    let _slow = gated(&bus, "fo", one_lane(1), &gate).await;
    let mut accepted = 0;
    loop {
        match bus.try_publish("fo", "x") {
            Ok(()) => accepted += 1,
            Err(TryPublishError::Full(_)) => break,
            Err(e) => panic!("{e}"),
        }
        settle().await;
    }
    // The fast subscription received exactly what was accepted, no more.
    for _ in 0..accepted {
        recv(&mut fast_rx).await;
    }
    settle().await;
    assert!(
        fast_rx.try_recv().is_err(),
        "a refused fan-out delivered nothing"
    );
    gate.open(accepted);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_instances_are_independent() {
    let a = Bus::memory();
    let b = Bus::memory();
    let (_sa, mut ra) = collect(&a, "same.topic").await;
    let (_sb, mut rb) = collect(&b, "same.topic").await;
    a.publish("same.topic", "for a").await.unwrap();
    assert_eq!(recv(&mut ra).await.payload().as_ref(), b"for a");
    a.close().await.unwrap();
    b.publish("same.topic", "for b").await.unwrap();
    assert_eq!(recv(&mut rb).await.payload().as_ref(), b"for b");
    b.close().await.unwrap();
    assert!(ra.try_recv().is_err());
}

#[tokio::test]
async fn bad_input_is_refused_with_the_value() {
    let bus = Bus::memory();
    match bus.publish("bad topic", "p").await {
        Err(PublishError::InvalidTopic(p, TopicError::InvalidChar { ch: ' ', .. })) => {
            assert_eq!(p, "p")
        }
        other => panic!("{other:?}"),
    }
    let ev = Envelope::new("", "Created", 1, "{}");
    match bus.publish_envelope("ok.topic", ev.clone()).await {
        Err(PublishError::InvalidEnvelope(back, EnvelopeError::EmptyAggregateId)) => {
            assert_eq!(back, ev)
        }
        other => panic!("{other:?}"),
    }
    match bus.try_publish_envelope("ok.topic", Envelope::new("a", "T", 0, "{}")) {
        Err(TryPublishError::InvalidEnvelope(_, EnvelopeError::InvalidVersion { version: 0 })) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(bus.stats().published, 0);
}

#[test]
fn subscribe_outside_a_runtime_is_a_typed_error() {
    let bus = Bus::memory();
    let res = block_on_without_runtime(bus.subscribe("t", |_m: Message| async { HResult::Ok(()) }));
    assert!(matches!(res, Err(lanebus::SubscribeError::NoRuntime)));
}

/// Polls a future to completion on the current thread without a Tokio
/// runtime.
fn block_on_without_runtime<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_thread_alternating_topics_while_the_registry_changes_never_misroutes() {
    // A publishing thread remembers where its last topic was in the
    // registry snapshot; alternating topics and registry changes (which
    // move the other entries) must still route every message by name. The
    // names share length and last eight bytes, so the memo's quick
    // fingerprint cannot tell them apart: only the name comparison can.
    let bus = Bus::memory();
    let (a, mut ra) = collect(&bus, "a.memo.topic").await;
    let (_b, mut rb) = collect(&bus, "b.memo.topic").await;
    for round in 0..3u8 {
        for i in 0..20u8 {
            bus.publish("a.memo.topic", vec![b'a', round, i])
                .await
                .unwrap();
            bus.publish("b.memo.topic", vec![b'b', round, i])
                .await
                .unwrap();
        }
        // Churn: a topic before both in insertion order comes and goes.
        let (extra, _rx) = collect(&bus, "c.memo.topic").await;
        bus.publish("c.memo.topic", "c").await.unwrap();
        extra.unsubscribe().await;
    }
    for _ in 0..60 {
        assert_eq!(recv(&mut ra).await.payload()[0], b'a');
        assert_eq!(recv(&mut rb).await.payload()[0], b'b');
    }
    // Removing `a.memo.topic` shifts `b.memo.topic` in the next snapshot.
    a.unsubscribe().await;
    bus.publish("b.memo.topic", vec![b'b', 9, 9]).await.unwrap();
    bus.publish("a.memo.topic", "gone").await.unwrap();
    assert_eq!(recv(&mut rb).await.payload().as_ref(), &[b'b', 9, 9]);
    bus.close().await.unwrap();
    assert!(ra.try_recv().is_err());
    assert_eq!(
        bus.stats().unrouted,
        1,
        "only the publish to the removed topic"
    );
}

/// Envelope allocations are reused once handled (a pool): an envelope a
/// handler keeps is never reused, and every kept envelope still reads as
/// published after thousands more went through the same pool, on a
/// subscription that keeps them and one that lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_kept_by_a_handler_are_never_reused() {
    let bus = Bus::memory();
    let kept: Arc<Mutex<Vec<Arc<Envelope>>>> = Arc::default();
    let k = kept.clone();
    let _keep = bus
        .subscribe_envelope("pool", move |ev: Arc<Envelope>| {
            if ev.event_version % 7 == 0 {
                k.lock().unwrap().push(ev);
            }
            std::future::ready(HResult::Ok(()))
        })
        .await
        .unwrap();
    let _drop = bus
        .subscribe_envelope("pool", |_ev: Arc<Envelope>| {
            std::future::ready(HResult::Ok(()))
        })
        .await
        .unwrap();
    for v in 1..=5_000i64 {
        let ev = Envelope::new(format!("agg-{}", v % 13), "Counted", v, v.to_string());
        bus.publish_envelope("pool", ev).await.unwrap();
    }
    bus.flush().await;
    let kept = std::mem::take(&mut *kept.lock().unwrap());
    assert_eq!(kept.len(), 5_000 / 7);
    for ev in kept.iter() {
        let v = ev.event_version;
        assert_eq!(v % 7, 0);
        assert_eq!(ev.payload, v.to_string().into_bytes());
        assert_eq!(ev.aggregate_id, format!("agg-{}", v % 13));
    }
    bus.close().await.unwrap();
}
