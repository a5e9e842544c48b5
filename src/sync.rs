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
//! Besides the model-checked `Arc`, both shims export [`DataArc`](std_impl::DataArc)
//! and [`DataWeak`](std_impl::DataWeak), which are `std`'s `Arc` and `Weak`
//! under loom too. The engine uses them for immutable data it hands to the
//! rest of the crate and to users (topic names, envelopes, handlers, a
//! subscription's core, the dead-letter sink): their reference counts are
//! not part of any protocol the models check, and the types appear in the
//! public API (`Message::topic`), which is built on `std`. Everything that
//! synchronises — an atomic, a slot, a ring's `Arc`, a lock, a snapshot, a
//! spin-wait — comes from the shim's loom-checked names.
//!
//! Thread-local storage (`thread_local!` with `Cell`/`RefCell`, as the
//! reader's per-thread snapshot cache uses) is not shared memory and stays
//! on `std`.
//!
//! # Invariants
//!
//! - No engine source file (`src/engine/*.rs`; its `tests.rs` aside, which
//!   observes the engine from outside) names `std::sync`, `core::sync`, an
//!   `UnsafeCell` of `std`/`core`, `parking_lot`, `futures_util::task`,
//!   `arc_swap` or crossbeam's `Backoff` in code. The unit test at the end of
//!   this file checks it on every `cargo test`.
//! - Both shims export the same names with the same signatures, so one
//!   engine source compiles against either.

/// The shim on `std` (every normal build).
pub(crate) mod std_impl {
    pub(crate) use std::cell::UnsafeCell as StdUnsafeCell;
    pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
    pub(crate) use std::sync::Arc;

    /// `std`'s `Arc` for immutable data loom need not model (see the module
    /// docs); the same type in both shims.
    pub(crate) use std::sync::Arc as DataArc;
    /// `std`'s `LazyLock`, for process-wide data loom need not model (the
    /// envelope pool, the ring's CPU feature check).
    pub(crate) use std::sync::LazyLock as DataLazy;
    /// `std`'s `Weak`, the companion of [`DataArc`] (the dead-letter sink).
    #[allow(unused_imports)] // until `dispatch.rs` switches over from `std`
    pub(crate) use std::sync::Weak as DataWeak;

    /// Exponential backoff for a lost CAS race: crossbeam's.
    pub(crate) use crossbeam_utils::Backoff;

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

    /// This thread's slot: an index no other live thread holds, for
    /// counters with one writer per slot. Taken from a process-wide pool
    /// when the thread first asks, given back when it exits (through the
    /// pool's lock, so the next holder of the index sees every write of the
    /// last). `usize::MAX` while the thread's storage is being torn down.
    #[inline]
    pub(crate) fn thread_slot() -> usize {
        slot_pool::LEASE.try_with(|l| l.0).unwrap_or(usize::MAX)
    }

    mod slot_pool {
        /// The next never-used index and the given-back ones.
        static POOL: std::sync::Mutex<(usize, Vec<usize>)> = std::sync::Mutex::new((0, Vec::new()));

        fn pool() -> std::sync::MutexGuard<'static, (usize, Vec<usize>)> {
            // The pool's data stays consistent across a panic (plain pushes
            // and pops), so a poisoned lock is still usable.
            POOL.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// A thread's hold on its index.
        pub(super) struct Lease(pub(super) usize);

        impl Lease {
            fn take() -> Self {
                let mut pool = pool();
                let index = match pool.1.pop() {
                    Some(i) => i,
                    None => {
                        pool.0 += 1;
                        pool.0 - 1
                    }
                };
                Lease(index)
            }
        }

        impl Drop for Lease {
            fn drop(&mut self) {
                pool().1.push(self.0);
            }
        }

        thread_local! {
            pub(super) static LEASE: Lease = Lease::take();
        }
    }

    /// Capacities of a normal build.
    pub(crate) mod cap {
        /// Thread slots of the in-flight counters; threads beyond them
        /// share one locked cell.
        pub(crate) const FLIGHT_SLOTS: usize = 32;
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

    /// `std`'s `Arc` for immutable data loom need not model (see the module
    /// docs); the same type in both shims. The loom copy of the engine has
    /// no such data yet, hence the `allow`s.
    #[allow(unused_imports)]
    pub(crate) use std::sync::Arc as DataArc;
    /// `std`'s `LazyLock`, as in the `std` shim (the ring's CPU feature
    /// check, which the loom copy compiles but never calls).
    #[allow(unused_imports)]
    pub(crate) use std::sync::LazyLock as DataLazy;
    /// `std`'s `Weak`, the companion of [`DataArc`].
    #[allow(unused_imports)]
    pub(crate) use std::sync::Weak as DataWeak;

    /// Backoff for a lost CAS race. crossbeam's spins without yielding,
    /// which loom cannot schedule around (the thread that would let the
    /// spinner progress never runs), so under loom every step yields.
    #[derive(Debug, Default)]
    pub(crate) struct Backoff(());

    impl Backoff {
        pub(crate) fn new() -> Self {
            Self(())
        }

        pub(crate) fn spin(&self) {
            loom::thread::yield_now();
        }
    }

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

    /// The model thread's index: loom numbers its threads from 0 in spawn
    /// order, the same in every execution, and never reuses a number
    /// within one, so the index is unique among live threads.
    pub(crate) fn thread_slot() -> usize {
        let id = format!("{:?}", loom::thread::current().id());
        id.bytes()
            .filter(u8::is_ascii_digit)
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'))
    }

    /// Capacities shrink under loom so models stay small enough to explore.
    pub(crate) mod cap {
        /// Thread slots of the in-flight counters: model threads 0 and 1
        /// own one, later threads take the shared path.
        pub(crate) const FLIGHT_SLOTS: usize = 2;
        /// Smallest ring capacity (rounded up to a power of two).
        pub(crate) const MIN_RING: usize = 1;
        /// No yielding under loom: the models check the wait path itself.
        pub(crate) const PUSH_YIELDS: u32 = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// What engine code must not name (outside comments).
    const FORBIDDEN: &[&str] = &[
        "std::sync",
        "core::sync",
        "std::cell::UnsafeCell",
        "core::cell",
        "parking_lot",
        "futures_util::task",
        "arc_swap",
        "crossbeam_utils::Backoff",
        "loom::",
    ];

    /// The forbidden paths `source` names in code (comment lines skipped).
    fn violations(source: &str) -> Vec<String> {
        source
            .lines()
            .map(str::trim_start)
            .filter(|l| !l.starts_with("//"))
            .flat_map(|l| {
                FORBIDDEN
                    .iter()
                    .filter(move |f| l.contains(*f))
                    .map(move |f| format!("{f} in `{l}`"))
            })
            .collect()
    }

    #[test]
    fn engine_sources_take_sync_types_from_the_shim() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("src/engine is readable") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("engine source is readable");
            let found = violations(&source);
            assert!(found.is_empty(), "{name} bypasses the shim: {found:?}");
            checked += 1;
        }
        assert!(checked >= 6, "only {checked} engine files checked");
    }

    #[test]
    fn the_check_sees_a_direct_import() {
        assert_eq!(
            violations("use std::sync::Arc;\n// std::sync in a comment\n").len(),
            1
        );
        assert!(violations("use super::sync::{Arc, DataArc};").is_empty());
    }
}
