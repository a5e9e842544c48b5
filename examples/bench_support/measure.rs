//! The bench tool's measuring instruments: a lock-free log-linear latency
//! histogram (1/64 relative precision), send stamps carried in payloads, a
//! per-thread-sharded handled counter, the probe handlers report to, the
//! per-aggregate order check, and the per-scenario report with its median
//! over runs.
//!
//! Included by `examples/bench.rs` through `#[path]`; not an example itself.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Log-linear latency histogram (1/64 relative precision), lock-free.
pub(crate) struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Histogram {
    const SUB: u64 = 64;

    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..64 * Self::SUB).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn index(ns: u64) -> usize {
        if ns < Self::SUB {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros() as u64; // ≥ 6
        let shift = exp - 6;
        let sub = (ns >> shift) - Self::SUB; // 0..64
        ((exp - 5) * Self::SUB + sub) as usize
    }

    fn lower_bound(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < Self::SUB {
            return idx;
        }
        let exp = idx / Self::SUB + 5;
        let sub = idx % Self::SUB;
        (Self::SUB + sub) << (exp - 6)
    }

    pub(crate) fn record(&self, ns: u64) {
        self.buckets[Self::index(ns).min(self.buckets.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::lower_bound(i) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What a scenario measured.
pub(crate) struct Report {
    pub(crate) scenario: &'static str,
    pub(crate) messages: u64,
    pub(crate) msgs_per_sec: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) baseline_msgs_per_sec: f64,
    pub(crate) order_ok: Option<bool>,
    /// The baseline's latency at the same paced rate (NaN where the
    /// scenario measures none: the memory rows).
    pub(crate) baseline_p50_us: f64,
    pub(crate) baseline_p99_us: f64,
    /// Messages published but never handled, by either side (summed over
    /// the runs).
    pub(crate) lost: u64,
    /// Per-key order violations, by either side (summed over the runs).
    pub(crate) disorder: u64,
    /// Folded reports ([`median`](Self::median)): the median of the runs'
    /// own ratios. NaN in one run's report.
    pub(crate) median_ratio: f64,
}

impl Report {
    /// Our rate over the baseline's: one run's, or the median of the runs'
    /// ratios (each run measures both sides back to back, so its ratio
    /// holds even when the host's speed changes between runs).
    pub(crate) fn ratio(&self) -> f64 {
        if self.median_ratio.is_nan() {
            self.msgs_per_sec / self.baseline_msgs_per_sec
        } else {
            self.median_ratio
        }
    }

    /// A throughput-only report (`--no-latency`): no latency, no baseline.
    pub(crate) fn throughput_only(
        scenario: &'static str,
        messages: u64,
        msgs_per_sec: f64,
        order_ok: Option<bool>,
    ) -> Report {
        Report {
            scenario,
            messages,
            msgs_per_sec,
            p50_us: f64::NAN,
            p99_us: f64::NAN,
            baseline_msgs_per_sec: f64::NAN,
            order_ok,
            baseline_p50_us: f64::NAN,
            baseline_p99_us: f64::NAN,
            lost: 0,
            disorder: 0,
            median_ratio: f64::NAN,
        }
    }

    /// Folds repeated runs of one scenario (each measuring both sides,
    /// the bus first in even runs and the baseline first in odd ones) into
    /// one report: the median of each figure, and of the runs' ratios, so
    /// that a noisy neighbour in one run moves neither side; order must
    /// hold in every run; lost messages and order violations add up.
    pub(crate) fn median(runs: Vec<Report>) -> Report {
        fn med(mut v: Vec<f64>) -> f64 {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        }
        let pick = |f: fn(&Report) -> f64| med(runs.iter().map(f).collect());
        let orders: Vec<bool> = runs.iter().filter_map(|r| r.order_ok).collect();
        Report {
            scenario: runs[0].scenario,
            messages: runs[0].messages,
            msgs_per_sec: pick(|r| r.msgs_per_sec),
            p50_us: pick(|r| r.p50_us),
            p99_us: pick(|r| r.p99_us),
            baseline_msgs_per_sec: pick(|r| r.baseline_msgs_per_sec),
            order_ok: (!orders.is_empty()).then(|| orders.iter().all(|&o| o)),
            baseline_p50_us: pick(|r| r.baseline_p50_us),
            baseline_p99_us: pick(|r| r.baseline_p99_us),
            lost: runs.iter().map(|r| r.lost).sum(),
            disorder: runs.iter().map(|r| r.disorder).sum(),
            median_ratio: pick(Report::ratio),
        }
    }
}

/// Nanoseconds since the process's clock base (the send stamp).
pub(crate) fn now_ns(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

pub(crate) fn stamp(base: Instant) -> Bytes {
    Bytes::copy_from_slice(&now_ns(base).to_le_bytes())
}

pub(crate) fn stamp_of(payload: &[u8]) -> u64 {
    payload
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .unwrap_or(0)
}

/// A counter with one cache-padded cell per worker thread, so that lanes
/// on different threads do not contend on it (the baseline's consumers count
/// in locals).
#[derive(Default)]
pub(crate) struct Count {
    cells: [crossbeam_utils::CachePadded<AtomicU64>; 16],
}

thread_local! {
    static CELL: usize = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) as usize % 16
    };
}

impl Count {
    #[inline]
    pub(crate) fn add(&self) {
        CELL.with(|&c| self.cells[c].fetch_add(1, Ordering::Release));
    }

    pub(crate) fn load(&self) -> u64 {
        self.cells.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }
}

/// Counts handled messages and records latency when the payload is stamped.
#[derive(Clone)]
pub(crate) struct Probe {
    pub(crate) handled: Arc<Count>,
    pub(crate) hist: Arc<Histogram>,
    base: Instant,
    pub(crate) timing: Arc<std::sync::atomic::AtomicBool>,
}

impl Probe {
    pub(crate) fn new(base: Instant) -> Self {
        Self {
            handled: Arc::default(),
            hist: Arc::new(Histogram::new()),
            base,
            timing: Arc::default(),
        }
    }

    #[inline]
    pub(crate) fn hit(&self, payload: &[u8]) {
        if self.timing.load(Ordering::Relaxed) {
            let sent = stamp_of(payload);
            self.hist.record(now_ns(self.base).saturating_sub(sent));
        }
        self.handled.add();
    }

    pub(crate) async fn wait(&self, target: u64) {
        while self.handled.load() < target {
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }

    /// Waits until `target` messages were handled, or until the count has
    /// not moved for `stall` (a broker that lost messages); returns the
    /// count then, and when it last moved.
    // Used by the broker rows only.
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))]
    pub(crate) async fn wait_or_stall(&self, target: u64, stall: Duration) -> (u64, Instant) {
        let mut seen = self.handled.load();
        let mut moved = Instant::now();
        while seen < target {
            tokio::time::sleep(Duration::from_micros(200)).await;
            let now = self.handled.load();
            if now != seen {
                (seen, moved) = (now, Instant::now());
            } else if moved.elapsed() >= stall {
                break;
            }
        }
        (seen, moved)
    }
}

