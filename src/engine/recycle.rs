//! Recycled envelope allocations: the shared `Arc<Envelope>` of an
//! in-process envelope publish, reused instead of freed and allocated
//! again.
//!
//! # Algorithm
//!
//! An envelope published in process is moved into one heap allocation
//! (`Arc<Envelope>`) that every subscription of the fan-out shares. The
//! publisher allocates it and a lane worker, usually on another thread,
//! frees it. With the system allocator (glibc) a free from another thread
//! takes the owning arena's lock, which the allocating thread holds in
//! turn: under load both sides end up in futex calls (the bench tool's
//! keyed row showed them as the largest kernel cost).
//!
//! Instead, the worker that drops the last reference to a handled
//! envelope ([`recycle`]) empties its payload and headers (so a pooled
//! allocation holds no user buffer) and pushes the allocation onto one
//! bounded lock-free queue (crossbeam's `ArrayQueue`, [`POOL_CAPACITY`]
//! slots, process-wide). The next in-process envelope publish ([`share`])
//! pops one and moves the new envelope into it; only when the pool is
//! empty does it allocate. When the pool is full the allocation is simply
//! freed. No `unsafe`: `Arc::get_mut` proves the reference is the only
//! one before the allocation is reused.
//!
//! # Invariants
//!
//! - An allocation is pooled only while nothing else refers to it (strong
//!   count 1, no weak references), so a pooled `Arc` is never observed by
//!   anyone else; a handler that keeps its `Arc<Envelope>` simply makes the
//!   worker skip the pool.
//! - A pooled envelope holds no payload or headers (bounded memory: at
//!   most [`POOL_CAPACITY`] envelope-sized allocations, plus any long IDs
//!   stored on the heap, which are freed when the slot is reused).

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;

use super::sync::{DataArc, DataLazy};
use crate::Envelope;

/// Allocations kept for reuse: a default subscription's lanes full of
/// envelopes (8 lanes × 1,024 slots), so that a burst drained by the
/// workers while the publisher waits is reused rather than freed (about
/// 2 MiB at most, for the life of the process).
pub(crate) const POOL_CAPACITY: usize = 8192;

static POOL: DataLazy<ArrayQueue<DataArc<Envelope>>> =
    DataLazy::new(|| ArrayQueue::new(POOL_CAPACITY));

/// `envelope` in a shared allocation, reusing a pooled one when there is
/// one.
#[inline]
pub(crate) fn share(envelope: Envelope) -> DataArc<Envelope> {
    if let Some(mut spent) = POOL.pop() {
        if let Some(slot) = DataArc::get_mut(&mut spent) {
            *slot = envelope;
            return spent;
        }
    }
    DataArc::new(envelope)
}

/// Returns a handled envelope's allocation to the pool when this is its
/// last reference; otherwise just drops the reference.
#[inline]
pub(crate) fn recycle(mut shared: DataArc<Envelope>) {
    if let Some(envelope) = DataArc::get_mut(&mut shared) {
        envelope.payload = Bytes::new();
        if !envelope.headers.is_empty() {
            envelope.headers = crate::Headers::new();
        }
        // Full: the allocation is freed here.
        let _ = POOL.push(shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_allocation_is_reused_and_holds_no_payload() {
        let payload = Bytes::from(vec![7u8; 64]);
        let first = share(Envelope::new("a", "T", 1, payload.clone()).with_header("h", "v"));
        let ptr = DataArc::as_ptr(&first);
        recycle(first);
        // Other tests may race on the process-wide pool: look for ours.
        let mut found = false;
        let mut taken = Vec::new();
        while let Some(spent) = POOL.pop() {
            if DataArc::as_ptr(&spent) == ptr {
                assert!(spent.payload.is_empty(), "no user buffer is kept");
                assert!(spent.headers.is_empty());
                found = true;
            }
            taken.push(spent);
        }
        assert!(found, "the allocation went to the pool");
        // The payload's buffer is no longer shared with the pool.
        assert!(payload.is_unique());
        for spent in taken {
            let _ = POOL.push(spent);
        }
        let again = share(Envelope::new("b", "U", 2, "x"));
        assert_eq!(again.aggregate_id, "b");
        assert_eq!(again.payload, "x");
    }

    #[test]
    fn a_shared_reference_is_never_pooled() {
        let env = share(Envelope::new("a", "T", 1, "p"));
        let kept = env.clone();
        let ptr = DataArc::as_ptr(&env);
        recycle(env);
        let mut taken = Vec::new();
        while let Some(spent) = POOL.pop() {
            assert_ne!(
                DataArc::as_ptr(&spent),
                ptr,
                "a live envelope is not reused"
            );
            taken.push(spent);
        }
        for spent in taken {
            let _ = POOL.push(spent);
        }
        assert_eq!(kept.payload, "p", "the handler's copy is untouched");
    }
}
