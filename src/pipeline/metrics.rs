//! Contention-free counters and the [`BusStats`] snapshot.
//!
//! Two kinds of counter, so that no hot-path increment is a contended
//! read-modify-write:
//!
//! - [`ShardedCounter`] for publish-side counts: one cache-padded cell per
//!   shard; each thread increments the shard picked from its thread ID, so
//!   publishers on different threads touch different cache lines. Reads sum
//!   the shards.
//! - [`LaneCounters`] for dispatch-side counts: each lane has exactly one
//!   writer (its worker), which increments with a plain load + store instead
//!   of a locked RMW. Readers see a recent value.

use std::cell::Cell;
use std::fmt;

use crossbeam_utils::CachePadded;
use serde::Serialize;

use crate::sync::std_impl::{AtomicU64, Ordering};

const SHARDS: usize = 16;

thread_local! {
    /// This thread's shard index (`usize::MAX` until first used).
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's shard index (stable for the thread's life).
#[inline]
pub(crate) fn thread_shard() -> usize {
    SHARD.with(|c| {
        let shard = c.get();
        if shard != usize::MAX {
            return shard;
        }
        let shard = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(std::thread::current().id())
            as usize;
        c.set(shard);
        shard
    })
}

/// A counter sharded by thread.
pub(crate) struct ShardedCounter {
    shards: Box<[CachePadded<AtomicU64>]>,
}

impl Default for ShardedCounter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl ShardedCounter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.shards[thread_shard() % SHARDS].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

/// A counter with one writer: increments without a locked instruction.
#[derive(Default)]
pub(crate) struct SoloCounter(AtomicU64);

impl SoloCounter {
    /// Adds `n`. Only the single owning writer may call this.
    #[inline]
    pub(crate) fn bump(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Release);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// Counters of one lane, written by its worker only.
#[derive(Default)]
pub(crate) struct LaneCounters {
    pub(crate) delivered: SoloCounter,
    pub(crate) failed: SoloCounter,
    pub(crate) retried: SoloCounter,
    pub(crate) dead_lettered: SoloCounter,
    pub(crate) skipped: SoloCounter,
    pub(crate) dropped: SoloCounter,
    pub(crate) released: SoloCounter,
    pub(crate) duplicates: SoloCounter,
    /// Ring positions fully processed (handled, dead-lettered or skipped);
    /// equals the ring's claimed count when the lane is idle.
    pub(crate) processed: SoloCounter,
}

/// Counts of one lane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LaneStats {
    /// Messages waiting in the lane's ring.
    pub depth: usize,
    /// Messages whose handler succeeded.
    pub delivered: u64,
    /// Failed attempts (errors and panics).
    pub failed: u64,
    /// Attempts retried after a failure.
    pub retried: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages the handler skipped on purpose.
    pub skipped: u64,
    /// Failed messages dropped because dead-lettering was disabled or the
    /// dead-letter publish failed (each one logged at error level).
    pub dropped: u64,
    /// Broker records released unhandled because their consumer let go of
    /// them (a Kafka partition revoked in a rebalance): the partition's
    /// next owner handles them.
    pub released: u64,
    /// Envelopes acknowledged without a handler call because their event
    /// ID was handled recently (duplicate suppression, `SubscribeOptions::dedup`).
    pub duplicates: u64,
}

impl LaneStats {
    pub(crate) fn read(c: &LaneCounters, depth: usize) -> Self {
        Self {
            depth,
            delivered: c.delivered.get(),
            failed: c.failed.get(),
            retried: c.retried.get(),
            dead_lettered: c.dead_lettered.get(),
            skipped: c.skipped.get(),
            dropped: c.dropped.get(),
            released: c.released.get(),
            duplicates: c.duplicates.get(),
        }
    }

    pub(crate) fn add_counts(&mut self, o: &LaneStats) {
        self.depth += o.depth;
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.retried += o.retried;
        self.dead_lettered += o.dead_lettered;
        self.skipped += o.skipped;
        self.dropped += o.dropped;
        self.released += o.released;
        self.duplicates += o.duplicates;
    }
}

/// Counts of one subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Its ID (unique within the bus).
    pub id: u64,
    /// Its topic.
    pub topic: String,
    /// `plain` or `envelope`.
    pub kind: &'static str,
    /// Sums over its lanes.
    pub total: LaneStats,
    /// Per lane.
    pub lanes: Vec<LaneStats>,
    /// What the broker reports for its consumer (JetStream subscriptions);
    /// `None` on the memory transport and core NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerStats>,
    /// True while in recovery mode (automatic or set by hand).
    pub recovering: bool,
    /// The last backlog check (`SubscribeOptions::backlog`); `None` when
    /// monitoring is off or before the first check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<BacklogStats>,
}

