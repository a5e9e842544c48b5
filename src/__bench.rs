//! Engine internals for the criterion benches and the bench tool.
//!
//! Not part of the API: hidden from the docs, no stability promise. Thin,
//! safe wrappers so that `benches/` can measure the ring and the registry
//! directly, beside their baselines.

use std::future::Future;
use std::sync::Arc;

use crate::engine::registry::Registry as EngineRegistry;
use crate::engine::ring::{Consumer as EngineConsumer, Ring as EngineRing, TryPushError};

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

/// The atomic-snapshot registry, with `u64` values.
#[derive(Default)]
pub struct Registry(EngineRegistry<u64>);

impl Registry {
    /// Sets `topic` to `value`.
    pub fn insert(&self, topic: &str, value: u64) {
        self.0.update(topic, |_| (Some(value), ()));
    }

    /// Removes `topic`.
    pub fn remove(&self, topic: &str) {
        self.0.update(topic, |_| (None, ()));
    }

    /// The hot-path lookup: load the snapshot, find the topic.
    #[inline]
    pub fn lookup(&self, topic: &str) -> Option<u64> {
        self.0.load().get(topic).copied()
    }
}
