//! Wildcard subscriptions on the memory bus: `*` (one segment) and `>`
//! (the rest), topics that exist before or appear after the wildcard,
//! unsubscribing, exact and wildcard subscriptions side by side, groups on
//! a pattern, a wildcard subscribe racing first publishes, and publishes to
//! wildcard names refused.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{collect, collect_with, recv, HResult};
use lanebus::{
    Bus, DeadLetter, Envelope, HandlerError, Message, OutboundMessage, PublishError,
    SubscribeError, SubscribeOptions, TopicError, TopicOptions, TryPublishError,
};
use tokio::sync::mpsc;

/// Payloads a receiver holds (call after `close`), as strings, sorted.
fn payloads(rx: &mut mpsc::UnboundedReceiver<Message>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(m) = rx.try_recv() {
        out.push(String::from_utf8(m.payload().to_vec()).expect("utf-8 payload"));
    }
    out.sort();
    out
}

/// Publishes the topic's own name as the payload.
async fn publish_name(bus: &Bus, topic: &str) {
    bus.publish(topic, topic.to_owned()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_is_one_segment_and_gt_is_the_rest() {
    let bus = Bus::memory();
    let (_star, mut rs) = collect(&bus, "orders.*").await;
    let (_rest, mut rr) = collect(&bus, "orders.>").await;
    let (_mid, mut rm) = collect(&bus, "*.eu.*").await;
    for t in [
        "orders",
        "orders.created",
        "orders.eu.created",
        "ordersx.created",
        "payments.created",
        "payments.eu.refunded",
    ] {
        publish_name(&bus, t).await;
    }
    bus.close().await.unwrap();
    assert_eq!(payloads(&mut rs), ["orders.created"]);
    assert_eq!(payloads(&mut rr), ["orders.created", "orders.eu.created"]);
    assert_eq!(
        payloads(&mut rm),
        ["orders.eu.created", "payments.eu.refunded"]
    );
    let stats = bus.stats();
    assert_eq!(stats.published, 6);
    assert_eq!(
        stats.unrouted, 3,
        "orders, ordersx.created and payments.created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_sees_topics_from_before_and_after_it() {
    let bus = Bus::memory();
    // Known to the bus before the wildcard: configured, subscribed, and
    // published to while no wildcard existed.
    bus.configure_topic("orders.configured", TopicOptions::default())
        .await
        .unwrap();
    let (_exact, mut re) = collect(&bus, "orders.subscribed").await;
    publish_name(&bus, "orders.published").await;
    let (_w, mut rw) = collect(&bus, "orders.*").await;
    // New after it: configured, subscribed, never seen.
    bus.configure_topic("orders.later", TopicOptions::default())
        .await
        .unwrap();
    let (_late, mut rl) = collect(&bus, "orders.late-sub").await;
    for t in [
        "orders.configured",
        "orders.subscribed",
        "orders.published",
        "orders.later",
        "orders.late-sub",
        "orders.fresh",
    ] {
        publish_name(&bus, t).await;
    }
    bus.try_publish("orders.fresh-try", "orders.fresh-try")
        .unwrap();
    bus.close().await.unwrap();
    assert_eq!(
        payloads(&mut rw),
        [
            "orders.configured",
            "orders.fresh",
            "orders.fresh-try",
            "orders.late-sub",
            "orders.later",
            "orders.published",
            "orders.subscribed",
        ]
    );
    assert_eq!(payloads(&mut re), ["orders.subscribed"]);
    assert_eq!(payloads(&mut rl), ["orders.late-sub"]);
    // Topics the wildcard made the bus route are not configured topics.
    assert_eq!(
        bus.list_topics().await.unwrap(),
        ["orders.configured", "orders.later"]
    );
    assert_eq!(bus.topic_config("orders.fresh").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribed_wildcard_stops_receiving() {
    let bus = Bus::memory();
    bus.configure_topic("audit.kept", TopicOptions::default())
        .await
        .unwrap();
    let (w, mut rw) = collect(&bus, "audit.>").await;
    publish_name(&bus, "audit.login").await;
    publish_name(&bus, "audit.kept").await;
    assert_eq!(recv(&mut rw).await.payload().as_ref(), b"audit.login");
    assert_eq!(recv(&mut rw).await.payload().as_ref(), b"audit.kept");
    w.unsubscribe().await;
    publish_name(&bus, "audit.login").await;
    publish_name(&bus, "audit.kept").await;
    publish_name(&bus, "audit.new.topic").await;
    assert_eq!(bus.stats().unrouted, 3, "nobody listens any more");
    // The configuration outlives the wildcard; a new wildcard works.
    assert_eq!(bus.list_topics().await.unwrap(), ["audit.kept"]);
    assert!(bus.topic_config("audit.kept").await.unwrap().is_some());
    let (_again, mut ra) = collect(&bus, "audit.*").await;
    publish_name(&bus, "audit.login").await;
    bus.close().await.unwrap();
    assert_eq!(payloads(&mut ra), ["audit.login"]);
    assert!(rw.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_wildcard_subscriptions_both_get_the_message() {
    let bus = Bus::memory();
    let (_exact, mut re) = collect(&bus, "orders.created").await;
    let (_star, mut rs) = collect(&bus, "orders.*").await;
    // `>` matches every topic, its own dead-letter topic too: it must
    // name none (see the dead-letter test below).
    let no_dlq = SubscribeOptions::default().dead_letter(DeadLetter::Disabled);
    let (_gt, mut rg) = collect_with(&bus, ">", no_dlq).await;
    publish_name(&bus, "orders.created").await;
    let env = Envelope::new("order-1", "OrderCreated", 1, "{}");
    bus.publish_envelope("orders.created", env).await.unwrap();
    bus.close().await.unwrap();
    for rx in [&mut re, &mut rs, &mut rg] {
        assert_eq!(rx.len(), 2, "the plain message and the envelope");
    }
    let stats = bus.stats();
    assert_eq!(stats.published, 2);
    assert_eq!(stats.total.delivered, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_on_a_pattern_shares_every_matching_topic() {
    let bus = Bus::memory();
    let opts = || SubscribeOptions::default().group("billing");
    let (_a, mut ra) = collect_with(&bus, "orders.>", opts()).await;
    let (_b, mut rb) = collect_with(&bus, "orders.>", opts()).await;
    let (_c, mut rc) = collect(&bus, "orders.>").await;
    let mut sent = Vec::new();
    for i in 0..200 {
        let topic = format!("orders.region{}.created", i % 7);
        let payload = format!("{topic}#{i}");
        let msg = OutboundMessage::new(payload.clone()).with_key(format!("order-{}", i % 40));
        bus.publish_with(&topic, msg).await.unwrap();
        sent.push(payload);
    }
    bus.close().await.unwrap();
    sent.sort();
    let (a, b) = (payloads(&mut ra), payloads(&mut rb));
    assert!(!a.is_empty() && !b.is_empty(), "both members work");
    let mut group: Vec<String> = a.iter().chain(&b).cloned().collect();
    group.sort();
    assert_eq!(group, sent, "the group got each record once");
    assert_eq!(payloads(&mut rc), sent, "the loner got them all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_subscribe_racing_first_publishes_loses_no_topic() {
    for round in 0..20 {
        let bus = Bus::memory();
        let subscribed = Arc::new(AtomicBool::new(false));
        // Publishes to 100 new topics while the wildcard subscribes: each
        // publish that began after the subscribe returned must arrive.
        let publisher = tokio::spawn({
            let (bus, subscribed) = (bus.clone(), subscribed.clone());
            async move {
                let mut must = Vec::new();
                for i in 0..100 {
                    let after = subscribed.load(Ordering::SeqCst);
                    let topic = format!("race.t{i}");
                    bus.publish(&topic, format!("first {i}")).await.unwrap();
                    if after {
                        must.push(format!("first {i}"));
                    }
                    if i % 8 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                must
            }
        });
        let (_w, mut rw) = collect(&bus, "race.*").await;
        subscribed.store(true, Ordering::SeqCst);
        let must = publisher.await.unwrap();
        // Every topic, materialised before or after the subscribe, now
        // routes to the wildcard.
        for i in 0..100 {
            bus.publish(&format!("race.t{i}"), format!("second {i}"))
                .await
                .unwrap();
        }
        bus.close().await.unwrap();
        let got: BTreeSet<String> = payloads(&mut rw).into_iter().collect();
        let second: Vec<String> = (0..100).map(|i| format!("second {i}")).collect();
        for p in must.iter().chain(&second) {
            assert!(got.contains(p), "round {round}: {p} lost");
        }
    }
}

#[tokio::test]
async fn publishing_to_a_wildcard_is_refused() {
    let bus = Bus::memory();
    // Even with a subscription on that very pattern.
    let _w = bus
        .subscribe("orders.*", |_m: Message| async { HResult::Ok(()) })
        .await
        .unwrap();
    match bus.publish("orders.*", "p").await {
        Err(PublishError::InvalidTopic(p, TopicError::Wildcard { ch: '*', index: 7 })) => {
            assert_eq!(p, "p", "the payload comes back")
        }
        other => panic!("{other:?}"),
    }
    match bus.try_publish("orders.>", "p") {
        Err(TryPublishError::InvalidTopic(_, TopicError::Wildcard { ch: '>', index: 7 })) => {}
        other => panic!("{other:?}"),
    }
    let env = Envelope::new("order-1", "OrderCreated", 1, "{}");
    match bus.publish_envelope("*", env.clone()).await {
        Err(PublishError::InvalidTopic(back, TopicError::Wildcard { ch: '*', index: 0 })) => {
            assert_eq!(back, env)
        }
        other => panic!("{other:?}"),
    }
    match bus.publish_with("a.b>", OutboundMessage::new("p")).await {
        Err(PublishError::InvalidTopic(_, TopicError::Wildcard { ch: '>', index: 3 })) => {}
        other => panic!("{other:?}"),
    }
    let stats = bus.stats();
    assert_eq!(stats.published, 0);
    assert_eq!(stats.total.delivered, 0);
    // A wildcard must be a whole segment, `>` only the last one.
    for (bad, ch, index) in [("orders.>.x", '>', 7), ("ord*", '*', 3)] {
        match bus
            .subscribe(bad, |_m: Message| async { HResult::Ok(()) })
            .await
        {
            Err(SubscribeError::InvalidTopic(TopicError::MisplacedWildcard {
                ch: c,
                index: i,
            })) => {
                assert_eq!((c, i), (ch, index), "{bad}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_dead_letters_go_outside_the_pattern() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "dlq.orders._").await;
    let _w = bus
        .subscribe("orders.*", |_m: Message| async {
            Err::<(), _>(HandlerError::permanent("never works"))
        })
        .await
        .unwrap();
    publish_name(&bus, "orders.created").await;
    let dead = recv(&mut dlq_rx).await;
    assert_eq!(dead.payload().as_ref(), b"orders.created");
    bus.close().await.unwrap();
    assert_eq!(bus.stats().total.dead_lettered, 1);
    // A dead-letter topic the pattern itself matches would loop: refused.
    let bus = Bus::memory();
    let own = SubscribeOptions::default().dead_letter(DeadLetter::Topic("orders.failed".into()));
    for (pattern, options) in [(">", SubscribeOptions::default()), ("orders.*", own)] {
        match bus
            .subscribe_with(pattern, options, |_m: Message| async { HResult::Ok(()) })
            .await
        {
            Err(SubscribeError::InvalidOptions(e)) => {
                assert_eq!(e.field(), Some("options.dead_letter"), "{pattern}")
            }
            other => panic!("{pattern}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn configuring_a_pattern_is_refused_with_the_wildcard_error() {
    let bus = Bus::memory();
    let err = bus
        .configure_topic("orders.*", lanebus::TopicOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            lanebus::TopicConfigError::InvalidTopic(TopicError::Wildcard { ch: '*', index: 7 })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_handlers_and_dead_letters_see_the_exact_topic() {
    let bus = Bus::memory();
    let (_exact, mut exact) = collect(&bus, "orders.eu").await;
    let (_dlq, mut dead) = collect(&bus, "dlq.orders._").await;
    let (tx, mut seen) = mpsc::unbounded_channel();
    let _wild = bus
        .subscribe("orders.*", move |m: lanebus::Message| {
            let tx = tx.clone();
            async move {
                tx.send(m.context().topic().to_owned()).unwrap();
                if m.payload().as_ref() == b"bad" {
                    return Err(lanebus::HandlerError::permanent("bad order"));
                }
                HResult::Ok(())
            }
        })
        .await
        .unwrap();
    bus.publish("orders.eu", "ok").await.unwrap();
    bus.try_publish("orders.us", "ok").unwrap();
    bus.publish("orders.asia", "bad").await.unwrap();
    let mut topics = BTreeSet::new();
    for _ in 0..3 {
        topics.insert(recv(&mut seen).await);
    }
    assert_eq!(
        topics,
        BTreeSet::from(["orders.asia".into(), "orders.eu".into(), "orders.us".into()])
    );
    assert_eq!(recv(&mut exact).await.topic(), "orders.eu");
    let d = recv(&mut dead).await;
    assert_eq!(d.dead_letter().unwrap().source_topic, "orders.asia");
    bus.close().await.unwrap();
}
