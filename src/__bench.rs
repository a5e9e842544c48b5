//! Engine internals for the criterion benches and the bench tool.
//!
//! Not part of the API: hidden from the docs, no stability promise. Thin,
//! safe wrappers so that `benches/` can measure the ring and the registry
//! directly, beside their baselines.

use std::future::Future;
use std::sync::Arc;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::reader::with_topic;
use crate::engine::registry::Registry as EngineRegistry;
use crate::engine::ring::{Consumer as EngineConsumer, Ring as EngineRing, TryPushError};
use crate::engine::TopicEntry;

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

/// The atomic-snapshot topic registry as the publish path uses it.
pub struct Registry {
    bus: u64,
    inner: EngineRegistry<TopicEntry>,
}

impl Default for Registry {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(u64::MAX / 2);
        Self {
            bus: NEXT.fetch_add(1, Ordering::Relaxed),
            inner: EngineRegistry::new(),
        }
    }
}

impl Registry {
    /// Registers `topic` (with a topic configuration, no subscription).
    pub fn insert(&self, topic: &str) {
        let entry = TopicEntry {
            subs: Arc::from(Vec::new()),
            config: Some(Arc::new(crate::TopicOptions::default())),
        };
        self.inner.update(topic, |_| (Some(entry), ()));
    }

    /// Removes `topic`.
    pub fn remove(&self, topic: &str) {
        self.inner.update(topic, |_| (None, ()));
    }

    /// The publish path's lookup: this thread's cached snapshot (one
    /// generation check), then the topic. True when the topic is known.
    #[inline]
    pub fn lookup(&self, topic: &str) -> bool {
        with_topic(self.bus, &self.inner, topic, |e| e.is_some())
    }

    /// The lookup through a fresh `arc_swap` load of the snapshot.
    #[inline]
    pub fn lookup_uncached(&self, topic: &str) -> bool {
        self.inner.load().get(topic).is_some()
    }
}
