//! Unit tests of the engine structures on `std` (the loom copy of the engine
//! does not include this file; its models live in `loom-tests/`).

mod ring {
    use super::super::ring::*;
    #[allow(unused_imports)]
    use super::super::sync::Arc;

    #[test]
    fn fifo_and_capacity() {
        let (ring, mut rx) = Ring::with_capacity(3);
        assert_eq!(ring.capacity(), 4);
        for i in 0..4 {
            ring.try_push(i).unwrap();
        }
        assert_eq!(ring.try_push(9), Err(TryPushError::Full(9)));
        assert_eq!(ring.len(), 4);
        let mut buf = Vec::new();
        assert_eq!(rx.try_drain(&mut buf, 3), 3);
        assert_eq!(buf, vec![0, 1, 2]);
        ring.try_push(4).unwrap();
        buf.clear();
        assert_eq!(rx.try_drain(&mut buf, 10), 2);
        assert_eq!(rx.position(), 5);
        assert_eq!(buf, vec![3, 4]);
    }

    #[test]
    fn tombstones_are_skipped() {
        let (ring, mut rx) = Ring::with_capacity(4);
        ring.try_push(1).unwrap();
        drop(ring.try_reserve().unwrap());
        ring.try_push(2).unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            rx.try_drain(&mut buf, 10),
            3,
            "tombstone counts as a position"
        );
        assert_eq!(buf, vec![1, 2]);
        assert_eq!(ring.len(), 0);
    }

    #[test]
    fn close_refuses_and_drains() {
        let (ring, mut rx) = Ring::with_capacity(4);
        ring.try_push(String::from("a")).unwrap();
        assert!(!ring.is_closed());
        ring.close();
        assert!(ring.is_closed());
        assert!(matches!(ring.try_push("b".into()), Err(TryPushError::Closed(s)) if s == "b"));
        let mut buf = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(rx.drain(&mut buf, 8).await);
            assert!(!rx.drain(&mut buf, 8).await);
        });
        assert_eq!(buf, vec!["a".to_string()]);
    }

    #[test]
    fn drop_releases_unconsumed_values() {
        let value = std::sync::Arc::new(());
        let (ring, rx) = Ring::with_capacity(4);
        ring.try_push(value.clone()).unwrap();
        ring.try_push(value.clone()).unwrap();
        drop(rx);
        drop(ring);
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    }

    #[test]
    fn many_producers_async_backpressure() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let (ring, mut rx) = Ring::<(u64, u64)>::with_capacity(8);
            let producers = 4u64;
            let per = 5_000u64;
            let mut tasks = Vec::new();
            for p in 0..producers {
                let ring = ring.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..per {
                        ring.push((p, i)).await.unwrap();
                    }
                }));
            }
            let closer = tokio::spawn({
                let ring = ring.clone();
                async move {
                    for t in tasks {
                        t.await.unwrap();
                    }
                    ring.close();
                }
            });
            let mut next = vec![0u64; producers as usize];
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if !rx.drain(&mut buf, 16).await {
                    break;
                }
                for &(p, i) in &buf {
                    assert_eq!(next[p as usize], i, "per-producer order");
                    next[p as usize] += 1;
                }
            }
            closer.await.unwrap();
            assert!(next.iter().all(|&n| n == per));
        });
    }
}
mod registry {
    use super::super::registry::*;
    #[allow(unused_imports)]
    use super::super::sync::Arc;

    #[test]
    fn copy_on_write_keeps_old_snapshots() {
        let reg = Registry::<u32>::new();
        reg.update("a", |_| (Some(1), ()));
        let old = reg.load_full();
        reg.update("a", |v| (Some(v.copied().unwrap_or(0) + 1), ()));
        reg.update("b", |_| (Some(7), ()));
        assert_eq!(old.get("a"), Some(&1));
        assert_eq!(old.get("b"), None);
        let now = reg.load();
        assert_eq!(now.get("a"), Some(&2));
        assert_eq!(now.get("b"), Some(&7));
        assert_eq!(now.len(), 2);
        reg.update("a", |_| (None, ()));
        assert_eq!(reg.load().get("a"), None);
        assert_eq!(reg.load().iter().count(), 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let reg = std::sync::Arc::new(Registry::<u64>::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        reg.update("n", |v| (Some(v.copied().unwrap_or(0) + 1), ()));
                        assert!(reg.load().get("n").is_some());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(reg.load().get("n"), Some(&1000));
    }
}

mod layout {
    use super::super::lanes::Delivery;

    /// A lane record plus its 8-byte stamp fits one 64-byte cache line.
    #[test]
    fn delivery_fits_a_cache_line_with_its_stamp() {
        assert!(
            std::mem::size_of::<Delivery>() <= 56,
            "Delivery is {} bytes",
            std::mem::size_of::<Delivery>()
        );
    }
}

mod lane_mapping {
    use bytes::Bytes;

    use super::super::lanes::{Body, Delivery, Lanes, Route};

    /// A keyed record lands on lane `key_hash(key) % N` for every lane
    /// count, powers of two (masked) and others (divided) alike.
    #[test]
    fn keyed_records_land_on_hash_mod_n() {
        for n in 1..=12usize {
            let (lanes, _consumers) = Lanes::new(n, 64);
            for k in 0..40u32 {
                let key = format!("order-{k}");
                let hash = crate::key_hash(key.as_bytes());
                let before: Vec<usize> = lanes.iter().map(|l| l.ring.len()).collect();
                let body =
                    Body::plain_with(Bytes::new(), Some(key.as_str().into()), Default::default());
                assert!(matches!(Route::of(&body), Route::Keyed(h) if h == hash));
                assert!(lanes
                    .try_push(Delivery::new(body), Route::Keyed(hash))
                    .is_ok());
                let grew: Vec<usize> = lanes
                    .iter()
                    .zip(&before)
                    .enumerate()
                    .filter(|(_, (l, b))| l.ring.len() > **b)
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(grew, vec![(hash % n as u64) as usize], "{n} lanes, {key}");
            }
        }
    }
}
