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
//! Enters and exits are counted per thread: each thread holds a *slot*, an
//! index no other live thread holds (see `sync::thread_slot`), and only
//! that thread writes its slot's two counters, with a plain load and store
//! (no locked instruction). A guard dropped on the thread that entered
//! exits the same way. Two cases take a shared cell with `fetch_add`
//! instead: a guard dropped on another thread (an async publish that
//! migrated while it waited on a full lane), and threads whose slot index
//! is past [`cap::FLIGHT_SLOTS`]. Only the sums matter, so an enter and its
//! exit may be counted in different cells.
//!
//! The enter and `close` form a Dekker pair of `SeqCst` fences:
//!
//! ```text
//!  publisher                          close
//!  entered[slot] += 1                 closed = true
//!  fence(SeqCst)        <--pairs-->   fence(SeqCst)       (in `in_flight`)
//!  if closed: refuse                  sum exited, then sum entered
//!  push into a lane                   wait until equal, then until idle,
//!  exited[slot] += 1 (Release)        close the lanes
//! ```
//!
//! Either the publisher's fence comes first in the single order of `SeqCst`
//! fences, and `close` counts its enter; or `close`'s comes first, and the
//! publisher sees the flag. The flag itself is the bus's, read and written
//! with any ordering: the fences carry the protocol. (Fences rather than
//! `SeqCst` accesses, because the fences are what loom checks exactly; it
//! treats `SeqCst` loads and stores as acquire/release.) The fence is the
//! one locked instruction of a publish. The exit is a `Release` write read
//! with `Acquire`, so once `close` counts a publish as finished it also
//! sees the slot that publish claimed in its lane, and waits for the lane
//! to process it.
//!
//! `in_flight` reads the exits before the enters: a publish that ends
//! between the two reads is seen as still running, never as finished
//! before it began. The loom models in `loom-tests/close.rs` check the
//! whole protocol, both paths, against a ring.
//!
//! # Invariants
//!
//! - A slot's counters are written only by the live thread holding the
//!   slot's index; the shared cell only by `fetch_add`.
//! - A publish that enters and then finds the flag clear is counted by
//!   every `in_flight` call whose fence follows the flag's store, until its
//!   guard drops.
//! - `in_flight` never undercounts: exits are summed before enters.
//! - `finished` counts dropped guards (accepted or refused publishes).

use crossbeam_utils::CachePadded;

use super::sync::{cap, fence, thread_slot, AtomicU64, Ordering};

/// One cell's enter and exit counts.
#[derive(Default)]
struct Counts {
    entered: AtomicU64,
    exited: AtomicU64,
}

/// Publishes in progress (see the module docs).
pub(crate) struct InFlight {
    /// Per thread slot: one writer each.
    slots: Box<[CachePadded<Counts>]>,
    /// Threads without a slot, and guards dropped on another thread.
    shared: CachePadded<Counts>,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            slots: (0..cap::FLIGHT_SLOTS)
                .map(|_| CachePadded::new(Counts::default()))
                .collect(),
            shared: CachePadded::new(Counts::default()),
        }
    }
}

/// Adds one to a counter only the calling thread writes.
#[inline(always)]
fn bump_owned(counter: &AtomicU64, order: Ordering) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(1), order);
}

impl InFlight {
    /// Marks a publish in progress until the guard drops. The caller checks
    /// the closed flag after this returns.
    #[inline]
    pub(crate) fn enter(&self) -> FlightGuard<'_> {
        let slot = thread_slot();
        match self.slots.get(slot) {
            // This thread is the slot's only writer.
            Some(own) => bump_owned(&own.entered, Ordering::Relaxed),
            None => {
                self.shared.entered.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Pairs with the fence in `in_flight`: either close counts this
        // enter, or the caller's flag check sees close's store.
        fence(Ordering::SeqCst);
        FlightGuard(self, slot)
    }

    /// Publishes entered and not yet exited. The caller stores the closed
    /// flag before calling this.
    pub(crate) fn in_flight(&self) -> u64 {
        // Pairs with the fence in `enter`.
        fence(Ordering::SeqCst);
        // Exits first: a publish that exits between the two sums is then
        // seen as still running, never as finished before it entered.
        let exited = self.sum(|c| c.exited.load(Ordering::Acquire));
        let entered = self.sum(|c| c.entered.load(Ordering::Relaxed));
        entered.wrapping_sub(exited)
    }

    /// Publishes that finished (accepted or refused).
    pub(crate) fn finished(&self) -> u64 {
        self.sum(|c| c.exited.load(Ordering::Relaxed))
    }

    fn sum(&self, read: impl Fn(&Counts) -> u64) -> u64 {
        self.slots
            .iter()
            .map(|c| &**c)
            .chain([&*self.shared])
            .fold(0u64, |acc, c| acc.wrapping_add(read(c)))
    }
}

/// Ends a publish on drop (also when a publish future is cancelled): on
/// the slot it entered on when dropped by the thread holding that slot,
/// else on the shared cell.
pub(crate) struct FlightGuard<'a>(&'a InFlight, usize);

impl Drop for FlightGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let flight = self.0;
        // Release: whoever counts this exit (Acquire) sees what the publish
        // did in its lane.
        match flight.slots.get(self.1) {
            // Still (or again) the slot's only writer: slot indices are
            // unique among live threads.
            Some(own) if thread_slot() == self.1 => bump_owned(&own.exited, Ordering::Release),
            _ => {
                flight.shared.exited.fetch_add(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{cap, thread_slot, AtomicU64, InFlight, Ordering};

    #[test]
    fn counts_enters_exits_and_finished() {
        let flight = InFlight::default();
        assert_eq!(flight.in_flight(), 0);
        let a = flight.enter();
        let b = flight.enter();
        assert_eq!(flight.in_flight(), 2);
        drop(a);
        assert_eq!((flight.in_flight(), flight.finished()), (1, 1));
        // A guard dropped on another thread exits on the shared cell.
        std::thread::scope(|s| {
            s.spawn(move || drop(b));
        });
        assert_eq!((flight.in_flight(), flight.finished()), (0, 2));
        // (The test thread itself may be past the slots when other tests
        // hold many threads at once.)
        let own_slot = u64::from(thread_slot() < cap::FLIGHT_SLOTS);
        assert_eq!(flight.shared.exited.load(Ordering::Relaxed), 2 - own_slot);
    }

    #[test]
    fn more_threads_than_slots_balance_out() {
        let flight = InFlight::default();
        let threads = cap::FLIGHT_SLOTS as u64 + 8;
        let started = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let first = flight.enter();
                    // All alive at once, so some threads have no slot.
                    started.fetch_add(1, Ordering::Relaxed);
                    while started.load(Ordering::Relaxed) < threads {
                        std::thread::yield_now();
                    }
                    drop(first);
                    for _ in 0..1000 {
                        let _g = flight.enter();
                    }
                });
            }
        });
        assert_eq!((flight.in_flight(), flight.finished()), (0, threads * 1001));
        let shared = flight.shared.entered.load(Ordering::Relaxed);
        assert!(shared >= 8 * 1001, "{shared} enters on the shared cell");
    }
}
