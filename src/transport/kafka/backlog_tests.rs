//! Recovery mode on Kafka, against a real Apache Kafka broker: a group
//! member that starts with a backlog of 10,000 on its topic enters
//! recovery mode (the partitions' summed lag, as librdkafka reports it),
//! and leaves it only once the lag stayed below the threshold for the hold
//! time; bursts of `try_publish` above the producer's in-flight threshold
//! are a publisher backlog.

use std::time::Duration;

use super::test_support::{bus, preload, step};
use crate::transport::handler_scenarios as scenario;
use crate::{BusEvent, SubscribeOptions, TopicOptions};

#[tokio::test]
async fn a_member_starting_with_a_backlog_recovers_then_leaves_after_the_hold() {
    const BACKLOG: u64 = 10_000;
    let topic = "kb1.replay";
    let hold = Duration::from_millis(500);
    let bus = bus().await;
    bus.configure_topic(topic, TopicOptions::persistent().partitions(4))
        .await
        .unwrap();
    let sent = preload(topic, BACKLOG as usize).await;
    assert_eq!(sent as u64, BACKLOG);

    let group = SubscribeOptions::default().group("kb1-replay");
    let run = scenario::enter_recovery(&bus, topic, group, hold).await;
    // While the handler waits, librdkafka reports the lag per partition,
    // and the check reads it.
    step("lag reported", async {
        loop {
            let s = bus.stats().subscriptions[0].clone();
            let broker = s.broker.unwrap();
            if !broker.partitions.is_empty()
                && broker.pending > 1_000
                && s.backlog.is_some_and(|b| b.backlog >= broker.pending)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(run.sub.recovering());
    let entered = run.entered.backlog;
    let (left, seen) = scenario::leave_recovery(run, hold, BACKLOG as u32).await;
    println!(
        "kafka backlog {BACKLOG}: entered at {entered}, left at {}, {seen} handled in recovery mode",
        left.backlog
    );
    bus.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_in_flight_count_is_a_publisher_backlog() {
    let topic = "kb2.burst";
    let mut config = super::test_support::config("");
    config.publisher_backlog = Some(
        crate::PublisherBacklogOptions::waiting(100)
            .check_interval(Duration::from_millis(5))
            .hold(Duration::from_millis(200)),
    );
    let bus = step("connect", crate::Bus::connect(config)).await.unwrap();
    bus.configure_topic(topic, TopicOptions::persistent())
        .await
        .unwrap();
    let mut events = bus.events();
    // Bursts of try_publish until the monitor saw more than 100 in flight.
    let waiting = step("backlogged", async {
        loop {
            for i in 0..1_000 {
                let _ = bus.try_publish(topic, i.to_string());
            }
            match events.try_recv() {
                Ok(BusEvent::PublisherBacklog(p)) if p.backlogged => return p.waiting,
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await;
    assert!(waiting > 100, "{waiting}");
    let over = step("backlog over", async {
        loop {
            if let BusEvent::PublisherBacklog(p) = events.recv().await.unwrap() {
                if !p.backlogged {
                    return p.waiting;
                }
            }
        }
    })
    .await;
    assert!(over <= 100);
    println!("kafka publisher backlog: {waiting} in flight at the event, {over} when over");
    bus.close().await.ok();
}