/// What a subscription's last backlog check saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BacklogStats {
    /// Records waiting (see [`BacklogState`](crate::BacklogState)).
    pub backlog: u64,
    /// Age of the oldest waiting record, where known (see
    /// [`BacklogState::oldest_age`](crate::BacklogState)).
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_age: Option<std::time::Duration>,
    /// Stalled lanes, each with how long its record has been in the
    /// handler (the stall-age gauge).
    pub stalled: Vec<StalledLane>,
}

/// A stalled lane in [`BacklogStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StalledLane {
    /// The lane.
    pub lane: usize,
    /// How long its current record has been in the handler.
    #[serde(with = "crate::options::duration")]
    pub age: std::time::Duration,
}

impl StalledLane {
    pub(crate) fn new(lane: usize, age: std::time::Duration) -> Self {
        Self { lane, age }
    }
}

/// What a broker reports about a subscription's consumer, as last read
/// (the consumer loop refreshes it about once a second).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BrokerStats {
    /// The consumer's name on the broker (JetStream durable name).
    pub consumer: String,
    /// Records the broker holds for the consumer and has not delivered.
    pub pending: u64,
    /// Records delivered and not yet acked, by all the consumer's clients.
    pub ack_pending: u64,
    /// Records the broker delivered more than once.
    pub redelivered: u64,
    /// Records this bus holds unsettled (in its lanes or handlers).
    pub unsettled_here: u64,
    /// Per partition (Kafka): its lag and committed offset; `pending` is
    /// their lag's sum. Empty on brokers without partitions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionLag>,
    /// Partitions stalled at the last backlog check (Kafka, with
    /// `BacklogOptions::stall_after`): each with how long its oldest
    /// unsettled record has held its commits back (the stall-age gauge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stalled: Vec<StalledPartition>,
}

/// A Kafka partition whose oldest unsettled record has been held longer
/// than `BacklogOptions::stall_after`, in [`BrokerStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StalledPartition {
    /// The partition's topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// How long its oldest unsettled record has been held (handed to the
    /// lanes and not settled).
    #[serde(with = "crate::options::duration")]
    pub age: std::time::Duration,
}

impl StalledPartition {
    pub(crate) fn new(topic: &str, partition: i32, age: std::time::Duration) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            age,
        }
    }
}

/// The lag of one partition a subscription consumes (Kafka), as
/// librdkafka last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Records between the committed offset and the high watermark.
    pub lag: u64,
    /// The committed offset (-1001 when none is known yet).
    pub committed: i64,
}

impl PartitionLag {
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn new(topic: &str, partition: i32, lag: u64, committed: i64) -> Self {
        Self {
            topic: topic.to_owned(),
            partition,
            lag,
            committed,
        }
    }
}

/// The live figures behind [`BrokerStats`], written by a broker consumer
/// loop and read by `stats()`.
#[derive(Debug, Default)]
pub(crate) struct BrokerGauges {
    pub(crate) consumer: String,
    pub(crate) pending: AtomicU64,
    pub(crate) ack_pending: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) unsettled_here: AtomicU64,
    pub(crate) partitions: parking_lot::Mutex<Vec<PartitionLag>>,
    /// The stored time (ms since the Unix epoch) of the oldest message the
    /// consumer has not acked (JetStream, refreshed with the figures); 0:
    /// none waiting, or not known.
    pub(crate) oldest_unix_ms: AtomicU64,
    /// The consumer's partitions' oldest unsettled records (Kafka), read
    /// by the backlog monitor at each check.
    pub(crate) fronts: std::sync::OnceLock<crate::pipeline::monitor::FrontsProbe>,
    /// Partitions stalled at the monitor's last check.
    pub(crate) stalled: parking_lot::Mutex<Vec<StalledPartition>>,
}

impl BrokerGauges {
    /// Gauges of the consumer `name`, all zero.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))] // made by broker consumer loops
    pub(crate) fn named(name: &str) -> Self {
        Self {
            consumer: name.to_owned(),
            ..Self::default()
        }
    }

    /// The figures now.
    pub(crate) fn read(&self) -> BrokerStats {
        BrokerStats {
            consumer: self.consumer.clone(),
            pending: self.pending.load(Ordering::Relaxed),
            ack_pending: self.ack_pending.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            unsettled_here: self.unsettled_here.load(Ordering::Relaxed),
            partitions: self.partitions.lock().clone(),
            stalled: self.stalled.lock().clone(),
        }
    }
}

impl SubscriptionStats {
    pub(crate) fn new(id: u64, topic: String, kind: &'static str, lanes: Vec<LaneStats>) -> Self {
        let mut total = LaneStats::default();
        for l in &lanes {
            total.add_counts(l);
        }
        Self {
            id,
            topic,
            kind,
            total,
            lanes,
            broker: None,
            recovering: false,
            backlog: None,
        }
    }
}

