//! Contention-free counters and the [`BusStats`] snapshot.
//!
//! Two kinds of counter, so that no hot-path increment is a contended
//! read-modify-write:
//!
//! - [`ShardedCounter`] for publish-side counts: one cache-padded cell per
//!   shard; each thread increments the shard picked from its thread ID, so
//!   publishers on different threads touch different cache lines. Reads sum
//!   the shards.
//! - [`LaneCounters`] for dispatch-side counts: each lane has exactly one
//!   writer (its worker), which increments with a plain load + store instead
//!   of a locked RMW. Readers see a recent value.

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::engine::sync::{AtomicU64, Ordering};

const SHARDS: usize = 16;

thread_local! {
    /// This thread's shard index and round-robin cursor.
    static LOCAL: Cell<(usize, u32)> = const { Cell::new((usize::MAX, 0)) };
}

/// This thread's shard index (stable for the thread's life).
#[inline]
pub(crate) fn thread_shard() -> usize {
    LOCAL.with(|c| {
        let (shard, rr) = c.get();
        if shard != usize::MAX {
            return shard;
        }
        let shard = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(std::thread::current().id())
            as usize;
        c.set((shard, rr));
        shard
    })
}

/// Unkeyed records a thread sends to one lane before moving to the next.
/// Runs keep lane workers draining whole batches (one wake-up per run, not
/// per record) while still spreading a thread's traffic over every lane.
pub(crate) const LANE_RUN: u32 = 32;

/// The lane cursor of this thread for an unkeyed record: starts at the
/// thread's shard (threads start on different lanes) and moves on by one
/// every [`LANE_RUN`] records.
#[inline]
pub(crate) fn next_round_robin() -> u32 {
    let shard = thread_shard();
    LOCAL.with(|c| {
        let (s, rr) = c.get();
        c.set((s, rr.wrapping_add(1)));
        (shard as u32).wrapping_add(rr / LANE_RUN)
    })
}

/// A counter sharded by thread.
pub(crate) struct ShardedCounter {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl ShardedCounter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.shards[thread_shard() % SHARDS].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

/// A counter with one writer: increments without a locked instruction.
#[derive(Default)]
pub(crate) struct SoloCounter(AtomicU64);

impl SoloCounter {
    /// Adds `n`. Only the single owning writer may call this.
    #[inline]
    pub(crate) fn bump(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Release);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Counters of one lane, written by its worker only.
#[derive(Default)]
pub(crate) struct LaneCounters {
    pub(crate) delivered: SoloCounter,
    pub(crate) failed: SoloCounter,
    pub(crate) retried: SoloCounter,
    pub(crate) dead_lettered: SoloCounter,
    pub(crate) skipped: SoloCounter,
    pub(crate) dropped: SoloCounter,
    /// Ring positions fully processed (handled, dead-lettered or skipped);
    /// equals the ring's claimed count when the lane is idle.
    pub(crate) processed: SoloCounter,
}

/// Counts of one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// Messages waiting in the lane's ring.
    pub depth: usize,
    /// Messages whose handler succeeded.
    pub delivered: u64,
    /// Failed attempts (errors and panics).
    pub failed: u64,
    /// Attempts retried after a failure.
    pub retried: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages the handler skipped on purpose.
    pub skipped: u64,
    /// Failed messages dropped because dead-lettering was disabled or the
    /// dead-letter publish failed (each one logged at error level).
    pub dropped: u64,
}

impl LaneStats {
    pub(crate) fn read(c: &LaneCounters, depth: usize) -> Self {
        Self {
            depth,
            delivered: c.delivered.get(),
            failed: c.failed.get(),
            retried: c.retried.get(),
            dead_lettered: c.dead_lettered.get(),
            skipped: c.skipped.get(),
            dropped: c.dropped.get(),
        }
    }

    pub(crate) fn add_counts(&mut self, o: &LaneStats) {
        self.depth += o.depth;
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.retried += o.retried;
        self.dead_lettered += o.dead_lettered;
        self.skipped += o.skipped;
        self.dropped += o.dropped;
    }
}

/// Counts of one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Its ID (unique within the bus).
    pub id: u64,
    /// Its topic.
    pub topic: String,
    /// `plain` or `envelope`.
    pub kind: &'static str,
    /// Sums over its lanes.
    pub total: LaneStats,
    /// Per lane.
    pub lanes: Vec<LaneStats>,
}

impl SubscriptionStats {
    pub(crate) fn new(id: u64, topic: String, kind: &'static str, lanes: Vec<LaneStats>) -> Self {
        let mut total = LaneStats::default();
        for l in &lanes {
            total.add_counts(l);
        }
        Self {
            id,
            topic,
            kind,
            total,
            lanes,
        }
    }
}

/// A snapshot of a bus's counters; see [`Bus::stats`](crate::Bus::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Publishes accepted (each counted once, whatever the fan-out).
    pub published: u64,
    /// Accepted publishes no subscription received.
    pub unrouted: u64,
    /// Sums over every live subscription.
    pub total: LaneStats,
    /// Per live subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

impl BusStats {
    /// Adds the final counts of removed subscriptions to the totals.
    pub(crate) fn absorb_retired(&mut self, retired: &LaneStats) {
        let depth = self.total.depth;
        self.total.add_counts(retired);
        self.total.depth = depth;
    }

    pub(crate) fn new(
        published: u64,
        unrouted: u64,
        subscriptions: Vec<SubscriptionStats>,
    ) -> Self {
        let mut total = LaneStats::default();
        for s in &subscriptions {
            total.add_counts(&s.total);
        }
        Self {
            published,
            unrouted,
            total,
            subscriptions,
        }
    }
}
