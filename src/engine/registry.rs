//! Atomic-snapshot topic registry: readers load, writers copy on write.
//!
//! # Algorithm
//!
//! The whole map `topic -> V` lives in one immutable snapshot behind a
//! [`SnapshotCell`] (`arc_swap::ArcSwap` normally, a loom-checkable cell
//! under loom). Readers — every publish and every broker record routed to a
//! subscription — only `load()` the current snapshot and look the topic up
//! in an `ahash` index: no lock, no reference-count traffic on the map
//! itself.
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

/// One immutable view of the registry: an `ahash` map from name to entry
/// (one hashed probe finds the value), and the same entries in a vector.
/// Positions in the vector are stable for the snapshot's life, so a reader
/// may remember one (see `reader`) and check it with a string comparison
/// instead of hashing again.
pub(crate) struct Snapshot<V> {
    entries: Vec<(Box<str>, V)>,
    index: HashMap<Box<str>, (usize, V), ahash::RandomState>,
}

impl<V> Snapshot<V> {
    fn empty(hasher: ahash::RandomState) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::with_hasher(hasher),
        }
    }

    /// The value registered under `topic`.
    #[inline]
    pub(crate) fn get(&self, topic: &str) -> Option<&V> {
        self.index.get(topic).map(|(_, v)| v)
    }

    /// The value registered under `topic`, with its position.
    #[inline]
    pub(crate) fn find(&self, topic: &str) -> Option<(usize, &V)> {
        self.index.get(topic).map(|(i, v)| (*i, v))
    }

    /// The entry at `position`, if there is one.
    #[inline]
    pub(crate) fn at(&self, position: usize) -> Option<(&str, &V)> {
        self.entries.get(position).map(|(k, v)| (&**k, v))
    }

    /// Every `(topic, value)` pair, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (&**k, v))
    }

    /// Number of topics.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
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
        Self {
            cell: SnapshotCell::new(Arc::new(Snapshot::empty(hasher.clone()))),
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
        let (next, out) = change(current.get(topic));
        let mut snapshot = Snapshot::empty(self.hasher.clone());
        let kept = current.iter().filter(|(k, _)| *k != topic);
        let added = next.map(|v| (topic, v));
        for (k, v) in kept.map(|(k, v)| (k, v.clone())).chain(added) {
            let position = snapshot.entries.len();
            snapshot.index.insert(Box::from(k), (position, v.clone()));
            snapshot.entries.push((Box::from(k), v));
        }
        self.cell.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
        out
    }
}
