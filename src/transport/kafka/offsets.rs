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
//! - `next`: one past the highest offset handed out,
//! - `window`: the offsets handed out from the lowest unsettled one on, in
//!   ascending order, each with a settled flag, the time it was handed out
//!   (milliseconds since the tracker was made) and the record's Kafka
//!   timestamp (a deque: handing out appends, the settled prefix is popped
//!   from the front), and
//! - `unsettled`: how many of them are not settled,
//!
//! and the position to commit is the front of the window (the lowest
//! unsettled offset), or `next` when the window is empty. The front is
//! also what the backlog monitor reads ([`front`](PartitionOffsets::front)):
//! how long the partition's oldest unsettled record has been held here
//! (its stall age: the commits cannot pass it) and its timestamp (the
//! partition's oldest waiting record, for the backlog's oldest age). Settling finds
//! its offset by binary search and flags it; when it is the front, the
//! settled prefix is popped. Handing out, settling and reading the count
//! take one uncontended lock each and allocate nothing once the deque has
//! grown to the number of records in flight (the `BTreeSet` before it
//! allocated tree nodes as offsets came and went). Offsets the broker
//! never hands out (gaps from compaction or transaction markers) are
//! skipped over naturally: they are never in the window.
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
//! - The window is sorted, holds each offset once, and its front (when
//!   there is one) is unsettled.
//! - An offset handed out again (a redelivery) takes the new hand-out time
//!   and timestamp: its stall age counts from its latest hand-out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The offsets of one partition's assignment (see the module docs).
#[derive(Debug)]
pub(crate) struct PartitionOffsets {
    inner: Mutex<Inner>,
    /// Set when the consumer let go of the partition (revoked, or the
    /// subscription stopped): its records still in lanes are stale.
    released: AtomicBool,
    /// What the hand-out times count from.
    base: Instant,
}

/// One handed-out offset in the window.
#[derive(Clone, Copy, Debug)]
struct Entry {
    offset: i64,
    settled: bool,
    /// When it was handed out: milliseconds since `base`.
    handed_ms: u64,
    /// The record's timestamp (ms since the Unix epoch); negative: none.
    timestamp: i64,
}

/// The oldest unsettled record of a partition, as the monitor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Front {
    /// Its offset.
    pub(crate) offset: i64,
    /// How long ago it was handed out (to the millisecond).
    pub(crate) held_for: Duration,
    /// Its Kafka timestamp (ms since the Unix epoch), when it has one.
    pub(crate) timestamp: Option<i64>,
    /// The partition's unsettled offsets (this one included).
    pub(crate) unsettled: usize,
}

#[derive(Debug)]
struct Inner {
    /// One past the highest offset handed out; `None` before the first.
    next: Option<i64>,
    /// Handed-out offsets from the lowest unsettled one, ascending.
    window: VecDeque<Entry>,
    /// Unsettled entries of `window`.
    unsettled: usize,
    /// The last position reported as committed.
    committed: Option<i64>,
}

impl Inner {
    /// Pops the settled prefix, so the front is unsettled.
    fn pop_settled(&mut self) {
        while self.window.front().is_some_and(|e| e.settled) {
            self.window.pop_front();
        }
    }

    fn position(&self) -> Option<i64> {
        self.window.front().map(|e| e.offset).or(self.next)
    }
}

