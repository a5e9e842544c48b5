//! How the bench's broker rows (NATS and Kafka) publish: a window of
//! publishes in flight from one task, paced when measuring latency, and
//! for keyed messages a gate that keeps each aggregate's versions in order.
//!
//! Included by `examples/bench.rs` through `#[path]` (with the `nats` or
//! `kafka` feature).
//!
//! # Algorithm
//!
//! - Window: one task keeps up to `--window` publishes in flight
//!   (`buffer_unordered` over the publish futures, in index order). A
//!   JetStream publish completes at the server's ack, a core NATS one once
//!   the client has queued it, a Kafka one at its delivery report. Latency phases release message `i` at
//!   `start + i / rate` (tokio's timer: in bursts of up to 1 ms) and stamp
//!   it when it is built, just before its publish is first polled.
//! - Gate (keyed messages, message `i` being version `i / 1000 + 1` of
//!   aggregate `agg-(i % 1000)`): a version is released only once the
//!   aggregate's previous version is published (acked, on JetStream and
//!   Kafka): the
//!   futures of a window need not reach the
//!   client in the order they were made (a pending future goes to the back
//!   of `buffer_unordered`'s queue when it is woken, for instance after
//!   tokio's cooperative budget made its send yield; without this gate the
//!   lanebus keyed row saw hundreds of violations with a window of 256 on
//!   core NATS), so per-aggregate order has to come from the publisher, as
//!   it would in a service. The gate rarely waits: the two versions are
//!   1,000 messages apart.
//!
//! # Invariants
//!
//! - Message `i` is handed to `publish` after message `i - 1`, and at most
//!   `window` publishes are in flight.
//! - With the gate, a keyed message's publish starts only after the
//!   previous version of its aggregate completed.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};

use super::AGGREGATES;

/// An error as the text the tool reports: `what: cause`.
pub(crate) trait OrSay<T> {
    fn or_say(self, what: &str) -> Result<T, String>;
}

impl<T, E: Display> OrSay<T> for Result<T, E> {
    fn or_say(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Holds a keyed message back until the one before it of the same
/// aggregate (1,000 indices earlier) is published: completion order of
/// concurrent publish futures is not their send order (see the module
/// docs), so per-aggregate order must come from the publisher.
struct Gate {
    /// Per aggregate: how many of its versions are published.
    published: Vec<AtomicU64>,
    changed: tokio::sync::Notify,
}

impl Gate {
    fn new() -> Self {
        Self {
            published: (0..AGGREGATES).map(|_| AtomicU64::new(0)).collect(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Message `i` is published.
    fn done(&self, i: u64) {
        self.published[i as usize % AGGREGATES].fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits until the messages of `i`'s aggregate before `i` are published.
    async fn wait(&self, i: u64) {
        let (aggregate, before) = (i as usize % AGGREGATES, i / AGGREGATES as u64);
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.published[aggregate].load(Ordering::Acquire) >= before {
                return;
            }
            changed.await;
        }
    }
}

/// Message indices `0..n`, released at `rate` msgs/s when paced, and each
/// only once `gate` lets it through.
fn indices(n: u64, rate: Option<f64>, gate: Option<Arc<Gate>>) -> impl Stream<Item = u64> {
    let start = tokio::time::Instant::now();
    futures_util::stream::unfold(0u64, move |i| {
        let gate = gate.clone();
        async move {
            if i >= n {
                return None;
            }
            if let Some(rate) = rate {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due > tokio::time::Instant::now() {
                    tokio::time::sleep_until(due).await;
                }
            }
            if let Some(gate) = gate {
                gate.wait(i).await;
            }
            Some((i, i + 1))
        }
    })
}

/// Publishes message `0..n` through `publish`, `window` at a time; with
/// `keyed`, through a [`Gate`].
pub(crate) async fn drive<F, Fut, T, E>(
    n: u64,
    rate: Option<f64>,
    window: usize,
    keyed: bool,
    mut publish: F,
) -> Result<(), String>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let gate = keyed.then(|| Arc::new(Gate::new()));
    let done = indices(n, rate, gate.clone())
        .map(|i| {
            let publishing = publish(i);
            let gate = gate.clone();
            async move {
                let result = publishing.await;
                if let Some(gate) = gate {
                    gate.done(i);
                }
                result
            }
        })
        .buffer_unordered(window);
    let mut done = std::pin::pin!(done);
    while let Some(result) = done.next().await {
        result.or_say("publish failed")?;
    }
    Ok(())
}
