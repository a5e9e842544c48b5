//! Loom model of the registry's snapshot swap: writers copy on write under
//! the writer lock and publish a new snapshot while a reader loads.

use loom::thread;

use super::model;
use crate::loom_engine::registry::Registry;
use crate::loom_engine::sync::Arc;

/// Two writers increment the same topic's value while a reader loads twice:
/// no update is lost, the reader only ever sees whole snapshots, and what it
/// sees never goes backwards.
#[test]
fn snapshot_swap_while_readers_load() {
    model(|| {
        let reg = Arc::new(Registry::<u64>::new());
        reg.update("other", |_| (Some(100), ()));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let reg = reg.clone();
                thread::spawn(move || {
                    reg.update("t", |v| (Some(v.copied().unwrap_or(0) + 1), ()));
                })
            })
            .collect();
        let first = reg.load();
        let a = first.get("t").copied().unwrap_or(0);
        assert_eq!(
            first.get("other"),
            Some(&100),
            "a snapshot is never partial"
        );
        let b = reg.load().get("t").copied().unwrap_or(0);
        assert!(a <= b && b <= 2, "reads go forward: {a} then {b}");
        // The old snapshot is still intact while held.
        assert_eq!(first.get("t").copied().unwrap_or(0), a);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(reg.load().get("t"), Some(&2), "no lost update");
    });
}