impl PartitionOffsets {
    /// A tracker for a partition whose consumption starts at `start` (the
    /// committed position, when known): until a record is handed out,
    /// there is nothing new to commit.
    pub(crate) fn starting_at(start: Option<i64>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: start,
                window: VecDeque::new(),
                unsettled: 0,
                committed: start,
            }),
            released: AtomicBool::new(false),
            base: Instant::now(),
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

    /// `offset` was handed to a lane, now; `timestamp` is the record's
    /// (ms since the Unix epoch; negative: none). Offsets come in
    /// increasing order; one at or below an earlier one (a redelivery after
    /// a seek) is tracked all the same.
    pub(crate) fn handed_out(&self, offset: i64, timestamp: i64) {
        let entry = Entry {
            offset,
            settled: false,
            handed_ms: self.base.elapsed().as_millis() as u64,
            timestamp,
        };
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        if inner.window.back().is_none_or(|e| e.offset < offset) {
            inner.window.push_back(entry);
            inner.unsettled += 1;
        } else {
            match inner.window.binary_search_by_key(&offset, |e| e.offset) {
                Ok(i) => {
                    if std::mem::replace(&mut inner.window[i], entry).settled {
                        inner.unsettled += 1;
                    }
                }
                Err(i) => {
                    inner.window.insert(i, entry);
                    inner.unsettled += 1;
                }
            }
        }
        let next = offset.saturating_add(1);
        if inner.next.is_none_or(|n| n < next) {
            inner.next = Some(next);
        }
    }

    /// `offset` was settled (acked after success, skip or dead-lettering).
    /// Settling an offset that is not unsettled does nothing.
    pub(crate) fn settled(&self, offset: i64) {
        let mut inner = self.inner.lock();
        let Ok(i) = inner.window.binary_search_by_key(&offset, |e| e.offset) else {
            return;
        };
        if std::mem::replace(&mut inner.window[i].settled, true) {
            return;
        }
        inner.unsettled -= 1;
        if i == 0 {
            inner.pop_settled();
        }
    }

    /// Offsets handed out and not settled.
    pub(crate) fn unsettled(&self) -> usize {
        self.inner.lock().unsettled
    }

    /// The lowest unsettled offset at `now` (the one the commits wait
    /// for), `None` when every handed-out offset settled.
    pub(crate) fn front(&self, now: Instant) -> Option<Front> {
        let (e, unsettled) = {
            let inner = self.inner.lock();
            (*inner.window.front()?, inner.unsettled)
        };
        let handed = self.base + Duration::from_millis(e.handed_ms);
        Some(Front {
            offset: e.offset,
            held_for: now.saturating_duration_since(handed),
            timestamp: (e.timestamp >= 0).then_some(e.timestamp),
            unsettled,
        })
    }

    /// The position it is safe to commit now: the lowest unsettled offset,
    /// else one past the highest handed out; `None` before anything.
    #[cfg(test)]
    pub(crate) fn position(&self) -> Option<i64> {
        self.inner.lock().position()
    }

    /// The position to commit when it moved past the last one committed
    /// (which it then becomes); `None` when there is nothing new.
    pub(crate) fn take_commit(&self) -> Option<i64> {
        let mut inner = self.inner.lock();
        let position = inner.position()?;
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
            t.handed_out(o, -1);
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
            t.handed_out(o, -1);
        }
        t.settled(3);
        assert_eq!(t.position(), Some(7));
        for o in [7, 8, 20] {
            t.settled(o);
        }
        assert_eq!(t.take_commit(), Some(21));
    }

    #[test]
    fn an_offset_handed_out_again_or_out_of_order_is_tracked() {
        let t = PartitionOffsets::starting_at(None);
        for o in [10, 12] {
            t.handed_out(o, -1);
        }
        t.handed_out(11, -1); // below the highest: inserted in order
        t.settled(10);
        t.settled(12);
        assert_eq!((t.position(), t.unsettled()), (Some(11), 1));
        t.handed_out(12, -1); // again, after it settled: unsettled again
        t.handed_out(12, -1); // twice: counted once
        assert_eq!(t.unsettled(), 2);
        t.settled(11);
        assert_eq!(t.position(), Some(12));
        t.settled(12);
        t.settled(12); // settling twice changes nothing
        assert_eq!((t.position(), t.unsettled()), (Some(13), 0));
        t.settled(99); // never handed out: nothing
        assert_eq!(t.take_commit(), Some(13));
    }

    #[test]
    fn the_front_is_the_oldest_unsettled_record_with_its_times() {
        let t = PartitionOffsets::starting_at(None);
        assert_eq!(t.front(Instant::now()), None);
        t.handed_out(5, 1_000);
        t.handed_out(6, -1);
        let later = Instant::now() + Duration::from_secs(3);
        let front = t.front(later).unwrap();
        assert_eq!((front.offset, front.timestamp), (5, Some(1_000)));
        assert_eq!(front.unsettled, 2);
        assert!(front.held_for >= Duration::from_secs(3), "{front:?}");
        t.settled(6);
        assert_eq!(
            t.front(later).unwrap().offset,
            5,
            "6 settling moves nothing"
        );
        t.settled(5);
        assert_eq!(t.front(later), None, "all settled: no front");
        // Handed out again: the new hand-out time and timestamp count.
        t.handed_out(5, 2_000);
        let front = t.front(Instant::now()).unwrap();
        assert_eq!(front.timestamp, Some(2_000));
        assert!(front.held_for < Duration::from_secs(3), "{front:?}");
        t.handed_out(7, -1);
        t.settled(5);
        assert_eq!(t.front(Instant::now()).unwrap().timestamp, None);
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
                        t.handed_out(next, -1);
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
                prop_assert_eq!(t.front(Instant::now()).map(|f| f.offset), lowest);
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
