//! The broker side of the seam, exercised without a broker: records fed
//! through the engine's entry point with a recording [`AckHandle`] are
//! acked after success or dead-lettering, carry their redelivery count into
//! the attempt number and the retry budget, and are nacked when dropped
//! unsettled.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{Ack, AckHandle, BoxFuture, TransportError};
use crate::engine::lanes::Body;
use crate::{Bus, HandlerError, Message, RetryPolicy, SubscribeOptions};

/// What happened to one record's handle.
#[derive(Debug, Default, PartialEq, Eq)]
struct Settled {
    acks: u32,
    nacks: u32,
    progress: u32,
    terms: u32,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Settled>>);

impl Recorder {
    fn get(&self) -> Settled {
        let s = self.0.lock().unwrap();
        Settled { ..*s }
    }
}

impl AckHandle for Recorder {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.0.lock().unwrap().acks += 1;
        Box::pin(async { Ok(()) })
    }

    fn nack(
        self: Box<Self>,
        _delay: Option<Duration>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        self.0.lock().unwrap().nacks += 1;
        Box::pin(async { Ok(()) })
    }

    fn progress(&self) -> BoxFuture<'static, Result<(), TransportError>> {
        self.0.lock().unwrap().progress += 1;
        Box::pin(async { Ok(()) })
    }

    fn terminate(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.0.lock().unwrap().terms += 1;
        Box::pin(async { Ok(()) })
    }
}

fn record(payload: &'static str) -> Body {
    Body::plain(Bytes::from_static(payload.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handled_broker_record_is_acked_once() {
    let bus = Bus::memory();
    let sub = bus
        .subscribe("in", |_m: Message| async { Ok::<(), HandlerError>(()) })
        .await
        .unwrap();
    let rec = Recorder::default();
    sub.core
        .deliver(record("x"), Ack::broker(Box::new(rec.clone()), 0))
        .await
        .unwrap_or_else(|_| panic!("the subscription is open"));
    bus.flush().await;
    assert_eq!(
        rec.get(),
        Settled {
            acks: 1,
            ..Settled::default()
        }
    );
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_count_as_attempts_and_use_up_the_retry_budget() {
    let bus = Bus::memory();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let options = SubscribeOptions::default().retry(
        RetryPolicy::attempts(4).with_backoff(Duration::from_millis(1), Duration::from_millis(2)),
    );
    let sub = bus
        .subscribe_with("in", options, move |m: Message| {
            let s = s.clone();
            async move {
                let ctx = m.context();
                s.lock().unwrap().push((ctx.attempt(), ctx.redelivered()));
                Err::<(), _>(HandlerError::retryable("still down"))
            }
        })
        .await
        .unwrap();
    let (_dlq, mut dead) = collect(&bus, "in.dlq", SubscribeOptions::default()).await;
    let rec = Recorder::default();
    // Delivered twice before by the broker: two local attempts are left.
    sub.core
        .deliver(record("x"), Ack::broker(Box::new(rec.clone()), 2))
        .await
        .unwrap_or_else(|_| panic!("the subscription is open"));
    let d = tokio::time::timeout(Duration::from_secs(20), dead.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.dead_letter().unwrap().attempts, 4);
    bus.flush().await;
    assert_eq!(*seen.lock().unwrap(), vec![(3, 2), (4, 2)]);
    assert_eq!(
        rec.get(),
        Settled {
            acks: 1,
            ..Settled::default()
        },
        "acked once the dead letter was stored"
    );
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_left_by_a_close_that_timed_out_are_nacked() {
    let bus = Bus::memory();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let (g, c) = (gate.clone(), calls.clone());
    let sub = bus
        .subscribe_with(
            "in",
            SubscribeOptions::default().lanes(1).drain_batch(1),
            move |_m: Message| {
                let (g, c) = (g.clone(), c.clone());
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    let _permit = g.acquire().await;
                    Ok::<(), HandlerError>(())
                }
            },
        )
        .await
        .unwrap();
    let recs: Vec<Recorder> = (0..3).map(|_| Recorder::default()).collect();
    for r in &recs {
        sub.core
            .deliver(record("x"), Ack::broker(Box::new(r.clone()), 0))
            .await
            .unwrap_or_else(|_| panic!("the subscription is open"));
    }
    let closed = bus.close_within(Duration::from_millis(100)).await;
    assert!(closed.is_err(), "the gated handler never finishes");
    // The aborted worker drops what it held: every handle is nacked.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    while recs.iter().map(|r| r.get().nacks).sum::<u32>() < 3 {
        assert!(
            tokio::time::Instant::now() < until,
            "records were not nacked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for r in &recs {
        assert_eq!(
            r.get(),
            Settled {
                nacks: 1,
                ..Settled::default()
            }
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Subscribes a handler that forwards every message of `topic` to a
/// channel: the crate's own tests (here and the NATS bus tests) share it,
/// since they cannot use the integration tests' helpers.
pub(super) async fn collect(
    bus: &Bus,
    topic: &str,
    options: SubscribeOptions,
) -> (
    crate::Subscription,
    tokio::sync::mpsc::UnboundedReceiver<Message>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sub = bus
        .subscribe_with(topic, options, move |m: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(m);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    (sub, rx)
}
