//! The loom shim: the one place the engine takes its synchronisation
//! primitives from.
//!
//! Engine code (`src/engine/`) imports atomics, `Arc`, `UnsafeCell`,
//! `Mutex`, `AtomicWaker` and the registry's snapshot cell only through its
//! `super::sync` alias. The normal engine (`crate::engine`) binds that alias
//! to [`std_impl`]: `std`, `parking_lot`, `futures-util` and `arc-swap`.
//! With `--features loom` the crate compiles a second copy of the engine's
//! concurrent core (`crate::loom_engine`: the ring and the registry, from
//! the very same source files) whose alias is [`loom_impl`]: loom's
//! model-checked types, with capacities shrunk (see each `cap` module). The
//! loom models in `loom-tests/` drive that copy, so they explore every
//! interleaving of the real engine code, while the rest of the crate, its
//! tests and its doctests keep running on `std` — the feature adds code and
//! changes nothing in a normal build.
//!
//! Invariant: no file under `src/engine/` names `std::sync`, `core::cell`,
//! `parking_lot`, `futures_util::task` or `arc_swap` directly.

/// The shim on `std` (every normal build).
pub(crate) mod std_impl {
    pub(crate) use std::cell::UnsafeCell as StdUnsafeCell;
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
    pub(crate) use std::sync::Arc;

    /// Single-waker slot (`futures-util`'s), with loom's method names.
    #[derive(Debug, Default)]
    pub(crate) struct AtomicWaker(futures_util::task::AtomicWaker);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            Self(futures_util::task::AtomicWaker::new())
        }

        #[inline]
        pub(crate) fn register_by_ref(&self, waker: &std::task::Waker) {
            self.0.register(waker)
        }

        #[inline]
        pub(crate) fn wake(&self) {
            self.0.wake()
        }
    }

    /// `UnsafeCell` with loom's closure-based access API, so ring code reads
    /// the same under loom and without it.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(StdUnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(StdUnsafeCell::new(value))
        }

        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Cold-path lock: `parking_lot::Mutex` normally.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(parking_lot::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// An atomically swappable `Arc<T>` snapshot: `arc_swap::ArcSwap`.
    ///
    /// `load` is wait-free for readers and never blocks writers.
    pub(crate) struct SnapshotCell<T>(arc_swap::ArcSwap<T>);

    /// A loaded snapshot, valid for as long as the guard lives.
    pub(crate) type SnapshotGuard<T> = arc_swap::Guard<Arc<T>>;

    impl<T> SnapshotCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self(arc_swap::ArcSwap::new(value))
        }

        #[inline]
        pub(crate) fn load(&self) -> SnapshotGuard<T> {
            self.0.load()
        }

        pub(crate) fn load_full(&self) -> Arc<T> {
            self.0.load_full()
        }

        pub(crate) fn store(&self, value: Arc<T>) {
            self.0.store(value)
        }
    }

    /// Busy-wait hint for a loop that waits on another thread's progress.
    #[inline(always)]
    pub(crate) fn spin_hint() {
        std::hint::spin_loop();
    }

    /// Capacities of a normal build.
    pub(crate) mod cap {
        /// Smallest ring capacity (rounded up to a power of two).
        pub(crate) const MIN_RING: usize = 2;
        /// Scheduler turns a push on a full ring yields before it waits.
        pub(crate) const PUSH_YIELDS: u32 = 4;
    }
}

/// The shim on loom (only with `--features loom`).
#[cfg(feature = "loom")]
pub(crate) mod loom_impl {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::future::AtomicWaker;
    pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
    pub(crate) use loom::sync::Arc;

    /// Cold-path lock: loom's mutex.
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Self(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }
    }

    /// Loom-checkable stand-in for `ArcSwap`: a pointer-sized cell behind
    /// loom's `RwLock`, so loom sees every load and swap as a
    /// synchronisation point with the same happens-before edges arc-swap
    /// promises (a load sees a complete, published snapshot).
    pub(crate) struct SnapshotCell<T>(loom::sync::RwLock<Arc<T>>);

    /// A loaded snapshot (an owned `Arc` under loom).
    pub(crate) type SnapshotGuard<T> = Arc<T>;

    impl<T> SnapshotCell<T> {
        pub(crate) fn new(value: Arc<T>) -> Self {
            Self(loom::sync::RwLock::new(value))
        }

        pub(crate) fn load(&self) -> SnapshotGuard<T> {
            self.0.read().expect("loom rwlock poisoned").clone()
        }

        pub(crate) fn load_full(&self) -> Arc<T> {
            self.load()
        }

        pub(crate) fn store(&self, value: Arc<T>) {
            *self.0.write().expect("loom rwlock poisoned") = value;
        }
    }

    /// Under loom a spinning thread must yield, or the model never lets the
    /// thread it waits for run.
    pub(crate) fn spin_hint() {
        loom::thread::yield_now();
    }

    /// Capacities shrink under loom so models stay small enough to explore.
    pub(crate) mod cap {
        /// Smallest ring capacity (rounded up to a power of two).
        pub(crate) const MIN_RING: usize = 1;
        /// No yielding under loom: the models check the wait path itself.
        pub(crate) const PUSH_YIELDS: u32 = 0;
    }
}
