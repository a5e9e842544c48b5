//! The operations issue's handler options on a broker, written once for
//! every broker transport: a subscription rate limit keeps per-key order,
//! a timed-out call is dropped then retried to success, a classifier sends
//! a custom error to the dead-letter topic with its class, an envelope
//! published twice is handled once, and a lane stuck in its handler is
//! reported stalled, then cleared; and the two halves of the recovery-mode
//! test ([`enter_recovery`], [`leave_recovery`]) around a backlog each
//! broker test puts on its server its own way, and recovery mode entered
//! by the oldest record's age alone ([`old_backlog_recovers_by_age`]). Each broker's test module calls these
//! with a bus on its real server and topics of its own (`prefix.…`), made
//! beforehand where the broker needs it (`topics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::tests::collect;
use crate::{
    BacklogOptions, Bus, BusEvent, Dedup, Envelope, ErrorClass, Event, HandlerError, Message,
    OutboundMessage, RateLimit, RetryPolicy, SubscribeOptions,
};

/// Longest any one wait here may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(60);

/// The topics each scenario uses, for brokers that need them made first.
pub(crate) fn topics(prefix: &str) -> Vec<String> {
    ["limited", "slow", "orders", "orders.dlq", "events", "stuck"]
        .iter()
        .map(|t| format!("{prefix}.{t}"))
        .collect()
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel open")
}

