//! Kafka subscriptions: a consumer group member per subscription, polled
//! on a thread of its own, feeding the subscription's lanes.
//!
//! # Algorithm
//!
//! - **Group**: the subscription's group, else its `consumer` name, else
//!   `<client id>-<topic>` (leased, see `transport::names`), so it is
//!   stable across restarts. Two bus instances in one group split the
//!   partitions; a key lives in one partition and a partition in one
//!   member, so per-key order holds across them. A wildcard topic
//!   (`orders.*`, `orders.>`) becomes a pattern subscription; new matching
//!   topics are picked up at the next metadata refresh (5 s).
//! - **Poll loop** (a blocking thread: librdkafka's callbacks, rebalances
//!   among them, run inside `poll`): each record's offset is handed out in
//!   its partition's tracker and the record pushed, without waiting, into
//!   lane `key_hash(key) % N` with a [`KafkaAck`]. When that lane is full,
//!   the offset is withdrawn, the record parked, and its partition paused;
//!   the loop keeps polling (so the member stays in its group however slow
//!   the handlers are) and retries the parked record on every turn,
//!   resuming the partition once it went in. Finished positions are
//!   committed, and the unsettled counts in `stats()` refreshed, every
//!   `commit_interval` (not on every poll).
//! - **Revocation** (a rebalance takes partitions away): parked records of
//!   those partitions are dropped (their offsets were withdrawn), the loop
//!   waits, bounded, until the lanes settled every record of them, commits
//!   the positions, then releases the trackers: records still in lanes
//!   after the wait are released unhandled by the workers (stale), since
//!   the next owner starts from the commit. **Assignment** makes fresh
//!   trackers.
//! - **Stop**: pause every partition, drop parked records, close the lanes
//!   and keep polling until the workers drained them (bounded), committing
//!   as they finish; a last commit, then the consumer closes (leaving the
//!   group).
//! - **Lag**: librdkafka's statistics (every second) give each partition's
//!   lag (high watermark − committed); `stats()` shows them and their sum.
//!
//! # Invariants
//!
//! - A position is committed only when every record below it settled.
//! - The loop never waits on a lane: a full lane pauses its partition.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use tokio::sync::oneshot;

use super::ack::KafkaAck;
use super::offsets::PartitionOffsets;
use super::records;
use crate::engine::lanes::Delivery;
use crate::engine::ring::TryPushError;
use crate::engine::SubscriptionCore;
use crate::pipeline::metrics::{BrokerGauges, PartitionLag};
use crate::transport::names::NameLease;
use crate::transport::{Ack, Feed};

/// How long one poll waits for a record.
const POLL: Duration = Duration::from_millis(50);
/// How long one poll waits while a record is parked.
const PARKED_POLL: Duration = Duration::from_millis(1);

type PartitionKey = (String, i32);

/// What the poll loop and its rebalance callbacks share.
pub(crate) struct Shared {
    core: Arc<SubscriptionCore>,
    trackers: Mutex<HashMap<PartitionKey, Arc<PartitionOffsets>>>,
    /// Records that met a full lane, by partition (that partition is
    /// paused), with their offsets.
    parked: Mutex<HashMap<PartitionKey, (Delivery, i64)>>,
    /// How long a revocation waits for the lanes to settle its records.
    revoke_wait: Duration,
    gauges: Arc<BrokerGauges>,
}

impl Shared {
    fn tracker(&self, topic: &str, partition: i32) -> Arc<PartitionOffsets> {
        self.trackers
            .lock()
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| Arc::new(PartitionOffsets::starting_at(None)))
            .clone()
    }

    /// The positions that moved since the last commit.
    fn commits(&self) -> TopicPartitionList {
        commit_list(self.trackers.lock().iter())
    }
}

/// The positions of `trackers` that moved since their last commit.
fn commit_list<'a>(
    trackers: impl Iterator<Item = (&'a PartitionKey, &'a Arc<PartitionOffsets>)>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), tracker) in trackers {
        if let Some(position) = tracker.take_commit() {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(position));
        }
    }
    tpl
}

