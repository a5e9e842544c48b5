//! Handler lookup in the atomic-snapshot registry as the publish path does
//! it (this thread's cached snapshot, one generation check, then the topic;
//! `_uncached`: a fresh `arc_swap` load instead), beside a
//! `parking_lot::RwLock<HashMap>` in the same groups.
//!
//! - `lookup`: one thread cycling over 100 topics, no writers.
//! - `lookup_one_topic`: one thread, always the same topic (a typical
//!   publisher; the thread's memo of its last topic hits).
//! - `lookup_churn`: the same while another thread subscribes and
//!   unsubscribes (copy-on-write updates) without pause.
//! - `lookup_threads`: 1 and 2 threads looking up at once, cycling over
//!   the 100 topics and on one topic each (elements are lookups over all
//!   threads, so linear scaling doubles the rate).
//!
//! Needs the engine internals: `cargo bench --features bench-internals
//! --bench registry`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lanebus::__bench::Registry;
use parking_lot::RwLock;

const TOPICS: usize = 100;
const LOOKUPS: u64 = 1_000_000;

fn topics() -> Vec<String> {
    (0..TOPICS).map(|i| format!("orders.events.v{i}")).collect()
}

fn filled() -> (Registry, RwLock<HashMap<String, u64>>) {
    let reg = Registry::default();
    let mut map = HashMap::new();
    for (i, t) in topics().iter().enumerate() {
        reg.insert(t);
        map.insert(t.clone(), i as u64);
    }
    (reg, RwLock::new(map))
}

fn lookups(reg: &Registry, names: &[String], n: u64) -> u64 {
    let mut found = 0;
    for i in 0..n {
        let t = &names[(i as usize * 7) % names.len()];
        found += u64::from(reg.lookup(black_box(t)));
    }
    found
}

fn lookups_rwlock(map: &RwLock<HashMap<String, u64>>, names: &[String], n: u64) -> u64 {
    let mut sum = 0;
    for i in 0..n {
        let t = &names[(i as usize * 7) % names.len()];
        sum += map.read().get(black_box(t.as_str())).copied().unwrap_or(0);
    }
    sum
}

/// One lookup group: the registry (cached, and uncached when asked) beside
/// the locked map, cycling over `names`.
fn lookup_group(
    c: &mut Criterion,
    group: &str,
    reg: &Registry,
    map: &RwLock<HashMap<String, u64>>,
    names: &[String],
    with_uncached: bool,
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let next = |i: &mut usize| {
        *i = (*i + 7) % names.len();
        black_box(&names[*i])
    };
    g.bench_function("lanebus_registry", |b| {
        let mut i = 0usize;
        b.iter(|| reg.lookup(next(&mut i)))
    });
    if with_uncached {
        g.bench_function("lanebus_registry_uncached", |b| {
            let mut i = 0usize;
            b.iter(|| reg.lookup_uncached(next(&mut i)))
        });
    }
    g.bench_function("rwlock_hashmap", |b| {
        let mut i = 0usize;
        b.iter(|| map.read().get(next(&mut i).as_str()).copied())
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let (reg, map) = filled();
    lookup_group(c, "lookup", &reg, &map, &topics(), true);
    // The common publisher: one topic, over and over (the thread's memo of
    // its last topic then saves the hashed lookup).
    lookup_group(c, "lookup_one_topic", &reg, &map, &topics()[..1], true);
}

fn lookup_churn(c: &mut Criterion) {
    let (reg, map) = filled();
    let (reg, map) = (Arc::new(reg), Arc::new(map));
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (reg, map, stop) = (reg.clone(), map.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                reg.insert("churn.topic");
                map.write().insert("churn.topic".into(), n);
                reg.remove("churn.topic");
                map.write().remove("churn.topic");
                n += 1;
                std::thread::sleep(Duration::from_micros(50));
            }
        })
    };
    lookup_group(c, "lookup_churn", &reg, &map, &topics(), false);
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn thread");
}

/// Time of `iters` rounds of `threads` threads each running `work` once.
fn on_threads(iters: u64, threads: u64, work: &(dyn Fn() -> u64 + Sync)) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| black_box(work()));
            }
        });
    }
    start.elapsed()
}

fn lookup_threads(c: &mut Criterion) {
    let (reg, map) = filled();
    let names = topics();
    let mut g = c.benchmark_group("lookup_threads");
    g.sample_size(20);
    for threads in [1u64, 2] {
        g.throughput(Throughput::Elements(LOOKUPS * threads));
        g.bench_with_input(
            BenchmarkId::new("lanebus_registry", threads),
            &threads,
            |b, &t| b.iter_custom(|iters| on_threads(iters, t, &|| lookups(&reg, &names, LOOKUPS))),
        );
        g.bench_with_input(
            BenchmarkId::new("lanebus_registry_one_topic", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| on_threads(iters, t, &|| lookups(&reg, &names[..1], LOOKUPS)))
            },
        );
        g.bench_with_input(
            BenchmarkId::new("rwlock_hashmap", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    on_threads(iters, t, &|| lookups_rwlock(&map, &names, LOOKUPS))
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, lookup, lookup_churn, lookup_threads);
criterion_main!(benches);