/// Checks per-aggregate order: aggregates are named `agg-<index>` and
/// each one's versions must arrive as 1, 2, 3, … One cache line per
/// aggregate: a key is handled by one lane at a time, so a plain load and
/// store suffice, and lanes on different threads never share a line.
pub(crate) struct OrderCheck {
    last: Vec<crossbeam_utils::CachePadded<AtomicI64>>,
    disorder: AtomicU64,
    /// The first few violations, for the report.
    examples: parking_lot::Mutex<Vec<String>>,
}

impl OrderCheck {
    /// How many violations are kept word for word.
    const EXAMPLES: usize = 10;

    pub(crate) fn new(aggregates: usize) -> Self {
        Self {
            last: (0..aggregates)
                .map(|_| crossbeam_utils::CachePadded::new(AtomicI64::new(0)))
                .collect(),
            disorder: AtomicU64::new(0),
            examples: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Records that `version` of `aggregate_id` was handled.
    #[inline]
    pub(crate) fn see(&self, aggregate_id: &str, version: i64) {
        let idx: usize = aggregate_id
            .strip_prefix("agg-")
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let prev = self.last[idx].load(Ordering::Relaxed);
        self.last[idx].store(version, Ordering::Relaxed);
        if prev + 1 != version {
            self.disorder.fetch_add(1, Ordering::Relaxed);
            let mut examples = self.examples.lock();
            if examples.len() < Self::EXAMPLES {
                examples.push(format!(
                    "{aggregate_id}: version {version} after {prev} (expected {})",
                    prev + 1
                ));
            }
        }
    }

    /// Violations seen so far.
    pub(crate) fn disorder(&self) -> u64 {
        self.disorder.load(Ordering::Relaxed)
    }

    /// The first violations, word for word.
    // Used by the broker rows only.
    #[cfg_attr(not(any(feature = "nats", feature = "kafka")), allow(dead_code))]
    pub(crate) fn examples(&self) -> Vec<String> {
        self.examples.lock().clone()
    }

    /// No violation, and every aggregate's last version is the one
    /// published last (`published[i]` for `agg-i`).
    pub(crate) fn held(&self, published: &[i64]) -> bool {
        self.disorder() == 0
            && self
                .last
                .iter()
                .zip(published)
                .all(|(seen, want)| seen.load(Ordering::Relaxed) == *want)
    }
}
