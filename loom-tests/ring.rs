//! Loom models of the bounded MPSC ring: concurrent push and pop, a full
//! ring and back-pressure, close while pushing, and no lost wake-up of the
//! consumer or of a waiting producer.

use loom::future::block_on;
use loom::thread;

use super::model;
use crate::loom_engine::ring::{Ring, TryPushError};
use crate::loom_engine::sync::Arc;

/// Two producers push concurrently; the consumer, parking whenever the ring
/// is empty, receives each value exactly once. A lost consumer wake-up would
/// leave it parked forever (loom reports the deadlock).
#[test]
fn two_producers_one_parking_consumer() {
    model(|| {
        let (ring, mut rx) = Ring::<u32>::with_capacity(2);
        let producers: Vec<_> = [1u32, 2]
            .into_iter()
            .map(|v| {
                let ring = ring.clone();
                thread::spawn(move || ring.try_push(v).expect("room for both"))
            })
            .collect();
        let mut got = Vec::new();
        while got.len() < 2 {
            assert!(block_on(rx.drain(&mut got, 2)), "ring is not closed");
        }
        for p in producers {
            p.join().unwrap();
        }
        got.sort();
        assert_eq!(got, vec![1, 2]);
        assert_eq!(ring.len(), 0);
    });
}

/// A ring of one slot: the producer's second push must wait for the
/// consumer to take the first, and be woken when it does.
#[test]
fn full_ring_back_pressure_wakes_the_producer() {
    model(|| {
        let (ring, mut rx) = Ring::<u32>::with_capacity(1);
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                block_on(ring.push(1)).unwrap();
                block_on(ring.push(2)).unwrap();
            })
        };
        let mut got = Vec::new();
        while got.len() < 2 {
            assert!(block_on(rx.drain(&mut got, 1)));
        }
        producer.join().unwrap();
        assert_eq!(got, vec![1, 2], "one producer's order is kept");
    });
}

/// `try_push` on a full ring hands the value back; after the consumer takes
/// one, there is room again.
#[test]
fn try_push_full_hands_back_and_recovers() {
    model(|| {
        let (ring, mut rx) = Ring::<u32>::with_capacity(1);
        ring.try_push(1).unwrap();
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || match ring.try_push(2) {
                Ok(()) => true,
                Err(TryPushError::Full(v)) => {
                    assert_eq!(v, 2);
                    false
                }
                Err(TryPushError::Closed(_)) => unreachable!("never closed"),
            })
        };
        let mut got = Vec::new();
        assert!(block_on(rx.drain(&mut got, 1)));
        let second = producer.join().unwrap();
        if second {
            assert!(block_on(rx.drain(&mut got, 1)));
            assert_eq!(got, vec![1, 2]);
        } else {
            assert_eq!(got, vec![1]);
            ring.try_push(3).expect("room after the consumer took one");
        }
    });
}

/// Close races with a push and with a producer waiting on a full ring:
/// a value whose push succeeded is always drained, a refused one is handed
/// back, the waiting producer is woken (with its value back), and the
/// consumer sees the end of the stream.
#[test]
fn close_while_pushing() {
    model(|| {
        let (ring, mut rx) = Ring::<u32>::with_capacity(1);
        let pusher = {
            let ring = ring.clone();
            thread::spawn(move || {
                let first = ring.try_push(1).is_ok();
                // Waits if the ring is full; close must wake it.
                let second = block_on(ring.push(2)).is_ok();
                (first, second)
            })
        };
        let closer = {
            let ring = ring.clone();
            thread::spawn(move || ring.close())
        };
        let mut got = Vec::new();
        while block_on(rx.drain(&mut got, 1)) {}
        closer.join().unwrap();
        let (first, second) = pusher.join().unwrap();
        let mut want = Vec::new();
        if first {
            want.push(1);
        }
        if second {
            want.push(2);
        }
        assert_eq!(got, want, "accepted values, and only those, are drained");
        assert!(ring.try_push(9).is_err());
    });
}

/// A cancelled reservation (tombstone) racing with the consumer is skipped
/// and counts as a consumed position.
#[test]
fn tombstone_is_skipped() {
    model(|| {
        let (ring, mut rx) = Ring::<u32>::with_capacity(2);
        let producer = {
            let ring: Arc<Ring<u32>> = ring.clone();
            thread::spawn(move || {
                drop(ring.try_reserve().unwrap());
                ring.try_push(5).unwrap();
            })
        };
        let mut got = Vec::new();
        while rx.position() < 2 {
            assert!(block_on(rx.drain(&mut got, 2)));
        }
        producer.join().unwrap();
        assert_eq!(got, vec![5]);
    });
}
