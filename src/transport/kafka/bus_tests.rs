//! The bus on Kafka, end to end against a real Apache Kafka broker (the
//! integration tests' harness, included by path): publish to a handler
//! with key and headers, per-aggregate order over 8 partitions and 8 lanes
//! with random handler delays, fan-out to two groups, a group of two buses
//! splitting 8 partitions with order held across both, retry then
//! success, a permanent failure and a panic dead-lettered with headers
//! (partition and offset included), topics through the admin API,
//! interop with the Go system's records both ways, lag in stats, wildcard
//! topics. Members coming and going and broker faults: `fault_tests`.
//!
//! Each test uses its own topics (`k<N>.`) on the binary's shared broker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

use super::test_support::{bus, config, eventually, raw_producer, recv, step, until};
use crate::transport::tests::collect;
use crate::{
    Bus, Envelope, Event, HandlerError, Message, OutboundMessage, RetryPolicy, StreamStrategy,
    SubscribeOptions, TopicOptions,
};

#[tokio::test]
async fn a_publish_reaches_the_handler_with_key_and_headers() {
    let bus = bus().await;
    bus.configure_topic("k1.events", TopicOptions::persistent())
        .await
        .unwrap();
    let (_sub, mut rx) = collect(&bus, "k1.events", SubscribeOptions::default()).await;
    let out = OutboundMessage::new("hello")
        .with_key("k-1")
        .with_header("trace", "t-1");
    bus.publish_with("k1.events", out).await.unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(m.payload().as_ref(), b"hello");
    assert_eq!(m.key(), Some("k-1"));
    assert_eq!(m.headers().get("trace"), Some("t-1"));
    assert_eq!(m.topic(), "k1.events");
    bus.close().await.unwrap();
}

