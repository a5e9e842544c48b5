//! Backlog thresholds and the recovery-mode state machine (pure: no I/O,
//! no clock of its own).
//!
//! A subscription with [`BacklogOptions`] is checked every
//! `check_interval` by its monitor (`pipeline::monitor`), which reads the
//! backlog (records waiting) and, where the transport knows it, the age of
//! the oldest waiting record, and feeds them to a [`Hysteresis`] together
//! with the time of the check. The publisher side uses the same machine
//! with [`PublisherBacklogOptions`].
//!
//! # Algorithm
//!
//! A check is *above* when the backlog exceeds `max_backlog` or the oldest
//! age exceeds `max_age` (each only when set). [`Hysteresis::observe`]:
//!
//! - above, not recovering → enter recovery (an `Entered` transition);
//!   above while recovering → forget any quiet spell;
//! - below while recovering → remember when the quiet spell began (the
//!   first below check after the last above one); once that spell has
//!   lasted `hold`, leave recovery (a `Left` transition).
//!
//! # Invariants
//!
//! - No flapping: the machine leaves recovery at a check at time `t` only
//!   if a below check was made at or before `t - hold` and every check
//!   since then was below (proptest below, against a model computed from
//!   the whole history).
//! - It enters recovery at the first above check, never otherwise.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::options::Fields;
use crate::ConfigError;

/// Backlog monitoring and recovery mode of one subscription
/// (`SubscribeOptions::backlog`); off (`None`) by default.
///
/// The subscription is in *recovery mode* while its backlog is above a
/// threshold, and leaves it only after the backlog stayed below both for
/// `hold`. Handlers see the mode through
/// [`Context::recovering`](crate::Context::recovering); changes arrive as
/// [`BusEvent`](crate::BusEvent)s from [`Bus::events`](crate::Bus::events).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{BacklogOptions, SubscribeOptions};
///
/// let backlog = BacklogOptions::records(1_000).hold(Duration::from_secs(5));
/// let opts = SubscribeOptions::default().backlog(backlog);
/// assert!(opts.validate("subscribe").is_ok());
///
/// let yaml = "max_backlog: 500\nmax_age: 2s\ncheck_interval: 100ms\nhold: 1s\nstall_after: 30s\n";
/// let parsed: BacklogOptions = serde_yaml_ng::from_str(yaml).unwrap();
/// assert_eq!(parsed.max_age, Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BacklogOptions {
    /// Records waiting above which the subscription is in recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_backlog: Option<u64>,
    /// Age of the oldest waiting record above which the subscription is in
    /// recovery. It applies on every transport: memory → estimated from
    /// the monitor's samples, within one `check_interval`; JetStream → the
    /// stored time of the consumer's oldest unacked message (read about
    /// once a second); Kafka → the timestamp of the oldest unsettled
    /// record among those the consumer fetched (records librdkafka has
    /// not fetched yet are not seen, so a backlog still on the broker
    /// counts only by `max_backlog`). Broker ages are wall-clock ages:
    /// the producer's (Kafka `CreateTime`) or the server's clock against
    /// this host's.
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// How often the backlog is read. Default: 1 s.
    #[serde(with = "crate::options::duration")]
    pub check_interval: Duration,
    /// How long the backlog must stay below the thresholds before the
    /// subscription leaves recovery. Default: 10 s.
    #[serde(with = "crate::options::duration")]
    pub hold: Duration,
    /// A lane whose current record has been in the handler longer than
    /// this is *stalled* (an event on entering and leaving, a gauge in the
    /// stats). `None` (the default): no stall detection, and the lane
    /// workers do not read the clock for it. On Kafka each partition is
    /// watched too: one whose oldest unsettled record was handed to the
    /// lanes longer ago than this (its commits wait for it) is stalled,
    /// with events naming the partition and its age in
    /// [`BrokerStats::stalled`](crate::BrokerStats).
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub stall_after: Option<Duration>,
}

impl Default for BacklogOptions {
    fn default() -> Self {
        Self {
            max_backlog: None,
            max_age: None,
            check_interval: Duration::from_secs(1),
            hold: Duration::from_secs(10),
            stall_after: None,
        }
    }
}

impl BacklogOptions {
    /// Recovery above `records` waiting, defaults otherwise.
    pub fn records(records: u64) -> Self {
        Self {
            max_backlog: Some(records),
            ..Self::default()
        }
    }

    /// Sets the oldest-age threshold.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Sets the check interval.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Sets the hold time (hysteresis).
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Sets the stall threshold.
    pub fn stall_after(mut self, after: Duration) -> Self {
        self.stall_after = Some(after);
        self
    }