/// A snapshot of a bus's counters; see [`Bus::stats`](crate::Bus::stats).
///
/// `Serialize` gives a structured form for logs and endpoints; `Display`
/// prints a compact table, one row per subscription.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, HandlerError, Message};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::memory();
/// let _sub = bus.subscribe("jobs", |_m: Message| async { Ok::<(), HandlerError>(()) }).await?;
/// bus.publish("jobs", "1").await?;
/// bus.close().await?;
/// let stats = bus.stats();
/// assert_eq!(stats.subscriptions[0].total.delivered, 1); // kept after close
/// println!("{stats}");
/// let json = serde_json::to_value(&stats)?;
/// assert_eq!(json["published"], 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BusStats {
    /// User publishes accepted (each counted once, whatever the fan-out;
    /// dead letters the lanes publish are not counted here but as
    /// `dead_lettered`).
    pub published: u64,
    /// Accepted publishes no subscription received.
    pub unrouted: u64,
    /// Sums over every subscription the bus has had, unsubscribed ones
    /// included.
    pub total: LaneStats,
    /// Per subscription: the live ones, and after `close` the ones it
    /// stopped, with their final counts; sorted by ID.
    pub subscriptions: Vec<SubscriptionStats>,
    /// Publishes waiting now: on a full lane (memory), or for the
    /// broker's ack (NATS, Kafka). Counted only while the publisher
    /// backlog is watched (`BusConfig::publisher_backlog`, see
    /// [`PublisherBacklogOptions`](crate::PublisherBacklogOptions)), so
    /// that the publish path costs nothing extra otherwise (0 then); on
    /// Kafka at least the producer's in-flight count, read here.
    pub publishes_waiting: u64,
}

impl BusStats {
    /// Adds the final counts of removed subscriptions to the totals.
    pub(crate) fn absorb_retired(&mut self, retired: &LaneStats) {
        let depth = self.total.depth;
        self.total.add_counts(retired);
        self.total.depth = depth;
    }

    /// Lists subscriptions `close` stopped (their counts are already in the
    /// retired totals) and sorts the whole list by ID, live ones included.
    pub(crate) fn list_closed(&mut self, closed: &[SubscriptionStats]) {
        self.subscriptions.extend_from_slice(closed);
        self.subscriptions.sort_by_key(|s| s.id);
    }

    pub(crate) fn new(
        published: u64,
        unrouted: u64,
        subscriptions: Vec<SubscriptionStats>,
    ) -> Self {
        let mut total = LaneStats::default();
        for s in &subscriptions {
            total.add_counts(&s.total);
        }
        Self {
            published,
            unrouted,
            total,
            subscriptions,
            publishes_waiting: 0,
        }
    }
}

impl fmt::Display for BusStats {
    /// A compact table: the bus totals, then one row per subscription.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "published {}  unrouted {}  publishes waiting {}",
            self.published, self.unrouted, self.publishes_waiting
        )?;
        let width = self
            .subscriptions
            .iter()
            .map(|s| s.topic.len() + 1 + digits(s.id))
            .max()
            .unwrap_or(0)
            .max(5);
        writeln!(
            f,
            "{:<width$} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
            "sub", "kind", "delivered", "failed", "retried", "dlq", "skipped", "dropped", "depth"
        )?;
        for s in &self.subscriptions {
            row(f, &format!("{}#{}", s.topic, s.id), s.kind, &s.total, width)?;
            if let Some(b) = &s.backlog {
                backlog_row(f, s.recovering, b)?;
            } else if s.recovering {
                writeln!(f, "  recovering")?;
            }
            for p in s.broker.iter().flat_map(|b| &b.stalled) {
                writeln!(
                    f,
                    "  partition {}/{} stalled {}",
                    p.topic,
                    p.partition,
                    crate::events::short(p.age)
                )?;
            }
        }
        row(f, "total", "", &self.total, width)
    }
}

/// The backlog line under a subscription's row.
fn backlog_row(f: &mut fmt::Formatter<'_>, recovering: bool, b: &BacklogStats) -> fmt::Result {
    write!(f, "  backlog {}", b.backlog)?;
    if let Some(age) = b.oldest_age {
        write!(f, "  oldest {}", crate::events::short(age))?;
    }
    if recovering {
        write!(f, "  recovering")?;
    }
    for s in &b.stalled {
        write!(
            f,
            "  lane {} stalled {}",
            s.lane,
            crate::events::short(s.age)
        )?;
    }
    writeln!(f)
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn row(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    kind: &str,
    t: &LaneStats,
    width: usize,
) -> fmt::Result {
    writeln!(
        f,
        "{name:<width$} {kind:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        t.delivered, t.failed, t.retried, t.dead_lettered, t.skipped, t.dropped, t.depth
    )
}
