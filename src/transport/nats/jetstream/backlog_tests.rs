//! Recovery mode on JetStream, against a real `nats-server`: a
//! subscription that starts with a backlog of 10,000 already in its stream
//! enters recovery mode (the consumer's pending counts, as the server
//! reports them), and leaves it only once the backlog stayed below the
//! threshold for the hold time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::super::test_support::{bus, raw, step};
use crate::{BacklogOptions, BusEvent, HandlerError, Message, SubscribeOptions};

#[tokio::test]
async fn a_subscription_starting_with_a_backlog_recovers_then_leaves_after_the_hold() {
    const BACKLOG: u64 = 10_000;
    let topic = "jsb1.replay";
    let hold = Duration::from_millis(500);
    let bus = bus("js-backlog", "").await;
    bus.configure_topic(topic, crate::TopicOptions::persistent())
        .await
        .unwrap();
    let (_, js) = raw().await;
    let acks = futures_util::stream::iter(0..BACKLOG)
        .map(|i| {
            let js = js.clone();
            async move {
                let ack = js.publish(topic, i.to_string().into()).await?;
                ack.await.map(drop).map_err(async_nats::Error::from)
            }
        })
        .buffer_unordered(256);
    let failed = step(
        "backlog",
        acks.filter(|r| std::future::ready(r.is_err())).count(),
    )
    .await;
    assert_eq!(failed, 0);

    let mut events = bus.events();
    let (open, gate) = tokio::sync::watch::channel(false);
    let (handled, in_recovery) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (h, r) = (handled.clone(), in_recovery.clone());
    let options = SubscribeOptions::default()
        .lanes(4)
        .ring_capacity(64)
        .backlog(
            BacklogOptions::records(1_000)
                .check_interval(Duration::from_millis(50))
                .hold(hold),
        );
    let sub = bus
        .subscribe_with(topic, options, move |m: Message| {
            let (mut gate, h, r) = (gate.clone(), h.clone(), r.clone());
            async move {
                let _ = gate.wait_for(|open| *open).await;
                if m.context().recovering() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                h.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();

    let entered = step("recovery entered", async {
        loop {
            match events.recv().await.unwrap() {
                BusEvent::RecoveryEntered(s) => return s,
                BusEvent::RecoveryLeft(s) => panic!("left before entering: {s:?}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(entered.backlog > 1_000, "{entered:?}");
    assert!(sub.recovering());
    assert!(bus.stats().subscriptions[0].recovering);

    let opened = Instant::now();
    open.send(true).unwrap();
    let left = step("recovery left", async {
        loop {
            match events.recv().await.unwrap() {
                BusEvent::RecoveryLeft(s) => return s,
                BusEvent::RecoveryEntered(s) => panic!("entered twice (flapping): {s:?}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(opened.elapsed() >= hold);
    assert!(left.backlog <= 1_000 && !left.recovering, "{left:?}");
    step("all handled", async {
        while handled.load(Ordering::Relaxed) < BACKLOG {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let seen = in_recovery.load(Ordering::Relaxed);
    println!(
        "jetstream backlog {BACKLOG}: entered at {}, left at {}, {seen} handled in recovery mode",
        entered.backlog, left.backlog
    );
    assert!(seen > 0, "handlers saw recovery mode");
    assert!(!sub.recovering());
    drop(sub);
    bus.close().await.ok();
}

/// Publishes waiting for their JetStream acks are the publisher backlog: a
/// burst of 2,000 concurrent publishes goes over a threshold of 100
/// (an event), and once they are acked the backlog is over (another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_awaiting_their_acks_are_a_publisher_backlog() {
    let topic = "jsb2.burst";
    let extra = "publisher_backlog: { max_waiting: 100, check_interval: 5ms, hold: 200ms }\n";
    let bus = bus("js-publisher-backlog", extra).await;
    bus.configure_topic(topic, crate::TopicOptions::persistent())
        .await
        .unwrap();
    let mut events = bus.events();
    let publishes = (0..2_000).map(|i| bus.publish(topic, i.to_string()));
    let (sent, waiting) = step("the burst", async {
        let burst = futures_util::future::join_all(publishes);
        let watch = async {
            loop {
                match events.recv().await {
                    Ok(BusEvent::PublisherBacklog(p)) if p.backlogged => return p.waiting,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("the event stream ended: {e}"),
                }
            }
        };
        tokio::join!(burst, watch)
    })
    .await;
    assert!(sent.iter().all(Result::is_ok), "every publish was acked");
    assert!(waiting > 100, "{waiting}");
    let over = step("backlog over", async {
        loop {
            if let Ok(BusEvent::PublisherBacklog(p)) = events.recv().await {
                if !p.backlogged {
                    return p.waiting;
                }
            }
        }
    })
    .await;
    assert!(over <= 100, "{over}");
    println!("jetstream publisher backlog: {waiting} awaiting acks at the event, {over} when over");
    bus.close().await.unwrap();
}