    /// The thresholds of these options.
    pub(crate) fn thresholds(&self) -> Thresholds {
        Thresholds {
            count: self.max_backlog,
            age: self.max_age,
        }
    }

    /// Checks the fields; `prefix` names where they sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let f = Fields::at(prefix);
        f.ensure(
            "check_interval",
            self.check_interval >= Duration::from_millis(1),
            "must be at least 1ms",
        )?;
        f.ensure(
            "max_age",
            self.max_age.is_none_or(|a| !a.is_zero()),
            "must be positive (omit it for no age threshold)",
        )?;
        f.ensure(
            "stall_after",
            self.stall_after.is_none_or(|a| !a.is_zero()),
            "must be positive (omit it for no stall detection)",
        )?;
        Ok(())
    }
}

/// Publisher-side backlog (`BusConfig::publisher_backlog`): publishes
/// waiting — on a full lane (memory), for the broker's ack (NATS, Kafka) —
/// above `max_waiting` is a backlog, reported as
/// [`BusEvent::PublisherBacklog`](crate::BusEvent) with the same
/// hysteresis as a subscription's.
///
/// # Examples
///
/// ```
/// use lanebus::PublisherBacklogOptions;
///
/// let p: PublisherBacklogOptions = serde_yaml_ng::from_str("max_waiting: 10\nhold: 500ms\n").unwrap();
/// assert_eq!(p.max_waiting, 10);
/// assert!(p.validate("publisher_backlog").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PublisherBacklogOptions {
    /// Waiting publishes above which publishers are backlogged.
    pub max_waiting: u64,
    /// How often the figure is read. Default: 1 s.
    #[serde(with = "crate::options::duration")]
    pub check_interval: Duration,
    /// How long it must stay at or below `max_waiting` before the backlog
    /// is over. Default: 5 s.
    #[serde(with = "crate::options::duration")]
    pub hold: Duration,
}

impl Default for PublisherBacklogOptions {
    fn default() -> Self {
        Self {
            max_waiting: 1_000,
            check_interval: Duration::from_secs(1),
            hold: Duration::from_secs(5),
        }
    }
}

impl PublisherBacklogOptions {
    /// A backlog above `waiting` publishes, defaults otherwise.
    pub fn waiting(waiting: u64) -> Self {
        Self {
            max_waiting: waiting,
            ..Self::default()
        }
    }

    /// Sets the check interval.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// Sets the hold time.
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// Checks the fields; `prefix` names where they sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        Fields::at(prefix).ensure(
            "check_interval",
            self.check_interval >= Duration::from_millis(1),
            "must be at least 1ms",
        )
    }
}

/// The count and age thresholds of a backlog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Thresholds {
    pub(crate) count: Option<u64>,
    pub(crate) age: Option<Duration>,
}

impl Thresholds {
    /// True when `backlog` or `oldest` exceeds its threshold.
    pub(crate) fn exceeded(&self, backlog: u64, oldest: Option<Duration>) -> bool {
        self.count.is_some_and(|c| backlog > c)
            || matches!((self.age, oldest), (Some(max), Some(age)) if age > max)
    }
}

/// A change of mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Entered,
    Left,
}

/// The recovery-mode machine with hysteresis (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hysteresis {
    hold: Duration,
    recovering: bool,
    /// First below check after the last above one, while recovering.
    below_since: Option<Instant>,
}

impl Hysteresis {
    /// Not recovering, leaving after `hold` below.
    pub(crate) fn new(hold: Duration) -> Self {
        Self {
            hold,
            recovering: false,
            below_since: None,
        }
    }

    /// True while in recovery.
    pub(crate) fn recovering(&self) -> bool {
        self.recovering
    }