/// The context of a subscription's consumer: rebalances and statistics.
pub(crate) struct Context {
    shared: Arc<Shared>,
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut lag = Vec::new();
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || p.consumer_lag < 0 {
                    continue; // the internal partition, or no lag known yet
                }
                lag.push(PartitionLag::new(
                    topic,
                    *id,
                    p.consumer_lag as u64,
                    p.committed_offset,
                ));
            }
        }
        lag.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        let sum = lag.iter().map(|l| l.lag).sum();
        self.shared.gauges.pending.store(sum, Ordering::Relaxed);
        *self.shared.gauges.partitions.lock() = lag;
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<PartitionKey> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            let shared = &self.shared;
            let trackers: Vec<(PartitionKey, Arc<PartitionOffsets>)> = {
                let mut parked = shared.parked.lock();
                let mut trackers = shared.trackers.lock();
                revoked
                    .iter()
                    .filter_map(|k| {
                        parked.remove(k);
                        trackers.remove(k).map(|t| (k.clone(), t))
                    })
                    .collect()
            };
            let until = Instant::now() + shared.revoke_wait;
            while Instant::now() < until && trackers.iter().any(|(_, t)| t.unsettled() > 0) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let commit = commit_list(trackers.iter().map(|(k, t)| (k, t)));
            for (_, tracker) in &trackers {
                tracker.release();
            }
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    tracing::warn!(topic = %shared.core.topic, error = %e, "commit at revocation failed; the next owner may handle some records again");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut trackers = self.shared.trackers.lock();
            for e in tpl.elements() {
                let fresh = Arc::new(PartitionOffsets::starting_at(None));
                if let Some(old) = trackers.insert((e.topic().to_owned(), e.partition()), fresh) {
                    old.release();
                }
            }
        }
    }
}

/// A consumer built and subscribed, and what its loop shares.
pub(crate) struct Opened {
    pub(crate) consumer: BaseConsumer<Context>,
    pub(crate) shared: Arc<Shared>,
}

/// Builds the subscription's consumer from `config` (group, offsets and
/// timeouts set by the caller) and subscribes it to `pattern`.
pub(crate) fn open(
    config: &rdkafka::ClientConfig,
    core: &Arc<SubscriptionCore>,
    pattern: &str,
    group: &str,
    revoke_wait: Duration,
) -> Result<Opened, crate::TransportError> {
    let shared = Arc::new(Shared {
        core: core.clone(),
        trackers: Mutex::default(),
        parked: Mutex::default(),
        revoke_wait,
        gauges: Arc::new(BrokerGauges::named(group)),
    });
    let consumer: BaseConsumer<Context> = config
        .create_with_context(Context {
            shared: shared.clone(),
        })
        .map_err(|e| super::error(format!("cannot create the consumer of group {group}"), e))?;
    consumer
        .subscribe(&[pattern])
        .map_err(|e| super::error(format!("cannot subscribe to {pattern}"), e))?;
    Ok(Opened { consumer, shared })
}

/// Starts the poll loop of an opened consumer on a blocking thread.
pub(crate) fn spawn(
    opened: Opened,
    commit_interval: Duration,
    drain_limit: Duration,
    lease: NameLease,
    runtime: &tokio::runtime::Handle,
) -> Feed {
    let gauges = opened.shared.gauges.clone();
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn_blocking(move || {
        run(opened, commit_interval, drain_limit, stopped);
        drop(lease);
    });
    Feed::new(stop, task).with_gauges(gauges)
}

