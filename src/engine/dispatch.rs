//! Dispatch: the lane worker.
//!
//! # Algorithm
//!
//! One task per lane drains its ring in batches (up to
//! `SubscribeOptions::drain_batch` records at a time, freeing the ring's slots
//! at once so publishers are not held up by a slow handler), then handles
//! the batch's records one by one, in order. For each record it builds the
//! handler's message type, takes a token of the subscription's rate limit
//! when it has one (waiting in place, so order is kept), calls the handler
//! under `catch_unwind` (inside a `lanebus.handle` span when a tracing
//! subscriber wants one, see `pipeline::trace`; timed into the lane's
//! duration buckets when metrics are on, see `pipeline::export`), and
//! settles the outcome:
//!
//! - with duplicate suppression on, an envelope whose event ID was handled
//!   recently → `duplicates`, ack, no handler call (see `pipeline::dedup`);
//! - success → `delivered`, ack;
//! - `Skip` → `skipped`, ack;
//! - a call past the subscription's `handler_timeout` is dropped and
//!   counts as a retryable failure of class `timeout`; a classifier, when
//!   set, decides an error's class (see `pipeline::classify`);
//! - retryable error, panic or timeout, attempts left → `failed` + `retried`, sleep
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

use super::sync::{DataArc as StdArc, DataWeak as Weak};
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;

use super::lanes::{Body, Delivery};
use super::ring::Consumer;
use super::sync::Mutex;
use crate::context::Inbound;
use crate::handler::sealed::Incoming;
use crate::pipeline::classify::{class_of, within, ErrorClassifier};
use crate::pipeline::dead_letter::{
    closes_cycle, dead_letter_message, FailureKind, Republish, Republished,
};
use crate::pipeline::dedup::DedupCache;
use crate::pipeline::export::HandlerTimings;
use crate::pipeline::metrics::{LaneCounters, LaneStats};
use crate::pipeline::trace::{handler_span, spans_wanted, CallSite};
use crate::{ErrorClass, Handler, RetryPolicy};

/// Longest a lane waits for its dead-letter publish (a full dead-letter
/// lane, a slow broker) before it counts the record as dropped, logs it at
/// error level and moves on: a dead-letter cycle through full topics can
/// never block a lane for good.
pub(crate) const DEAD_LETTER_WAIT: Duration = Duration::from_secs(5);

/// Spin iterations (one `spin_loop` hint each, a few to tens of nanoseconds
/// on current x86) an idle worker of an in-process subscription waits
/// before it parks. Workers fed by a broker's consumer task do not spin
/// ([`Policy::idle_spins`]): their records come no faster than the
/// broker's client hands them over, and a spinning worker takes the CPU
/// that the client and, on a small machine, the broker itself need (the
/// bench tool's NATS `ephemeral` row: ratio 0.69-0.75 spinning, 0.75-0.79
/// not).
pub(crate) const IDLE_SPINS: u32 = 64;

/// What one handler call did (or, after recovery, how the record ended).
enum Attempt {
    Handled,
    Skipped,
    Failed(FailureKind, String),
}

impl Attempt {
    /// Runs a handler call, catching a panic in `handle` itself (a handler
    /// that does work before returning its future) as well as in the
    /// future it returns. `call` builds the handler's message and calls
    /// the handler (building the message as the call's argument saves
    /// moving it through the worker's frame); `Err` is a record the
    /// message type cannot be built from (malformed).
    #[inline]
    async fn run<F: std::future::Future<Output = Result<(), crate::HandlerError>>>(
        call: impl FnOnce() -> Result<F, String>,
        classifier: Option<&ErrorClassifier>,
    ) -> Attempt {
        let future = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(Ok(future)) => future,
            Ok(Err(reason)) => return Attempt::Failed(FailureKind::Malformed, reason),
            Err(panic) => return Attempt::Failed(FailureKind::Panic, panic_text(&*panic)),
        };
        match AssertUnwindSafe(future).catch_unwind().await {
            Ok(Ok(())) => Attempt::Handled,
            Ok(Err(e)) => match class_of(&e, classifier) {
                ErrorClass::Skip => Attempt::Skipped,
                class => Attempt::Failed(FailureKind::Handler(class), e.to_string()),
            },
            Err(panic) => Attempt::Failed(FailureKind::Panic, panic_text(&*panic)),
        }
    }
}

