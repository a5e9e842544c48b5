//! Per-thread snapshot cache: the publish path's handler lookup.
//!
//! # Algorithm
//!
//! `arc_swap` loads are wait-free but still pay an atomic read-modify-write
//! to borrow the snapshot and another to give it back. Publishers look the
//! registry up for every message, so each thread keeps the snapshot it used
//! last (per bus, a few ways, replaced round-robin) together with the
//! registry generation it was loaded at. A lookup then costs one `Acquire`
//! load of the generation: if it still matches, the cached snapshot is the
//! current one (changes store their snapshot *then* bump the generation, see
//! [`Registry::generation`](super::registry::Registry::generation)); if not,
//! the thread loads the new snapshot once and caches it. This is
//! `arc_swap::Cache`, kept in thread-local storage because a publisher has
//! only `&Bus`.
//!
//! # Invariants
//!
//! - A cached snapshot is used only for the bus it came from (keys are bus
//!   IDs, never reused) and only while the generation is unchanged.
//! - A thread holds at most [`WAYS`] snapshots; an old one (of a dropped bus,
//!   say) lives until its way is reused.

use std::cell::RefCell;

use super::registry::{Registry, Snapshot};
use super::sync::Arc;
use super::TopicEntry;

/// Buses one thread keeps a snapshot of.
const WAYS: usize = 4;

struct Way {
    bus: u64,
    generation: u64,
    snapshot: Arc<Snapshot<TopicEntry>>,
}

struct Cache {
    ways: [Option<Way>; WAYS],
    next: usize,
}

thread_local! {
    static CACHE: RefCell<Cache> = const {
        RefCell::new(Cache {
            ways: [const { None }; WAYS],
            next: 0,
        })
    };
}

/// Runs `f` on the current snapshot of `registry` (owned by bus `bus`).
///
/// `f` runs while this thread's cache is borrowed; a nested call (none in
/// the crate) falls back to a plain `load`.
#[inline]
pub(crate) fn with_snapshot<R>(
    bus: u64,
    registry: &Registry<TopicEntry>,
    f: impl FnOnce(&Snapshot<TopicEntry>) -> R,
) -> R {
    let generation = registry.generation();
    let mut f = Some(f);
    let done = CACHE.try_with(|cell| {
        let mut cache = cell.try_borrow_mut().ok()?;
        // Most threads publish to one bus: check the first way before
        // scanning.
        if let Some(w) = &cache.ways[0] {
            if w.bus == bus && w.generation == generation {
                return Some((f.take()?)(&w.snapshot));
            }
        }
        let i = match cache
            .ways
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.bus == bus))
        {
            Some(i) => i,
            None => {
                let i = cache.next;
                cache.next = (i + 1) % WAYS;
                i
            }
        };
        let way = &mut cache.ways[i];
        let fresh = matches!(way, Some(w) if w.bus == bus && w.generation == generation);
        if !fresh {
            *way = Some(Way {
                bus,
                generation,
                snapshot: registry.load_full(),
            });
        }
        let snapshot = &way.as_ref()?.snapshot;
        Some((f.take()?)(snapshot))
    });
    match (done, f) {
        (Ok(Some(r)), _) => r,
        // Thread-local storage is gone (thread exit) or already borrowed.
        (_, Some(f)) => f(&registry.load()),
        (_, None) => unreachable!("f ran but its result was lost"),
    }
}
