//! Engine internals for the criterion benches (`benches/ring.rs`,
//! `benches/registry.rs`).
//!
//! Compiled only with the `bench-internals` feature (off by default; the
//! benches declare it in `required-features`), hidden from the docs, no
//! stability promise. Thin, safe wrappers so that `benches/` can measure the
//! ring and the registry directly, beside their baselines. Nothing here is a
//! second implementation: the ring is the engine's, and the registry is a
//! real [`Bus`]'s, filled through [`Bus::configure_topic`] and read through
//! the publish path's lookup.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::engine::reader::with_topic;
use crate::engine::ring::{Consumer as EngineConsumer, Ring as EngineRing, TryPushError};
use crate::{Bus, TopicOptions};

/// Producer side of a ring.
pub struct Ring<T>(Arc<EngineRing<T>>);

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Consumer side of a ring.
pub struct Consumer<T>(EngineConsumer<T>);

/// A bounded MPSC ring of at least `capacity` slots.
pub fn ring<T>(capacity: usize) -> (Ring<T>, Consumer<T>) {
    let (ring, consumer) = EngineRing::with_capacity(capacity);
    (Ring(ring), Consumer(consumer))
}

impl<T> Ring<T> {
    /// Pushes without waiting; `Err` hands the value back (full or closed).
    #[inline]
    pub fn try_push(&self, value: T) -> Result<(), T> {
        self.0.try_push(value).map_err(|e| match e {
            TryPushError::Full(v) | TryPushError::Closed(v) => v,
        })
    }

    /// Pushes, waiting while full; `Err` when closed.
    pub fn push(&self, value: T) -> impl Future<Output = Result<(), T>> + '_ {
        self.0.push(value)
    }

    /// Closes the ring.
    pub fn close(&self) {
        self.0.close()
    }
}

impl<T> Consumer<T> {
    /// Takes up to `max` ready values without waiting.
    #[inline]
    pub fn try_drain(&mut self, buf: &mut Vec<T>, max: usize) -> usize {
        self.0.try_drain(buf, max)
    }

    /// Waits for values; `false` once closed and drained.
    pub async fn drain(&mut self, buf: &mut Vec<T>, max: usize) -> bool {
        self.0.drain(buf, max).await
    }
}

/// The atomic-snapshot topic registry of a memory [`Bus`], as the publish
/// path uses it.
pub struct Registry {
    bus: Bus,
}

impl Default for Registry {
    fn default() -> Self {
        Self { bus: Bus::memory() }
    }
}

/// Runs a future that finishes without waiting (the memory bus's topic
/// configuration), with no runtime.
fn now<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the memory bus configures topics without waiting"),
    }
}

impl Registry {
    /// Registers `topic` (with a topic configuration, no subscription).
    pub fn insert(&self, topic: &str) {
        now(self.bus.configure_topic(topic, TopicOptions::default()))
            .expect("bench topics are valid and the bus is open");
    }

    /// Removes `topic`.
    pub fn remove(&self, topic: &str) {
        now(self.bus.remove_topic(topic)).expect("the memory transport removes without fail");
    }

    /// The publish path's lookup: this thread's cached snapshot (one
    /// generation check), then the topic. True when the topic is known.
    #[inline]
    pub fn lookup(&self, topic: &str) -> bool {
        let (bus, registry) = self.bus.topics();
        with_topic(bus, registry, topic, |e| e.is_some())
    }

    /// The lookup through a fresh `arc_swap` load of the snapshot.
    #[inline]
    pub fn lookup_uncached(&self, topic: &str) -> bool {
        self.bus.topics().1.load().get(topic).is_some()
    }
}