/// A partition list of one partition.
fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// Hands one consumed record to the lanes, or parks it (see the module
/// docs). False when the lanes are closed.
fn feed(consumer: &BaseConsumer<Context>, shared: &Shared, msg: &BorrowedMessage<'_>) -> bool {
    let core = &shared.core;
    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
    let tracker = shared.tracker(topic, partition);
    let body = records::inbound(msg, core.kind == "envelope");
    let handle = Box::new(KafkaAck::new(tracker.clone(), offset));
    let ack = Ack::from_broker(Some(handle), 0, core.wildcard.then_some(topic));
    tracker.handed_out(offset);
    match core.try_deliver(Delivery { body, ack }) {
        Ok(()) => true,
        Err(TryPushError::Full(d)) => {
            tracker.withdraw(offset);
            if let Err(e) = consumer.pause(&one(topic, partition)) {
                tracing::warn!(topic, partition, error = %e, "pause failed");
            }
            shared
                .parked
                .lock()
                .insert((topic.to_owned(), partition), (d, offset));
            true
        }
        Err(TryPushError::Closed(_)) => false,
    }
}

/// Retries the parked records; resumes the partitions whose record went
/// in. False when the lanes are closed.
fn retry_parked(consumer: &BaseConsumer<Context>, shared: &Shared) -> bool {
    let parked: Vec<(PartitionKey, (Delivery, i64))> = shared.parked.lock().drain().collect();
    for ((topic, partition), (d, offset)) in parked {
        let tracker = shared.tracker(&topic, partition);
        tracker.handed_out(offset);
        match shared.core.try_deliver(d) {
            Ok(()) => {
                if let Err(e) = consumer.resume(&one(&topic, partition)) {
                    tracing::warn!(topic, partition, error = %e, "resume failed");
                }
            }
            Err(TryPushError::Full(d)) => {
                tracker.withdraw(offset);
                shared.parked.lock().insert((topic, partition), (d, offset));
            }
            Err(TryPushError::Closed(_)) => return false,
        }
    }
    true
}

/// Commits the positions that moved, and refreshes the unsettled gauges
/// (once per commit, not on every poll).
fn commit(consumer: &BaseConsumer<Context>, shared: &Shared, mode: CommitMode) {
    let unsettled: usize = shared.trackers.lock().values().map(|t| t.unsettled()).sum();
    shared
        .gauges
        .unsettled_here
        .store(unsettled as u64, Ordering::Relaxed);
    shared
        .gauges
        .ack_pending
        .store(unsettled as u64, Ordering::Relaxed);
    let tpl = shared.commits();
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(topic = %shared.core.topic, error = %e, "commit failed; it is retried with the next one");
    }
}

/// The poll loop (see the module docs).
fn run(
    opened: Opened,
    commit_interval: Duration,
    drain_limit: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let Opened { consumer, shared } = opened;
    let mut last_commit = Instant::now();
    let mut errors = 0u32;
    loop {
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            break;
        }
        if !retry_parked(&consumer, &shared) {
            break;
        }
        // While a record waits for room, look again soon (the lanes drain
        // in microseconds to milliseconds), not after a full poll wait.
        let wait = if shared.parked.lock().is_empty() {
            POLL
        } else {
            PARKED_POLL
        };
        match consumer.poll(wait) {
            Some(Ok(msg)) => {
                errors = 0;
                if !feed(&consumer, &shared, &msg) {
                    break;
                }
            }
            Some(Err(e)) => {
                errors += 1;
                if errors == 1 {
                    tracing::warn!(topic = %shared.core.topic, error = %e, "consumer error; polling on");
                }
            }
            None => {}
        }
        if last_commit.elapsed() >= commit_interval {
            commit(&consumer, &shared, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    // Stop: nothing more is fed; the workers drain what the lanes hold.
    if let Ok(assigned) = consumer.assignment() {
        let _ = consumer.pause(&assigned);
    }
    shared.parked.lock().clear();
    shared.core.lanes.close();
    let until = Instant::now() + drain_limit;
    while !shared.core.is_idle() && Instant::now() < until {
        let _ = consumer.poll(Duration::from_millis(10));
        if last_commit.elapsed() >= commit_interval {
            commit(&consumer, &shared, CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    commit(&consumer, &shared, CommitMode::Sync);
    for tracker in shared.trackers.lock().values() {
        tracker.release();
    }
    // Dropping the consumer closes it: it leaves the group.
    drop(consumer);
}
