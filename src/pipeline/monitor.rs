//! The backlog monitor of a subscription, the publisher-side monitor, and
//! the state they share with the lane workers and the user ([`Watch`]).
//!
//! # Algorithm
//!
//! One task per subscription with `SubscribeOptions::backlog`, on the bus
//! runtime, checks every `check_interval` (the first check at once):
//!
//! - **backlog**: memory → the lanes' depth (records accepted and not yet
//!   processed); JetStream → the consumer's pending plus ack-pending counts
//!   (the broker's figures, refreshed about once a second by the consumer
//!   loop); Kafka → the partitions' summed lag;
//! - **oldest age**: memory → each check samples every lane's claimed
//!   position with the time; the oldest waiting record (position
//!   `processed`) entered no later than the first sample whose claimed
//!   position is past it, so `now - that sample's time` is a lower bound
//!   of its age, exact within one interval. No hot-path cost. JetStream →
//!   `now -` the stored time of the oldest unacked message, which the
//!   consumer's figures loop reads with them (one raw get a refresh).
//!   Kafka → `now -` the timestamp of each partition's oldest unsettled
//!   record among those fetched (the offset trackers keep it; no broker
//!   request), the oldest over the partitions; records librdkafka has not
//!   fetched yet are not seen. None when nothing waits (or no timestamp
//!   is known); wall-clock ages, so a producer's clock skew shows in them;
//! - the [`Hysteresis`] machine decides the recovery mode, stored in the
//!   subscription's one mode byte (handlers read it with a relaxed load);
//! - **stalls** (with `stall_after`): each lane worker stores a coarse
//!   start time (ms since the subscription began) when it takes a record
//!   and clears it when the record is settled; a lane whose stored start
//!   is older than `stall_after` is stalled. On Kafka each partition is
//!   watched too ([`PartitionFronts`]): a partition whose oldest unsettled
//!   record (the one its commits wait for) was handed to the lanes longer
//!   than `stall_after` ago is stalled, named in its events (`partition`)
//!   and in the broker stats (`BrokerStats::stalled`); it is cleared (age
//!   0) when that record settled and the next one is younger, or when the
//!   partition has nothing unsettled (or left this member).
//!
//! Changes (never steady states) go to the bus's event stream. The task
//! stops when the subscription is detached (its handle is aborted) or the
//! bus closes or is dropped.
//!
//! The publisher monitor reads the bus's count of publishes waiting (on a
//! full lane, or for a broker's ack) with the same machine.
//!
//! # Invariants
//!
//! - With no stall threshold the workers never read the clock; the mode
//!   byte is always there (a manual setting needs no options).
//! - A manual setting overrides the automatic mode until cleared; the
//!   automatic machine keeps running underneath.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::backlog::{BacklogOptions, Hysteresis, PublisherBacklogOptions, Transition};
use super::metrics::{BrokerGauges, StalledPartition};
use crate::engine::SubscriptionCore;
use crate::events::{BacklogState, BusEvent, EventHub, PublisherBacklogState, StallState};

const AUTO: u8 = 1;
const OVERRIDE: u8 = 2;
const MANUAL: u8 = 4;

/// Most samples a lane keeps for its oldest-age estimate; past it the
/// newest two merge (the oldest record's estimate stays exact).
const MAX_SAMPLES: usize = 1024;

/// A subscription's recovery mode, stall clocks and last check, shared by
/// its workers, its monitor, its handle and `stats()`.
#[derive(Debug)]
pub(crate) struct Watch {
    /// `AUTO` (the monitor's mode) | `OVERRIDE` (a manual setting holds) |
    /// `MANUAL` (its value).
    mode: AtomicU8,
    /// Per-lane handler start times, with `stall_after` only.
    pub(crate) stall: Option<StallClock>,
    /// What the last check saw.
    last: Mutex<Snapshot>,
}

