//! Reliability: retry with backoff, permanent errors and poison messages to
//! the dead-letter topic, panicking handlers, skips, disabled dead letters.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{collect, recv, HResult};
use lanebus::{
    Bus, DeadLetter, Envelope, ErrorClass, HandlerError, Message, OutboundMessage, RetryPolicy,
    SubscribeOptions, HEADER_ATTEMPTS, HEADER_ERROR, HEADER_ERROR_CLASS, HEADER_SOURCE_TOPIC,
};

fn fast_retry(attempts: u32) -> SubscribeOptions {
    SubscribeOptions::default().retry(
        RetryPolicy::attempts(attempts)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(4)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_error_is_retried_then_succeeds() {
    let bus = Bus::memory();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let (_dlq, mut dlq_rx) = collect(&bus, "jobs.dlq").await;
    let sub = bus
        .subscribe_with("jobs", fast_retry(5), move |m: Message| {
            let a = a2.clone();
            async move {
                a.lock().unwrap().push(m.attempt());
                if m.attempt() < 3 {
                    Err(HandlerError::retryable("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
    bus.publish("jobs", "work").await.unwrap();
    bus.close().await.unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![1, 2, 3]);
    let jobs = sub.stats();
    assert_eq!(jobs.topic, "jobs");
    assert_eq!(jobs.total.delivered, 1);
    assert_eq!(jobs.total.failed, 2);
    assert_eq!(jobs.total.retried, 2);
    assert_eq!(jobs.total.dead_lettered, 0);
    assert!(dlq_rx.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_go_to_dead_letter() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "jobs.dlq").await;
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let _sub = bus
        .subscribe_with("jobs", fast_retry(3), move |_m: Message| {
            let c = c2.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(std::io::Error::other("disk on fire").into())
            }
        })
        .await
        .unwrap();
    bus.publish_with(
        "jobs",
        OutboundMessage::new("payload")
            .with_key("k1")
            .with_header("trace", "t-1"),
    )
    .await
    .unwrap();
    let dead = recv(&mut dlq_rx).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(dead.payload().as_ref(), b"payload");
    assert_eq!(dead.key(), Some("k1"));
    assert_eq!(dead.headers().get("trace"), Some("t-1"));
    assert_eq!(dead.headers().get(HEADER_SOURCE_TOPIC), Some("jobs"));
    assert_eq!(dead.headers().get(HEADER_ERROR), Some("disk on fire"));
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("retryable"));
    assert_eq!(dead.headers().get(HEADER_ATTEMPTS), Some("3"));
    bus.close().await.unwrap();
    let s = bus.stats();
    let jobs = s
        .subscriptions
        .iter()
        .find(|s| s.topic == "jobs")
        .expect("close keeps the subscription's final counts readable");
    assert_eq!(jobs.total.dead_lettered, 1);
    assert_eq!(jobs.total.failed, 3);
    assert_eq!(
        s.published, 1,
        "the dead-letter republish is not a user publish"
    );
    assert_eq!(s.total.dead_lettered, 1);
    assert_eq!(s.total.failed, 3);
    assert_eq!(s.total.retried, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_skips_retries() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "poison.custom").await;
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let _sub = bus
        .subscribe_with(
            "in",
            fast_retry(5).dead_letter(DeadLetter::Topic("poison.custom".into())),
            move |_m: Message| {
                let c = c2.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(HandlerError::permanent("cannot parse"))
                }
            },
        )
        .await
        .unwrap();
    bus.publish("in", "garbage").await.unwrap();
    let dead = recv(&mut dlq_rx).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry for a permanent error"
    );
    assert_eq!(dead.payload().as_ref(), b"garbage");
    assert_eq!(dead.headers().get(HEADER_SOURCE_TOPIC), Some("in"));
    assert_eq!(dead.headers().get(HEADER_ERROR), Some("cannot parse"));
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("permanent"));
    assert_eq!(dead.headers().get(HEADER_ATTEMPTS), Some("1"));
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handler_is_a_failed_attempt_and_the_lane_survives() {
    let bus = Bus::memory();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h2 = handled.clone();
    let _sub = bus
        .subscribe_with("p", fast_retry(3).lanes(1), move |m: Message| {
            let h = h2.clone();
            async move {
                if m.payload().as_ref() == b"boom" && m.attempt() == 1 {
                    panic!("handler exploded");
                }
                h.lock().unwrap().push((m.payload().clone(), m.attempt()));
                HResult::Ok(())
            }
        })
        .await
        .unwrap();
    bus.publish("p", "boom").await.unwrap();
    bus.publish("p", "after").await.unwrap();
    bus.close().await.unwrap();
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len(), 2);
    assert_eq!(handled[0].0.as_ref(), b"boom");
    assert_eq!(handled[0].1, 2, "the panic counted as attempt 1");
    assert_eq!(
        handled[1].0.as_ref(),
        b"after",
        "the lane kept going, in order"
    );
    let s = bus.stats();
    assert_eq!(s.total.failed, 1);
    assert_eq!(s.total.delivered, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_exhausting_retries_are_dead_lettered_as_panic() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "p.dlq").await;
    let _sub = bus
        .subscribe_with("p", fast_retry(2), |_m: Message| async move {
            if true {
                panic!("always");
            }
            HResult::Ok(())
        })
        .await
        .unwrap();
    bus.publish("p", "x").await.unwrap();
    let dead = recv(&mut dlq_rx).await;
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("panic"));
    assert_eq!(
        dead.headers().get(HEADER_ERROR),
        Some("handler panicked: always")
    );
    assert_eq!(dead.headers().get(HEADER_ATTEMPTS), Some("2"));
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_envelope_keeps_its_aggregate_order() {
    let bus = Bus::memory();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let failed_once = Arc::new(AtomicU32::new(0));
    let f2 = failed_once.clone();
    let _sub = bus
        .subscribe_envelope_with("orders", fast_retry(4).lanes(2), move |ev: Envelope| {
            let seen = s2.clone();
            let f = f2.clone();
            async move {
                if ev.aggregate_id == "order-1"
                    && ev.event_version == 2
                    && f.fetch_add(1, Ordering::SeqCst) < 2
                {
                    return Err(HandlerError::retryable("transient"));
                }
                seen.lock()
                    .unwrap()
                    .push((ev.aggregate_id, ev.event_version));
                Ok(())
            }
        })
        .await
        .unwrap();
    for v in 1..=5 {
        for agg in ["order-1", "order-2"] {
            bus.publish_envelope("orders", Envelope::new(agg, "Changed", v, "{}"))
                .await
                .unwrap();
        }
    }
    bus.close().await.unwrap();
    let seen = seen.lock().unwrap();
    let order1: Vec<i64> = seen
        .iter()
        .filter(|(a, _)| a == "order-1")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(order1, vec![1, 2, 3, 4, 5]);
    let order2: Vec<i64> = seen
        .iter()
        .filter(|(a, _)| a == "order-2")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(order2, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_envelope_on_the_wire_is_dead_lettered() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "events.dlq").await;
    let handled = Arc::new(AtomicU32::new(0));
    let h2 = handled.clone();
    let _sub = bus
        .subscribe_envelope_with("events", fast_retry(3), move |_ev: Envelope| {
            let h = h2.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                HResult::Ok(())
            }
        })
        .await
        .unwrap();
    // Raw bytes that are no envelope, then a valid one in JSON (Go) form.
    bus.publish("events", "definitely not an envelope")
        .await
        .unwrap();
    let good = Envelope::new("acct-1", "Opened", 1, r#"{"x":1}"#);
    bus.publish("events", good.encode_json().unwrap())
        .await
        .unwrap();
    let dead = recv(&mut dlq_rx).await;
    assert_eq!(dead.payload().as_ref(), b"definitely not an envelope");
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("malformed"));
    assert_eq!(
        dead.headers().get(HEADER_ATTEMPTS),
        Some("1"),
        "malformed is never retried"
    );
    assert!(dead
        .headers()
        .get(HEADER_ERROR)
        .unwrap()
        .starts_with("malformed envelope"));
    bus.close().await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_acknowledges_without_dead_letter() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "s.dlq").await;
    let _sub = bus
        .subscribe_with("s", fast_retry(3), |_m: Message| async move {
            Err::<(), _>(HandlerError::skip("not for us"))
        })
        .await
        .unwrap();
    bus.publish("s", "x").await.unwrap();
    bus.close().await.unwrap();
    assert!(dlq_rx.try_recv().is_err());
    let s = bus.stats();
    assert_eq!(s.total.skipped, 1);
    assert_eq!(s.total.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_dead_letter_counts_the_drop() {
    let bus = Bus::memory();
    let _sub = bus
        .subscribe_with(
            "d",
            fast_retry(1).dead_letter(DeadLetter::Disabled),
            |_m: Message| async move { Err::<(), _>(HandlerError::new(ErrorClass::Permanent, "no")) },
        )
        .await
        .unwrap();
    bus.publish("d", "x").await.unwrap();
    bus.close().await.unwrap();
    let s = bus.stats();
    assert_eq!(s.total.dropped, 1);
    assert_eq!(s.total.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_envelope_handler_sees_one_envelope_across_retries_then_dead_letters_it() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "ledger.dlq").await;
    let seen: Arc<Mutex<Vec<Arc<Envelope>>>> = Arc::default();
    let s2 = seen.clone();
    let _sub = bus
        .subscribe_envelope_with("ledger", fast_retry(3), move |ev: Arc<Envelope>| {
            let seen = s2.clone();
            async move {
                seen.lock().unwrap().push(ev);
                Err::<(), _>(HandlerError::retryable("ledger unavailable"))
            }
        })
        .await
        .unwrap();
    let original = Envelope::new("acct-9", "Debited", 1, r#"{"amount":5}"#).with_trace_id("t-9");
    bus.publish_envelope("ledger", original.clone())
        .await
        .unwrap();
    let dead = recv(&mut dlq_rx).await;
    bus.close().await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "one call per attempt");
    assert!(seen.iter().all(|ev| **ev == original));
    assert!(
        seen.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])),
        "every attempt shares the lane's envelope: no copy"
    );
    assert_eq!(Envelope::decode(dead.payload()).unwrap(), original);
    assert_eq!(dead.headers().get(HEADER_ATTEMPTS), Some("3"));
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("retryable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_envelope_handler_decodes_wire_envelopes_and_dead_letters_bad_ones() {
    let bus = Bus::memory();
    let (_dlq, mut dlq_rx) = collect(&bus, "wire.dlq").await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let _sub = bus
        .subscribe_envelope("wire", move |ev: Arc<Envelope>| {
            let got = g2.clone();
            async move {
                got.lock().unwrap().push(Arc::unwrap_or_clone(ev));
                HResult::Ok(())
            }
        })
        .await
        .unwrap();
    let good = Envelope::new("acct-1", "Opened", 1, r#"{"x":1}"#);
    bus.publish("wire", good.encode()).await.unwrap();
    bus.publish("wire", "\u{eb}not binary").await.unwrap();
    let dead = recv(&mut dlq_rx).await;
    bus.close().await.unwrap();
    assert_eq!(*got.lock().unwrap(), vec![good]);
    assert_eq!(dead.headers().get(HEADER_ERROR_CLASS), Some("malformed"));
}
