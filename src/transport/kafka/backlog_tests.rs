//! Recovery mode on Kafka, against a real Apache Kafka broker: a group
//! member that starts with a backlog of 10,000 on its topic enters
//! recovery mode (the partitions' summed lag, as librdkafka reports it),
//! and leaves it only once the lag stayed below the threshold for the hold
//! time; bursts of `try_publish` above the producer's in-flight threshold
//! are a publisher backlog; a handler stuck on one key stalls exactly the
//! partition whose commits it holds back.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::mpsc;

use super::test_support::{bus, eventually, preload, step};
use crate::transport::handler_scenarios as scenario;
use crate::{
    BacklogOptions, BusEvent, HandlerError, Message, OutboundMessage, SubscribeOptions,
    TopicOptions,
};

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

/// Records stored 1.5 s before the member subscribes: the oldest
/// unsettled record's timestamp makes the oldest age at least that, and
/// recovery mode is entered by age alone (count threshold 1,000,000);
/// drained, the age is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backlog_enters_recovery_by_its_age() {
    const COUNT: usize = 500;
    let topic = "kb4.aged";
    let old = Duration::from_millis(1500);
    let bus = bus().await;
    bus.configure_topic(topic, TopicOptions::persistent().partitions(2))
        .await
        .unwrap();
    assert_eq!(preload(topic, COUNT).await, COUNT);
    tokio::time::sleep(old).await;
    let group = SubscribeOptions::default().group("kb4-aged");
    let seen = scenario::old_backlog_recovers_by_age(&bus, topic, group, COUNT as u32, old).await;
    println!(
        "kafka aged backlog of {COUNT}: entered recovery at age {:?} with backlog {}",
        seen.entered_age, seen.entered_backlog
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

/// A handler stuck on one key holds its partition's commits back: that
/// partition, and only it, is reported stalled (an event naming it, and
/// `broker.stalled` in the stats) while the other partitions flow and
/// commit; releasing the handler clears it (an event with age 0) and the
/// partition commits to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_held_by_a_stuck_handler_is_stalled_then_cleared() {
    const LANES: usize = 8;
    let topic = "kb3.held";
    let stall_after = Duration::from_secs(1);
    let bus = bus().await;
    bus.configure_topic(topic, TopicOptions::persistent().partitions(4))
        .await
        .unwrap();
    // Every event, in order, for the checks at the end.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut events = bus.events();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if seen_tx.send(e).is_err() {
                return;
            }
        }
    });
    let (open, gate) = tokio::sync::watch::channel(false);
    let (handled_tx, mut handled) = mpsc::unbounded_channel::<(String, i32)>();
    let options = SubscribeOptions::default()
        .group("kb3-held")
        .lanes(LANES)
        .backlog(
            BacklogOptions::default()
                .check_interval(Duration::from_millis(50))
                .stall_after(stall_after),
        );
    let sub = bus
        .subscribe_with(topic, options, move |m: Message| {
            let (mut gate, tx) = (gate.clone(), handled_tx.clone());
            async move {
                let key = m.key().unwrap_or_default().to_owned();
                let partition = m.context().partition().expect("a Kafka partition");
                if key == "stuck" {
                    let _ = gate.wait_for(|open| *open).await;
                }
                let _ = tx.send((key, partition));
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    bus.publish_with(topic, OutboundMessage::new("x").with_key("stuck"))
        .await
        .unwrap();
    // Other keys, none on the stuck key's lane (a record behind the stuck
    // one in its lane would be held too, and its partition rightly
    // stalled): rounds over twice the stall threshold.
    let lane = |key: &str| crate::key_hash(key.as_bytes()) as usize % LANES;
    let keys: Vec<String> = (0..64)
        .map(|i| format!("k{i}"))
        .filter(|k| lane(k) != lane("stuck"))
        .take(24)
        .collect();
    let rounds = 20;
    for _ in 0..rounds {
        for k in &keys {
            bus.publish_with(topic, OutboundMessage::new("y").with_key(k))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut flowing = BTreeSet::new();
    for _ in 0..rounds * keys.len() {
        let (key, partition) = step("the other keys", handled.recv()).await.unwrap();
        assert_ne!(
            key, "stuck",
            "the stuck record was handled before the gate opened"
        );
        flowing.insert(partition);
    }
    let held = step("the stall", async {
        loop {
            match seen.recv().await.unwrap() {
                BusEvent::StallEntered(s) if s.partition.is_some() => return s,
                _ => {}
            }
        }
    })
    .await;
    assert!(held.age > stall_after, "{held:?}");
    assert_eq!(held.subscription, sub.id());
    assert_eq!(held.topic, topic);
    let p = held.partition.unwrap();
    let others: BTreeSet<i32> = flowing.iter().copied().filter(|&q| q != p).collect();
    assert!(others.len() >= 2, "the other keys reached {flowing:?}");
    // The stats show the stall; the other partitions committed all they
    // had while p's commit waits below the stuck record.
    eventually("the stall in the stats, the others committed", async || {
        let broker = broker_stats(&bus, sub.id());
        let lag = |q: i32| {
            broker
                .partitions
                .iter()
                .find(|l| l.partition == q)
                .map(|l| l.lag)
        };
        broker.stalled.len() == 1
            && broker.stalled[0].partition == p
            && broker.stalled[0].age > stall_after
            && lag(p).is_some_and(|l| l > 0)
            && others.iter().all(|&q| lag(q) == Some(0))
    })
    .await;
    // Health shows the subscription degraded, naming the partition.
    let health = step("health", bus.health()).await;
    let part = health
        .parts
        .iter()
        .find(|part| part.name.contains(&format!("#{}", sub.id())))
        .expect("the subscription's part");
    assert_eq!(part.status, crate::HealthStatus::Degraded, "{health:?}");
    assert!(
        part.detail.contains(&format!("partition {p} of ")),
        "{}",
        part.detail
    );
    open.send(true).unwrap();
    let (key, partition) = step("the stuck record", handled.recv()).await.unwrap();
    assert_eq!((key.as_str(), partition), ("stuck", p));
    let cleared = step("the stall cleared", async {
        loop {
            match seen.recv().await.unwrap() {
                BusEvent::StallCleared(s) if s.partition.is_some() => return s,
                BusEvent::StallEntered(s) if s.partition.is_some() => {
                    panic!("another partition stalled: {s:?} (held: {p})")
                }
                _ => {}
            }
        }
    })
    .await;
    assert_eq!((cleared.partition, cleared.age), (Some(p), Duration::ZERO));
    eventually("p committed to its end", async || {
        let broker = broker_stats(&bus, sub.id());
        broker.stalled.is_empty()
            && broker
                .partitions
                .iter()
                .find(|l| l.partition == p)
                .is_some_and(|l| l.lag == 0)
    })
    .await;
    bus.close().await.ok();
    // No partition stall event after the clearing one either (the first
    // named p, none came between; the lane's own stall events name no
    // partition): no other partition stalled at any time.
    while let Ok(e) = seen.try_recv() {
        if let BusEvent::StallEntered(s) | BusEvent::StallCleared(s) = &e {
            assert!(s.partition.is_none(), "a second partition stall event: {e}");
        }
    }
    println!(
        "kafka partition stall: partition {p} stalled for {:?} at the event, {} other partitions flowed",
        held.age,
        others.len()
    );
}

/// What the broker reports for subscription `id` (the bus's stats carry
/// it; a handle's own stats do not).
fn broker_stats(bus: &crate::Bus, id: u64) -> crate::BrokerStats {
    let stats = bus.stats();
    let sub = stats.subscriptions.iter().find(|s| s.id == id);
    sub.and_then(|s| s.broker.clone()).expect("broker figures")
}
