//! Bounded lock-free MPSC ring with async wake-up and async back-pressure.
//!
//! # Algorithm
//!
//! A power-of-two array of slots, each with a *stamp*, after Dmitry Vyukov's
//! bounded MPMC queue (the design crossbeam's `ArrayQueue` also follows),
//! specialised to one consumer. Positions are `u64` and never wrap in
//! practice (2^62 messages). A slot's stamp is `pos << 2 | state`:
//!
//! | stamp                 | meaning                                         |
//! |-----------------------|-------------------------------------------------|
//! | `pos << 2 \| FREE`     | empty, may be claimed by the producer of `pos`  |
//! | `pos << 2 \| READY`    | holds the value published at `pos`              |
//! | `pos << 2 \| TOMB`     | `pos` was reserved then cancelled: skip it      |
//!
//! Producers claim a position with one CAS on `tail`, write the value, then
//! publish it with a `Release` store of the stamp. The single consumer reads
//! a `READY` stamp with `Acquire`, moves the value out and frees the slot for
//! the next lap (`(pos + cap) << 2 | FREE`).
//!
//! The low two bits of `tail` carry flags so that one CAS decides everything
//! a producer needs: `CLOSED` (no claim succeeds after it) and `PARKED` (the
//! consumer is asleep; the producer that clears it wakes the consumer). The
//! consumer only sets `PARKED` by a CAS from a tail equal to its own head, so
//! a wake-up can never be lost, and producers pay no fence and no wake call
//! while the consumer is awake.
//!
//! Producers that find the ring full register in a cold-path wait list; the
//! consumer checks an `armed` flag after each drained batch (a Dekker pair
//! of `SeqCst` fences with the producer's re-check) and wakes them.
//!
//! # Invariants
//!
//! - `head <= tail_pos <= head + cap`; every position below `tail_pos` is
//!   claimed by exactly one producer, and is consumed exactly once.
//! - A value is read only after its `READY` stamp is observed (`Acquire`
//!   pairs with the producer's `Release`); a slot is written only after its
//!   `FREE` stamp for that position is observed (pairs with the consumer's
//!   `Release`).
//! - After `close`, no claim succeeds; the consumer still drains everything
//!   claimed before it and then sees the end of the stream.
//!
//! This file also holds the crate's one `unsafe` outside the ring:
//! [`prefetch_for_write`], a cache hint the envelope pool
//! (`engine::recycle`) gives for the allocation its next publish reuses.

use std::fmt;
use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crossbeam_utils::CachePadded;

use super::sync::{
    fence, spin_hint, Arc, AtomicBool, AtomicU64, AtomicWaker, Backoff, DataLazy, Mutex, Ordering,
    UnsafeCell,
};

const FREE: u64 = 0;
const READY: u64 = 1;
const TOMB: u64 = 2;

/// `tail` flag: the ring is closed to producers.
const CLOSED: u64 = 0b01;
/// `tail` flag: the consumer is parked and must be woken by the next claim.
const PARKED: u64 = 0b10;

/// Asks the CPU to bring the cache lines of `len` bytes from `start` into
/// this core's cache, ready to be written (`prefetchw`, where the CPU has
/// it: a line fetched for reading must then be fetched again for
/// ownership). A hint only: it neither reads nor writes memory as the
/// program sees it, never faults (any address will do), and is a no-op
/// off x86-64 and under Miri.
///
/// Inline assembly rather than `_mm_prefetch::<_MM_HINT_ET0>`: without the
/// `prfchw` target feature at compile time (not in the default x86-64
/// target) the intrinsic compiles to a plain read prefetch.
#[inline(always)]
#[cfg_attr(feature = "loom", allow(dead_code))] // the loom copy has no pool
pub(crate) fn prefetch_for_write(start: *const u8, len: usize) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        let write = has_prefetchw();
        let mut line = start;
        let end = start.wrapping_add(len);
        while line < end {
            if write {
                // SAFETY: a prefetch is a hint that cannot fault or change
                // memory, and the CPU was checked to have the instruction.
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{0}]",
                        in(reg) line,
                        options(nostack, preserves_flags, readonly)
                    )
                };
            } else {
                // SAFETY: as above (SSE prefetches are in every x86-64).
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.cast(),
                    )
                };
            }
            line = line.wrapping_add(64);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    let _ = (start, len);
}

