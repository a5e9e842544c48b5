//! Dispatch: the lane worker.
//!
//! # Algorithm
//!
//! One task per lane drains its ring in batches (up to
//! `SubscribeOptions::drain_batch` records at a time, freeing the ring's slots
//! at once so publishers are not held up by a slow handler), then handles
//! the batch's records one by one, in order. For each record it builds the
//! handler's message type, calls the handler under `catch_unwind`, and
//! settles the outcome:
//!
//! - success → `delivered`, ack;
//! - `Skip` → `skipped`, ack;
//! - retryable error or panic, attempts left → `failed` + `retried`, sleep
//!   the policy's backoff *in place*, try again (later records of the lane,
//!   hence of the same key, wait: per-key order survives retries);
//! - otherwise (permanent, malformed, attempts exhausted) → `failed`, then
//!   dead-letter: publish the original bytes with error headers to the
//!   dead-letter topic → `dead_lettered`, ack; if that publish fails or
//!   dead-lettering is disabled → `dropped` (logged at error level), and a
//!   broker record is nacked for redelivery when the publish failed.
//!
//! After each batch the worker publishes how far it has processed, which
//! `close` and `unsubscribe` use to know that a lane is idle.
//!
//! # Invariants
//!
//! - Every record taken from the ring is settled exactly once.
//! - A panic in a handler never escapes the worker.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc as StdArc, Weak};

use futures_util::FutureExt;

use super::lanes::{Body, Delivery};
use super::ring::Consumer;
use super::sync::Mutex;
use crate::pipeline::dead_letter::{dead_letter_message, FailureKind, Republish};
use crate::pipeline::metrics::{LaneCounters, LaneStats};
use crate::{Envelope, ErrorClass, Handler, Message, RetryPolicy};

/// A message type a handler can take: built from a lane record.
///
/// `pub` inside a crate-private module: public traits can name it as a
/// supertrait (sealing them), while users can neither name nor implement it;
/// so its crate-private argument types are never visible either.
#[allow(private_interfaces)]
pub trait Deliverable: Sized + Send + 'static {
    /// `plain` or `envelope`, for stats.
    const KIND: &'static str;

    /// Builds the handler's message for one attempt; `Err` explains why the
    /// record is malformed.
    #[doc(hidden)]
    fn from_body(body: &Body, topic: &StdArc<str>, attempt: u32) -> Result<Self, String>;
}

#[allow(private_interfaces)]
impl Deliverable for Message {
    const KIND: &'static str = "plain";

    #[inline]
    fn from_body(body: &Body, topic: &StdArc<str>, attempt: u32) -> Result<Self, String> {
        let (payload, key, headers) = body.parts();
        Ok(Message {
            topic: topic.clone(),
            payload,
            key,
            headers,
            attempt,
        })
    }
}

fn decode_envelope(payload: &bytes::Bytes) -> Result<Envelope, String> {
    Envelope::decode_bytes(payload).map_err(|e| format!("malformed envelope: {e}"))
}

#[allow(private_interfaces)]
impl Deliverable for Envelope {
    const KIND: &'static str = "envelope";

    /// A copy per attempt: the lane keeps the original for retries and the
    /// dead-letter topic.
    #[inline]
    fn from_body(body: &Body, _topic: &StdArc<str>, _attempt: u32) -> Result<Self, String> {
        match body {
            Body::Envelope(e) => Ok((**e).clone()),
            Body::Plain { payload, .. } => decode_envelope(payload),
        }
    }
}

#[allow(private_interfaces)]
impl Deliverable for StdArc<Envelope> {
    const KIND: &'static str = "envelope";

    /// Shared with the lane: no copy for in-process envelopes.
    #[inline]
    fn from_body(body: &Body, _topic: &StdArc<str>, _attempt: u32) -> Result<Self, String> {
        match body {
            Body::Envelope(e) => Ok(e.clone()),
            Body::Plain { payload, .. } => decode_envelope(payload).map(StdArc::new),
        }
    }
}

impl crate::handler::FromEnvelope for Envelope {}
impl crate::handler::FromEnvelope for StdArc<Envelope> {}

/// Spin iterations (one `spin_loop` hint each, a few to tens of nanoseconds
/// on current x86) an idle worker waits before yielding.
const IDLE_SPINS: u32 = 64;

