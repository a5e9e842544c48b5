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
//!   topics are picked up at the next metadata refresh (5 s). Partitions
//!   are assigned with `cooperative-sticky`: a member joining or leaving
//!   moves only the partitions that change owner, the others keep being
//!   consumed through the rebalance.
//! - **Poll loop** (a blocking thread: librdkafka's callbacks, rebalances
//!   among them, run inside `poll`): each record's offset is handed out in
//!   its partition's tracker and the record pushed, without waiting, into
//!   lane `key_hash(key) % N` with a [`KafkaAck`] (which carries the
//!   partition and offset to the handler's context and to dead letters).
//! - **Back-pressure**: a record whose lane is full is parked in its
//!   partition's queue for that lane (records without a key, which any
//!   lane takes, in a queue of their own); later records of that
//!   partition and lane join the queue behind it, so per-key order holds.
//!   Parked records are handed out in the tracker already: a commit never
//!   passes them. Every turn of the loop moves the queues' heads into the
//!   lanes while they take them (a lane found full is not tried again in
//!   that turn), polling with a 1 ms wait while anything is parked. A
//!   partition whose parked records reach [`PARK_LIMIT`] is paused, and
//!   resumed once they are down to [`RESUME_AT`]. Pausing is kept rare on
//!   purpose: librdkafka drops what it prefetched for a paused partition
//!   and fetches it again after the resume (most of a second here), so
//!   pausing on every full lane left the lanes idle most of the time. The
//!   loop keeps polling throughout, so the member stays in its group
//!   however slow the handlers are.
//! - **Commits**: finished positions are committed, and the unsettled
//!   counts in `stats()` refreshed, every `commit_interval` (not on every
//!   poll).
//! - **Revocation** (a rebalance takes partitions away; with the
//!   cooperative protocol only those that move): their parked records are
//!   dropped (the commit stops below the first of them), the loop waits,
//!   bounded, until the lanes settled every record of them, commits the positions,
//!   then releases the trackers: records still in lanes after the wait
//!   are released unhandled by the workers (stale), since the next owner
//!   starts from the commit. **Assignment** adds fresh trackers for the
//!   partitions it adds.
//! - **Stop**: pause every partition, drop parked records, close the lanes
//!   and keep polling until the workers drained them (bounded), committing
//!   as they finish; a last commit, then the consumer closes (leaving the
//!   group).
//! - **Oldest records**: each record's timestamp is kept beside its offset
//!   in the tracker, so the backlog monitor reads, per partition, the
//!   oldest unsettled record's timestamp and how long it has been held
//!   (`PartitionFronts`: the oldest age, and partition stalls) without a
//!   broker request; records librdkafka has not handed out yet are not
//!   seen.
//! - **Lag and group state**: librdkafka's statistics (every second) give
//!   each partition's lag (high watermark − committed), which `stats()`
//!   shows with their sum, and the member's group state, which the bus's
//!   health check reads ([`GroupHealth`]).
//!
//! # Invariants
//!
//! - A position is committed only when every record below it settled.
//! - The loop never waits on a lane: a full lane parks the record.
//! - A partition's records of one lane (so of one key) enter it in offset
//!   order: a record goes behind the parked records of its partition and
//!   lane.
//! - Parked records per partition stay within [`PARK_LIMIT`] plus one
//!   poll's worth (the records librdkafka hands out before the pause
//!   takes effect are parked too, never dropped).

use std::collections::VecDeque;
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
use crate::engine::lanes::{Delivery, Lanes, Route};
use crate::engine::ring::TryPushError;
use crate::engine::SubscriptionCore;
use crate::pipeline::metrics::{BrokerGauges, PartitionLag};
use crate::pipeline::monitor::{FrontsProbe, PartitionFront, PartitionFronts};
use crate::transport::names::NameLease;
use crate::transport::{Ack, Feed, FeedHealth};
use crate::TransportError;

