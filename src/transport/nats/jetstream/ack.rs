//! The JetStream ack handle, and the pacer that keeps unsettled records
//! alive on the server with in-progress acks.
//!
//! # Algorithm
//!
//! Every record a JetStream consumer loop delivers carries a [`JsAck`]: the
//! client, the message's reply subject (the server's ack address for that
//! delivery) and an entry in the subscription's [`Unsettled`] table, which
//! records when the server last heard about the record. Settling sends the
//! ack kind to the reply subject (`+ACK`, `-NAK` with an optional delay,
//! `+TERM`) and removes the entry.
//!
//! The pacer, one task per subscription, wakes every quarter of the
//! consumer's `ack_wait`, and sends `+WPI` (work in progress) for every
//! entry the server has not heard about for half of `ack_wait` or more, so
//! a record that waits in a full lane or sits in a handler's retry loop is
//! not redelivered while it is still being worked on. A record is
//! redelivered only when the process holding it is gone (or stalls the
//! pacer's runtime for longer than half of `ack_wait`).
//!
//! # Invariants
//!
//! - An entry lives from delivery to settlement; settling removes it first,
//!   so no in-progress ack follows the final ack of a record (a late `+WPI`
//!   after `+ACK` would be ignored by the server anyway).
//! - Acks are plain publishes (no confirmation round trip): a lost ack
//!   means a redelivery, never a loss, which at-least-once allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::AckKind;
use async_nats::{Client, Subject};
use bytes::Bytes;
use parking_lot::Mutex;

use crate::transport::{AckHandle, BoxFuture};
use crate::TransportError;

/// The records of one subscription that are delivered and not settled.
#[derive(Default)]
pub(crate) struct Unsettled {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

struct Entry {
    reply: Subject,
    /// When the server last heard about the record (delivery or `+WPI`).
    touched: Instant,
}

impl Unsettled {
    /// Records unsettled now.
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().len()
    }

    fn insert(&self, reply: Subject) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().insert(
            id,
            Entry {
                reply,
                touched: Instant::now(),
            },
        );
        id
    }

    fn remove(&self, id: u64) {
        self.entries.lock().remove(&id);
    }

    fn touch(&self, id: u64) {
        if let Some(e) = self.entries.lock().get_mut(&id) {
            e.touched = Instant::now();
        }
    }

    /// The reply subjects not heard of for `quiet` or longer, marked as
    /// heard of now.
    fn due(&self, quiet: Duration) -> Vec<Subject> {
        let now = Instant::now();
        let mut due = Vec::new();
        for e in self.entries.lock().values_mut() {
            if now.duration_since(e.touched) >= quiet {
                e.touched = now;
                due.push(e.reply.clone());
            }
        }
        due
    }
}

/// The settlement handle of one JetStream delivery.
pub(crate) struct JsAck {
    client: Client,
    reply: Subject,
    id: u64,
    unsettled: Arc<Unsettled>,
}

impl JsAck {
    /// A handle for the delivery whose ack address is `reply`, entered in
    /// `unsettled` until it is settled.
    pub(crate) fn new(client: Client, reply: Subject, unsettled: &Arc<Unsettled>) -> Self {
        let id = unsettled.insert(reply.clone());
        Self {
            client,
            reply,
            id,
            unsettled: unsettled.clone(),
        }
    }

    fn send(&self, kind: AckKind) -> BoxFuture<'static, Result<(), TransportError>> {
        let client = self.client.clone();
        let reply = self.reply.clone();
        Box::pin(async move {
            client
                .publish(reply, Bytes::from(kind))
                .await
                .map_err(|e| TransportError::new("nats", "ack failed", Some(e.into())))
        })
    }

    fn settle(&self, kind: AckKind) -> BoxFuture<'static, Result<(), TransportError>> {
        self.unsettled.remove(self.id);
        self.send(kind)
    }
}

impl AckHandle for JsAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.settle(AckKind::Ack)
    }

    fn nack(
        self: Box<Self>,
        delay: Option<Duration>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        self.settle(AckKind::Nak(delay))
    }

    fn progress(&self) -> BoxFuture<'static, Result<(), TransportError>> {
        self.unsettled.touch(self.id);
        self.send(AckKind::Progress)
    }

    fn terminate(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.settle(AckKind::Term)
    }
}

impl Drop for JsAck {
    fn drop(&mut self) {
        // Settled handles were removed already; an unsettled one is nacked
        // by `Ack`'s drop, which removes it through `nack`. This covers a
        // handle dropped without a runtime.
        self.unsettled.remove(self.id);
    }
}

/// The pacer of one subscription (see the module docs); ends when the
/// subscription's table is dropped.
pub(crate) async fn pace(unsettled: Weak<Unsettled>, client: Client, ack_wait: Duration) {
    let quiet = ack_wait / 2;
    let mut tick = tokio::time::interval((ack_wait / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(table) = unsettled.upgrade() else {
            return;
        };
        let due = table.due(quiet);
        drop(table);
        for reply in due {
            if let Err(e) = client.publish(reply, Bytes::from(AckKind::Progress)).await {
                tracing::debug!(error = %e, "in-progress ack failed");
            }
        }
    }
}
