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
//! ## Wildcard patterns
//!
//! The map is keyed by exact topic only, so a publish is one lookup however
//! many wildcard subscriptions exist. Patterns (`orders.*`, `orders.>`) and
//! their values live beside the map, under the writer lock, and are
//! *materialised* into the exact entries they match, all on the cold path:
//!
//! - changing patterns ([`Registry::update_all`]) applies the change to the
//!   matching entries already in the map in the same snapshot;
//! - an entry created by [`Registry::update`] (a subscribe or configure of a
//!   new topic) starts from the values of the patterns matching its topic,
//!   [`Layer`]ed;
//! - the first publish to a topic the snapshot lacks, while patterns exist,
//!   calls [`Registry::materialise`]: the entry is created from the matching
//!   patterns (or empty when none match, so later publishes to it hit the
//!   map and skip the writer lock), then the publish looks up again.
//!
//! Growth is bounded by use: one entry per distinct topic published while
//! patterns exist; the owner removes entries left with nothing when the
//! last pattern goes (see `engine::remove_wildcard_sub`). Each
//! materialisation is a registry change (a copy of the map, and every
//! publishing thread reloads its snapshot once), paid once per new name:
//! cheap for a fixed set of topics, costly for names without bound (one
//! per user, say) while any pattern exists.
//!
//! # Invariants
//!
//! - A reader sees either the snapshot before a change or after it, never a
//!   half-applied one.
//! - Writers never lose each other's changes: each change is applied to the
//!   latest snapshot while holding the writer lock.
//! - Every entry holds the values of the patterns matching its topic: entry
//!   creation and pattern changes both happen under the writer lock, so a
//!   pattern change racing the creation of an entry it matches (a wildcard
//!   subscribe racing the first publish to a new topic) sees the entry, or
//!   the entry is created with the pattern.
//! - An old snapshot stays valid for as long as a reader holds it, so a
//!   publisher may finish routing into a subscription that was just removed;
//!   the subscription's closed rings refuse it, which counts as not routed.

use std::collections::HashMap;

use super::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, SnapshotCell, SnapshotGuard};
use crate::engine::pattern::Pattern;

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

/// How a pattern's value joins the value of an exact topic it matches.
pub(crate) trait Layer: Clone {
    /// Adds what `over` holds to `self`.
    fn layer(&mut self, over: &Self);
}

/// The writer side: patterns and their values, guarded by the writer lock.
struct Patterns<V> {
    list: Vec<(Pattern, V)>,
    /// `V`'s [`Layer::layer`], recorded by the first pattern change (the
    /// registry is generic; only registries with patterns need it).
    layer: Option<fn(&mut V, &V)>,
}

impl<V: Clone> Patterns<V> {
    /// The value a new entry for `topic` starts from: the matching
    /// patterns' values layered, or `None` when none matches.
    fn seed(&self, topic: &str) -> Option<V> {
        let layer = self.layer?;
        let mut matching = self.list.iter().filter(|(p, _)| p.matches(topic));
        let mut seed = matching.next()?.1.clone();
        for (_, v) in matching {
            layer(&mut seed, v);
        }
        Some(seed)
    }
}

/// The registry: a snapshot cell plus the writers' lock.
pub(crate) struct Registry<V> {
    cell: SnapshotCell<Snapshot<V>>,
    /// Bumped (`Release`) after every published change, so that a reader
    /// holding an older snapshot can tell with one `Acquire` load whether it
    /// is still current (see [`Registry::generation`]).
    generation: AtomicU64,
    writer: Mutex<Patterns<V>>,
    /// Whether any pattern exists: set (`Release`) before the change that
    /// adds the first one is published, read by a publish that missed.
    has_patterns: AtomicBool,
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
            writer: Mutex::new(Patterns {
                list: Vec::new(),
                layer: None,
            }),
            has_patterns: AtomicBool::new(false),
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

    /// Applies `change` to the value of `topic` under the writer lock and
    /// publishes the result: `Some(v)` stores `v`, `None` removes the topic.
    /// `change` sees the current value, or for an absent topic the value
    /// the patterns matching it give (`None` when none does). Returns what
    /// `change` returned besides.
    pub(crate) fn update<R>(
        &self,
        topic: &str,
        change: impl FnOnce(Option<&V>) -> (Option<V>, R),
    ) -> R {
        let patterns = self.writer.lock();
        let current = self.cell.load_full();
        let seeded = match current.get(topic) {
            Some(_) => None,
            None => patterns.seed(topic),
        };
        let (next, out) = change(current.get(topic).or(seeded.as_ref()));
        let kept = current.iter().filter(|(k, _)| *k != topic);
        let added = next.map(|v| (topic, v));
        self.publish(kept.map(|(k, v)| (k, v.clone())).chain(added));
        out
    }

    /// Applies `change` to the patterns and the whole map at once, under the
    /// writer lock, and publishes the result as one snapshot. `change` gets
    /// the patterns with their values and every `(topic, value)` entry; it
    /// keeps them consistent (a pattern's value in the entries it matches).
    pub(crate) fn update_all<R>(
        &self,
        change: impl FnOnce(&mut Vec<(Pattern, V)>, &mut Vec<(Box<str>, V)>) -> R,
    ) -> R
    where
        V: Layer,
    {
        let mut patterns = self.writer.lock();
        patterns.layer = Some(V::layer);
        let current = self.cell.load_full();
        let mut entries: Vec<(Box<str>, V)> = current
            .iter()
            .map(|(k, v)| (Box::from(k), v.clone()))
            .collect();
        let out = change(&mut patterns.list, &mut entries);
        self.has_patterns
            .store(!patterns.list.is_empty(), Ordering::Release);
        self.publish(entries.iter().map(|(k, v)| (&**k, v.clone())));
        out
    }

    /// Creates `topic`'s entry from the patterns matching it, for a publish
    /// that found no entry. Returns whether `topic` now has an entry (then
    /// look it up again); `false` when no pattern exists (cheap: one load,
    /// no lock). A topic no pattern matches gets an empty `V::default()`,
    /// so later publishes to it find it without coming here.
    pub(crate) fn materialise(&self, topic: &str) -> bool
    where
        V: Default,
    {
        if !self.has_patterns.load(Ordering::Acquire) {
            return false;
        }
        let patterns = self.writer.lock();
        let current = self.cell.load_full();
        if current.get(topic).is_some() {
            return true;
        }
        if patterns.list.is_empty() {
            return false;
        }
        let entry = patterns.seed(topic).unwrap_or_default();
        let kept = current.iter().map(|(k, v)| (k, v.clone()));
        self.publish(kept.chain([(topic, entry)]));
        true
    }

    /// Builds a snapshot of `entries` and publishes it (writer lock held).
    fn publish<'a>(&self, entries: impl Iterator<Item = (&'a str, V)>) {
        let mut snapshot = Snapshot::empty(self.hasher.clone());
        for (k, v) in entries {
            let position = snapshot.entries.len();
            snapshot.index.insert(Box::from(k), (position, v.clone()));
            snapshot.entries.push((Box::from(k), v));
        }
        self.cell.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release);
    }
}
