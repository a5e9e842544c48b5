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
//! only `&Bus`. Each way also remembers where in its snapshot the thread's
//! last topic was, so a thread publishing to one topic compares one string
//! instead of hashing it.
//!
//! # Invariants
//!
//! - A cached snapshot is used only for the bus it came from (keys are bus
//!   IDs, never reused) and only while the generation is unchanged.
//! - A thread holds at most [`WAYS`] snapshots; an old one (of a dropped bus,
//!   say) lives until its way is reused.
//! - A remembered position is used only after its entry's name compared
//!   equal to the topic, and only within the snapshot it was found in.

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
    /// Position in `snapshot` of the topic this thread published to last
    /// (`usize::MAX`: none yet), and that topic's [`tag`].
    last: usize,
    last_tag: u64,
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

/// Runs `f` on `topic`'s entry in the current snapshot of `registry`
/// (owned by bus `bus`), or on `None` when the topic is not registered.
///
/// `f` runs while this thread's cache is borrowed; a nested call (none in
/// the crate) falls back to a plain `load`.
#[inline]
pub(crate) fn with_topic<R>(
    bus: u64,
    registry: &Registry<TopicEntry>,
    topic: &str,
    f: impl FnOnce(Option<&TopicEntry>) -> R,
) -> R {
    let generation = registry.generation();
    let mut f = Some(f);
    let done = CACHE.try_with(|cell| {
        let mut cache = cell.try_borrow_mut().ok()?;
        // Most threads publish to one bus: check the first way before
        // scanning.
        if let Some(w) = &mut cache.ways[0] {
            if w.bus == bus && w.generation == generation {
                let entry = w.find(topic);
                return Some((f.take()?)(entry));
            }
        }
        let i = cache.way_of(bus);
        let way = &mut cache.ways[i];
        if !matches!(way, Some(w) if w.bus == bus && w.generation == generation) {
            *way = Some(Way {
                bus,
                generation,
                snapshot: registry.load_full(),
                last: usize::MAX,
                last_tag: 0,
            });
        }
        let way = way.as_mut()?;
        let entry = way.find(topic);
        Some((f.take()?)(entry))
    });
    match (done, f) {
        (Ok(Some(r)), _) => r,
        // Thread-local storage is gone (thread exit) or already borrowed.
        (_, Some(f)) => f(registry.load().get(topic)),
        (_, None) => unreachable!("f ran but its result was lost"),
    }
}

impl Cache {
    /// The way holding `bus`, or the next one to replace.
    fn way_of(&mut self, bus: u64) -> usize {
        match self
            .ways
            .iter()
            .position(|w| w.as_ref().is_some_and(|w| w.bus == bus))
        {
            Some(i) => i,
            None => {
                let i = self.next;
                self.next = (i + 1) % WAYS;
                i
            }
        }
    }
}

impl Way {
    /// `topic`'s entry: the remembered position when it still names
    /// `topic`, else a hashed lookup, remembered. A different topic is
    /// usually told apart by its [`tag`] alone, so a thread cycling over
    /// many topics pays little for the memo.
    #[inline]
    fn find(&mut self, topic: &str) -> Option<&TopicEntry> {
        let tag = tag(topic);
        if tag == self.last_tag {
            if let Some((name, entry)) = self.snapshot.at(self.last) {
                if name == topic {
                    return Some(entry);
                }
            }
        }
        let (position, entry) = self.snapshot.find(topic)?;
        self.last = position;
        self.last_tag = tag;
        Some(entry)
    }
}

/// A cheap fingerprint of a topic name: its length and last eight bytes
/// (where topic families like `orders.v1`, `orders.v2` differ). Equal names
/// have equal tags; the memo still compares the names themselves.
#[inline]
fn tag(topic: &str) -> u64 {
    let bytes = topic.as_bytes();
    let len = bytes.len();
    let tail = match bytes.get(len.wrapping_sub(8)..) {
        // One fixed-size load for names of 8 bytes or more.
        Some(&[a, b, c, d, e, f, g, h]) => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => bytes.iter().fold(0, |t, &b| t << 8 | u64::from(b)),
    };
    tail ^ (len as u64).rotate_right(8)
}