/// Where a worker sends dead letters and how it retries.
pub(crate) struct Policy {
    /// The subscription's handler-call limit, shared by its lanes.
    pub(crate) rate_limit: Option<crate::pipeline::rate_limit::Limiter>,
    /// Longest a handler call may run.
    pub(crate) handler_timeout: Option<Duration>,
    /// Decides the class of handler errors.
    pub(crate) classifier: Option<ErrorClassifier>,
    /// Recently handled event IDs (duplicate suppression).
    pub(crate) dedup: Option<DedupCache>,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) drain_batch: usize,
    pub(crate) sink: Weak<dyn Republish>,
    /// Where a finished lane adds its final counts (the bus totals).
    pub(crate) retired: StdArc<Mutex<LaneStats>>,
    /// The subscription's name in spans and metrics (consumer, group or
    /// `#<id>`).
    pub(crate) name: StdArc<str>,
    /// Handler-call durations, with metrics on (`pipeline::export`).
    pub(crate) timings: Option<StdArc<HandlerTimings>>,
    /// Recovery mode and stall clocks (`pipeline::monitor`).
    pub(crate) watch: StdArc<crate::pipeline::monitor::Watch>,
    /// True when neither the rate limit nor the handler timeout is on:
    /// handler calls take the direct path (see [`Policy::plain_calls`]).
    pub(crate) plain_calls: bool,
    /// How long an idle worker spins before it parks: [`IDLE_SPINS`] on
    /// the memory transport, 0 behind a broker.
    pub(crate) idle_spins: u32,
}

impl Policy {
    /// Whether calls can take the direct path: no rate limit, no timeout.
    pub(crate) fn plain_calls(
        rate_limit: &Option<crate::pipeline::rate_limit::Limiter>,
        handler_timeout: Option<Duration>,
    ) -> bool {
        rate_limit.is_none() && handler_timeout.is_none()
    }
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

/// The topic a record was published to (a wildcard subscription's records
/// carry theirs).
#[inline]
fn record_topic<'a>(d: &'a Delivery, own: &'a StdArc<str>) -> &'a str {
    d.ack.topic().map_or(&**own, |t| &**t)
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}

impl<M: Incoming, H: Handler<M>> LaneWorker<M, H> {
    fn counters(&self) -> &LaneCounters {
        &self.lanes.lanes.get(self.index).counters
    }

    /// Runs until the ring is closed and drained.
    pub(crate) async fn run(mut self) {
        let batch = self.policy.drain_batch.max(1);
        let mut buf = Vec::with_capacity(batch);
        loop {
            // An empty ring during a burst usually refills within a few
            // hundred nanoseconds: spin briefly, then park. No
            // `yield_now` in between: a worker that yields instead of
            // parking stays in its thread's run queue, so that thread
            // never runs out of tasks and never steals. A worker once
            // woken by a publisher that does not yield (a tight publish
            // loop) sits in the publisher's thread's queue, and with no
            // thread stealing it, it ran only when its lane was full and
            // the publisher waited: one lane in eight handled on the
            // publisher's thread in bursts, the other thread idle. Parked
            // instead, the other thread runs out of work and steals it.
            // Bench tool, paired runs against the yield: keyed +22%,
            // fanout +22%, plain +9%, contention +8%.
            let mut advanced = self.consumer.try_drain(&mut buf, batch);
            let mut spins = 0;
            while advanced == 0 && spins < self.policy.idle_spins {
                std::hint::spin_loop();
                spins += 1;
                if spins % 16 == 0 {
                    advanced = self.consumer.try_drain(&mut buf, batch);
                }
            }
            if advanced == 0 && !self.consumer.drain(&mut buf, batch).await {
                break;
            }
            // Each record is processed here rather than in a `process`
            // future: awaiting a callee's future moves all of it (its full
            // size, a `memcpy` call) into this one's state, once per record.
            for d in buf.drain(..) {
                if d.ack.is_stale() {
                    // Its consumer let go of it; the next owner handles it.
                    self.counters().released.bump(1);
                    d.ack.release();
                    continue;
                }
                let stall = self.policy.watch.stall.as_ref();
                if let Some(clock) = stall {
                    clock.begin(self.index);
                }
                if let Some(dedup) = &self.policy.dedup {
                    Box::pin(self.process_once(d, dedup)).await;
                } else {
                    // The record stays in this future; the attempts borrow it.
                    let (outcome, attempts) = self.attempts(&d).await;
                    match self.tally(outcome) {
                        Ok(()) => self.settle_ack(d).await,
                        Err((kind, error)) => {
                            Box::pin(self.dead_letter(d, kind, &error, attempts)).await
                        }
                    }
                }
                if let Some(clock) = stall {
                    clock.end(self.index);
                }
            }
            self.counters().processed.set(self.consumer.position());
        }
    }

