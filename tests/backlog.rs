//! Backlog monitoring on the memory transport: recovery mode with a backlog
//! of 10,000 at start and hysteresis, stalls, publisher backlog, manual
//! recovery mode. Waits have generous timeouts; no speed is asserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanebus::{
    BacklogOptions, Bus, BusConfig, BusEvent, HandlerError, Message, PublisherBacklogOptions,
    SubscribeOptions,
};
use tokio::sync::{broadcast, watch};

const WAIT: Duration = Duration::from_secs(60);

/// The next event `pick` accepts, within [`WAIT`]; the others seen on the
/// way are returned too, in order.
async fn next_event<T>(
    rx: &mut broadcast::Receiver<BusEvent>,
    mut pick: impl FnMut(&BusEvent) -> Option<T>,
) -> (T, Vec<BusEvent>) {
    let mut skipped = Vec::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let e = rx.recv().await.expect("the event stream is open");
            if let Some(t) = pick(&e) {
                return t;
            }
            skipped.push(e);
        }
    })
    .await
    .expect("the event arrived in time");
    (found, skipped)
}

/// A handler gate: closed until `open`.
fn gate() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn pass(mut gate: watch::Receiver<bool>) {
    let _ = gate.wait_for(|open| *open).await;
}

/// A handler that returns once `gate` is open.
fn held_until_open(gate: watch::Receiver<bool>) -> impl lanebus::Handler<Message> {
    move |_m: Message| {
        let gate = gate.clone();
        async move {
            pass(gate).await;
            Ok::<(), HandlerError>(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_mode_with_a_backlog_of_10000_at_start_then_left_after_the_hold() {
    const RECORDS: u64 = 10_000;
    let hold = Duration::from_millis(300);
    let bus = Bus::memory();
    let mut events = bus.events();
    let (open, gated) = gate();
    let in_recovery = Arc::new(AtomicU64::new(0));
    let handled = Arc::new(AtomicU64::new(0));
    let (r, h) = (in_recovery.clone(), handled.clone());
    let options = SubscribeOptions::default()
        .lanes(8)
        .ring_capacity(2048)
        .backlog(
            BacklogOptions::records(1_000)
                .check_interval(Duration::from_millis(10))
                .hold(hold),
        );
    let sub = bus
        .subscribe_with("replay", options, move |m: Message| {
            let (gated, r, h) = (gated.clone(), r.clone(), h.clone());
            async move {
                pass(gated).await;
                if m.context().recovering() {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                h.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    for i in 0..RECORDS {
        bus.publish("replay", i.to_string()).await.unwrap();
    }

    let (entered, before) = next_event(&mut events, |e| match e {
        BusEvent::RecoveryEntered(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert!(before.is_empty(), "nothing before entering: {before:?}");
    assert!(entered.recovering && !entered.manual);
    assert!(entered.backlog > 1_000, "{entered:?}");
    assert!(entered.oldest_age.is_some(), "memory knows the oldest age");
    assert!(sub.recovering());
    let stats = sub.stats();
    assert!(stats.recovering);
    assert!(stats.backlog.as_ref().unwrap().backlog > 1_000, "{stats:?}");
    println!("{}", bus.stats());

    let opened = Instant::now();
    open.send(true).unwrap();
    let (left, between) = next_event(&mut events, |e| match e {
        BusEvent::RecoveryLeft(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    // The quiet spell began after the gate opened (the backlog was above
    // the threshold until then), so the hold passed before leaving.
    assert!(opened.elapsed() >= hold);
    assert!(between.is_empty(), "no flapping: {between:?}");
    assert!(!left.recovering && left.backlog <= 1_000, "{left:?}");
    assert!(!sub.recovering());

    bus.flush().await;
    assert_eq!(handled.load(Ordering::Relaxed), RECORDS);
    let seen_recovering = in_recovery.load(Ordering::Relaxed);
    assert!(seen_recovering > 0, "handlers saw recovery mode");
    // After leaving, a new record is handled outside recovery mode.
    bus.publish("replay", "late").await.unwrap();
    bus.flush().await;
    assert_eq!(in_recovery.load(Ordering::Relaxed), seen_recovering);
    assert_eq!(handled.load(Ordering::Relaxed), RECORDS + 1);
    println!("handled in recovery mode: {seen_recovering} of {RECORDS}");
    bus.close().await.unwrap();
    assert!(
        events.try_recv().is_err(),
        "no further recovery events after leaving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lane_is_detected_and_cleared() {
    let bus = Bus::memory();
    let mut events = bus.events();
    let (open, gated) = gate();
    let options = SubscribeOptions::default().lanes(4).backlog(
        BacklogOptions::default()
            .check_interval(Duration::from_millis(10))
            .stall_after(Duration::from_millis(100)),
    );
    let sub = bus
        .subscribe_with("stuck", options, held_until_open(gated))
        .await
        .unwrap();
    let msg = lanebus::OutboundMessage::new("x").with_key("order-1");
    bus.publish_with("stuck", msg).await.unwrap();
    let (stalled, _) = next_event(&mut events, |e| match e {
        BusEvent::StallEntered(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(stalled.subscription, sub.id());
    assert!(stalled.age > Duration::from_millis(100));
    let stats = sub.stats();
    let gauge = &stats.backlog.as_ref().unwrap().stalled;
    assert_eq!(gauge.len(), 1, "{stats:?}");
    assert_eq!(gauge[0].lane, stalled.lane);
    assert!(gauge[0].age > Duration::from_millis(100));
    assert!(bus.stats().to_string().contains("stalled"));

    open.send(true).unwrap();
    let (cleared, _) = next_event(&mut events, |e| match e {
        BusEvent::StallCleared(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert_eq!(cleared.lane, stalled.lane);
    bus.flush().await;
    assert_eq!(sub.stats().total.delivered, 1);
    // The stats were updated before the event was sent.
    assert!(sub.stats().backlog.unwrap().stalled.is_empty());
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_blocked_on_a_full_lane_are_a_publisher_backlog() {
    let mut config = BusConfig::memory();
    config.publisher_backlog = Some(
        PublisherBacklogOptions::waiting(2)
            .check_interval(Duration::from_millis(10))
            .hold(Duration::from_millis(50)),
    );
    let bus = Bus::from_config(config).unwrap();
    let mut events = bus.events();
    let (open, gated) = gate();
    let options = SubscribeOptions::default().lanes(1).ring_capacity(1);
    let _sub = bus
        .subscribe_with("slow", options, held_until_open(gated))
        .await
        .unwrap();
    let publishers: Vec<_> = (0..10)
        .map(|i| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.publish("slow", format!("{i}")).await.unwrap() })
        })
        .collect();
    let (waiting, _) = next_event(&mut events, |e| match e {
        BusEvent::PublisherBacklog(p) if p.backlogged => Some(p.waiting),
        _ => None,
    })
    .await;
    assert!(waiting > 2, "{waiting}");
    assert!(bus.stats().publishes_waiting > 2);

    open.send(true).unwrap();
    for p in publishers {
        p.await.unwrap();
    }
    let (over, _) = next_event(&mut events, |e| match e {
        BusEvent::PublisherBacklog(p) if !p.backlogged => Some(p.waiting),
        _ => None,
    })
    .await;
    assert!(over <= 2);
    assert_eq!(bus.stats().publishes_waiting, 0);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_mode_set_by_hand_overrides_until_cleared() {
    let bus = Bus::memory();
    let mut events = bus.events();
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let s = seen.clone();
    let sub = bus
        .subscribe("manual", move |m: Message| {
            s.lock().push(m.context().recovering());
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .unwrap();
    bus.publish("manual", "a").await.unwrap();
    bus.flush().await;
    sub.set_recovering(true);
    sub.set_recovering(true); // no change, no event
    assert!(sub.recovering() && sub.stats().recovering);
    bus.publish("manual", "b").await.unwrap();
    bus.flush().await;
    sub.clear_recovering();
    bus.publish("manual", "c").await.unwrap();
    bus.flush().await;
    assert_eq!(*seen.lock(), [false, true, false]);
    let (entered, _) = next_event(&mut events, |e| match e {
        BusEvent::RecoveryEntered(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert!(entered.manual && entered.recovering);
    let (left, between) = next_event(&mut events, |e| match e {
        BusEvent::RecoveryLeft(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert!(between.is_empty(), "{between:?}");
    assert!(!left.recovering);
    assert!(events.try_recv().is_err());
    bus.close().await.unwrap();
}

#[test]
fn backlog_options_in_a_config_file_are_checked() {
    let yaml = "subscribe:\n  backlog:\n    max_backlog: 100\n    check_interval: 0s\n";
    let e = BusConfig::from_yaml_str(yaml).unwrap_err();
    assert_eq!(e.field(), Some("subscribe.backlog.check_interval"));
    // The README's example.
    let yaml = "subscribe:\n  backlog: { max_backlog: 10000, max_age: 30s, check_interval: 1s, hold: 10s, stall_after: 60s }\npublisher_backlog: { max_waiting: 1000 }\nhealth: { interval: 10s, probe_timeout: 5s }\n";
    let config = BusConfig::from_yaml_str(yaml).unwrap();
    let backlog = config.subscribe.backlog.unwrap();
    assert_eq!(backlog.stall_after, Some(Duration::from_secs(60)));
    assert_eq!(
        config.health.unwrap().interval,
        Some(Duration::from_secs(10))
    );
    let yaml = "publisher_backlog:\n  max_waiting: 10\n  hold: 2s\n";
    let config = BusConfig::from_yaml_str(yaml).unwrap();
    assert_eq!(
        config.publisher_backlog.unwrap().hold,
        Duration::from_secs(2)
    );
}
