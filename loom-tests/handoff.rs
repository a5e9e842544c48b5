//! Loom model of the hand-off of a message from a publisher to a lane
//! worker: the publisher writes a heap-owning record into the ring (async
//! push), the worker drains it in a batch and publishes how far it has
//! processed; whoever waits for the lane to become idle (as `close` does)
//! sees the record handled.

use loom::future::block_on;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;

use super::model;
use crate::loom_engine::ring::Ring;
use crate::loom_engine::sync::Arc;

#[derive(Debug)]
struct Record {
    key: String,
    payload: Vec<u8>,
}

#[test]
fn publisher_to_worker_handoff() {
    model(|| {
        let (ring, mut rx) = Ring::<Record>::with_capacity(1);
        let processed = Arc::new(AtomicU64::new(0));
        let worker = {
            let processed = processed.clone();
            thread::spawn(move || {
                let mut handled = Vec::new();
                let mut buf = Vec::new();
                while block_on(rx.drain(&mut buf, 4)) {
                    for r in buf.drain(..) {
                        handled.push((r.key, r.payload));
                    }
                    processed.store(rx.position(), Ordering::Release);
                }
                handled
            })
        };
        block_on(ring.push(Record {
            key: "order-1".into(),
            payload: vec![1, 2, 3],
        }))
        .unwrap();
        block_on(ring.push(Record {
            key: "order-1".into(),
            payload: vec![4],
        }))
        .unwrap();
        // The idle check close() uses: everything claimed was processed.
        while processed.load(Ordering::Acquire) != ring.claimed() {
            thread::yield_now();
        }
        ring.close();
        let handled = worker.join().unwrap();
        assert_eq!(
            handled,
            vec![
                ("order-1".to_string(), vec![1, 2, 3]),
                ("order-1".to_string(), vec![4])
            ]
        );
    });
}