    /// A record's processing with duplicate suppression: a record whose event ID was
    /// handled recently is acked and counted, not handled; one handled (or
    /// skipped) now is remembered.
    async fn process_once(&self, d: Delivery, dedup: &DedupCache) {
        let id = DedupCache::event_id(d.body.inbound(), M::KIND == "envelope");
        if id.as_ref().is_some_and(|id| dedup.seen(id)) {
            self.counters().duplicates.bump(1);
            self.settle_ack(d).await;
            return;
        }
        let (outcome, attempts) = self.attempts(&d).await;
        match self.tally(outcome) {
            Ok(()) => {
                self.settle_ack(d).await;
                if let Some(id) = id {
                    dedup.remember(id);
                }
            }
            Err((kind, error)) => Box::pin(self.dead_letter(d, kind, &error, attempts)).await,
        }
    }

    /// Runs the handler on `d`: the first attempt inline (the common, fast
    /// path), retries in a separate boxed future so that the worker's own
    /// future stays small and cheap to poll. Returns how it ended and the
    /// attempts made.
    #[inline]
    async fn attempts(&self, d: &Delivery) -> (Attempt, u32) {
        let attempts = d.ack.redelivered().saturating_add(1);
        match self.attempt(d, attempts).await {
            Attempt::Failed(kind, error) => Box::pin(self.recover(d, kind, error)).await,
            done => (done, attempts),
        }
    }

    /// Counts how a record ended: `Err` with the failure when it failed
    /// for good (the caller dead-letters it), `Ok` when it is to be acked.
    #[inline]
    fn tally(&self, outcome: Attempt) -> Result<(), (FailureKind, String)> {
        match outcome {
            Attempt::Handled => self.counters().delivered.bump(1),
            Attempt::Skipped => self.counters().skipped.bump(1),
            Attempt::Failed(kind, error) => return Err((kind, error)),
        }
        Ok(())
    }

    /// Runs the handler once on `d` (catching panics).
    async fn attempt(&self, d: &Delivery, attempt: u32) -> Attempt {
        let record = Inbound {
            body: d.body.inbound(),
            topic: d.ack.topic().unwrap_or(&self.topic),
            attempt,
            redelivered: d.ack.redelivered(),
            position: d.ack.position(),
            recovering: self.policy.watch.recovering(),
        };
        // The common path (no rate limit or timeout, no span wanted) builds
        // the message as the handler's argument and calls the handler here,
        // as directly as it can, with the metrics clock read around it when
        // metrics are on; anything else goes through one boxed call, so
        // none of it adds to this future's state or moves the message once
        // more.
        if self.policy.plain_calls && !spans_wanted() {
            let started = self.clock_start();
            let outcome = Attempt::run(
                || M::build(record).map(|msg| self.handler.handle(msg)),
                self.policy.classifier.as_ref(),
            )
            .await;
            self.clock_stop(started);
            return outcome;
        }
        let msg = match M::build(record) {
            Ok(msg) => msg,
            Err(reason) => return Attempt::Failed(FailureKind::Malformed, reason),
        };
        Box::pin(self.attempt_with_options(d, attempt, msg)).await
    }

    /// [`attempt`](Self::attempt) with the subscription's rate limit, the
    /// handler timeout and the tracing span, whichever are on (and the
    /// metrics clock).
    async fn attempt_with_options(&self, d: &Delivery, attempt: u32, msg: M) -> Attempt {
        if let Some(limit) = &self.policy.rate_limit {
            if !limit.try_acquire() {
                limit.acquire().await;
            }
        }
        // The clock is read only with metrics on (pipeline::export); a span
        // is made only when a subscriber wants it (pipeline::trace).
        let started = self.clock_start();
        let outcome = if spans_wanted() {
            let site = CallSite {
                topic: record_topic(d, &self.topic),
                subscription: &self.policy.name,
                lane: self.index,
                attempt,
            };
            let span = handler_span(site, d.body.inbound(), msg.envelope());
            tracing::Instrument::instrument(self.call(msg), span).await
        } else {
            self.call(msg).await
        };
        self.clock_stop(started);
        outcome
    }

    /// The metrics clock before a handler call: read only with metrics on.
    #[inline]
    fn clock_start(&self) -> Option<quanta::Instant> {
        self.policy
            .timings
            .as_ref()
            .map(|_| HandlerTimings::start())
    }

    /// Records the call's duration in this lane's buckets (metrics on).
    #[inline]
    fn clock_stop(&self, started: Option<quanta::Instant>) {
        if let (Some(timings), Some(started)) = (&self.policy.timings, started) {
            timings.record(self.index, started);
        }
    }

    /// Calls the handler on `msg`, within the handler timeout if any.
    #[inline]
    async fn call(&self, msg: M) -> Attempt {
        let call = Attempt::run(
            || Ok(self.handler.handle(msg)),
            self.policy.classifier.as_ref(),
        );
        match self.policy.handler_timeout {
            None => call.await,
            // Boxed: the timer stays out of the worker's own future.
            Some(limit) => Box::pin(within(limit, call))
                .await
                .unwrap_or_else(|text| Attempt::Failed(FailureKind::Timeout, text)),
        }
    }