/// Waits until `count` reaches `n`.
async fn until(what: &str, count: &AtomicU32, n: u32) {
    tokio::time::timeout(WAIT, async {
        while count.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: {} of {n}", count.load(Ordering::SeqCst)));
}

/// The subscription to `topic`'s counts over all its lanes.
fn totals(bus: &Bus, topic: &str) -> crate::LaneStats {
    bus.stats()
        .subscriptions
        .into_iter()
        .find(|s| s.topic == topic)
        .unwrap_or_else(|| panic!("no subscription to {topic}"))
        .total
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

/// 120 keyed records through a subscription limited to 200 calls a second
/// over 4 lanes: each key's records are handled in publish order.
pub(crate) async fn a_rate_limit_keeps_per_key_order(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}.limited");
    let seen: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let count = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default()
        .lanes(4)
        .rate_limit(RateLimit::per_second(200).with_burst(4));
    let _sub = {
        let (seen, count) = (seen.clone(), count.clone());
        bus.subscribe_with(&topic, options, move |m: Message| {
            let (seen, count) = (seen.clone(), count.clone());
            async move {
                let n: u32 = std::str::from_utf8(m.payload())?.parse()?;
                let key = m.key().unwrap_or_default().to_owned();
                seen.lock().unwrap().entry(key).or_default().push(n);
                count.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap()
    };
    for n in 0..120u32 {
        let msg = OutboundMessage::new(n.to_string()).with_key(format!("k{}", n % 7));
        bus.publish_with(&topic, msg).await.unwrap();
    }
    until("limited records", &count, 120).await;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 7);
    for (key, got) in &seen {
        let k: u32 = key[1..].parse().unwrap();
        let want: Vec<u32> = (0..120).filter(|n| n % 7 == k).collect();
        assert_eq!(got, &want, "key {key}");
    }
}

/// Sets its flag when dropped: shows that a timed-out call was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A first call that never ends is dropped at the handler timeout and
/// counts as a failed, retried attempt; the second call succeeds.
pub(crate) async fn a_timed_out_call_is_dropped_then_retried_to_success(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}.slow");
    let cancelled = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default()
        .lanes(1)
        .handler_timeout(Duration::from_millis(200))
        .retry(quick_retries(3));
    let _sub = {
        let (flag, calls, done) = (cancelled.clone(), calls.clone(), done.clone());
        bus.subscribe_with(&topic, options, move |m: Message| {
            let (flag, calls, done) = (flag.clone(), calls.clone(), done.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                if m.attempt() == 1 {
                    let _guard = DropFlag(flag);
                    std::future::pending::<()>().await;
                }
                done.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap()
    };
    bus.publish(&topic, "job").await.unwrap();
    until("the retried call", &done, 1).await;
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the first call was dropped"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let t = totals(bus, &topic);
    assert_eq!(
        (t.delivered, t.failed, t.retried, t.dead_lettered),
        (1, 1, 1, 0)
    );
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("unknown product {0}")]
    UnknownProduct(String),
}

/// A handler's own error type, classified as permanent, goes to the
/// dead-letter topic after one attempt with class `permanent`; without the
/// classifier the same `?` would be retried.
pub(crate) async fn a_classifier_dead_letters_a_custom_error_with_its_class(
    bus: &Bus,
    prefix: &str,
) {
    let topic = format!("{prefix}.orders");
    let (_dlq, mut dead) = collect(bus, &format!("{topic}.dlq"), SubscribeOptions::default()).await;
    let calls = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default()
        .lanes(1)
        .retry(quick_retries(5))
        .classify(
            |err: &HandlerError| match err.source().downcast_ref::<OrderError>() {
                Some(OrderError::UnknownProduct(_)) => ErrorClass::Permanent,
                None => err.class(),
            },
        );
    let _sub = {
        let calls = calls.clone();
        bus.subscribe_with(&topic, options, move |m: Message| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let product = std::str::from_utf8(m.payload())?.to_owned();
                Err(OrderError::UnknownProduct(product))?;
                Ok(())
            }
        })
        .await
        .unwrap()
    };
    bus.publish(&topic, "gizmo").await.unwrap();
    let letter = recv(&mut dead).await;
    let info = letter.dead_letter().expect("dead-letter headers");
    assert_eq!(info.error_class, "permanent");
    assert_eq!(info.error, "unknown product gizmo");
    assert_eq!(info.attempts, 1, "a permanent error is not retried");
    assert_eq!(letter.payload().as_ref(), b"gizmo");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The same envelope published twice (a publisher's retry, say) is handled
/// once. The second copy is counted as a duplicate by the subscription,
/// unless the broker drops it itself (`broker_dedups`: JetStream does, by
/// the `Nats-Msg-Id` the bus sets to the event ID), in which case it never
/// arrives.
pub(crate) async fn an_envelope_published_twice_is_handled_once(
    bus: &Bus,
    prefix: &str,
    broker_dedups: bool,
) {
    let topic = format!("{prefix}.events");
    let calls = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default().lanes(2).dedup(Dedup::default());
    let _sub = {
        let calls = calls.clone();
        bus.subscribe_envelope_with(&topic, options, move |_ev: Event| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<(), HandlerError>(()))
        })
        .await
        .unwrap()
    };
    let first = Envelope::new("order-1", "OrderPlaced", 1, "{}");
    let other = Envelope::new("order-1", "OrderPaid", 2, "{}");
    bus.publish_envelope(&topic, first.clone()).await.unwrap();
    bus.publish_envelope(&topic, first).await.unwrap();
    // Published after the copy, on the same key: once it is handled, the
    // copy (if the broker let it through) has been settled too.
    bus.publish_envelope(&topic, other).await.unwrap();
    let expected = (2, u64::from(!broker_dedups));
    let settled = tokio::time::timeout(WAIT, async {
        loop {
            let t = totals(bus, &topic);
            if (t.delivered, t.duplicates) == expected {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let t = totals(bus, &topic);
    assert!(
        settled.is_ok(),
        "delivered and duplicates {:?}, expected {expected:?}",
        (t.delivered, t.duplicates)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The next event `pick` accepts, within [`WAIT`].
async fn next_event<T>(
    events: &mut tokio::sync::broadcast::Receiver<BusEvent>,
    mut pick: impl FnMut(&BusEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(t) = pick(&e) {
                        return t;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("the event stream ended: {e}"),
            }
        }
    })
    .await
    .expect("the event arrived in time")
}

/// A handler held on a gate makes its lane stalled past `stall_after`
/// (an event, and the lane in the stats' stall gauge); opening the gate
/// clears it (another event) and the record is handled.
pub(crate) async fn a_stalled_lane_is_reported_then_cleared(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}.stuck");
    let mut events = bus.events();
    let (open, gate) = tokio::sync::watch::channel(false);
    let options = SubscribeOptions::default().lanes(2).backlog(
        BacklogOptions::default()
            .check_interval(Duration::from_millis(20))
            .stall_after(Duration::from_millis(200)),
    );
    let sub = bus
        .subscribe_with(&topic, options, gated(gate, Arc::default(), Arc::default()))
        .await
        .unwrap();
    bus.publish_with(&topic, OutboundMessage::new("x").with_key("order-1"))
        .await
        .unwrap();
    // The lane's events (on Kafka the record's partition stalls too, with
    // events of its own that may come a check earlier: a partition's
    // clock starts when the record is handed to the lanes, a lane's when
    // the handler is called).
    let stalled = next_event(&mut events, |e| match e {
        BusEvent::StallEntered(s) if s.subscription == sub.id() && s.partition.is_none() => {
            Some(s.clone())
        }
        _ => None,
    })
    .await;
    assert!(stalled.age >= Duration::from_millis(200), "{stalled:?}");
    let stats = sub.stats();
    let gauge = &stats.backlog.as_ref().expect("backlog state").stalled;
    assert_eq!(gauge.len(), 1, "{stats:?}");
    assert_eq!(gauge[0].lane, stalled.lane);
    open.send(true).unwrap();
    let cleared = next_event(&mut events, |e| match e {
        BusEvent::StallCleared(s) if s.subscription == sub.id() && s.partition.is_none() => {
            Some(s.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(cleared.lane, stalled.lane);
    tokio::time::timeout(WAIT, async {
        while sub.stats().total.delivered < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the record was handled once the gate opened");
    assert!(sub
        .stats()
        .backlog
        .expect("backlog state")
        .stalled
        .is_empty());
}

/// A subscription gated shut over a backlog already on the broker, in
/// recovery mode: what [`enter_recovery`] returns, for [`leave_recovery`].
pub(crate) struct Recovering {
    pub(crate) sub: crate::Subscription,
    pub(crate) entered: crate::BacklogState,
    events: tokio::sync::broadcast::Receiver<BusEvent>,
    open: tokio::sync::watch::Sender<bool>,
    handled: Arc<AtomicU32>,
    in_recovery: Arc<AtomicU32>,
}

/// A handler that waits until `gate` is open, then counts the message in
/// `handled`, and in `recovering` when its context says recovery mode.
fn gated(
    gate: tokio::sync::watch::Receiver<bool>,
    handled: Arc<AtomicU32>,
    recovering: Arc<AtomicU32>,
) -> impl crate::Handler<Message> {
    move |m: Message| {
        let (mut gate, h, r) = (gate.clone(), handled.clone(), recovering.clone());
        async move {
            let _ = gate.wait_for(|open| *open).await;
            if m.context().recovering() {
                r.fetch_add(1, Ordering::Relaxed);
            }
            h.fetch_add(1, Ordering::Relaxed);
            Ok::<(), HandlerError>(())
        }
    }
}

/// Subscribes a gated handler (4 lanes of 64) to `topic`, with a backlog
/// threshold of 1,000 records checked every 50 ms and `hold`, and waits
/// for recovery mode: entered (never left first) above the threshold.
pub(crate) async fn enter_recovery(
    bus: &Bus,
    topic: &str,
    options: SubscribeOptions,
    hold: Duration,
) -> Recovering {
    let mut events = bus.events();
    let (open, gate) = tokio::sync::watch::channel(false);
    let (handled, in_recovery) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (h, r) = (handled.clone(), in_recovery.clone());
    let options = options.lanes(4).ring_capacity(64).backlog(
        BacklogOptions::records(1_000)
            .check_interval(Duration::from_millis(50))
            .hold(hold),
    );
    let sub = bus
        .subscribe_with(topic, options, gated(gate, h, r))
        .await
        .unwrap();
    let entered = next_event(&mut events, |e| match e {
        BusEvent::RecoveryEntered(s) => Some(s.clone()),
        BusEvent::RecoveryLeft(s) => panic!("left before entering: {s:?}"),
        _ => None,
    })
    .await;
    assert!(entered.backlog > 1_000, "{entered:?}");
    assert!(sub.recovering());
    Recovering {
        sub,
        entered,
        events,
        open,
        handled,
        in_recovery,
    }
}

/// Opens the gate and waits for recovery mode to end: not before `hold`
/// (no flapping: never entered again), at or below the threshold, with all
/// `backlog` records handled, some of them in recovery mode. Returns the
/// state at leaving and the calls that saw recovery mode.
pub(crate) async fn leave_recovery(
    mut run: Recovering,
    hold: Duration,
    backlog: u32,
) -> (crate::BacklogState, u32) {
    let opened = std::time::Instant::now();
    run.open.send(true).unwrap();
    let left = next_event(&mut run.events, |e| match e {
        BusEvent::RecoveryLeft(s) => Some(s.clone()),
        BusEvent::RecoveryEntered(s) => panic!("entered twice (flapping): {s:?}"),
        _ => None,
    })
    .await;
    assert!(opened.elapsed() >= hold);
    assert!(left.backlog <= 1_000 && !left.recovering, "{left:?}");
    until("all handled", &run.handled, backlog).await;
    let seen = run.in_recovery.load(Ordering::Relaxed);
    assert!(seen > 0, "handlers saw recovery mode");
    assert!(!run.sub.recovering());
    (left, seen)
}

/// What [`old_backlog_recovers_by_age`] saw.
pub(crate) struct AgedRecovery {
    /// The oldest age at entering recovery mode.
    pub(crate) entered_age: Duration,
    /// The backlog then.
    pub(crate) entered_backlog: u64,
}

/// `count` records were stored on the broker at least `old` ago: a
/// subscription (4 lanes of 64) whose handler waits on a gate, with a
/// count threshold far above the backlog and an age threshold of 1 s,
/// enters recovery mode by the age alone, reporting an oldest age of at
/// least `old` (in the event and in the stats); once the gate opens and
/// all are handled, the oldest age goes to none and recovery mode ends.
pub(crate) async fn old_backlog_recovers_by_age(
    bus: &Bus,
    topic: &str,
    options: SubscribeOptions,
    count: u32,
    old: Duration,
) -> AgedRecovery {
    const NEVER_BY_COUNT: u64 = 1_000_000;
    let max_age = Duration::from_secs(1);
    assert!(old > max_age);
    let mut events = bus.events();
    let (open, gate) = tokio::sync::watch::channel(false);
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let options = options.lanes(4).ring_capacity(64).backlog(
        BacklogOptions::records(NEVER_BY_COUNT)
            .max_age(max_age)
            .check_interval(Duration::from_millis(50))
            .hold(Duration::from_millis(300)),
    );
    let sub = bus
        .subscribe_with(topic, options, gated(gate, h, Arc::default()))
        .await
        .unwrap();
    let entered = next_event(&mut events, |e| match e {
        BusEvent::RecoveryEntered(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    let age = entered.oldest_age.expect("an oldest age at entering");
    assert!(age >= old, "{entered:?}");
    assert!(entered.backlog <= NEVER_BY_COUNT, "{entered:?}");
    let stats = sub.stats().backlog.expect("backlog state");
    assert!(stats.oldest_age.is_some_and(|a| a >= old), "{stats:?}");
    open.send(true).unwrap();
    until("all handled", &handled, count).await;
    let left = next_event(&mut events, |e| match e {
        BusEvent::RecoveryLeft(s) => Some(s.clone()),
        BusEvent::RecoveryEntered(s) => panic!("entered twice: {s:?}"),
        _ => None,
    })
    .await;
    assert!(left.oldest_age.is_none_or(|a| a <= max_age), "{left:?}");
    tokio::time::timeout(WAIT, async {
        while sub.stats().backlog.is_none_or(|b| b.oldest_age.is_some()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("no oldest age once everything was handled");
    assert!(!sub.recovering());
    AgedRecovery {
        entered_age: age,
        entered_backlog: entered.backlog,
    }
}