/// Whether the CPU has `prefetchw` (CPUID `80000001h`, ECX bit 8), asked
/// once.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[cfg_attr(feature = "loom", allow(dead_code))]
fn has_prefetchw() -> bool {
    static HAS: DataLazy<bool> =
        DataLazy::new(|| std::arch::x86_64::__cpuid(0x8000_0001).ecx & (1 << 8) != 0);
    *HAS
}

#[inline(always)]
fn pos_of(tail: u64) -> u64 {
    tail >> 2
}

/// Why a non-blocking push failed; the value is handed back.
#[derive(PartialEq, Eq)]
pub(crate) enum TryPushError<T> {
    /// The ring holds `capacity` values the consumer has not taken yet.
    Full(T),
    /// The ring was closed.
    Closed(T),
}

impl<T> fmt::Debug for TryPushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    Full,
    Closed,
}

/// One slot. Cache-line aligned: a lane record (56 bytes with its stamp)
/// fills exactly one line, so a producer writing slot `i + 1` never
/// invalidates the line the consumer is reading slot `i` from.
#[repr(align(64))]
struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// The shared ring. Producers use it through `&Ring`; the one consumer
/// through the unique [`Consumer`] handle.
pub(crate) struct Ring<T> {
    tail: CachePadded<AtomicU64>,
    /// Consumer position, published for `len()`; only the consumer writes.
    head: CachePadded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mask: u64,
    consumer: AtomicWaker,
    producers: Waiters,
}

// SAFETY: values of `T` move between threads through the slots (so `T: Send`
// is required) and are never shared by reference, so `T: Sync` is not.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; all shared state is atomics, the wait-list mutex, and
// slots whose access is serialised by the stamp protocol.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    /// A ring holding at least `capacity` values (rounded up to a power of
    /// two, at least [`super::sync::cap::MIN_RING`]), and its one consumer.
    pub(crate) fn with_capacity(capacity: usize) -> (Arc<Self>, Consumer<T>) {
        let cap = capacity.max(super::sync::cap::MIN_RING).next_power_of_two() as u64;
        let slots = (0..cap)
            .map(|i| Slot {
                stamp: AtomicU64::new(i << 2 | FREE),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        let ring = Arc::new(Ring {
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            slots,
            mask: cap - 1,
            consumer: AtomicWaker::new(),
            producers: Waiters::new(),
        });
        let consumer = Consumer {
            ring: ring.clone(),
            head: 0,
        };
        (ring, consumer)
    }

    /// Number of slots.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn capacity(&self) -> usize {
        (self.mask + 1) as usize
    }

    /// Positions claimed so far (accepted values, including cancelled
    /// reservations).
    pub(crate) fn claimed(&self) -> u64 {
        pos_of(self.tail.load(Ordering::Acquire))
    }

    /// Values claimed but not yet taken by the consumer (a snapshot).
    pub(crate) fn len(&self) -> usize {
        let head = self.head.load(Ordering::Acquire);
        self.claimed().saturating_sub(head) as usize
    }

    /// True once [`close`](Self::close) ran.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_closed(&self) -> bool {
        self.tail.load(Ordering::Acquire) & CLOSED != 0
    }

    #[inline(always)]
    fn slot(&self, pos: u64) -> &Slot<T> {
        &self.slots[(pos & self.mask) as usize]
    }

    /// Claims the next position without writing it. The returned
    /// [`Reservation`] must be written or dropped (a dropped one becomes a
    /// tombstone the consumer skips).
    pub(crate) fn try_reserve(&self) -> Result<Reservation<'_, T>, ReserveError> {
        let backoff = Backoff::new();
        let mut cur = self.tail.load(Ordering::Relaxed);
        loop {
            if cur & CLOSED != 0 {
                return Err(ReserveError::Closed);
            }
            let pos = pos_of(cur);
            let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
            if stamp == pos << 2 | FREE {
                let next = (pos + 1) << 2;
                match self.tail.compare_exchange_weak(
                    cur,
                    next,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        return Ok(Reservation {
                            ring: self,
                            pos,
                            wake: cur & PARKED != 0,
                        })
                    }
                    Err(actual) => {
                        // Lost the race to another producer: back off a
                        // little so that contended producers spread out.
                        backoff.spin();
                        cur = actual;
                    }
                }
            } else if stamp < pos << 2 {
                // The slot still holds (or is about to hold) the value of the
                // previous lap: full, unless `tail` moved meanwhile.
                let now = self.tail.load(Ordering::Acquire);
                if now == cur {
                    return Err(ReserveError::Full);
                }
                cur = now;
            } else {
                // Another producer claimed `pos` already; our `cur` is stale.
                spin_hint();
                cur = self.tail.load(Ordering::Acquire);
            }
        }
    }

    /// Pushes `value` if there is room, without waiting.
    #[inline]
    pub(crate) fn try_push(&self, value: T) -> Result<(), TryPushError<T>> {
        match self.try_reserve() {
            Ok(r) => {
                r.write(value);
                Ok(())
            }
            Err(ReserveError::Full) => Err(TryPushError::Full(value)),
            Err(ReserveError::Closed) => Err(TryPushError::Closed(value)),
        }
    }

    /// Pushes `value`, waiting while the ring is full. Resolves to
    /// `Err(value)` if the ring is closed before there is room.
    pub(crate) fn push(&self, value: T) -> Push<'_, T> {
        Push {
            ring: self,
            value: Some(value),
            waiter: None,
            yields: 0,
        }
    }

    /// Closes the ring: later claims fail; the consumer drains what was
    /// claimed before and then sees the end. Idempotent.
    pub(crate) fn close(&self) {
        let prev = self.tail.fetch_or(CLOSED, Ordering::AcqRel);
        if prev & PARKED != 0 {
            self.consumer.wake();
        }
        self.producers.wake_all();
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let head = self.head.load(Ordering::Relaxed);
        let tail = pos_of(self.tail.load(Ordering::Relaxed));
        for pos in head..tail {
            let slot = self.slot(pos);
            if slot.stamp.load(Ordering::Relaxed) == pos << 2 | READY {
                // SAFETY: `&mut self` means no producer or consumer is left; a
                // READY stamp for `pos` means the slot holds an initialised
                // value nobody has moved out.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

/// A claimed, not yet written position. Write it with [`write`](Self::write);
/// dropping it publishes a tombstone instead.
pub(crate) struct Reservation<'a, T> {
    ring: &'a Ring<T>,
    pos: u64,
    wake: bool,
}

impl<T> Reservation<'_, T> {
    /// Writes the value and publishes it to the consumer.
    #[inline]
    pub(crate) fn write(self, value: T) {
        let this = std::mem::ManuallyDrop::new(self);
        let slot = this.ring.slot(this.pos);
        // SAFETY: the successful CAS on `tail` gave this reservation sole
        // ownership of `pos`, and the FREE stamp it observed (Acquire) shows
        // the consumer has moved the previous lap's value out.
        slot.value.with_mut(|p| unsafe { (*p).write(value) });
        slot.stamp.store(this.pos << 2 | READY, Ordering::Release);
        if this.wake {
            this.ring.consumer.wake();
        }
    }
}

impl<T> Drop for Reservation<'_, T> {
    fn drop(&mut self) {
        self.ring
            .slot(self.pos)
            .stamp
            .store(self.pos << 2 | TOMB, Ordering::Release);
        if self.wake {
            self.ring.consumer.wake();
        }
    }
}