    /// After a failed first attempt: retries with backoff while the policy
    /// allows. Returns the final outcome and the attempts made; every
    /// failed attempt is counted here. Broker redeliveries use up the retry
    /// budget too: a record redelivered `r` times gets at most
    /// `max_attempts - r` more local attempts.
    async fn recover(
        &self,
        d: &Delivery,
        mut kind: FailureKind,
        mut error: String,
    ) -> (Attempt, u32) {
        let policy = &*self.policy;
        let first = d.ack.redelivered();
        let mut attempt = first.saturating_add(1);
        loop {
            self.counters().failed.bump(1);
            if !(kind.is_retryable() && attempt < policy.retry.max_attempts) {
                return (Attempt::Failed(kind, error), attempt);
            }
            self.counters().retried.bump(1);
            tracing::debug!(topic = %self.topic, lane = self.index, attempt, %error, "handler failed; retrying");
            tokio::time::sleep(policy.retry.backoff(attempt - first)).await;
            attempt += 1;
            match self.attempt(d, attempt).await {
                Attempt::Failed(k, e) => {
                    kind = k;
                    error = e;
                }
                done => return (done, attempt),
            }
        }
    }

    /// Acks a settled record (brokers), then lets go of its body: an
    /// in-process envelope's allocation goes back to the pool
    /// ([`recycle`](super::recycle)).
    #[inline]
    async fn settle_ack(&self, d: Delivery) {
        let Delivery { body, ack } = d;
        if let Body::Envelope(shared) = body {
            super::recycle::recycle(shared);
        }
        if ack.is_none() {
            return;
        }
        if let Err(e) = ack.ack().await {
            tracing::warn!(topic = %self.topic, error = %e, "ack failed; the record may be redelivered");
        }
    }

    /// Sends a record that failed for good to the dead-letter topic, waiting
    /// at most [`DEAD_LETTER_WAIT`]; counts it as dead-lettered only when a
    /// subscription or a broker got it, and as dropped otherwise.
    async fn dead_letter(&self, d: Delivery, kind: FailureKind, error: &str, attempts: u32) {
        let policy = &*self.policy;
        let Some(dlq) = policy.dead_letter_topic.as_deref() else {
            self.counters().dropped.bump(1);
            tracing::error!(topic = %self.topic, kind = kind.as_str(), attempts, %error, "message failed and dead-lettering is disabled; dropped");
            self.settle_ack(d).await;
            return;
        };
        let (payload, key, headers) = d.body.parts();
        let source = d.ack.topic().unwrap_or(&self.topic);
        let msg = dead_letter_message(source, payload, key, headers, error, kind, attempts);
        let msg = crate::pipeline::dead_letter::with_source_position(msg, d.ack.position());
        if closes_cycle(msg.headers(), dlq) {
            self.counters().dropped.bump(1);
            tracing::error!(topic = %self.topic, dead_letter_topic = dlq, kind = kind.as_str(), attempts, %error, "dead letter failed again and its next dead-letter topic is on its trail (a cycle); dropped");
            self.settle_ack(d).await;
            return;
        }
        let sent = match policy.sink.upgrade() {
            Some(sink) => tokio::time::timeout(DEAD_LETTER_WAIT, sink.republish(dlq, msg))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "the dead-letter topic did not take it within {DEAD_LETTER_WAIT:?}"
                    ))
                }),
            None => Err("the bus was dropped".to_owned()),
        };
        match sent {
            Ok(Republished::Delivered) => {
                self.counters().dead_lettered.bump(1);
                tracing::warn!(topic = %self.topic, dead_letter_topic = dlq, kind = kind.as_str(), attempts, %error, "message dead-lettered");
                self.settle_ack(d).await;
            }
            Ok(Republished::NoSubscriber) => {
                self.counters().dropped.bump(1);
                tracing::error!(topic = %self.topic, dead_letter_topic = dlq, kind = kind.as_str(), attempts, %error, "message failed and its dead-letter topic has no subscriber (memory transport); dropped");
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
    /// Runs when the worker finishes or is aborted: records still in its
    /// ring are dropped unhandled (a broker record's handle then nacks, so
    /// the broker redelivers it; `close` reports them as pending), and the
    /// lane's final counts join the bus totals.
    fn drop(&mut self) {
        let mut left = Vec::new();
        while self.consumer.try_drain(&mut left, usize::MAX) > 0 {
            left.clear();
        }
        let lane = self.lanes.lanes.get(self.index);
        let stats = LaneStats::read(&lane.counters, 0);
        self.policy.retired.lock().add_counts(&stats);
    }
}

/// Spawns one worker per lane on the current Tokio runtime.
pub(crate) fn spawn_workers<M: Incoming, H: Handler<M>>(
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
