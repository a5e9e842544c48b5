//! Recovery mode on JetStream, against a real `nats-server`: a
//! subscription that starts with a backlog of 10,000 already in its stream
//! enters recovery mode (the consumer's pending counts, as the server
//! reports them), and leaves it only once the backlog stayed below the
//! threshold for the hold time.

use std::time::Duration;

use futures_util::StreamExt;

use super::super::test_support::{bus, raw, step};
use crate::transport::handler_scenarios as scenario;
use crate::{BusEvent, SubscribeOptions};

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

    let run = scenario::enter_recovery(&bus, topic, SubscribeOptions::default(), hold).await;
    assert!(bus.stats().subscriptions[0].recovering);
    let entered = run.entered.backlog;
    let (left, seen) = scenario::leave_recovery(run, hold, BACKLOG as u32).await;
    println!(
        "jetstream backlog {BACKLOG}: entered at {entered}, left at {}, {seen} handled in recovery mode",
        left.backlog
    );
    bus.close().await.ok();
}

/// Messages stored 1.5 s before the subscription: the stored time of the
/// consumer's oldest unacked message makes the oldest age at least that,
/// and recovery mode is entered by age alone (count threshold 1,000,000);
/// drained, the age is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backlog_enters_recovery_by_its_age() {
    const COUNT: u32 = 500;
    let topic = "jsb3.aged";
    let old = Duration::from_millis(1500);
    let bus = bus("js-aged", "").await;
    bus.configure_topic(topic, crate::TopicOptions::persistent())
        .await
        .unwrap();
    let (_, js) = raw().await;
    for i in 0..COUNT {
        let ack = js.publish(topic, i.to_string().into()).await.unwrap();
        step("a publish ack", ack).await.unwrap();
    }
    tokio::time::sleep(old).await;
    let seen =
        scenario::old_backlog_recovers_by_age(&bus, topic, SubscribeOptions::default(), COUNT, old)
            .await;
    println!(
        "jetstream aged backlog of {COUNT}: entered recovery at age {:?} with backlog {}",
        seen.entered_age, seen.entered_backlog
    );
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