/// How long one poll waits for a record.
const POLL: Duration = Duration::from_millis(50);
/// How long one poll waits while records are parked (the lanes drain in
/// microseconds to milliseconds).
const PARKED_POLL: Duration = Duration::from_millis(1);
/// Parked records at which a partition is paused: as many as librdkafka
/// prefetches per partition (`queued.min.messages`, set by the client).
pub(crate) const PARK_LIMIT: usize = 1000;
/// Parked records at which a paused partition is resumed: early enough
/// that the records fetched after the resume arrive before the queue ran
/// dry.
pub(crate) const RESUME_AT: usize = PARK_LIMIT / 2;
/// A member whose statistics are older than this is reported stalled
/// (they come every second while the loop polls).
const STATS_STALE: Duration = Duration::from_secs(5);

/// One partition assigned to this member: its offsets, and its records
/// that met a full lane.
struct Assigned {
    topic: Arc<str>,
    partition: i32,
    tracker: Arc<PartitionOffsets>,
    /// Records waiting for room, one queue per lane (by the lane their key
    /// maps to; the last queue: records without a key, which any lane
    /// takes), each in offset order.
    parked: Vec<VecDeque<(Delivery, Route)>>,
    /// Records in `parked`.
    parked_count: usize,
    /// Paused because `parked_count` reached [`PARK_LIMIT`].
    paused: bool,
}

impl Assigned {
    fn new(topic: &str, partition: i32) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
            tracker: Arc::new(PartitionOffsets::starting_at(None)),
            parked: Vec::new(),
            parked_count: 0,
            paused: false,
        }
    }

    fn is(&self, topic: &str, partition: i32) -> bool {
        self.partition == partition && *self.topic == *topic
    }

    fn clear_parked(&mut self) {
        self.parked.clear();
        self.parked_count = 0;
    }
}

/// The parked queue of a route: its lane's, or the last one (any lane).
fn queue_of(lanes: &Lanes, route: Route) -> usize {
    match route {
        Route::Keyed(_) => lanes.first_choice(route),
        Route::Spread(_) => lanes.len(),
    }
}

/// The index of `topic`/`partition` in `assigned`, added when missing.
/// A member holds few partitions: a scan (partition first) finds one
/// without allocating, where a map keyed by an owned topic would not.
fn find(assigned: &mut Vec<Assigned>, topic: &str, partition: i32) -> usize {
    match assigned.iter().position(|a| a.is(topic, partition)) {
        Some(i) => i,
        None => {
            assigned.push(Assigned::new(topic, partition));
            assigned.len() - 1
        }
    }
}

/// What the poll loop and its rebalance callbacks share.
pub(crate) struct Shared {
    core: Arc<SubscriptionCore>,
    /// The partitions assigned to this member.
    assigned: Mutex<Vec<Assigned>>,
    /// How long a revocation waits for the lanes to settle its records.
    revoke_wait: Duration,
    gauges: Arc<BrokerGauges>,
    group: Arc<GroupHealth>,
}

impl Shared {
    /// The positions that moved since the last commit.
    fn commits(&self) -> TopicPartitionList {
        commit_list(
            self.assigned
                .lock()
                .iter()
                .map(|a| (&*a.topic, a.partition, &a.tracker)),
        )
    }
}

impl PartitionFronts for Shared {
    fn fronts(&self, now: Instant, out: &mut Vec<PartitionFront>) {
        for a in self.assigned.lock().iter() {
            if let Some(front) = a.tracker.front(now) {
                out.push(PartitionFront {
                    topic: a.topic.clone(),
                    partition: a.partition,
                    held_for: front.held_for,
                    timestamp: front.timestamp,
                    unsettled: front.unsettled as u64,
                });
            }
        }
    }
}

/// The positions of `trackers` that moved since their last commit.
fn commit_list<'a>(
    trackers: impl Iterator<Item = (&'a str, i32, &'a Arc<PartitionOffsets>)>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, tracker) in trackers {
        if let Some(position) = tracker.take_commit() {
            let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(position));
        }
    }
    tpl
}

/// A group member's standing, from librdkafka's statistics, for the bus's
/// health check: healthy while the consumer runs, its statistics are
/// fresh (younger than 5 s) and its group state is `up` with join state
/// `steady` (joined, its assignment taken, no rebalance under way). A
/// member with no partitions (more members than partitions) is healthy.
#[derive(Debug)]
pub(crate) struct GroupHealth {
    group: String,
    topic: String,
    seen: Mutex<Option<GroupSeen>>,
}

