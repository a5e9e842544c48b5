//! Loom models of the engine's concurrent core.
//!
//! Compiled into the crate's unit tests only with `--features loom`
//! (`cargo test --features loom`), where `crate::loom_engine` is the ring,
//! registry and in-flight guard source files built on loom's primitives.
//! Each model explores every interleaving of a few threads (with a
//! preemption bound of 3 unless `LOOM_MAX_PREEMPTIONS` says otherwise); loom reports data races on the
//! ring's slots, causality violations (a value read before its write is
//! visible) and deadlocks (a lost wake-up leaves every thread blocked).

mod close;
mod handoff;
mod registry;
mod ring;

/// Runs `f` under loom with the project's default bounds.
fn model<F: Fn() + Sync + Send + 'static>(f: F) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}
