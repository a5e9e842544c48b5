//! Lifecycle: unsubscribe drains, close drains and refuses, close deadline,
//! health check, topic configuration.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{collect, gated, settle, Gate, HResult};
use lanebus::{
    Bus, CloseError, HealthError, Message, Persistence, PublishError, SubscribeError,
    SubscribeOptions, TopicConfigError, TopicOptions, TryPublishError,
};

fn counting(
    counter: &Arc<AtomicU64>,
) -> impl Fn(Message) -> std::pin::Pin<Box<dyn std::future::Future<Output = HResult> + Send>>
       + Send
       + Sync
       + 'static {
    let c = counter.clone();
    move |_m: Message| {
        let c = c.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            c.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_drains_what_was_accepted() {
    let bus = Bus::memory();
    let handled = Arc::new(AtomicU64::new(0));
    let sub = bus
        .subscribe_with(
            "u",
            SubscribeOptions::default().lanes(2),
            counting(&handled),
        )
        .await
        .unwrap();
    for i in 0..200u32 {
        bus.publish("u", i.to_le_bytes().to_vec()).await.unwrap();
    }
    sub.unsubscribe().await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        200,
        "everything accepted was handled"
    );
    bus.publish("u", "after").await.unwrap();
    let s = bus.stats();
    assert_eq!(s.unrouted, 1, "no subscription after unsubscribe");
    assert_eq!(s.total.delivered, 200, "retired counts stay in the totals");
    assert!(s.subscriptions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_subscription_stops_delivery() {
    let bus = Bus::memory();
    let (sub, mut rx) = collect(&bus, "d").await;
    bus.publish("d", "one").await.unwrap();
    common::recv(&mut rx).await;
    drop(sub);
    bus.publish("d", "two").await.unwrap();
    settle().await;
    assert!(rx.try_recv().is_err());
    assert_eq!(bus.stats().unrouted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_every_lane_then_refuses() {
    let bus = Bus::memory();
    let handled = Arc::new(AtomicU64::new(0));
    let _a = bus
        .subscribe_with(
            "a",
            SubscribeOptions::default().lanes(4),
            counting(&handled),
        )
        .await
        .unwrap();
    let _b = bus
        .subscribe_with(
            "b",
            SubscribeOptions::default().lanes(1),
            counting(&handled),
        )
        .await
        .unwrap();
    for i in 0..300u32 {
        let topic = if i % 3 == 0 { "b" } else { "a" };
        bus.publish(topic, i.to_le_bytes().to_vec()).await.unwrap();
    }
    bus.close().await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 300);
    match bus.publish("a", "late").await {
        Err(PublishError::Closed(p)) => assert_eq!(p, "late"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bus.try_publish("a", "late"),
        Err(TryPublishError::Closed(_))
    ));
    assert!(matches!(
        bus.subscribe("a", |_m: Message| async { HResult::Ok(()) })
            .await,
        Err(SubscribeError::Closed)
    ));
    assert!(bus.is_closed());
    // Closing again is harmless.
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_deadline_reports_what_was_left() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let _sub = gated(
        &bus,
        "stuck",
        SubscribeOptions::default().lanes(1).drain_batch(1),
        &gate,
    )
    .await;
    for _ in 0..5 {
        bus.publish("stuck", "x").await.unwrap();
    }
    match bus.close_within(Duration::from_millis(50)).await {
        Err(CloseError::Timeout { pending }) => assert_eq!(pending, 5),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_published_during_close_are_kept() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "f.dlq").await;
    let _sub = bus
        .subscribe_with(
            "f",
            SubscribeOptions::default().retry(lanebus::RetryPolicy::none()),
            |_m: Message| async move { Err::<(), _>(lanebus::HandlerError::permanent("no")) },
        )
        .await
        .unwrap();
    for _ in 0..50 {
        bus.publish("f", "x").await.unwrap();
    }
    bus.close().await.unwrap();
    let mut n = 0;
    while dlq_rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, 50, "every dead letter was handled before close returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_reports_and_fails_after_close() {
    let bus = Bus::memory();
    let (_s, _rx) = collect(&bus, "h").await;
    let report = bus.health_check().await.unwrap();
    assert_eq!(report.transport, "memory");
    assert_eq!(report.subscriptions, 1);
    assert_eq!(report.lanes, 8);
    bus.close().await.unwrap();
    assert!(matches!(bus.health_check().await, Err(HealthError::Closed)));
}

#[tokio::test]
async fn topic_configuration_is_recorded() {
    let bus = Bus::memory();
    assert_eq!(bus.topic_config("orders").await.unwrap(), None);
    let opts = TopicOptions::persistent()
        .max_age(Duration::from_secs(3600))
        .max_messages(1000)
        .partitions(3);
    bus.configure_topic("orders", opts.clone()).await.unwrap();
    bus.configure_topic("audit", TopicOptions::ephemeral())
        .await
        .unwrap();
    assert_eq!(bus.topic_config("orders").await.unwrap(), Some(opts));
    assert_eq!(
        bus.list_topics().await.unwrap(),
        vec!["audit".to_string(), "orders".to_string()]
    );
    assert_eq!(
        bus.topic_config("audit")
            .await
            .unwrap()
            .unwrap()
            .persistence,
        Persistence::Ephemeral
    );
    match bus
        .configure_topic("orders", TopicOptions::default().partitions(0))
        .await
    {
        Err(TopicConfigError::InvalidOptions(e)) => {
            assert_eq!(e.field(), Some("options.partitions"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bus.configure_topic("bad name", TopicOptions::default())
            .await,
        Err(TopicConfigError::InvalidTopic(_))
    ));
    assert!(bus.remove_topic("orders").await.unwrap());
    assert!(!bus.remove_topic("orders").await.unwrap());
    assert_eq!(bus.list_topics().await.unwrap(), vec!["audit".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_topic_keeps_subscriptions_when_removed() {
    let bus = Bus::memory();
    bus.configure_topic("c", TopicOptions::default())
        .await
        .unwrap();
    let (_s, mut rx) = collect(&bus, "c").await;
    assert!(bus.remove_topic("c").await.unwrap());
    bus.publish("c", "still routed").await.unwrap();
    assert_eq!(
        common::recv(&mut rx).await.payload().as_ref(),
        b"still routed"
    );
    bus.close().await.unwrap();
}