#[derive(Debug)]
struct GroupSeen {
    state: String,
    join_state: String,
    at: Instant,
}

impl GroupHealth {
    fn new(group: &str, topic: &str) -> Self {
        Self {
            group: group.to_owned(),
            topic: topic.to_owned(),
            seen: Mutex::new(None),
        }
    }

    fn unhealthy(&self, why: impl std::fmt::Display) -> TransportError {
        TransportError::new(
            "kafka",
            format!("group {} of topic {}: {why}", self.group, self.topic),
            None,
        )
    }
}

impl FeedHealth for GroupHealth {
    fn check(&self, task_ended: bool) -> Result<(), TransportError> {
        if task_ended {
            return Err(self.unhealthy("its consumer stopped"));
        }
        let seen = self.seen.lock();
        let Some(seen) = seen.as_ref() else {
            return Err(self.unhealthy("no group state reported yet (the member is starting)"));
        };
        let age = seen.at.elapsed();
        if age > STATS_STALE {
            return Err(self.unhealthy(format_args!(
                "no report from its consumer for {} s (stalled, or held in a rebalance)",
                age.as_secs()
            )));
        }
        if seen.state != "up" || seen.join_state != "steady" {
            return Err(self.unhealthy(format_args!(
                "not a steady member (state {}, join state {})",
                seen.state, seen.join_state
            )));
        }
        Ok(())
    }
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
        let (state, join_state) = match statistics.cgrp {
            Some(g) => (g.state, g.join_state),
            None => ("none".to_owned(), "none".to_owned()),
        };
        *self.shared.group.seen.lock() = Some(GroupSeen {
            state,
            join_state,
            at: Instant::now(),
        });
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let shared = &self.shared;
            // Taken out of the assignment; their parked records are
            // dropped: the next owner fetches them.
            let revoked: Vec<Assigned> = {
                let mut assigned = shared.assigned.lock();
                let mut revoked = Vec::new();
                for e in tpl.elements() {
                    if let Some(i) = assigned.iter().position(|a| a.is(e.topic(), e.partition())) {
                        revoked.push(assigned.swap_remove(i));
                    }
                }
                revoked
            };
            // Parked records stay unsettled (the commit stops below the
            // first of them); the wait is for the records in the lanes.
            let until = Instant::now() + shared.revoke_wait;
            while Instant::now() < until
                && revoked
                    .iter()
                    .any(|a| a.tracker.unsettled() > a.parked_count)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            let commit = commit_list(revoked.iter().map(|a| (&*a.topic, a.partition, &a.tracker)));
            for a in &revoked {
                a.tracker.release();
            }
            drop(revoked);
            if commit.count() > 0 {
                if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                    tracing::warn!(topic = %shared.core.topic, error = %e, "commit at revocation failed; the next owner may handle some records again");
                }
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            {
                let mut assigned = self.shared.assigned.lock();
                for e in tpl.elements() {
                    let fresh = Assigned::new(e.topic(), e.partition());
                    match assigned.iter_mut().find(|a| a.is(e.topic(), e.partition())) {
                        Some(old) => {
                            old.tracker.release();
                            *old = fresh;
                        }
                        None => assigned.push(fresh),
                    }
                }
            }
            // A partition paused under an earlier assignment starts
            // unpaused: its fresh entry has nothing parked.
            if tpl.count() > 0 {
                if let Err(e) = consumer.resume(tpl) {
                    tracing::debug!(error = %e, "resume of newly assigned partitions failed");
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
        assigned: Mutex::default(),
        revoke_wait,
        gauges: Arc::new(BrokerGauges::named(group)),
        group: Arc::new(GroupHealth::new(group, &core.topic)),
    });
    let weak = Arc::downgrade(&shared);
    let _ = shared.gauges.fronts.set(FrontsProbe(weak));
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
    let health = opened.shared.group.clone();
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn_blocking(move || {
        run(opened, commit_interval, drain_limit, stopped);
        drop(lease);
    });
    Feed::new(stop, task)
        .with_gauges(gauges)
        .with_health(health)
}

/// A partition list of one partition.
fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    tpl
}