/// The last check's figures, for `stats()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) checked: bool,
    pub(crate) backlog: u64,
    pub(crate) oldest_age: Option<Duration>,
    /// Stalled lanes and how long each has been stuck.
    pub(crate) stalled: Vec<(usize, Duration)>,
}

impl Watch {
    /// The watch of a subscription of `lanes` lanes.
    pub(crate) fn new(options: Option<&BacklogOptions>, lanes: usize) -> Self {
        Self {
            mode: AtomicU8::new(0),
            stall: options
                .and_then(|o| o.stall_after)
                .map(|_| StallClock::new(lanes)),
            last: Mutex::new(Snapshot::default()),
        }
    }

    /// The mode handlers see (one relaxed load).
    #[inline]
    pub(crate) fn recovering(&self) -> bool {
        let m = self.mode.load(Ordering::Relaxed);
        if m & OVERRIDE != 0 {
            m & MANUAL != 0
        } else {
            m & AUTO != 0
        }
    }

    /// True while a manual setting holds.
    pub(crate) fn is_manual(&self) -> bool {
        self.mode.load(Ordering::Relaxed) & OVERRIDE != 0
    }

    /// Sets (`Some`) or clears (`None`) the manual override; returns the
    /// effective mode before and after.
    pub(crate) fn set_manual(&self, value: Option<bool>) -> (bool, bool) {
        let before = self.recovering();
        let _ = self
            .mode
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(match value {
                    Some(true) => (m & AUTO) | OVERRIDE | MANUAL,
                    Some(false) => (m & AUTO) | OVERRIDE,
                    None => m & AUTO,
                })
            });
        (before, self.recovering())
    }

    fn set_auto(&self, on: bool) {
        if on {
            self.mode.fetch_or(AUTO, Ordering::Relaxed);
        } else {
            self.mode.fetch_and(!AUTO, Ordering::Relaxed);
        }
    }

    /// What the last check saw.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.last.lock().clone()
    }

    /// The state an event reports, from the last check.
    pub(crate) fn state(&self, core: &SubscriptionCore) -> BacklogState {
        let last = self.last.lock();
        BacklogState {
            subscription: core.id,
            topic: core.topic.to_string(),
            group: core.group.as_deref().map(str::to_owned),
            backlog: last.backlog,
            oldest_age: last.oldest_age,
            recovering: self.recovering(),
            manual: self.is_manual(),
        }
    }
}

/// Per-lane start time of the record in the handler: milliseconds since
/// `base`, plus one (0: no record).
#[derive(Debug)]
pub(crate) struct StallClock {
    base: Instant,
    busy_since: Box<[AtomicU64]>,
}