    /// Feeds one check made at `now`; `above` says whether it exceeded a
    /// threshold. Returns the transition it caused, if any.
    pub(crate) fn observe(&mut self, above: bool, now: Instant) -> Option<Transition> {
        if above {
            self.below_since = None;
            if self.recovering {
                return None;
            }
            self.recovering = true;
            return Some(Transition::Entered);
        }
        if !self.recovering {
            return None;
        }
        let since = *self.below_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.hold {
            self.recovering = false;
            self.below_since = None;
            return Some(Transition::Left);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enters_on_the_first_above_check_and_leaves_after_the_hold() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Hysteresis::new(Duration::from_millis(100));
        assert_eq!(h.observe(false, ms(0)), None);
        assert_eq!(h.observe(true, ms(10)), Some(Transition::Entered));
        assert_eq!(h.observe(true, ms(20)), None);
        assert_eq!(h.observe(false, ms(30)), None);
        assert_eq!(h.observe(false, ms(129)), None);
        // Above again: the quiet spell starts over.
        assert_eq!(h.observe(true, ms(130)), None);
        assert_eq!(h.observe(false, ms(140)), None);
        assert_eq!(h.observe(false, ms(239)), None);
        assert!(h.recovering());
        assert_eq!(h.observe(false, ms(240)), Some(Transition::Left));
        assert!(!h.recovering());
        assert_eq!(h.observe(false, ms(500)), None);
    }

    #[test]
    fn a_zero_hold_leaves_at_the_first_below_check() {
        let t = Instant::now();
        let mut h = Hysteresis::new(Duration::ZERO);
        assert_eq!(h.observe(true, t), Some(Transition::Entered));
        assert_eq!(h.observe(false, t), Some(Transition::Left));
    }

    #[test]
    fn thresholds_on_count_and_age() {
        let none = Thresholds::default();
        assert!(!none.exceeded(u64::MAX, Some(Duration::MAX)));
        let both = BacklogOptions::records(10)
            .max_age(Duration::from_secs(1))
            .thresholds();
        assert!(!both.exceeded(10, None));
        assert!(both.exceeded(11, None));
        assert!(!both.exceeded(0, Some(Duration::from_secs(1))));
        assert!(both.exceeded(0, Some(Duration::from_millis(1001))));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let e = BacklogOptions::default()
            .check_interval(Duration::ZERO)
            .validate("subscribe.backlog")
            .unwrap_err();
        assert_eq!(e.field(), Some("subscribe.backlog.check_interval"));
        let e = BacklogOptions::default()
            .max_age(Duration::ZERO)
            .validate("b")
            .unwrap_err();
        assert_eq!(e.field(), Some("b.max_age"));
        let e = BacklogOptions::default()
            .stall_after(Duration::ZERO)
            .validate("b")
            .unwrap_err();
        assert_eq!(e.field(), Some("b.stall_after"));
        let e = PublisherBacklogOptions::default()
            .check_interval(Duration::ZERO)
            .validate("publisher_backlog")
            .unwrap_err();
        assert_eq!(e.field(), Some("publisher_backlog.check_interval"));
    }

    #[test]
    fn serde_round_trip_with_humantime() {
        let o = BacklogOptions::records(5)
            .max_age(Duration::from_millis(1500))
            .stall_after(Duration::from_secs(30));
        let yaml = serde_yaml_ng::to_string(&o).unwrap();
        assert!(yaml.contains("max_age: 1500ms"), "{yaml}");
        let back: BacklogOptions = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, o);
        assert!(serde_yaml_ng::from_str::<BacklogOptions>("max_backlogg: 1\n").is_err());
    }

    /// The model: recovering after the checks `history[..=i]` iff there was
    /// an above check, and no run of below checks after the last one has
    /// lasted `hold` by some check (a run that lasted `hold` ended the
    /// recovery; a later above check would be the "last above").
    fn model(history: &[(u64, bool)], hold: u64) -> bool {
        let Some(last_above) = history.iter().rposition(|&(_, above)| above) else {
            return false;
        };
        let after = &history[last_above + 1..];
        match after.first() {
            None => true,
            Some(&(start, _)) => !after.iter().any(|&(t, _)| t - start >= hold),
        }
    }

    proptest! {
        #[test]
        fn matches_the_model_and_never_flaps(
            steps in proptest::collection::vec((0u64..50, any::<bool>()), 1..200),
            hold in 0u64..200,
        ) {
            let t0 = Instant::now();
            let mut h = Hysteresis::new(Duration::from_millis(hold));
            let mut now = 0;
            let mut history = Vec::new();
            for (dt, above) in steps {
                now += dt;
                let was = h.recovering();
                let transition = h.observe(above, t0 + Duration::from_millis(now));
                history.push((now, above));
                prop_assert_eq!(h.recovering(), model(&history, hold));
                match transition {
                    Some(Transition::Entered) => prop_assert!(!was && above),
                    Some(Transition::Left) => {
                        prop_assert!(was && !above);
                        // The checks since the last above one were all
                        // below, and the first of them was made at or
                        // before now - hold.
                        let last_above = history.iter().rposition(|&(_, a)| a).unwrap();
                        let first_below = history[last_above + 1].0;
                        prop_assert!(now - first_below >= hold);
                    }
                    None => prop_assert_eq!(was, h.recovering()),
                }
            }
        }
    }
}