/// Times an idle worker then yields to the runtime before parking.
const IDLE_YIELDS_BEFORE_PARK: u32 = 1;

/// What one handler call did.
enum Attempt {
    Handled,
    Skipped,
    Failed(FailureKind, String),
}

/// Where a worker sends dead letters and how it retries.
pub(crate) struct Policy {
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) drain_batch: usize,
    pub(crate) sink: Weak<dyn Republish>,
    /// Where a finished lane adds its final counts (the bus totals).
    pub(crate) retired: StdArc<Mutex<LaneStats>>,
}

/// The worker of one lane.
pub(crate) struct LaneWorker<M, H> {
    pub(crate) consumer: Consumer<Delivery>,
    pub(crate) lanes: StdArc<SubscriptionLanes>,
    pub(crate) index: usize,
    pub(crate) handler: StdArc<H>,
    /// This lane's own copy of the topic name (no refcount sharing between
    /// lanes on the hot path).
    pub(crate) topic: StdArc<str>,
    pub(crate) policy: StdArc<Policy>,
    pub(crate) _message: std::marker::PhantomData<fn(M)>,
}

/// What the worker needs of its subscription: the lanes, for counters.
pub(crate) type SubscriptionLanes = super::SubscriptionCore;

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}

impl<M: Deliverable, H: Handler<M>> LaneWorker<M, H> {
    fn counters(&self) -> &LaneCounters {
        &self.lanes.lanes.get(self.index).counters
    }

    /// Runs until the ring is closed and drained.
    pub(crate) async fn run(mut self) {
        let batch = self.policy.drain_batch.max(1);
        let mut buf = Vec::with_capacity(batch);
        loop {
            // An empty ring during a burst usually refills within a few
            // hundred nanoseconds: spin briefly, then yield once to the
            // runtime (other lanes of this worker thread run meanwhile),
            // and only then park, which would cost the next publisher a
            // wake-up through the scheduler and often a futex call. (The
            // bench tool's keyed and contention scenarios gain most from
            // the yield; fanout, where every lane is busy, loses a little.)
            let mut advanced = self.consumer.try_drain(&mut buf, batch);
            let mut spins = 0;
            while advanced == 0 && spins < IDLE_SPINS {
                std::hint::spin_loop();
                spins += 1;
                if spins % 16 == 0 {
                    advanced = self.consumer.try_drain(&mut buf, batch);
                }
            }
            let mut yields = 0;
            while advanced == 0 && yields < IDLE_YIELDS_BEFORE_PARK {
                tokio::task::yield_now().await;
                yields += 1;
                advanced = self.consumer.try_drain(&mut buf, batch);
            }
            if advanced == 0 && !self.consumer.drain(&mut buf, batch).await {
                break;
            }
            for d in buf.drain(..) {
                self.process(d).await;
            }
            self.counters().processed.set(self.consumer.position());
        }
    }

    /// Handles one record: the first attempt inline (the common, fast
    /// path), retries and dead-lettering in a separate boxed future so that
    /// the worker's own future stays small and cheap to poll.
    #[inline]
    async fn process(&self, d: Delivery) {
        let attempt = d.ack.redelivered().saturating_add(1);
        match self.attempt(&d, attempt).await {
            Attempt::Handled => {
                self.counters().delivered.bump(1);
                if !d.ack.is_none() {
                    self.settle_ack(d).await;
                }
            }
            Attempt::Skipped => {
                self.counters().skipped.bump(1);
                self.settle_ack(d).await;
            }
            Attempt::Failed(kind, error) => Box::pin(self.recover(d, kind, error)).await,
        }
    }

