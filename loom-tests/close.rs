//! Loom models of a publish racing `close`: the in-flight guard
//! (`engine/flight.rs`) against a lane ring, as `Bus::close_within` and
//! `BusInner::route` use them.
//!
//! The publisher enters, checks the closed flag, pushes into the ring (or
//! is refused) and exits. The closer stores the flag, waits until no
//! publish is in flight and the lane has processed everything it accepted,
//! then closes the ring; the worker drains the ring until it ends. The
//! property: a publish that passed the flag check always finds the ring
//! open, so "accepted" (the push succeeded) implies the worker handled the
//! record, and "refused" implies it never saw it. A publish that passed the
//! check and then met a closed ring would be accepted by the bus and lost.
//! The closer's deadline is a bounded number of looks; when it passes,
//! close reports a timeout and only "refused implies never seen" must hold.

use loom::future::block_on;
use loom::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use loom::thread;

use super::model;
use crate::loom_engine::flight::InFlight;
use crate::loom_engine::ring::{Consumer, Ring, TryPushError};
use crate::loom_engine::sync::Arc;

/// How often the closer looks for quiescence before its deadline passes.
const CLOSE_LOOKS: usize = 3;

/// What one publish ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refused at the flag check.
    Refused,
    /// In the lane.
    Accepted,
    /// Passed the flag check, then met a closed lane: the bug.
    Lost,
}

/// The bus's state as the protocol sees it: the flag, the guard and one
/// lane with its worker's processed count.
struct Bus {
    closed: AtomicBool,
    flight: InFlight,
    ring: Arc<Ring<u32>>,
    processed: AtomicU64,
}

impl Bus {
    fn new(capacity: usize) -> (Arc<Self>, Consumer<u32>) {
        let (ring, rx) = Ring::with_capacity(capacity);
        let bus = Arc::new(Bus {
            closed: AtomicBool::new(false),
            flight: InFlight::default(),
            ring,
            processed: AtomicU64::new(0),
        });
        (bus, rx)
    }

    /// `BusInner::route`: enter, check the flag, push (waiting while the
    /// lane is full), exit.
    fn publish(&self, value: u32) -> Outcome {
        let _flight = self.flight.enter();
        if self.closed.load(Ordering::SeqCst) {
            return Outcome::Refused;
        }
        match self.ring.try_push(value) {
            Ok(()) => Outcome::Accepted,
            Err(TryPushError::Closed(_)) => Outcome::Lost,
            Err(TryPushError::Full(v)) => match block_on(self.ring.push(v)) {
                Ok(()) => Outcome::Accepted,
                Err(_) => Outcome::Lost,
            },
        }
    }

    /// `Bus::close_within`: store the flag, wait until nothing is in flight
    /// and the lane is idle, close the lane. The deadline is a number of
    /// looks (loom explores every value each look may read, so an unbounded
    /// wait would never end); `false` means it passed, and close reports a
    /// timeout instead of success.
    fn close(&self) -> bool {
        self.closed.store(true, Ordering::SeqCst);
        let mut quiet = false;
        for _ in 0..CLOSE_LOOKS {
            quiet = self.flight.in_flight() == 0
                && self.processed.load(Ordering::Acquire) == self.ring.claimed();
            if quiet {
                break;
            }
            thread::yield_now();
        }
        self.ring.close();
        quiet
    }
}

/// The lane worker: drains until the ring ends, publishing how far it has
/// processed after each batch (as `dispatch` does).
fn worker(bus: Arc<Bus>, mut rx: Consumer<u32>) -> thread::JoinHandle<Vec<u32>> {
    thread::spawn(move || {
        let mut handled = Vec::new();
        let mut buf = Vec::new();
        while block_on(rx.drain(&mut buf, 4)) {
            handled.append(&mut buf);
            bus.processed.store(rx.position(), Ordering::Release);
        }
        handled
    })
}

/// Checks the outcomes against what the worker handled. After a timed-out
/// close (`quiet` false) a record may be left behind, which close reports;
/// a refused record is still never handled.
fn check(outcomes: &[(u32, Outcome)], handled: &[u32], quiet: bool) {
    for &(value, outcome) in outcomes {
        let seen = handled.contains(&value);
        match outcome {
            Outcome::Refused => assert!(!seen, "{value} refused but handled"),
            _ if !quiet => {}
            Outcome::Accepted => assert!(seen, "{value} accepted but never handled"),
            Outcome::Lost => panic!("{value} accepted into a lane closed as drained"),
        }
    }
    if quiet {
        let accepted = outcomes
            .iter()
            .filter(|(_, o)| *o == Outcome::Accepted)
            .count();
        assert_eq!(handled.len(), accepted, "each accepted record handled once");
    }
}

/// One publish races close on a lane with room, from `publisher_slot`:
/// model thread 1 has its own slot, thread 2 is past the slots (the
/// shared cell); threads spawned before the publisher only idle.
fn one_publish_racing_close(publisher_slot: usize) {
    model(move || {
        let (bus, rx) = Bus::new(1);
        let idlers: Vec<_> = (1..publisher_slot).map(|_| thread::spawn(|| ())).collect();
        let publisher = {
            let bus = bus.clone();
            thread::spawn(move || bus.publish(1))
        };
        let worker = worker(bus.clone(), rx);
        let quiet = bus.close();
        let outcome = publisher.join().unwrap();
        let handled = worker.join().unwrap();
        for idler in idlers {
            idler.join().unwrap();
        }
        check(&[(1, outcome)], &handled, quiet);
        assert_eq!(bus.flight.in_flight(), 0);
        assert_eq!(bus.flight.finished(), 1);
    });
}

/// The publisher enters and exits on its own slot.
#[test]
fn publish_racing_close() {
    one_publish_racing_close(1);
}

/// The publisher has no slot and takes the shared cell.
#[test]
fn publish_without_slot_racing_close() {
    one_publish_racing_close(2);
}

/// Two publishes from one thread (with its own slot) into a lane of one
/// slot race close: the
/// second may wait on the full lane while close waits for it, and close
/// must not give up on it.
#[test]
fn waiting_publish_racing_close() {
    model(|| {
        let (bus, rx) = Bus::new(1);
        let publisher = {
            let bus = bus.clone();
            thread::spawn(move || [(1, bus.publish(1)), (2, bus.publish(2))])
        };
        let worker = worker(bus.clone(), rx);
        let quiet = bus.close();
        let outcomes = publisher.join().unwrap();
        let handled = worker.join().unwrap();
        check(&outcomes, &handled, quiet);
        if outcomes.iter().all(|(_, o)| *o == Outcome::Accepted) {
            assert_eq!(handled, vec![1, 2], "one publisher's order is kept");
        }
    });
}
