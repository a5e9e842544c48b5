//! Faults a black-box user found, each pinned by a test: handlers that
//! panic before returning their future, a second `close` after a timeout,
//! dead-letter loops, cycles and full dead-letter lanes, dead letters
//! nobody receives, and waiting for the lanes without closing (`flush`).

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{collect, collect_with, gated, one_lane, recv, Gate, HResult};
use lanebus::{
    Bus, CloseError, DeadLetter, Envelope, ErrorClass, Event, Handler, HandlerError, Message,
    RetryPolicy, SubscribeError, SubscribeOptions, HEADER_DEAD_LETTER_TRAIL,
};

fn fast_retry(attempts: u32) -> SubscribeOptions {
    SubscribeOptions::default().retry(
        RetryPolicy::attempts(attempts)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(2)),
    )
}

/// A `Handler` whose `handle` is not `async`: it panics while building its
/// future, before there is anything to poll.
struct PanicsBeforeFuture {
    calls: Arc<AtomicU32>,
}

impl Handler<Message> for PanicsBeforeFuture {
    fn handle(&self, msg: Message) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if msg.payload().as_ref() == b"boom" {
            panic!("no future for you");
        }
        std::future::ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_before_the_future_is_a_failed_attempt_and_the_lane_carries_on() {
    let bus = Bus::memory();
    let (_dlq, mut dead) = collect(&bus, "jobs.dlq").await;
    let calls = Arc::new(AtomicU32::new(0));
    // One lane with two slots: if the lane died, the later publishes would
    // fill it and wait forever.
    let options = fast_retry(2).lanes(1).ring_capacity(2).drain_batch(1);
    let sub = bus
        .subscribe_with(
            "jobs",
            options,
            Arc::new(PanicsBeforeFuture {
                calls: calls.clone(),
            }),
        )
        .await
        .unwrap();
    bus.publish("jobs", "boom").await.unwrap();
    for _ in 0..20 {
        bus.publish("jobs", "fine").await.unwrap();
    }
    let dead = recv(&mut dead).await;
    assert_eq!(dead.dead_letter().unwrap().error_class, "panic");
    assert!(dead
        .dead_letter()
        .unwrap()
        .error
        .contains("no future for you"));
    bus.flush().await;
    bus.health_check()
        .await
        .expect("every lane worker is alive");
    let s = sub.stats().total;
    assert_eq!((s.delivered, s.failed, s.retried), (20, 2, 1));
    assert_eq!(calls.load(Ordering::SeqCst), 22);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closure_that_panics_before_its_async_block_is_retried() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let sub = bus
        .subscribe_with("jobs", fast_retry(3).lanes(1), move |_m: Message| {
            // Work before the async block, as a closure may do.
            let n = c.fetch_add(1, Ordering::SeqCst);
            assert!(n >= 2, "fails the first two attempts");
            async move { HResult::Ok(()) }
        })
        .await
        .unwrap();
    bus.publish("jobs", "x").await.unwrap();
    bus.publish("jobs", "y").await.unwrap();
    bus.flush().await;
    let s = sub.stats().total;
    assert_eq!((s.delivered, s.failed, s.retried, s.dropped), (2, 2, 2, 0));
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_close_after_a_timeout_reports_the_timeout_again() {
    let bus = Bus::memory();
    let gate = Gate::new();
    let _sub = gated(&bus, "slow", one_lane(8), &gate).await;
    for _ in 0..3 {
        bus.publish("slow", "x").await.unwrap();
    }
    let first = bus.close_within(Duration::from_millis(50)).await;
    assert!(
        matches!(first, Err(CloseError::Timeout { pending }) if pending >= 2),
        "{first:?}"
    );
    gate.open(10);
    let second = bus.close().await;
    assert_eq!(second, first, "nothing more was handled");
    let clone = bus.clone();
    assert_eq!(clone.close().await, first);
}

#[tokio::test]
async fn dead_letter_topic_equal_to_the_topic_is_refused() {
    let bus = Bus::memory();
    let err = bus
        .subscribe_with(
            "jobs",
            SubscribeOptions::default().dead_letter(DeadLetter::Topic("jobs".into())),
            |_m: Message| async { HResult::Ok(()) },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SubscribeError::InvalidOptions(_)), "{err}");
    assert!(err.to_string().contains("dead_letter"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_cycle_through_two_topics_is_cut() {
    let bus = Bus::memory();
    let fail = |_m: Message| async { Err::<(), _>(HandlerError::permanent("no")) };
    let a = bus
        .subscribe_with(
            "a",
            SubscribeOptions::default().dead_letter(DeadLetter::Topic("b".into())),
            fail,
        )
        .await
        .unwrap();
    let b = bus
        .subscribe_with(
            "b",
            SubscribeOptions::default().dead_letter(DeadLetter::Topic("a".into())),
            fail,
        )
        .await
        .unwrap();
    bus.publish("a", "poison").await.unwrap();
    // a -> b (dead-lettered), b -> a would close the cycle: dropped.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.stats().total.dropped == 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bus.flush().await;
    assert_eq!(a.stats().total.dead_lettered, 1);
    assert_eq!(b.stats().total.dropped, 1);
    assert_eq!(a.stats().total.dropped + b.stats().total.dead_lettered, 0);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_of_dead_letters_chain_onward_with_a_trail() {
    let bus = Bus::memory();
    let (_end, mut end) = collect(&bus, "a.dlq.dlq").await;
    let fail = |_m: Message| async { Err::<(), _>(HandlerError::permanent("no")) };
    let _a = bus.subscribe("a", fail).await.unwrap();
    let _dlq = bus.subscribe("a.dlq", fail).await.unwrap();
    bus.publish("a", "poison").await.unwrap();
    let m = recv(&mut end).await;
    assert_eq!(m.headers().get(HEADER_DEAD_LETTER_TRAIL), Some("a,a.dlq"));
    assert_eq!(m.dead_letter().unwrap().source_topic, "a.dlq");
    bus.close().await.unwrap();
}

/// Paused time: the bounded dead-letter wait elapses as soon as every task
/// is blocked, so the test runs in milliseconds.
#[tokio::test(start_paused = true)]
async fn a_full_dead_letter_lane_never_blocks_a_lane_for_good() {
    let bus = Bus::memory();
    let gate = Gate::new();
    // The dead-letter topic's only lane holds two records (the smallest
    // ring) and its handler never finishes (until the gate opens at the end).
    let dlq = gated(&bus, "jobs.dlq", one_lane(1), &gate).await;
    let jobs = bus
        .subscribe_with("jobs", one_lane(8), |_m: Message| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .await
        .unwrap();
    for _ in 0..4 {
        bus.publish("jobs", "x").await.unwrap();
    }
    // First dead letter: taken by the gated handler; second and third:
    // fill the ring; fourth: waits, then is dropped when the bound passes.
    bus.flush().await;
    let s = jobs.stats().total;
    assert_eq!((s.dead_lettered, s.dropped, s.failed), (3, 1, 4));
    gate.open(10);
    bus.flush().await;
    assert_eq!(dlq.stats().total.delivered, 3);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_to_a_topic_nobody_subscribes_are_counted_as_dropped() {
    let bus = Bus::memory();
    let sub = bus
        .subscribe("jobs", |_m: Message| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .await
        .unwrap();
    bus.publish("jobs", "x").await.unwrap();
    bus.flush().await;
    let s = sub.stats().total;
    assert_eq!((s.dead_lettered, s.dropped), (0, 1));
    let stats = bus.stats();
    assert_eq!((stats.published, stats.unrouted), (1, 0));
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_everything_accepted_without_closing() {
    let bus = Bus::memory();
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let _sub = bus
        .subscribe_with(
            "work",
            SubscribeOptions::default().lanes(4),
            move |_m: Message| {
                let h = h.clone();
                async move {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    h.fetch_add(1, Ordering::SeqCst);
                    HResult::Ok(())
                }
            },
        )
        .await
        .unwrap();
    for i in 0..500u32 {
        bus.publish("work", i.to_le_bytes().to_vec()).await.unwrap();
    }
    bus.flush().await;
    assert_eq!(handled.load(Ordering::SeqCst), 500);
    assert!(!bus.is_closed());
    bus.publish("work", "more").await.unwrap();
    bus.flush().await;
    assert_eq!(handled.load(Ordering::SeqCst), 501);
    bus.close().await.unwrap();
    bus.flush().await; // returns at once on a closed bus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_handlers_see_their_context_and_shared_struct_handlers_work() {
    struct Projector {
        seen: Arc<AtomicU32>,
    }
    impl Handler<Event> for Projector {
        async fn handle(&self, ev: Event) -> Result<(), HandlerError> {
            let ctx = ev.context();
            assert_eq!(ctx.topic(), "orders");
            assert_eq!(ctx.redelivered(), 0);
            if ctx.attempt() <= 2 {
                return Err(HandlerError::retryable("not yet"));
            }
            assert_eq!(ev.aggregate_id, "order-1");
            assert!(ev.record_headers().is_empty());
            self.seen.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let bus = Bus::memory();
    let seen = Arc::new(AtomicU32::new(0));
    let projector = Arc::new(Projector { seen: seen.clone() });
    let sub = bus
        .subscribe_envelope_with("orders", fast_retry(5), projector.clone())
        .await
        .unwrap();
    bus.publish_envelope("orders", Envelope::new("order-1", "OrderPlaced", 1, "{}"))
        .await
        .unwrap();
    bus.flush().await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert_eq!(sub.stats().total.retried, 2);
    assert_eq!(Arc::strong_count(&projector), 2, "the bus holds one clone");
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_headers_reach_envelope_subscribers_of_the_dead_letter_topic() {
    let bus = Bus::memory();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _dlq = bus
        .subscribe_envelope("orders.dlq", move |ev: Event| {
            let tx = tx.clone();
            async move {
                tx.send(ev).unwrap();
                HResult::Ok(())
            }
        })
        .await
        .unwrap();
    let _orders = bus
        .subscribe_envelope_with("orders", fast_retry(2), |_ev: Arc<Envelope>| async {
            Err::<(), _>(HandlerError::retryable("database down"))
        })
        .await
        .unwrap();
    let sent = Envelope::new("order-9", "OrderPlaced", 3, "{}");
    bus.publish_envelope("orders", sent.clone()).await.unwrap();
    let ev = recv(&mut rx).await;
    assert_eq!(**ev.envelope(), sent);
    let why = ev.dead_letter().expect("dead-letter headers");
    assert_eq!(why.source_topic, "orders");
    assert_eq!(why.error, "database down");
    assert_eq!(why.error_class, ErrorClass::Retryable.as_str());
    assert_eq!(why.attempts, 2);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_never_parse_are_dead_lettered_at_once() {
    #[derive(serde::Deserialize)]
    struct Job {
        #[allow(dead_code)]
        id: u32,
    }
    let bus = Bus::memory();
    let (_dlq, mut dead) = collect_with(&bus, "jobs.dlq", SubscribeOptions::default()).await;
    let sub = bus
        .subscribe_with("jobs", fast_retry(5), |m: Message| async move {
            let _job: Job = m.payload_json()?;
            HResult::Ok(())
        })
        .await
        .unwrap();
    bus.publish("jobs", "{\"id\": 1}").await.unwrap();
    bus.publish("jobs", "not json").await.unwrap();
    let dead = recv(&mut dead).await;
    assert_eq!(dead.payload().as_ref(), b"not json");
    assert_eq!(dead.dead_letter().unwrap().error_class, "permanent");
    bus.flush().await;
    let s = sub.stats().total;
    assert_eq!((s.delivered, s.failed, s.retried), (1, 1, 0));
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_envelopes_published_with_their_aggregate_key_keep_order() {
    use lanebus::OutboundMessage;
    let bus = Bus::memory();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sub = bus
        .subscribe_envelope_with(
            "orders",
            SubscribeOptions::default().lanes(8),
            move |ev: Arc<Envelope>| {
                let tx = tx.clone();
                async move {
                    // Later versions finish faster: only the lane keeps order.
                    let pause = 200u64.saturating_sub(ev.event_version as u64 * 10);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                    tx.send((ev.aggregate_id.clone(), ev.event_version))
                        .unwrap();
                    HResult::Ok(())
                }
            },
        )
        .await
        .unwrap();
    for version in 1..=10 {
        for order in 0..20 {
            let ev = Envelope::new(format!("order-{order}"), "Updated", version, "{}");
            let wire = ev.encode_json().unwrap();
            let msg = OutboundMessage::new(wire).with_key(&ev.aggregate_id);
            bus.publish_with("orders", msg).await.unwrap();
        }
    }
    bus.flush().await;
    let mut last = std::collections::HashMap::new();
    for _ in 0..200 {
        let (order, version) = recv(&mut rx).await;
        let prev = last.insert(order.clone(), version).unwrap_or(0);
        assert_eq!(prev + 1, version, "{order} out of order");
    }
    bus.close().await.unwrap();
}