impl StallClock {
    fn new(lanes: usize) -> Self {
        Self {
            base: Instant::now(),
            busy_since: (0..lanes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The worker of `lane` took a record.
    #[inline]
    pub(crate) fn begin(&self, lane: usize) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.busy_since[lane].store(ms, Ordering::Relaxed);
    }

    /// The worker of `lane` settled its record.
    #[inline]
    pub(crate) fn end(&self, lane: usize) {
        self.busy_since[lane].store(0, Ordering::Relaxed);
    }

    /// How long the record in `lane`'s handler has been there.
    fn age(&self, lane: usize, now: Instant) -> Option<Duration> {
        let since = self.busy_since[lane].load(Ordering::Relaxed);
        (since != 0).then(|| {
            let started = self.base + Duration::from_millis(since - 1);
            now.saturating_duration_since(started)
        })
    }
}

/// Where a subscription's backlog comes from.
pub(crate) enum Source {
    /// The lanes (memory).
    Lanes,
    /// A broker consumer's gauges: JetStream (`lag: false`): pending +
    /// ack pending; Kafka (`lag: true`): the partitions' summed lag (in
    /// `pending`), or the records held unsettled here while librdkafka has
    /// not reported a lag yet (as of the last commit, or counted live from
    /// the partition fronts at the check), whichever is larger.
    Broker {
        gauges: Arc<BrokerGauges>,
        lag: bool,
    },
}

/// The oldest unsettled record of one partition a broker consumer holds.
#[derive(Clone, Debug)]
pub(crate) struct PartitionFront {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// How long it has been held (handed to the lanes, not settled).
    pub(crate) held_for: Duration,
    /// Its broker timestamp (ms since the Unix epoch), when it has one.
    pub(crate) timestamp: Option<i64>,
    /// The partition's records held unsettled here.
    pub(crate) unsettled: u64,
}

/// A broker consumer that knows its partitions' oldest unsettled records
/// (Kafka).
pub(crate) trait PartitionFronts: Send + Sync {
    /// Appends the front of each partition with unsettled records, at
    /// `now`.
    fn fronts(&self, now: Instant, out: &mut Vec<PartitionFront>);
}

/// A consumer's [`PartitionFronts`] in its gauges, held weakly (the
/// consumer owns the gauges).
pub(crate) struct FrontsProbe(pub(crate) Weak<dyn PartitionFronts>);

impl std::fmt::Debug for FrontsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrontsProbe")
    }
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> i64 {
    crate::envelope::clock::unix_millis(std::time::SystemTime::now()) as i64
}

/// The age at `now_ms` of a record stored at `at_ms` (0 if in the future).
fn age_at(now_ms: i64, at_ms: i64) -> Duration {
    Duration::from_millis(now_ms.saturating_sub(at_ms).max(0) as u64)
}

/// A broker consumer's oldest waiting record's age: the oldest partition
/// front's timestamp (Kafka; `fronts` gets them), else the stored time the
/// JetStream figures loop read.
fn broker_oldest(
    gauges: &BrokerGauges,
    now: Instant,
    fronts: &mut Vec<PartitionFront>,
) -> Option<Duration> {
    fronts.clear();
    let now_ms = unix_ms();
    match gauges.fronts.get() {
        Some(probe) => {
            if let Some(probe) = probe.0.upgrade() {
                probe.fronts(now, fronts);
            }
            fronts
                .iter()
                .filter_map(|f| f.timestamp)
                .map(|at| age_at(now_ms, at))
                .max()
        }
        None => match gauges.oldest_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            at => Some(age_at(now_ms, at as i64)),
        },
    }
}

/// The stalled partitions of one subscription between checks.
#[derive(Default)]
struct PartitionStalls(Vec<(Arc<str>, i32)>);

impl PartitionStalls {
    /// Compares `fronts` with the partitions stalled at the last check:
    /// pushes an event per change into `changes` and returns the stalled
    /// ones now.
    fn check(
        &mut self,
        core: &SubscriptionCore,
        fronts: &[PartitionFront],
        limit: Duration,
        changes: &mut Vec<BusEvent>,
    ) -> Vec<StalledPartition> {
        let state = |topic: &str, partition: i32, age: Duration| StallState {
            subscription: core.id,
            topic: topic.to_owned(),
            group: core.group.as_deref().map(str::to_owned),
            lane: 0,
            partition: Some(partition),
            age,
        };
        let now: Vec<&PartitionFront> = fronts.iter().filter(|f| f.held_for > limit).collect();
        self.0.retain(|(topic, partition)| {
            let still = now
                .iter()
                .any(|f| f.partition == *partition && f.topic == *topic);
            if !still {
                changes.push(BusEvent::StallCleared(state(
                    topic,
                    *partition,
                    Duration::ZERO,
                )));
            }
            still
        });
        for f in &now {
            let known = self
                .0
                .iter()
                .any(|(topic, partition)| f.partition == *partition && f.topic == *topic);
            if !known {
                self.0.push((f.topic.clone(), f.partition));
                changes.push(BusEvent::StallEntered(state(
                    &f.topic,
                    f.partition,
                    f.held_for,
                )));
            }
        }
        let mut stalled: Vec<StalledPartition> = now
            .iter()
            .map(|f| StalledPartition::new(&f.topic, f.partition, f.held_for))
            .collect();
        stalled.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        stalled
    }
}