/// Hands one consumed record to the lanes, or parks it behind the parked
/// records of its partition and lane (see the module docs). False when the
/// lanes are closed.
fn feed(consumer: &BaseConsumer<Context>, shared: &Shared, msg: &BorrowedMessage<'_>) -> bool {
    let core = &shared.core;
    let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
    let body = records::inbound(msg, core.kind == "envelope");
    let route = Route::of(&body);
    let mut assigned = shared.assigned.lock();
    let i = find(&mut assigned, topic, partition);
    let a = &mut assigned[i];
    let handle = Box::new(KafkaAck::new(a.tracker.clone(), partition, offset));
    let ack = Ack::from_broker(Some(handle), 0, core.wildcard.then_some(topic));
    let d = Delivery { body, ack };
    // Unsettled from now on, parked or not: a commit never passes it.
    a.tracker
        .handed_out(offset, msg.timestamp().to_millis().unwrap_or(-1));
    let q = queue_of(&core.lanes, route);
    let d = if a.parked.get(q).is_none_or(VecDeque::is_empty) {
        match core.lanes.try_push(d, route) {
            Ok(()) => return true,
            Err(TryPushError::Full(d)) => d,
            Err(TryPushError::Closed(_)) => return false,
        }
    } else {
        d
    };
    if a.parked.len() <= q {
        a.parked.resize_with(core.lanes.len() + 1, VecDeque::new);
    }
    a.parked[q].push_back((d, route));
    a.parked_count += 1;
    if !a.paused && a.parked_count >= PARK_LIMIT {
        if let Err(e) = consumer.pause(&one(topic, partition)) {
            tracing::warn!(topic, partition, error = %e, "pause failed");
        }
        a.paused = true;
    }
    true
}

/// Moves parked records into the lanes, each queue in order, while their
/// lanes take them: a lane found full is not tried again in this pass (for
/// any partition). Resumes the paused partitions whose parked records went
/// down to [`RESUME_AT`]. `None` when the lanes are closed, else whether
/// records are still parked. `full` is scratch space, kept by the loop so
/// a pass allocates nothing.
fn retry_parked(
    consumer: &BaseConsumer<Context>,
    shared: &Shared,
    full: &mut Vec<bool>,
) -> Option<bool> {
    let lanes = &shared.core.lanes;
    let mut assigned = shared.assigned.lock();
    if assigned.iter().all(|a| a.parked_count == 0) {
        return Some(false);
    }
    // The queues whose lane was found full in this pass.
    full.clear();
    full.resize(lanes.len() + 1, false);
    let mut still = false;
    for a in assigned.iter_mut() {
        if a.parked_count == 0 {
            continue;
        }
        for (queue, full) in a.parked.iter_mut().zip(full.iter_mut()) {
            while !*full {
                let Some((d, route)) = queue.pop_front() else {
                    break;
                };
                match lanes.try_push(d, route) {
                    Ok(()) => a.parked_count -= 1,
                    Err(TryPushError::Full(d)) => {
                        queue.push_front((d, route));
                        *full = true;
                    }
                    Err(TryPushError::Closed(_)) => return None,
                }
            }
        }
        if a.paused && a.parked_count <= RESUME_AT {
            if let Err(e) = consumer.resume(&one(&a.topic, a.partition)) {
                tracing::warn!(topic = %a.topic, partition = a.partition, error = %e, "resume failed");
            }
            a.paused = false;
        }
        still |= a.parked_count > 0;
    }
    Some(still)
}

/// Commits the positions that moved, and refreshes the unsettled gauges
/// (once per commit, not on every poll).
fn commit(consumer: &BaseConsumer<Context>, shared: &Shared, mode: CommitMode) {
    let unsettled: usize = shared
        .assigned
        .lock()
        .iter()
        .map(|a| a.tracker.unsettled())
        .sum();
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
    let mut full = Vec::with_capacity(shared.core.lanes.len() + 1);
    loop {
        if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
            break;
        }
        let Some(parked) = retry_parked(&consumer, &shared, &mut full) else {
            break;
        };
        match consumer.poll(if parked { PARKED_POLL } else { POLL }) {
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
    for a in shared.assigned.lock().iter_mut() {
        a.clear_parked();
    }
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
    for a in shared.assigned.lock().iter() {
        a.tracker.release();
    }
    // Dropping the consumer closes it: it leaves the group.
    drop(consumer);
}
