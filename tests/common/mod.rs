//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lanebus::{Bus, HandlerError, Message, SubscribeOptions, Subscription};
use tokio::sync::{mpsc, Semaphore};

/// A real `nats-server` per test (see its module docs).
#[cfg(feature = "nats")]
pub mod nats;

/// The hang guard of the broker tests (see its module docs).
pub mod step;

/// A real Apache Kafka broker (see its module docs).
#[cfg(feature = "kafka")]
pub mod kafka;

/// A handler outcome type that needs no annotation at call sites.
pub type HResult = Result<(), HandlerError>;

/// Subscribes a handler that forwards every message to a channel.
pub async fn collect(bus: &Bus, topic: &str) -> (Subscription, mpsc::UnboundedReceiver<Message>) {
    collect_with(bus, topic, SubscribeOptions::default()).await
}

/// [`collect`] with options.
pub async fn collect_with(
    bus: &Bus,
    topic: &str,
    options: SubscribeOptions,
) -> (Subscription, mpsc::UnboundedReceiver<Message>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = bus
        .subscribe_with(topic, options, move |m: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(m);
                HResult::Ok(())
            }
        })
        .await
        .expect("subscribe");
    (sub, rx)
}

/// Receives one message or fails the test after a generous bound (a hang
/// guard, not a speed check).
pub async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("message did not arrive")
        .expect("channel closed")
}

/// A gate a handler waits on; `open(n)` lets `n` calls through.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    pub async fn pass(&self) {
        self.0.acquire().await.expect("gate closed").forget();
    }

    pub fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

/// Options of a subscription with one lane of `capacity` slots whose worker
/// takes one record at a time: the easiest lane to fill in a test.
pub fn one_lane(capacity: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .lanes(1)
        .ring_capacity(capacity)
        .drain_batch(1)
}

/// Subscribes a handler that waits at `gate` before finishing each message.
pub async fn gated(bus: &Bus, topic: &str, options: SubscribeOptions, gate: &Gate) -> Subscription {
    let gate = gate.clone();
    bus.subscribe_with(topic, options, move |_m: Message| {
        let gate = gate.clone();
        async move {
            gate.pass().await;
            HResult::Ok(())
        }
    })
    .await
    .expect("subscribe")
}

/// Lets other tasks run for a while (used to show something stays blocked).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}