    /// Runs the handler once on `d` (catching panics).
    async fn attempt(&self, d: &Delivery, attempt: u32) -> Attempt {
        let msg = match M::from_body(&d.body, &self.topic, attempt) {
            Ok(msg) => msg,
            Err(reason) => return Attempt::Failed(FailureKind::Malformed, reason),
        };
        match AssertUnwindSafe(self.handler.handle(msg))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => Attempt::Handled,
            Ok(Err(e)) if e.class() == ErrorClass::Skip => Attempt::Skipped,
            Ok(Err(e)) => Attempt::Failed(FailureKind::Handler(e.class()), e.to_string()),
            Err(panic) => Attempt::Failed(FailureKind::Panic, panic_text(&*panic)),
        }
    }

    /// After a failed first attempt: retry with backoff while the policy
    /// allows, then dead-letter.
    async fn recover(&self, d: Delivery, mut kind: FailureKind, mut error: String) {
        let policy = &*self.policy;
        let first = d.ack.redelivered();
        let mut local = 1u32;
        loop {
            let attempt = first.saturating_add(local);
            self.counters().failed.bump(1);
            if !(kind.is_retryable() && local < policy.retry.max_attempts) {
                self.dead_letter(d, kind, &error, attempt).await;
                return;
            }
            self.counters().retried.bump(1);
            tracing::debug!(topic = %self.topic, lane = self.index, attempt, %error, "handler failed; retrying");
            tokio::time::sleep(policy.retry.backoff(local)).await;
            local += 1;
            match self.attempt(&d, first.saturating_add(local)).await {
                Attempt::Handled => {
                    self.counters().delivered.bump(1);
                    self.settle_ack(d).await;
                    return;
                }
                Attempt::Skipped => {
                    self.counters().skipped.bump(1);
                    self.settle_ack(d).await;
                    return;
                }
                Attempt::Failed(k, e) => {
                    kind = k;
                    error = e;
                }
            }
        }
    }

    #[inline]
    async fn settle_ack(&self, d: Delivery) {
        if d.ack.is_none() {
            return;
        }
        if let Err(e) = d.ack.ack().await {
            tracing::warn!(topic = %self.topic, error = %e, "ack failed; the record may be redelivered");
        }
    }

    async fn dead_letter(&self, d: Delivery, kind: FailureKind, error: &str, attempts: u32) {
        let policy = &*self.policy;
        let Some(dlq) = policy.dead_letter_topic.as_deref() else {
            self.counters().dropped.bump(1);
            tracing::error!(topic = %self.topic, kind = kind.as_str(), attempts, %error, "message failed and dead-lettering is disabled; dropped");
            self.settle_ack(d).await;
            return;
        };
        let (payload, key, headers) = d.body.parts();
        let msg = dead_letter_message(&self.topic, payload, key, headers, error, kind, attempts);
        let sent = match policy.sink.upgrade() {
            Some(sink) => sink.republish(dlq, msg).await,
            None => Err("the bus was dropped".to_owned()),
        };
        match sent {
            Ok(()) => {
                self.counters().dead_lettered.bump(1);
                tracing::warn!(topic = %self.topic, dead_letter_topic = dlq, kind = kind.as_str(), attempts, %error, "message dead-lettered");
                self.settle_ack(d).await;
            }
            Err(reason) => {
                self.counters().dropped.bump(1);
                tracing::error!(topic = %self.topic, dead_letter_topic = dlq, %reason, %error, "dead-letter publish failed; message dropped here (a broker record is nacked for redelivery)");
                if let Err(e) = d.ack.nack().await {
                    tracing::warn!(topic = %self.topic, error = %e, "nack failed");
                }
            }
        }
    }
}

impl<M, H> Drop for LaneWorker<M, H> {
    /// Runs when the worker finishes or is aborted: its lane's final counts
    /// join the bus totals.
    fn drop(&mut self) {
        let lane = self.lanes.lanes.get(self.index);
        let stats = LaneStats::read(&lane.counters, 0);
        self.policy.retired.lock().add_counts(&stats);
    }
}

/// Spawns one worker per lane on the current Tokio runtime.
pub(crate) fn spawn_workers<M: Deliverable, H: Handler<M>>(
    runtime: &tokio::runtime::Handle,
    core: &StdArc<super::SubscriptionCore>,
    consumers: Vec<Consumer<Delivery>>,
    handler: StdArc<H>,
    policy: StdArc<Policy>,
) -> Vec<tokio::task::JoinHandle<()>> {
    debug_assert_eq!(consumers.len(), core.lanes.len());
    consumers
        .into_iter()
        .enumerate()
        .map(|(index, consumer)| {
            let worker = LaneWorker::<M, H> {
                consumer,
                lanes: core.clone(),
                index,
                handler: handler.clone(),
                topic: StdArc::from(&*core.topic),
                policy: policy.clone(),
                _message: std::marker::PhantomData,
            };
            runtime.spawn(worker.run())
        })
        .collect()
}
