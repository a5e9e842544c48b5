//! Per-partition offset tracking for Kafka: which offset may be committed
//! when lanes finish records out of order.
//!
//! # Algorithm
//!
//! Kafka commits one position per partition: "every record below this
//! offset is done". The consumer loop hands a partition's records to the
//! lanes in offset order, but the lanes finish them in any order (a slow
//! handler on one lane, retries, a fast lane beside it). The tracker of
//! one partition keeps
//!
//! - `next`: one past the highest offset handed out, and
//! - `unsettled`: the offsets handed out and not yet settled (acked after
//!   success, skip or dead-lettering),
//!
//! and the position to commit is the lowest unsettled offset, or `next`
//! when nothing is unsettled. Offsets the broker never hands out (gaps
//! from compaction or transaction markers) are skipped over naturally:
//! they are never unsettled.
//!
//! Each assignment of a partition gets a tracker of its own: a record of an
//! earlier assignment settling late (after a revocation and a new
//! assignment) touches only its own, retired tracker.
//!
//! # Invariants
//!
//! - The committable position never passes an unsettled offset (so a
//!   commit never skips a record that is not done: at-least-once).
//! - Once every handed-out offset settled, the position is `next`.
//! - The position never moves backwards.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// The offsets of one partition's assignment (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct PartitionOffsets {
    inner: Mutex<Inner>,
    /// Set when the consumer let go of the partition (revoked, or the
    /// subscription stopped): its records still in lanes are stale.
    released: AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    /// One past the highest offset handed out; `None` before the first.
    next: Option<i64>,
    unsettled: BTreeSet<i64>,
    /// The last position reported as committed.
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// A tracker for a partition whose consumption starts at `start` (the
    /// committed position, when known): until a record is handed out,
    /// there is nothing new to commit.
    pub(crate) fn starting_at(start: Option<i64>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: start,
                unsettled: BTreeSet::new(),
                committed: start,
            }),
            released: AtomicBool::new(false),
        }
    }

    /// The consumer let go of the partition: records of it not handled yet
    /// are left to its next owner.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// True once [`release`](Self::release) was called.
    pub(crate) fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// `offset` was handed to a lane. Offsets come in increasing order;
    /// one at or below an earlier one (a redelivery after a seek) is
    /// tracked all the same.
    pub(crate) fn handed_out(&self, offset: i64) {
        let mut inner = self.inner.lock();
        inner.unsettled.insert(offset);
        let next = offset.saturating_add(1);
        if inner.next.is_none_or(|n| n < next) {
            inner.next = Some(next);
        }
    }

    /// `offset` was settled (acked after success, skip or dead-lettering).
    /// Settling an offset that is not unsettled does nothing.
    pub(crate) fn settled(&self, offset: i64) {
        self.inner.lock().unsettled.remove(&offset);
    }

    /// Offsets handed out and not settled.
    pub(crate) fn unsettled(&self) -> usize {
        self.inner.lock().unsettled.len()
    }

    /// The position it is safe to commit now: the lowest unsettled offset,
    /// else one past the highest handed out; `None` before anything.
    #[cfg(test)]
    pub(crate) fn position(&self) -> Option<i64> {
        let inner = self.inner.lock();
        inner.unsettled.first().copied().or(inner.next)
    }

    /// The position to commit when it moved past the last one committed
    /// (which it then becomes); `None` when there is nothing new.
    pub(crate) fn take_commit(&self) -> Option<i64> {
        let mut inner = self.inner.lock();
        let position = inner.unsettled.first().copied().or(inner.next)?;
        if inner.committed.is_some_and(|c| c >= position) {
            return None;
        }
        inner.committed = Some(position);
        Some(position)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_position_waits_for_the_lowest_unsettled_offset() {
        let t = PartitionOffsets::starting_at(Some(10));
        assert_eq!(t.take_commit(), None, "nothing new yet");
        for o in 10..15 {
            t.handed_out(o);
        }
        t.settled(11);
        t.settled(12);
        assert_eq!(t.position(), Some(10));
        assert_eq!(t.take_commit(), None, "10 is not done: nothing to commit");
        t.settled(10);
        assert_eq!(t.take_commit(), Some(13));
        assert_eq!(t.take_commit(), None);
        t.settled(14);
        t.settled(13);
        assert_eq!(t.take_commit(), Some(15));
        assert_eq!(t.unsettled(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_passed_over() {
        let t = PartitionOffsets::starting_at(None);
        for o in [3, 7, 8, 20] {
            t.handed_out(o);
        }
        t.settled(3);
        assert_eq!(t.position(), Some(7));
        for o in [7, 8, 20] {
            t.settled(o);
        }
        assert_eq!(t.take_commit(), Some(21));
    }

    /// One step of a random schedule.
    #[derive(Clone, Debug)]
    enum Op {
        /// Hand out the next offset (after a gap of 0..3).
        HandOut(u8),
        /// Settle the unsettled offset at this index (mod their count).
        Settle(usize),
        /// Commit what may be committed.
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3).prop_map(Op::HandOut),
            3 => any::<usize>().prop_map(Op::Settle),
            1 => Just(Op::Commit),
        ]
    }

    proptest! {
        /// Checked against a plain model: for random finish orders the
        /// committed offset never passes the lowest unsettled one, never
        /// moves back, and reaches the end once all settle.
        #[test]
        fn commits_never_pass_an_unsettled_offset(ops in proptest::collection::vec(op(), 1..200)) {
            let t = PartitionOffsets::starting_at(Some(0));
            let mut next = 0i64;
            let mut model: Vec<i64> = Vec::new();
            let mut committed = 0i64;
            for op in ops {
                match op {
                    Op::HandOut(gap) => {
                        next += i64::from(gap);
                        t.handed_out(next);
                        model.push(next);
                        next += 1;
                    }
                    Op::Settle(i) if !model.is_empty() => {
                        let offset = model.remove(i % model.len());
                        t.settled(offset);
                    }
                    Op::Settle(_) => {}
                    Op::Commit => {
                        if let Some(c) = t.take_commit() {
                            prop_assert!(c > committed, "moved back or stood still: {c} after {committed}");
                            committed = c;
                        }
                    }
                }
                let lowest = model.iter().min().copied();
                if let Some(low) = lowest {
                    prop_assert!(committed <= low, "committed {committed} past unsettled {low}");
                    prop_assert_eq!(t.position(), Some(low));
                }
                prop_assert_eq!(t.unsettled(), model.len());
            }
            for offset in std::mem::take(&mut model) {
                t.settled(offset);
            }
            if next > 0 {
                let end = t.take_commit().unwrap_or(committed);
                prop_assert_eq!(end, next, "all settled: the end");
            }
        }
    }
}
