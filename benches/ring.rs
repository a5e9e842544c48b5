//! The bounded MPSC ring under contention, beside crossbeam-channel, flume
//! and tokio's mpsc in the same groups.
//!
//! - `contention`: 1, 2 and 4 producer threads and one consumer thread move
//!   `MSGS` values through a queue of `CAP` slots with the non-blocking
//!   operations (`try_push`/`try_send`, `try_drain`/`try_recv`), yielding
//!   when full or empty: the raw cost of the queue.
//! - `contention_async`: the same with async producers and consumer on a
//!   2-worker tokio runtime, through each queue's waiting API (our `push` /
//!   `drain`, tokio `send` / `recv_many`, flume `send_async` /
//!   `recv_async`): the path the bus uses.
//!
//! Needs the engine internals: `cargo bench --features bench-internals
//! --bench ring`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lanebus::__bench::ring;

const MSGS: u64 = 100_000;
const CAP: usize = 1024;
const BATCH: usize = 64;

fn per_producer(producers: u64) -> u64 {
    MSGS / producers
}

fn run_threads<P, C>(producers: u64, produce: P, consume: C) -> Duration
where
    P: Fn(u64) + Sync,
    C: FnOnce(u64) + Send,
{
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..producers {
            s.spawn(|| produce(per_producer(producers)));
        }
        consume(per_producer(producers) * producers);
    });
    start.elapsed()
}

fn lanebus_threads(producers: u64) -> Duration {
    let (tx, mut rx) = ring::<u64>(CAP);
    run_threads(
        producers,
        |n| {
            for i in 0..n {
                let mut v = i;
                while let Err(back) = tx.try_push(v) {
                    v = back;
                    std::thread::yield_now();
                }
            }
        },
        move |total| {
            let mut got = 0;
            let mut buf = Vec::with_capacity(BATCH);
            while got < total {
                buf.clear();
                if rx.try_drain(&mut buf, BATCH) == 0 {
                    std::thread::yield_now();
                }
                got += buf.len() as u64;
                black_box(&buf);
            }
        },
    )
}

/// A baseline queue driven through its non-blocking send and receive.
fn queue_threads<S, R>(producers: u64, try_send: S, mut try_recv: R) -> Duration
where
    S: Fn(u64) -> Result<(), u64> + Sync,
    R: FnMut() -> Option<u64> + Send,
{
    run_threads(
        producers,
        |n| {
            for i in 0..n {
                let mut v = i;
                while let Err(back) = try_send(v) {
                    v = back;
                    std::thread::yield_now();
                }
            }
        },
        move |total| {
            let mut got = 0;
            while got < total {
                match try_recv() {
                    Some(v) => {
                        black_box(v);
                        got += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        },
    )
}

fn crossbeam_threads(producers: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(CAP);
    queue_threads(
        producers,
        |v| tx.try_send(v).map_err(|e| e.into_inner()),
        move || rx.try_recv().ok(),
    )
}

fn flume_threads(producers: u64) -> Duration {
    let (tx, rx) = flume::bounded::<u64>(CAP);
    queue_threads(
        producers,
        |v| tx.try_send(v).map_err(|e| e.into_inner()),
        move || rx.try_recv().ok(),
    )
}

fn tokio_threads(producers: u64) -> Duration {
    use tokio::sync::mpsc::error::TrySendError;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
    queue_threads(
        producers,
        |v| {
            tx.try_send(v).map_err(|e| match e {
                TrySendError::Full(v) | TrySendError::Closed(v) => v,
            })
        },
        move || rx.try_recv().ok(),
    )
}

/// One queue's run with a given number of producers.
type Runner = fn(u64) -> Duration;

fn contention(c: &mut Criterion) {
    let mut g = c.benchmark_group("contention");
    g.throughput(Throughput::Elements(MSGS));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for producers in [1u64, 2, 4] {
        let cases: [(&str, Runner); 4] = [
            ("lanebus_ring", lanebus_threads),
            ("crossbeam_channel", crossbeam_threads),
            ("flume", flume_threads),
            ("tokio_mpsc", tokio_threads),
        ];
        for (name, run) in cases {
            g.bench_with_input(BenchmarkId::new(name, producers), &producers, |b, &p| {
                b.iter_custom(|iters| (0..iters).map(|_| run(p)).sum())
            });
        }
    }
    g.finish();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime")
}

async fn lanebus_async(producers: u64) {
    let (tx, mut rx) = ring::<u64>(CAP);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer(producers) {
                tx.push(i).await.expect("open");
            }
        }));
    }
    let total = per_producer(producers) * producers;
    let mut got = 0;
    let mut buf = Vec::with_capacity(BATCH);
    while got < total {
        buf.clear();
        rx.drain(&mut buf, BATCH).await;
        got += buf.len() as u64;
        black_box(&buf);
    }
    for t in tasks {
        t.await.expect("producer");
    }
}

async fn tokio_async(producers: u64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAP);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer(producers) {
                tx.send(i).await.expect("open");
            }
        }));
    }
    let total = per_producer(producers) * producers;
    let mut got = 0;
    let mut buf = Vec::with_capacity(BATCH);
    while got < total {
        buf.clear();
        got += rx.recv_many(&mut buf, BATCH).await as u64;
        black_box(&buf);
    }
    for t in tasks {
        t.await.expect("producer");
    }
}

async fn flume_async(producers: u64) {
    let (tx, rx) = flume::bounded::<u64>(CAP);
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_producer(producers) {
                tx.send_async(i).await.expect("open");
            }
        }));
    }
    let total = per_producer(producers) * producers;
    for _ in 0..total {
        black_box(rx.recv_async().await.expect("value"));
    }
    for t in tasks {
        t.await.expect("producer");
    }
}

fn contention_async(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("contention_async");
    g.throughput(Throughput::Elements(MSGS));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for producers in [1u64, 2, 4] {
        g.bench_with_input(
            BenchmarkId::new("lanebus_ring", producers),
            &producers,
            |b, &p| b.to_async_with(&rt, p, lanebus_async),
        );
        g.bench_with_input(
            BenchmarkId::new("tokio_mpsc", producers),
            &producers,
            |b, &p| b.to_async_with(&rt, p, tokio_async),
        );
        g.bench_with_input(BenchmarkId::new("flume", producers), &producers, |b, &p| {
            b.to_async_with(&rt, p, flume_async)
        });
    }
    g.finish();
}

/// Runs `f(p)` to completion on `rt` once per iteration, timing the whole.
trait ToAsync {
    fn to_async_with<F, Fut>(&mut self, rt: &tokio::runtime::Runtime, p: u64, f: F)
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = ()>;
}

impl ToAsync for criterion::Bencher<'_> {
    fn to_async_with<F, Fut>(&mut self, rt: &tokio::runtime::Runtime, p: u64, f: F)
    where
        F: Fn(u64) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                rt.block_on(f(p));
            }
            start.elapsed()
        })
    }
}

criterion_group!(benches, contention, contention_async);
criterion_main!(benches);
