//! Publish → handler end to end on the memory bus, plain and keyed (handlers
//! taking `Envelope` and `Arc<Envelope>`), beside
//! raw crossbeam-channel moving the same messages to a consumer thread.
//!
//! Each iteration publishes `MSGS` messages from one task and waits until
//! the handler has seen them all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lanebus::{Bus, Envelope, HandlerError, Message, SubscribeOptions};

const MSGS: u64 = 100_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::Acquire) < target {
        tokio::task::yield_now().await;
    }
}

/// Counts handler calls.
#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl Count {
    fn hit(&self) -> std::future::Ready<Result<(), HandlerError>> {
        self.0.fetch_add(1, Ordering::Release);
        std::future::ready(Ok(()))
    }
}

/// A memory bus with one subscription (made by `subscribe`) whose handler
/// counts its calls; the subscription lives for the whole bench.
async fn counting_subscription<F, Fut>(subscribe: F) -> (Bus, Arc<AtomicU64>)
where
    F: FnOnce(Bus, Count) -> Fut,
    Fut: std::future::Future<Output = Result<lanebus::Subscription, lanebus::SubscribeError>>,
{
    let bus = Bus::memory();
    let count = Count::default();
    let seen = count.0.clone();
    let sub = subscribe(bus.clone(), count).await.expect("subscribe");
    std::mem::forget(sub);
    (bus, seen)
}

/// Publishes `MSGS` fresh envelopes over 1,000 aggregate IDs per iteration
/// to `bus`'s `keyed` topic and waits for its handler to count them.
fn keyed_bench(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    bus: &Bus,
    seen: &AtomicU64,
) {
    let ids: Vec<String> = (0..1000).map(|i| format!("order-{i}")).collect();
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = seen.load(Ordering::Acquire) + MSGS;
                    for i in 0..MSGS as usize {
                        let ev = Envelope::new(
                            ids[i % ids.len()].as_str(),
                            "OrderUpdated",
                            1,
                            Bytes::from_static(b"{}"),
                        );
                        bus.publish_envelope("keyed", ev).await.expect("publish");
                    }
                    wait_for(seen, target).await;
                }
                start.elapsed()
            })
        })
    });
}

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("publish_to_handler");
    g.throughput(Throughput::Elements(MSGS));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(5));

    let options = |lanes| {
        SubscribeOptions::default()
            .lanes(lanes)
            .ring_capacity(4096)
            .drain_batch(256)
    };
    let (bus, seen) = rt.block_on(counting_subscription(|bus, count| async move {
        bus.subscribe_with("plain", options(1), move |_m: Message| count.hit())
            .await
    }));
    let payload = Bytes::from_static(b"0123456789abcdef0123456789abcdef");
    g.bench_function("plain", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = seen.load(Ordering::Acquire) + MSGS;
                    for _ in 0..MSGS {
                        bus.publish("plain", payload.clone())
                            .await
                            .expect("publish");
                    }
                    wait_for(&seen, target).await;
                }
                start.elapsed()
            })
        })
    });

    // Keyed envelopes, built per message, to a handler taking its own copy
    // (`Envelope`) and to one sharing the lane's (`Arc<Envelope>`).
    let (kbus, kseen) = rt.block_on(counting_subscription(|bus, count| async move {
        bus.subscribe_envelope_with("keyed", options(8), move |_e: Envelope| count.hit())
            .await
    }));
    keyed_bench(&mut g, &rt, "keyed_envelopes", &kbus, &kseen);
    let (sbus, sseen) = rt.block_on(counting_subscription(|bus, count| async move {
        bus.subscribe_envelope_with("keyed", options(8), move |_e: Arc<Envelope>| count.hit())
            .await
    }));
    keyed_bench(&mut g, &rt, "keyed_envelopes_shared", &sbus, &sseen);

    g.bench_function("crossbeam_channel_baseline", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let (tx, rx) = crossbeam_channel::bounded::<Bytes>(4096);
                let consumer = std::thread::spawn(move || {
                    let mut n = 0u64;
                    while let Ok(m) = rx.recv() {
                        std::hint::black_box(m);
                        n += 1;
                    }
                    n
                });
                for _ in 0..MSGS {
                    tx.send(payload.clone()).expect("send");
                }
                drop(tx);
                assert_eq!(consumer.join().expect("consumer"), MSGS);
            }
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
