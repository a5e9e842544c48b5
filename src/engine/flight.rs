//! Publishes in flight: the read side of the bus's close protocol.
//!
//! # Algorithm
//!
//! `close` must not decide that the lanes are drained while a publish that
//! already passed the closed check is still on its way into a lane, or that
//! publish would be accepted and then meet a closed ring. So every publish
//! is bracketed by [`InFlight::enter`] and the drop of its [`FlightGuard`],
//! and `close` waits for [`InFlight::in_flight`] to reach zero.
//!
//! Enter and exit are counted on sharded counters (one cache-padded cell
//! per shard, the shard picked from the thread; a guard exits on the shard
//! it entered on, also when an async publish migrated to another thread),
//! so publishers on different threads touch different cache lines.
//!
//! The two sides form a Dekker pair of `SeqCst` fences:
//!
//! ```text
//!  publisher                          close
//!  entered[s] += 1                    closed = true
//!  fence(SeqCst)        <--pairs-->   fence(SeqCst)       (in `in_flight`)
//!  if closed: refuse                  sum exited, then sum entered
//!  push into a lane                   wait until equal, then until idle,
//!  exited[s] += 1 (Release)           close the lanes
//! ```
//!
//! Either the publisher's fence comes first in the single order of `SeqCst`
//! fences, and `close` counts its enter; or `close`'s comes first, and the
//! publisher sees the flag. The flag itself is the bus's, read and written
//! with any ordering: the fences carry the protocol. (Fences rather than
//! `SeqCst` accesses, because the fences are what loom checks exactly; it
//! treats `SeqCst` loads and stores as acquire/release.) The exit is a
//! `Release` increment read with `Acquire`, so once `close` counts a
//! publish as finished it also sees the slot that publish claimed in its
//! lane, and waits for the lane to process it.
//!
//! `in_flight` reads the exits before the enters: a publish that ends
//! between the two reads is seen as still running, never as finished
//! before it began. The loom model `loom-tests/close.rs` checks the whole
//! protocol against a ring.
//!
//! # Invariants
//!
//! - A publish that enters and then finds the flag clear is counted by
//!   every `in_flight` call whose fence follows the flag's store, until its
//!   guard drops.
//! - `in_flight` never undercounts: exits are summed before enters.
//! - `finished` counts dropped guards (accepted or refused publishes).

use crossbeam_utils::CachePadded;

use super::sync::{cap, fence, thread_shard, AtomicU64, Ordering};

/// Publishes in progress, as a sharded enter/exit pair (see the module
/// docs).
pub(crate) struct InFlight {
    entered: Box<[CachePadded<AtomicU64>]>,
    exited: Box<[CachePadded<AtomicU64>]>,
}

impl Default for InFlight {
    fn default() -> Self {
        let cells = || {
            (0..cap::FLIGHT_SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect()
        };
        Self {
            entered: cells(),
            exited: cells(),
        }
    }
}

impl InFlight {
    /// Marks a publish in progress until the guard drops. The caller checks
    /// the closed flag after this returns.
    #[inline]
    pub(crate) fn enter(&self) -> FlightGuard<'_> {
        let shard = thread_shard() % cap::FLIGHT_SHARDS;
        self.entered[shard].fetch_add(1, Ordering::Relaxed);
        // Pairs with the fence in `in_flight`: either close counts this
        // enter, or the caller's flag check sees close's store.
        fence(Ordering::SeqCst);
        FlightGuard(self, shard)
    }

    /// Publishes entered and not yet exited. The caller stores the closed
    /// flag before calling this.
    pub(crate) fn in_flight(&self) -> u64 {
        // Pairs with the fence in `enter`.
        fence(Ordering::SeqCst);
        // Exits first: a publish that exits between the two sums is then
        // seen as still running, never as finished before it entered.
        let exited = sum(&self.exited, Ordering::Acquire);
        let entered = sum(&self.entered, Ordering::Relaxed);
        entered.wrapping_sub(exited)
    }

    /// Publishes that finished (accepted or refused).
    pub(crate) fn finished(&self) -> u64 {
        sum(&self.exited, Ordering::Relaxed)
    }
}

fn sum(cells: &[CachePadded<AtomicU64>], order: Ordering) -> u64 {
    cells
        .iter()
        .fold(0u64, |acc, c| acc.wrapping_add(c.load(order)))
}

/// Ends a publish on drop (also when a publish future is cancelled). Exits
/// on the shard it entered on: a publish that migrated threads still only
/// touches its own line twice.
pub(crate) struct FlightGuard<'a>(&'a InFlight, usize);

impl Drop for FlightGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: whoever counts this exit (Acquire) sees what the publish
        // did in its lane.
        self.0.exited[self.1].fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn counts_enters_exits_and_finished() {
        let flight = InFlight::default();
        assert_eq!(flight.in_flight(), 0);
        let a = flight.enter();
        let b = flight.enter();
        assert_eq!(flight.in_flight(), 2);
        drop(a);
        assert_eq!((flight.in_flight(), flight.finished()), (1, 1));
        // A guard dropped on another thread exits where it entered.
        std::thread::scope(|s| {
            s.spawn(move || drop(b));
        });
        assert_eq!((flight.in_flight(), flight.finished()), (0, 2));
    }

    #[test]
    fn threads_on_every_shard_balance_out() {
        let flight = InFlight::default();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let _g = flight.enter();
                    }
                });
            }
        });
        assert_eq!((flight.in_flight(), flight.finished()), (0, 8000));
    }
}