/// Future returned by [`Ring::push`].
pub(crate) struct Push<'a, T> {
    ring: &'a Ring<T>,
    value: Option<T>,
    waiter: Option<usize>,
    /// Times this push yielded on a full ring before registering as a
    /// waiter (see [`cap::PUSH_YIELDS`](super::sync::cap::PUSH_YIELDS)).
    yields: u32,
}

impl<T> Unpin for Push<'_, T> {}

impl<T> Future for Push<'_, T> {
    type Output = Result<(), T>;

    // `PUSH_YIELDS` is 0 in the loom copy, where the comparison is constant.
    #[allow(clippy::absurd_extreme_comparisons)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut registered = false;
        loop {
            let value = this.value.take().expect("Push polled after completion");
            match this.ring.try_push(value) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TryPushError::Closed(v)) => return Poll::Ready(Err(v)),
                Err(TryPushError::Full(v)) => {
                    this.value = Some(v);
                    if registered {
                        return Poll::Pending;
                    }
                    // The consumer is usually mid-batch: give it a few
                    // scheduler turns before paying for a wait-list entry
                    // and a cross-thread wake-up.
                    if this.yields < super::sync::cap::PUSH_YIELDS {
                        this.yields += 1;
                        spin_hint();
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    let key = *this
                        .waiter
                        .get_or_insert_with(|| this.ring.producers.alloc());
                    this.ring.producers.register(key, cx.waker());
                    // Pairs with the fence in `Consumer::release_space`: either
                    // the consumer sees `armed`, or the retry sees the room.
                    fence(Ordering::SeqCst);
                    registered = true;
                }
            }
        }
    }
}