/// The bus side a monitor needs.
pub(crate) trait MonitorHost: Send + Sync {
    /// The bus's event stream.
    fn events(&self) -> &EventHub;
    /// True once the bus is closing.
    fn closing(&self) -> bool;
    /// Publishes waiting now (publisher backlog).
    fn publishes_waiting(&self) -> u64;
}

/// Per-lane samples of (claimed position, time), oldest first.
#[derive(Default)]
struct Samples(Vec<VecDeque<(u64, Instant)>>);

impl Samples {
    /// Samples the lanes at `now` and returns the oldest waiting record's
    /// age over all lanes (a lower bound), `None` when nothing waits.
    fn oldest(&mut self, core: &SubscriptionCore, now: Instant) -> Option<Duration> {
        if self.0.len() != core.lanes.len() {
            self.0 = vec![VecDeque::new(); core.lanes.len()];
        }
        let mut oldest = None;
        for (lane, samples) in core.lanes.iter().zip(&mut self.0) {
            let processed = lane.processed();
            samples.push_back((lane.ring.claimed(), now));
            while samples
                .front()
                .is_some_and(|&(claimed, _)| claimed <= processed)
            {
                samples.pop_front();
            }
            if samples.len() > MAX_SAMPLES {
                samples.remove(samples.len() - 2);
            }
            if let Some(&(_, at)) = samples.front() {
                let age = now.saturating_duration_since(at);
                oldest = Some(oldest.map_or(age, |o: Duration| o.max(age)));
            }
        }
        oldest
    }
}

/// Spawns the monitor of one subscription.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    host: Weak<dyn MonitorHost>,
    core: Arc<SubscriptionCore>,
    watch: Arc<Watch>,
    options: BacklogOptions,
    source: Source,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let thresholds = options.thresholds();
        let mut machine = Hysteresis::new(options.hold);
        let mut samples = Samples::default();
        let mut stalled = vec![false; core.lanes.len()];
        let mut fronts = Vec::new();
        let mut partition_stalls = PartitionStalls::default();
        let mut tick = ticks(options.check_interval);
        loop {
            let Some(host) = next_check(&mut tick, &host).await else {
                return;
            };
            let now = Instant::now();
            let (backlog, oldest_age) = match &source {
                Source::Lanes => (core.pending(), samples.oldest(&core, now)),
                Source::Broker { gauges, lag } => {
                    let oldest = broker_oldest(gauges, now, &mut fronts);
                    let pending = gauges.pending.load(Ordering::Relaxed);
                    let unsettled = gauges.ack_pending.load(Ordering::Relaxed);
                    let backlog = if *lag {
                        let held: u64 = fronts.iter().map(|f| f.unsettled).sum();
                        pending.max(unsettled).max(held)
                    } else {
                        pending + unsettled
                    };
                    (backlog, oldest)
                }
            };
            let transition = machine.observe(thresholds.exceeded(backlog, oldest_age), now);
            watch.set_auto(machine.recovering());
            let mut ages = Vec::new();
            let mut changes = Vec::new();
            if let (Some(clock), Some(limit)) = (&watch.stall, options.stall_after) {
                for (lane, was) in stalled.iter_mut().enumerate() {
                    let age = clock.age(lane, now).unwrap_or_default();
                    let is = age > limit;
                    if is {
                        ages.push((lane, age));
                    }
                    if is != *was {
                        *was = is;
                        let state = StallState {
                            subscription: core.id,
                            topic: core.topic.to_string(),
                            group: core.group.as_deref().map(str::to_owned),
                            lane,
                            partition: None,
                            age,
                        };
                        changes.push(if is {
                            BusEvent::StallEntered(state)
                        } else {
                            BusEvent::StallCleared(state)
                        });
                    }
                }
            }
            if let (Source::Broker { gauges, .. }, Some(limit)) = (&source, options.stall_after) {
                let now_stalled = partition_stalls.check(&core, &fronts, limit, &mut changes);
                *gauges.stalled.lock() = now_stalled;
            }
            // The snapshot first: a receiver of an event then finds the
            // stats agreeing with it.
            *watch.last.lock() = Snapshot {
                checked: true,
                backlog,
                oldest_age,
                stalled: ages,
            };
            for event in changes {
                host.events().emit(event);
            }
            match transition {
                Some(Transition::Entered) => {
                    host.events()
                        .emit(BusEvent::RecoveryEntered(watch.state(&core)));
                }
                Some(Transition::Left) => {
                    host.events()
                        .emit(BusEvent::RecoveryLeft(watch.state(&core)));
                }
                None => {}
            }
        }
    })
}

