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
    /// `topic` (see [`names_match`]), else a hashed lookup, remembered.
    ///
    /// The remembered check is inlined into the publish path; the hashed
    /// lookup is a call (a call for both cost a prologue and an epilogue,
    /// 18 instructions, on every publish).
    #[inline(always)]
    fn find(&mut self, topic: &str) -> Option<&TopicEntry> {
        let tag = tag(topic.as_bytes());
        if tag == self.last_tag {
            if let Some((name, entry)) = self.snapshot.at(self.last) {
                if names_match(name.as_bytes(), self.last_tag, topic.as_bytes(), tag) {
                    return Some(entry);
                }
            }
        }
        lookup(
            &self.snapshot,
            &mut self.last,
            &mut self.last_tag,
            topic,
            tag,
        )
    }
}

/// [`Way::find`]'s hashed lookup, which remembers where it found `topic`.
#[inline(never)]
fn lookup<'a>(
    snapshot: &'a Snapshot<TopicEntry>,
    last: &mut usize,
    last_tag: &mut u64,
    topic: &str,
    tag: u64,
) -> Option<&'a TopicEntry> {
    let (position, entry) = snapshot.find(topic)?;
    *last = position;
    *last_tag = tag;
    Some(entry)
}

/// Whether `topic` (with fingerprint `topic_tag`) is the remembered `name`
/// (with `name_tag`). A different topic is usually told apart by the tags
/// alone; a name shorter than 8 bytes is fully determined by its length and
/// tag, a longer one is compared.
#[inline]
fn names_match(name: &[u8], name_tag: u64, topic: &[u8], topic_tag: u64) -> bool {
    name_tag == topic_tag
        && name.len() == topic.len()
        && (topic.len() < 8 || same_long_name(name, topic))
}

/// Eight bytes of `s` from `at`, as a word, if there are eight.
#[inline]
fn word(s: &[u8], at: usize) -> Option<u64> {
    s.get(at..at.checked_add(8)?)
        .and_then(|w| <[u8; 8]>::try_from(w).ok())
        .map(u64::from_le_bytes)
}

/// Four bytes of `s` from `at`, as a word, if there are four.
#[inline]
fn half(s: &[u8], at: usize) -> Option<u64> {
    s.get(at..at.checked_add(4)?)
        .and_then(|w| <[u8; 4]>::try_from(w).ok())
        .map(|w| u64::from(u32::from_le_bytes(w)))
}

/// A fingerprint of a topic name of known length, from at most two fixed
/// loads. For names shorter than 8 bytes it covers every byte, so equal
/// length and tag mean equal names; for longer ones it is the last eight
/// bytes (where topic families like `orders.v1`, `orders.v2` differ).
#[inline]
fn tag(s: &[u8]) -> u64 {
    let len = s.len();
    match len {
        0 => 0,
        1..=3 => u64::from(s[0]) | u64::from(s[len / 2]) << 8 | u64::from(s[len - 1]) << 16,
        4..=7 => half(s, 0).unwrap_or(0) | half(s, len - 4).unwrap_or(0) << 32,
        _ => word(s, len - 8).unwrap_or(0),
    }
}

/// `a == b` for names of 8 bytes or more; up to 16 bytes as two
/// overlapping words instead of through `memcmp`.
#[inline]
fn same_long_name(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        8..=16 => word(a, 0) == word(b, 0) && word(a, len - 8) == word(b, len - 8),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{names_match, tag};

    /// What `Way::find` accepts as "the remembered topic".
    fn memo_says_same(a: &[u8], b: &[u8]) -> bool {
        names_match(a, tag(a), b, tag(b))
    }

    proptest! {
        /// The memo's test agrees with string equality, on names from a
        /// tiny alphabet (so that near-collisions are common).
        #[test]
        fn memo_test_is_equality(a in "[ab.]{0,20}", b in "[ab.]{0,20}") {
            prop_assert_eq!(memo_says_same(a.as_bytes(), b.as_bytes()), a == b);
        }

        /// The same with one byte changed anywhere.
        #[test]
        fn one_byte_apart_is_different(a in "[a-z.]{1,24}", at in any::<prop::sample::Index>(), to in b'0'..=b'9') {
            let mut b = a.clone().into_bytes();
            b[at.index(a.len())] = to;
            prop_assert!(!memo_says_same(a.as_bytes(), &b));
            prop_assert!(memo_says_same(a.as_bytes(), a.as_bytes()));
        }
    }
}