/// Records versions per aggregate, with a pseudo-random delay per call.
fn order_recorder(
    seen: &Arc<Mutex<BTreeMap<String, Vec<i64>>>>,
    count: &Arc<AtomicUsize>,
) -> impl Fn(Event) -> futures_util::future::BoxFuture<'static, Result<(), HandlerError>>
       + Send
       + Sync
       + 'static {
    let (seen, count) = (seen.clone(), count.clone());
    move |ev: Event| {
        let (seen, count) = (seen.clone(), count.clone());
        Box::pin(async move {
            let n = count.load(Ordering::Relaxed) as u64;
            let delay = n.wrapping_mul(2_654_435_761) % 3;
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            seen.lock()
                .entry(ev.aggregate_id.to_string())
                .or_default()
                .push(ev.event_version);
            count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
    }
}

fn in_order(seen: &BTreeMap<String, Vec<i64>>, versions: i64) -> bool {
    let expected: Vec<i64> = (1..=versions).collect();
    seen.values().all(|v| v == &expected)
}

#[tokio::test]
async fn per_aggregate_order_holds_over_8_partitions_and_8_lanes() {
    const AGGREGATES: i64 = 20;
    const VERSIONS: i64 = 30;
    let bus = bus().await;
    bus.configure_topic("k2.orders", TopicOptions::persistent().partitions(8))
        .await
        .unwrap();
    let seen: Arc<Mutex<BTreeMap<String, Vec<i64>>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let _sub = bus
        .subscribe_envelope_with(
            "k2.orders",
            SubscribeOptions::default().lanes(8),
            order_recorder(&seen, &count),
        )
        .await
        .unwrap();
    for version in 1..=VERSIONS {
        for agg in 0..AGGREGATES {
            let ev = Envelope::new(format!("order-{agg}"), "OrderChanged", version, "{}");
            bus.publish_envelope("k2.orders", ev).await.unwrap();
        }
    }
    until("every event", &count, (AGGREGATES * VERSIONS) as usize).await;
    let seen = std::mem::take(&mut *seen.lock());
    assert_eq!(seen.len() as i64, AGGREGATES);
    assert!(in_order(&seen, VERSIONS), "{seen:?}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn two_groups_each_get_every_message() {
    let bus = bus().await;
    bus.configure_topic("k3.events", TopicOptions::persistent().partitions(4))
        .await
        .unwrap();
    let a = Arc::new(AtomicUsize::new(0));
    let b = Arc::new(AtomicUsize::new(0));
    let counter = |c: &Arc<AtomicUsize>| {
        let c = c.clone();
        move |_m: Message| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let _a = bus
        .subscribe_with(
            "k3.events",
            SubscribeOptions::default().group("ga"),
            counter(&a),
        )
        .await
        .unwrap();
    let _b = bus
        .subscribe_with(
            "k3.events",
            SubscribeOptions::default().group("gb"),
            counter(&b),
        )
        .await
        .unwrap();
    for i in 0..200 {
        bus.publish_with(
            "k3.events",
            OutboundMessage::new(i.to_string()).with_key(i.to_string()),
        )
        .await
        .unwrap();
    }
    until("group a", &a, 200).await;
    until("group b", &b, 200).await;
    bus.close().await.unwrap();
    assert_eq!(
        (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed)),
        (200, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_buses_in_one_group_split_the_partitions_and_keep_key_order() {
    const AGGREGATES: i64 = 40;
    const VERSIONS: i64 = 25;
    let first = bus().await;
    first
        .configure_topic("k4.orders", TopicOptions::persistent().partitions(8))
        .await
        .unwrap();
    let second = bus().await;
    let seen: Arc<Mutex<BTreeMap<String, Vec<i64>>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let per_bus = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut subs = Vec::new();
    for (bus, mine) in [&first, &second].into_iter().zip(per_bus.iter()) {
        let record = order_recorder(&seen, &count);
        let mine = mine.clone();
        subs.push(
            bus.subscribe_envelope_with(
                "k4.orders",
                SubscribeOptions::default().group("split"),
                move |ev: Event| {
                    mine.fetch_add(1, Ordering::Relaxed);
                    record(ev)
                },
            )
            .await
            .unwrap(),
        );
    }
    // Both members joined before the first record (the second join's
    // rebalance would otherwise move partitions mid-stream, which is
    // fine but not what this test looks at).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for version in 1..=VERSIONS {
        for agg in 0..AGGREGATES {
            let ev = Envelope::new(format!("order-{agg}"), "OrderChanged", version, "{}");
            first.publish_envelope("k4.orders", ev).await.unwrap();
        }
    }
    until("every event", &count, (AGGREGATES * VERSIONS) as usize).await;
    let split = [
        per_bus[0].load(Ordering::Relaxed),
        per_bus[1].load(Ordering::Relaxed),
    ];
    println!("group split: {split:?}");
    assert!(
        split.iter().all(|&n| n > 0),
        "both members handled a share: {split:?}"
    );
    assert_eq!(split[0] + split[1], (AGGREGATES * VERSIONS) as usize);
    assert!(in_order(&seen.lock(), VERSIONS));
    drop(subs);
    first.close().await.unwrap();
    second.close().await.unwrap();
}

#[tokio::test]
async fn retry_then_success_and_dead_letters_with_headers() {
    let bus = bus().await;
    for topic in ["k5.jobs", "k5.jobs.dlq"] {
        bus.configure_topic(topic, TopicOptions::persistent())
            .await
            .unwrap();
    }
    let (_dlq, mut dead) = collect(&bus, "k5.jobs.dlq", SubscribeOptions::default()).await;
    let (ok_tx, mut ok) = mpsc::unbounded_channel();
    // Partition and offset as each handler call saw them, by payload.
    type Position = (Option<i32>, Option<i64>);
    let positions: Arc<Mutex<BTreeMap<Vec<u8>, Position>>> = Arc::default();
    let _sub = bus
        .subscribe_with(
            "k5.jobs",
            SubscribeOptions::default().lanes(1).retry(
                RetryPolicy::attempts(3)
                    .with_backoff(Duration::from_millis(1), Duration::from_millis(1)),
            ),
            {
                let positions = positions.clone();
                move |m: Message| {
                    let ok_tx = ok_tx.clone();
                    let ctx = m.context();
                    positions
                        .lock()
                        .insert(m.payload().to_vec(), (ctx.partition(), ctx.offset()));
                    async move {
                        match m.payload().as_ref() {
                            b"panic" => panic!("the handler blew up"),
                            b"poison" => Err(HandlerError::permanent("bad job")),
                            b"flaky" if m.context().attempt() < 3 => {
                                Err(HandlerError::retryable("not yet"))
                            }
                            _ => {
                                let _ = ok_tx.send((m.payload().clone(), m.context().attempt()));
                                Ok(())
                            }
                        }
                    }
                }
            },
        )
        .await
        .unwrap();
    for payload in ["flaky", "poison", "panic", "after"] {
        bus.publish_with(
            "k5.jobs",
            OutboundMessage::new(payload).with_key("one-lane"),
        )
        .await
        .unwrap();
    }
    let (payload, attempt) = step("flaky", ok.recv()).await.unwrap();
    assert_eq!((&payload[..], attempt), (&b"flaky"[..], 3));
    let poison = recv(&mut dead).await;
    assert_eq!(poison.payload().as_ref(), b"poison");
    assert_eq!(poison.key(), Some("one-lane"));
    let info = poison.dead_letter().unwrap();
    assert_eq!(
        (info.source_topic.as_str(), info.error_class.as_str()),
        ("k5.jobs", "permanent")
    );
    let panic = recv(&mut dead).await;
    assert_eq!(panic.dead_letter().unwrap().error_class, "panic");
    let (payload, _) = step("after", ok.recv()).await.unwrap();
    assert_eq!(&payload[..], b"after");
    // The handler saw each record's partition and offset (one key, so one
    // partition: offsets in publish order), and the dead letters carry
    // them.
    let positions = positions.lock().clone();
    let at = |payload: &str| positions[payload.as_bytes()];
    assert!(at("flaky").0.is_some(), "a partition");
    for payload in ["poison", "panic", "after"] {
        assert_eq!(
            at(payload).0,
            at("flaky").0,
            "{payload}: one key, one partition"
        );
    }
    let offsets: Vec<i64> = ["flaky", "poison", "panic", "after"]
        .iter()
        .map(|p| at(p).1.expect("an offset"))
        .collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    for (letter, payload) in [(&info, "poison"), (&panic.dead_letter().unwrap(), "panic")] {
        assert_eq!(
            (letter.source_partition, letter.source_offset),
            at(payload),
            "{payload}: dead-letter position headers"
        );
    }
    assert_eq!(
        poison.headers().get(crate::HEADER_SOURCE_OFFSET),
        Some(at("poison").1.unwrap().to_string().as_str())
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn topics_are_made_read_back_validated_and_removed() {
    let bus = bus().await;
    let options = TopicOptions::persistent()
        .partitions(3)
        .max_age(Duration::from_secs(3600))
        .max_bytes(1 << 20);
    bus.configure_topic("k7.orders", options).await.unwrap();
    let back = bus.topic_config("k7.orders").await.unwrap().unwrap();
    assert_eq!(back.partitions, 3);
    assert_eq!(back.retention.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(back.retention.max_bytes, Some(1 << 20));
    // More partitions and another retention: updated.
    bus.configure_topic(
        "k7.orders",
        TopicOptions::persistent()
            .partitions(5)
            .max_age(Duration::from_secs(7200)),
    )
    .await
    .unwrap();
    // The broker applies an altered config a moment after it accepted it:
    // read back until it shows (bounded by the step).
    eventually("the altered config read back", async || {
        let back = bus.topic_config("k7.orders").await.unwrap().unwrap();
        (back.partitions, back.retention.max_age) == (5, Some(Duration::from_secs(7200)))
    })
    .await;
    let back = bus.topic_config("k7.orders").await.unwrap().unwrap();
    assert_eq!(back.retention.max_bytes, None);
    // Fewer partitions: Kafka cannot, and says so.
    let fewer = bus
        .configure_topic("k7.orders", TopicOptions::persistent().partitions(2))
        .await
        .unwrap_err();
    assert!(fewer.to_string().contains("partitions"), "{fewer}");
    assert!(bus
        .list_topics()
        .await
        .unwrap()
        .contains(&"k7.orders".to_string()));
    // validate_only: a missing topic is an error at connect.
    let mut strict = config("topics:\n  k7.missing: { partitions: 2 }\n");
    strict.kafka.topic_strategy = StreamStrategy::ValidateOnly;
    let e = Bus::connect(strict).await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    // A removed topic reads as missing once the call returns.
    assert!(bus.remove_topic("k7.orders").await.unwrap());
    assert!(bus.topic_config("k7.orders").await.unwrap().is_none());
    // A topic made reads back at once, over a few rounds of make and
    // remove (a broker's metadata lags its controller for a moment).
    for round in 0..5 {
        let topic = format!("k7.round{round}");
        bus.configure_topic(&topic, TopicOptions::persistent().partitions(2))
            .await
            .unwrap();
        let back = bus.topic_config(&topic).await.unwrap();
        assert_eq!(back.map(|b| b.partitions), Some(2), "{topic}");
        assert!(bus.remove_topic(&topic).await.unwrap());
        assert!(bus.topic_config(&topic).await.unwrap().is_none(), "{topic}");
    }
    bus.close().await.unwrap();
}

/// An envelope in the Go system's JSON form.
fn go_json(aggregate: &str, version: i64) -> String {
    format!(
        r#"{{"event_id":"evt-{aggregate}-{version}","aggregate_id":"{aggregate}","aggregate_type":"Order","event_type":"OrderChanged","event_version":{version},"timestamp":"2024-05-01T10:00:00Z","payload":{{"v":{version}}}}}"#
    )
}

#[tokio::test]
async fn go_records_are_handled_in_order_and_a_malformed_one_dead_lettered() {
    let bus = bus().await;
    for topic in ["k8.orders", "k8.orders.dlq"] {
        bus.configure_topic(topic, TopicOptions::persistent().partitions(4))
            .await
            .unwrap();
    }
    let (_dlq, mut dead) = collect(&bus, "k8.orders.dlq", SubscribeOptions::default()).await;
    let seen: Arc<Mutex<BTreeMap<String, Vec<i64>>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let _sub = bus
        .subscribe_envelope_with(
            "k8.orders",
            SubscribeOptions::default().lanes(8),
            order_recorder(&seen, &count),
        )
        .await
        .unwrap();
    let producer = raw_producer();
    for version in 1..=10 {
        for agg in 0..5 {
            // Keyed by the aggregate ID, as the Go publisher does; no
            // lanebus headers.
            let aggregate = format!("order-{agg}");
            let payload = go_json(&aggregate, version);
            producer
                .send(
                    FutureRecord::to("k8.orders")
                        .key(&aggregate)
                        .payload(&payload),
                    Timeout::Never,
                )
                .await
                .unwrap();
        }
        if version == 5 {
            producer
                .send(
                    FutureRecord::<str, str>::to("k8.orders").payload("not an envelope"),
                    Timeout::Never,
                )
                .await
                .unwrap();
        }
    }
    let m = recv(&mut dead).await;
    assert_eq!(m.payload().as_ref(), b"not an envelope");
    assert_eq!(m.dead_letter().unwrap().error_class, "malformed");
    until("every envelope", &count, 50).await;
    assert!(in_order(&seen.lock(), 10));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn the_json_wire_form_writes_the_go_headers() {
    let bus = step("connect", Bus::connect(config("  wire_format: json\n")))
        .await
        .unwrap();
    bus.configure_topic("k9.orders", TopicOptions::persistent())
        .await
        .unwrap();
    let (_sub, mut rx) = collect(&bus, "k9.orders", SubscribeOptions::default()).await;
    let ev = Envelope::new("order-7", "OrderPlaced", 3, r#"{"total":5}"#).with_trace_id("t-9");
    bus.publish_envelope("k9.orders", ev.clone()).await.unwrap();
    let m = recv(&mut rx).await;
    assert_eq!(m.key(), Some("order-7"));
    assert_eq!(Envelope::decode(m.payload()).unwrap(), ev);
    let h = m.headers();
    assert_eq!(h.get("X-Aggregate-ID"), Some("order-7"));
    assert_eq!(h.get("X-Event-Version"), Some("3"));
    assert_eq!(h.get("X-Event-Type"), Some("OrderPlaced"));
    assert_eq!(h.get("X-Trace-ID"), Some("t-9"));
    assert_eq!(
        h.get("X-Event-ID"),
        Some(AsRef::<str>::as_ref(&ev.event_id))
    );
    bus.close().await.unwrap();
}

#[tokio::test]
async fn stats_show_the_lag_per_partition() {
    let bus = bus().await;
    bus.configure_topic("k10.events", TopicOptions::persistent().partitions(2))
        .await
        .unwrap();
    let (_sub, mut rx) = collect(&bus, "k10.events", SubscribeOptions::default()).await;
    for i in 0..20 {
        bus.publish_with(
            "k10.events",
            OutboundMessage::new(i.to_string()).with_key(i.to_string()),
        )
        .await
        .unwrap();
    }
    for _ in 0..20 {
        recv(&mut rx).await;
    }
    let broker = step("lag reported", async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let b = bus.stats().subscriptions[0].broker.clone().unwrap();
            if b.partitions.len() == 2
                && b.partitions.iter().all(|p| p.committed >= 0)
                && b.pending == 0
            {
                return b;
            }
        }
    })
    .await;
    assert_eq!(broker.consumer, "kafka-test-k10.events");
    let committed: i64 = broker.partitions.iter().map(|p| p.committed).sum();
    assert_eq!(committed, 20, "every record committed: {broker:?}");
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_wildcard_subscription_follows_matching_topics_new_ones_too() {
    let bus = bus().await;
    for topic in ["k12.a", "k12.b"] {
        bus.configure_topic(topic, TopicOptions::persistent())
            .await
            .unwrap();
    }
    let (_sub, mut rx) = collect(&bus, "k12.*", SubscribeOptions::default()).await;
    bus.publish("k12.a", "to a").await.unwrap();
    bus.publish("k12.b", "to b").await.unwrap();
    let mut got = [recv(&mut rx).await, recv(&mut rx).await];
    got.sort_by(|x, y| x.topic().cmp(y.topic()));
    assert_eq!(got[0].topic(), "k12.a");
    assert_eq!(got[0].payload().as_ref(), b"to a");
    assert_eq!(got[1].topic(), "k12.b");
    // A topic made after the subscription: picked up at the next
    // metadata refresh.
    bus.configure_topic("k12.c", TopicOptions::persistent())
        .await
        .unwrap();
    bus.publish("k12.c", "to c").await.unwrap();
    let m = recv(&mut rx).await;
    assert_eq!((m.topic(), m.payload().as_ref()), ("k12.c", &b"to c"[..]));
    bus.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_first_configurations_make_one_create_call() {
    let bus = bus().await;
    let calls = (0..20).map(|_| {
        let bus = bus.clone();
        tokio::spawn(async move {
            bus.configure_topic("k13.fresh", TopicOptions::persistent().partitions(2))
                .await
        })
    });
    for call in futures_util::future::join_all(calls).await {
        call.unwrap().unwrap();
    }
    let crate::transport::Transport::Kafka(kafka) = &bus.inner.transport else {
        unreachable!("a kafka bus")
    };
    assert_eq!(kafka.topics().create_calls(), 1);
    assert_eq!(
        bus.topic_config("k13.fresh")
            .await
            .unwrap()
            .unwrap()
            .partitions,
        2
    );
    bus.close().await.unwrap();
}
