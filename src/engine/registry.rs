//! Atomic-snapshot topic registry: readers load, writers copy on write.
//!
//! # Algorithm
//!
//! The whole map `topic -> V` lives in one immutable snapshot behind a
//! [`SnapshotCell`] (`arc_swap::ArcSwap` normally, a loom-checkable cell
//! under loom). Readers — every publish and every broker record routed to a
//! subscription — only `load()` the current snapshot and look the topic up
//! in an `ahash` map: no lock, no reference-count traffic on the map itself.
//! Writers (subscribe, unsubscribe, configure) are rare: they serialise on a
//! cold-path mutex, clone the map (values are cheap `Clone`, usually `Arc`s),
//! apply their change and publish the new snapshot with one store. This is
//! the read-copy-update pattern arc-swap documents for configuration data.
//!
//! # Invariants
//!
//! - A reader sees either the snapshot before a change or after it, never a
//!   half-applied one.
//! - Writers never lose each other's changes: each change is applied to the
//!   latest snapshot while holding the writer lock.
//! - An old snapshot stays valid for as long as a reader holds it, so a
//!   publisher may finish routing into a subscription that was just removed;
//!   the subscription's closed rings refuse it, which counts as not routed.

use std::collections::HashMap;

use super::sync::{Arc, AtomicU64, Mutex, Ordering, SnapshotCell, SnapshotGuard};

/// One immutable view of the registry.
pub(crate) struct Snapshot<V> {
    map: HashMap<Box<str>, V, ahash::RandomState>,
}

impl<V> Snapshot<V> {
    /// The value registered under `topic`.
    #[inline]
    pub(crate) fn get(&self, topic: &str) -> Option<&V> {
        self.map.get(topic)
    }

    /// Every `(topic, value)` pair, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.map.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of topics.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The registry: a snapshot cell plus the writers' lock.
pub(crate) struct Registry<V> {
    cell: SnapshotCell<Snapshot<V>>,
    /// Bumped (`Release`) after every published change, so that a reader
    /// holding an older snapshot can tell with one `Acquire` load whether it
    /// is still current (see [`Registry::generation`]).
    generation: AtomicU64,
    writer: Mutex<()>,
    hasher: ahash::RandomState,
}

impl<V: Clone> Default for Registry<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> Registry<V> {
    /// An empty registry.
    pub(crate) fn new() -> Self {
        let hasher = ahash::RandomState::new();
        let empty = Snapshot {
            map: HashMap::with_hasher(hasher.clone()),
        };
        Self {
            cell: SnapshotCell::new(Arc::new(empty)),
            generation: AtomicU64::new(0),
            writer: Mutex::new(()),
            hasher,
        }
    }

    /// The current snapshot. Cheap; never blocks.
    #[inline]
    pub(crate) fn load(&self) -> SnapshotGuard<Snapshot<V>> {
        self.cell.load()
    }

    /// The number of changes published so far. A snapshot taken with
    /// `load_full` after reading generation `g` is current for as long as
    /// the generation still reads `g`: a change is published by its store
    /// *then* its bump, and the bump's `Release` pairs with this `Acquire`.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// An owned handle on the current snapshot, to keep across `.await`.
    pub(crate) fn load_full(&self) -> Arc<Snapshot<V>> {
        self.cell.load_full()
    }

    /// Applies `change` to the value of `topic` (`None` when absent) under
    /// the writer lock and publishes the result: `Some(v)` stores `v`,
    /// `None` removes the topic. Returns what `change` returned besides.
    pub(crate) fn update<R>(
        &self,
        topic: &str,
        change: impl FnOnce(Option<&V>) -> (Option<V>, R),
    ) -> R {
        let _writer = self.writer.lock();
        let current = self.cell.load_full();
        let (next, out) = change(current.map.get(topic));
        let mut map = HashMap::with_capacity_and_hasher(current.map.len() + 1, self.hasher.clone());
        for (k, v) in current.map.iter() {
            if &**k != topic {
                map.insert(k.clone(), v.clone());
            }
        }
        if let Some(v) = next {
            map.insert(Box::from(topic), v);
        }
        self.cell.store(Arc::new(Snapshot { map }));
        self.generation.fetch_add(1, Ordering::Release);
        out
    }
}