impl<T> Drop for Push<'_, T> {
    fn drop(&mut self) {
        if let Some(key) = self.waiter.take() {
            self.ring.producers.free(key);
        }
    }
}

/// The unique consumer side of a [`Ring`].
pub(crate) struct Consumer<T> {
    ring: Arc<Ring<T>>,
    /// Next position to take; mirrors `ring.head`.
    head: u64,
}

impl<T> Consumer<T> {
    /// Next position the consumer will take (positions below it are
    /// consumed, tombstones included).
    pub(crate) fn position(&self) -> u64 {
        self.head
    }

    /// Moves ready values into `buf` and skips tombstones, up to `max`
    /// positions. Returns how many positions it advanced (values plus
    /// tombstones); frees their slots.
    pub(crate) fn try_drain(&mut self, buf: &mut Vec<T>, max: usize) -> usize {
        let ring = &*self.ring;
        let start = self.head;
        let mut head = start;
        while ((head - start) as usize) < max {
            let slot = ring.slot(head);
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == head << 2 | READY {
                // SAFETY: the READY stamp (Acquire) shows the producer's write
                // of this position is complete, and only this unique
                // consumer moves values out.
                let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
                buf.push(value);
            } else if stamp != head << 2 | TOMB {
                break;
            }
            slot.stamp
                .store((head + ring.mask + 1) << 2 | FREE, Ordering::Release);
            head += 1;
        }
        if head != start {
            self.head = head;
            ring.head.store(head, Ordering::Release);
            self.release_space();
        }
        (head - start) as usize
    }

    /// Wakes producers waiting for room, if any.
    fn release_space(&self) {
        // Pairs with the fence in `Push::poll`.
        fence(Ordering::SeqCst);
        if self.ring.producers.armed.load(Ordering::Relaxed) {
            self.ring.producers.wake_all();
        }
    }

    /// Polls for up to `max` positions. `Ready(true)`: the consumer
    /// advanced (values were appended to `buf`, or only tombstones were
    /// skipped). `Ready(false)`: the ring is closed and fully drained.
    pub(crate) fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<T>,
        max: usize,
    ) -> Poll<bool> {
        if self.try_drain(buf, max) > 0 {
            return Poll::Ready(true);
        }
        self.ring.consumer.register_by_ref(cx.waker());
        let tail = &self.ring.tail;
        let mut cur = tail.load(Ordering::Acquire);
        loop {
            if pos_of(cur) != self.head {
                // Claimed positions exist: they may have been written (or
                // cancelled) since the first look.
                if self.try_drain(buf, max) > 0 {
                    return Poll::Ready(true);
                }
                // A producer is between its claim and its write: yield.
                spin_hint();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if cur & CLOSED != 0 {
                return Poll::Ready(false);
            }
            if cur & PARKED != 0 {
                return Poll::Pending;
            }
            match tail.compare_exchange_weak(cur, cur | PARKED, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Poll::Pending,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Waits until it can advance by up to `max` positions (see
    /// [`poll_drain`](Self::poll_drain)); `false` means closed and drained.
    pub(crate) async fn drain(&mut self, buf: &mut Vec<T>, max: usize) -> bool {
        std::future::poll_fn(|cx| self.poll_drain(cx, buf, max)).await
    }
}

/// Cold-path wait list of producers blocked on a full ring.
struct Waiters {
    /// True while some producer waits; read by the consumer after a fence.
    armed: AtomicBool,
    list: Mutex<WaitList>,
}

#[derive(Default)]
struct WaitList {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Waiters {
    fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            list: Mutex::new(WaitList::default()),
        }
    }

    fn alloc(&self) -> usize {
        let mut list = self.list.lock();
        match list.free.pop() {
            Some(key) => key,
            None => {
                list.slots.push(None);
                list.slots.len() - 1
            }
        }
    }

    fn register(&self, key: usize, waker: &Waker) {
        let mut list = self.list.lock();
        match &mut list.slots[key] {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        self.armed.store(true, Ordering::Relaxed);
    }

    fn free(&self, key: usize) {
        let mut list = self.list.lock();
        list.slots[key] = None;
        list.free.push(key);
    }

    fn wake_all(&self) {
        let wakers: Vec<Waker> = {
            let mut list = self.list.lock();
            self.armed.store(false, Ordering::Relaxed);
            list.slots.iter_mut().filter_map(Option::take).collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}
