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
//! - **oldest age** (memory only): each check samples every lane's claimed
//!   position with the time; the oldest waiting record (position
//!   `processed`) entered no later than the first sample whose claimed
//!   position is past it, so `now - that sample's time` is a lower bound
//!   of its age, exact within one interval. No hot-path cost;
//! - the [`Hysteresis`] machine decides the recovery mode, stored in the
//!   subscription's one mode byte (handlers read it with a relaxed load);
//! - **stalls** (with `stall_after`): each lane worker stores a coarse
//!   start time (ms since the subscription began) when it takes a record
//!   and clears it when the record is settled; a lane whose stored start
//!   is older than `stall_after` is stalled.
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
use super::metrics::BrokerGauges;
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
    /// not reported a lag yet, whichever is larger.
    Broker {
        gauges: Arc<BrokerGauges>,
        lag: bool,
    },
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
        let mut tick = tokio::time::interval(options.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(host) = host.upgrade() else { return };
            if host.closing() {
                return;
            }
            let now = Instant::now();
            let (backlog, oldest_age) = match &source {
                Source::Lanes => (core.pending(), samples.oldest(&core, now)),
                Source::Broker { gauges, lag } => {
                    let pending = gauges.pending.load(Ordering::Relaxed);
                    let unsettled = gauges.ack_pending.load(Ordering::Relaxed);
                    let backlog = if *lag {
                        pending.max(unsettled)
                    } else {
                        pending + unsettled
                    };
                    (backlog, None)
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

/// Spawns the publisher-side monitor of a bus.
pub(crate) fn spawn_publisher(
    runtime: &tokio::runtime::Handle,
    host: Weak<dyn MonitorHost>,
    options: PublisherBacklogOptions,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        let mut machine = Hysteresis::new(options.hold);
        let mut tick = tokio::time::interval(options.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(host) = host.upgrade() else { return };
            if host.closing() {
                return;
            }
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
