//! The wall clock behind [`Envelope::new`] and [`EventId::now_v7`]: the
//! system time, read through the CPU's time-stamp counter.
//!
//! # Algorithm
//!
//! Reading `SystemTime::now()` costs a `clock_gettime` call (about 35 ns
//! on the project's virtual machines, through the vDSO), and an envelope
//! needs one per construction. Each thread instead keeps an *anchor*: a
//! system time and the monotonic instant at which it was read, the latter
//! from `quanta` (the time-stamp counter scaled by a calibration made once
//! per process, about 0.6 ms at first use; the operating system's
//! monotonic clock where the CPU has no invariant counter). A reading is
//! the anchor's system time plus the monotonic time elapsed since the
//! anchor (about 10 ns). An anchor older than [`REANCHOR`] is replaced by
//! a fresh `SystemTime::now()` reading first, so the clock follows the
//! system clock's adjustments (NTP slewing, steps) within that interval.
//!
//! # Invariants
//!
//! - A reading is at most [`REANCHOR`] of monotonic time away from a real
//!   `SystemTime::now()` reading, and in between advances at the rate of
//!   the calibrated monotonic clock: its error against the system clock is
//!   that rate's error over at most [`REANCHOR`] (microseconds at worst:
//!   NTP slews by at most 500 ppm).
//! - Readings on one thread never go back within one anchor's interval;
//!   across a re-anchoring they can step back by that error, as the system
//!   clock itself may. Event IDs cope ([`EventId::now_v7_at`] keeps a
//!   thread's IDs sorted).
//! - Under Miri the system clock is read directly (no counter access).
//!
//! [`Envelope::new`]: super::Envelope::new
//! [`EventId::now_v7`]: super::EventId::now_v7
//! [`EventId::now_v7_at`]: super::EventId::now_v7_at

use std::cell::Cell;
use std::time::{Duration, SystemTime};

/// Longest a thread extrapolates from one system clock reading.
pub(crate) const REANCHOR: Duration = Duration::from_millis(1);

// Readings add `elapsed.subsec_nanos()`: the interval is under a second.
const _: () = assert!(REANCHOR.as_secs() == 0);

/// A thread's anchor: a monotonic instant, the system time read right
/// after it, and that time's whole milliseconds since the Unix epoch with
/// the nanoseconds past them.
#[derive(Clone, Copy)]
struct Anchor {
    at: quanta::Instant,
    wall: SystemTime,
    millis: u64,
    sub_millis_nanos: u32,
}

thread_local! {
    /// This thread's anchor; `None` before the thread's first reading.
    static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
}

/// The current system time (see the module docs for how it is read)
/// and its whole milliseconds since the Unix
/// epoch (0 before 1970), which a UUIDv7 needs, computed from the anchor
/// without converting the time again.
#[inline]
pub(crate) fn now_with_millis() -> (SystemTime, u64) {
    if cfg!(miri) {
        return anchor(SystemTime::now(), None);
    }
    let tick = quanta::Instant::now();
    ANCHOR.with(|cell| {
        if let Some(a) = cell.get() {
            let elapsed = tick.saturating_duration_since(a.at);
            if elapsed < REANCHOR {
                let nanos = u64::from(a.sub_millis_nanos) + u64::from(elapsed.subsec_nanos());
                return (a.wall + elapsed, a.millis + nanos / 1_000_000);
            }
        }
        anchor(SystemTime::now(), Some((cell, tick)))
    })
}

/// The whole milliseconds of `time` since the Unix epoch (0 before 1970),
/// as a UUIDv7 counts them.
#[inline]
pub(crate) fn unix_millis(time: SystemTime) -> u64 {
    whole_millis(since_epoch(time))
}

/// `time` since the Unix epoch (zero before 1970).
#[inline]
fn since_epoch(time: SystemTime) -> std::time::Duration {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

#[inline]
fn whole_millis(since: std::time::Duration) -> u64 {
    since.as_secs() * 1000 + u64::from(since.subsec_millis())
}

/// `wall` and its Unix milliseconds; stored as the thread's new anchor
/// taken at `tick` when a cell is given.
#[cold]
fn anchor(
    wall: SystemTime,
    store: Option<(&Cell<Option<Anchor>>, quanta::Instant)>,
) -> (SystemTime, u64) {
    let since = since_epoch(wall);
    let millis = whole_millis(since);
    if let Some((cell, at)) = store {
        cell.set(Some(Anchor {
            at,
            wall,
            millis,
            sub_millis_nanos: since.subsec_nanos() % 1_000_000,
        }));
    }
    (wall, millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        now_with_millis().0
    }

    /// How far apart two clocks read one after the other may be here:
    /// generous, since a test thread can be descheduled between them.
    const SLACK: Duration = Duration::from_millis(50);

    fn distance(a: SystemTime, b: SystemTime) -> Duration {
        a.duration_since(b).unwrap_or_else(|e| e.duration())
    }

    #[test]
    fn it_reads_the_system_time() {
        for _ in 0..1_000 {
            let before = SystemTime::now();
            let ours = now();
            let after = SystemTime::now();
            assert!(
                distance(ours, before) <= SLACK && distance(after, ours) <= SLACK,
                "{ours:?} not between {before:?} and {after:?} (within {SLACK:?})"
            );
        }
    }

    #[test]
    fn its_milliseconds_are_those_of_its_time() {
        for _ in 0..100_000 {
            let (time, millis) = now_with_millis();
            let since = time
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970");
            assert_eq!(millis, since.as_millis() as u64);
        }
    }

    #[test]
    fn it_advances_between_anchors_and_follows_the_system_clock_across_them() {
        let first = now();
        std::thread::sleep(REANCHOR * 3);
        let later = now();
        let system = SystemTime::now();
        let gap = later.duration_since(first).expect("time advanced");
        assert!(gap >= REANCHOR * 3, "advanced by {gap:?}");
        assert!(distance(system, later) <= SLACK);
        // Within one anchor: readings never go back.
        let mut last = now();
        for _ in 0..10_000 {
            let t = now();
            if t < last {
                // Only a re-anchoring may step back, and only a little.
                assert!(distance(last, t) <= Duration::from_millis(1));
            }
            last = t;
        }
    }
}