/// A monitor's check interval (a late check is delayed, not bunched).
fn ticks(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Waits for the next check; `None` once the bus is dropped or closing
/// (the monitor then ends).
async fn next_check(
    tick: &mut tokio::time::Interval,
    host: &Weak<dyn MonitorHost>,
) -> Option<Arc<dyn MonitorHost>> {
    tick.tick().await;
    host.upgrade().filter(|host| !host.closing())
}

/// Spawns the publisher-side monitor of a bus.
pub(crate) fn spawn_publisher(
    runtime: &tokio::runtime::Handle,
    host: Weak<dyn MonitorHost>,
    options: PublisherBacklogOptions,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut machine = Hysteresis::new(options.hold);
        let mut tick = ticks(options.check_interval);
        loop {
            let Some(host) = next_check(&mut tick, &host).await else {
                return;
            };
            let waiting = host.publishes_waiting();
            let above = waiting > options.max_waiting;
            if let Some(t) = machine.observe(above, Instant::now()) {
                host.events()
                    .emit(BusEvent::PublisherBacklog(PublisherBacklogState {
                        waiting,
                        backlogged: t == Transition::Entered,
                    }));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_setting_overrides_until_cleared() {
        let w = Watch::new(None, 1);
        assert!(!w.recovering());
        w.set_auto(true);
        assert!(w.recovering());
        assert_eq!(w.set_manual(Some(false)), (true, false));
        assert!(w.is_manual());
        w.set_auto(false);
        w.set_auto(true);
        assert!(!w.recovering(), "the manual setting holds");
        assert_eq!(w.set_manual(None), (false, true));
        assert!(!w.is_manual());
        assert_eq!(w.set_manual(Some(true)), (true, true));
        w.set_auto(false);
        assert!(w.recovering());
    }

    fn front(topic: &str, partition: i32, held_ms: u64, timestamp: Option<i64>) -> PartitionFront {
        PartitionFront {
            topic: Arc::from(topic),
            partition,
            held_for: Duration::from_millis(held_ms),
            timestamp,
            unsettled: 1,
        }
    }

    #[test]
    fn a_partition_stall_is_an_event_when_it_begins_and_when_it_ends() {
        let (lanes, _consumers) = crate::engine::lanes::Lanes::new(1, 4);
        let core = SubscriptionCore {
            id: 3,
            topic: Arc::from("orders.*"),
            group: Some("billing".into()),
            wildcard: true,
            kind: "plain",
            lanes,
        };
        let limit = Duration::from_secs(1);
        let mut stalls = PartitionStalls::default();
        let mut changes = Vec::new();
        let fronts = [
            front("orders.eu", 0, 500, None),
            front("orders.us", 0, 1500, None),
        ];
        let now = stalls.check(&core, &fronts, limit, &mut changes);
        assert_eq!(
            now,
            [StalledPartition::new(
                "orders.us",
                0,
                Duration::from_millis(1500)
            )]
        );
        assert_eq!(changes.len(), 1);
        match &changes[0] {
            BusEvent::StallEntered(s) => {
                assert_eq!((s.topic.as_str(), s.partition), ("orders.us", Some(0)));
                assert_eq!((s.subscription, s.group.as_deref()), (3, Some("billing")));
            }
            other => panic!("{other:?}"),
        }
        // Still stalled, older: no event.
        changes.clear();
        let fronts = [front("orders.us", 0, 2500, None)];
        assert_eq!(stalls.check(&core, &fronts, limit, &mut changes).len(), 1);
        assert!(changes.is_empty(), "{changes:?}");
        // Its commits moved (a younger front): cleared with age 0.
        let fronts = [front("orders.us", 0, 10, None)];
        assert!(stalls.check(&core, &fronts, limit, &mut changes).is_empty());
        match &changes[..] {
            [BusEvent::StallCleared(s)] => {
                assert_eq!((s.partition, s.age), (Some(0), Duration::ZERO));
            }
            other => panic!("{other:?}"),
        }
        // Stalled again, then nothing unsettled at all: cleared too.
        changes.clear();
        stalls.check(
            &core,
            &[front("orders.us", 0, 1001, None)],
            limit,
            &mut changes,
        );
        stalls.check(&core, &[], limit, &mut changes);
        assert!(matches!(
            &changes[..],
            [BusEvent::StallEntered(_), BusEvent::StallCleared(_)]
        ));
    }

    #[test]
    fn the_broker_oldest_age_is_the_oldest_front_timestamp() {
        struct Fixed(Vec<PartitionFront>);
        impl PartitionFronts for Fixed {
            fn fronts(&self, _now: Instant, out: &mut Vec<PartitionFront>) {
                out.extend(self.0.iter().cloned());
            }
        }
        let now_ms = unix_ms();
        let gauges = BrokerGauges::named("c");
        let mut fronts = Vec::new();
        // JetStream: the stored time from the figures loop; 0 is none.
        assert_eq!(broker_oldest(&gauges, Instant::now(), &mut fronts), None);
        gauges
            .oldest_unix_ms
            .store((now_ms - 3_000) as u64, Ordering::Relaxed);
        let age = broker_oldest(&gauges, Instant::now(), &mut fronts).unwrap();
        assert!(
            age >= Duration::from_secs(3) && age < Duration::from_secs(60),
            "{age:?}"
        );
        // Kafka: the oldest partition front with a timestamp.
        let probe: Arc<dyn PartitionFronts> = Arc::new(Fixed(vec![
            front("t", 0, 0, Some(now_ms - 2_000)),
            front("t", 1, 0, Some(now_ms - 5_000)),
            front("t", 2, 0, None),
        ]));
        let kafka = BrokerGauges::named("k");
        kafka
            .fronts
            .set(FrontsProbe(Arc::downgrade(&probe)))
            .unwrap();
        let age = broker_oldest(&kafka, Instant::now(), &mut fronts).unwrap();
        assert!(
            age >= Duration::from_secs(5) && age < Duration::from_secs(60),
            "{age:?}"
        );
        assert_eq!(fronts.len(), 3);
        // Nothing unsettled: none.
        let empty: Arc<dyn PartitionFronts> = Arc::new(Fixed(Vec::new()));
        let idle = BrokerGauges::named("i");
        idle.fronts
            .set(FrontsProbe(Arc::downgrade(&empty)))
            .unwrap();
        assert_eq!(broker_oldest(&idle, Instant::now(), &mut fronts), None);
        // A record stamped in the future (clock skew) is 0 old.
        assert_eq!(age_at(1_000, 2_000), Duration::ZERO);
    }

    #[test]
    fn the_stall_clock_reports_the_age_of_the_record_in_the_handler() {
        let w = Watch::new(
            Some(&BacklogOptions::default().stall_after(Duration::from_secs(1))),
            2,
        );
        let clock = w.stall.as_ref().expect("a clock with stall_after");
        assert_eq!(clock.age(0, Instant::now()), None);
        clock.begin(1);
        let later = Instant::now() + Duration::from_secs(5);
        assert!(clock.age(1, later).unwrap() >= Duration::from_secs(4));
        clock.end(1);
        assert_eq!(clock.age(1, later), None);
        assert!(Watch::new(Some(&BacklogOptions::default()), 2)
            .stall
            .is_none());
    }
}
