//! Rate limits: token buckets with a burst, for handler calls (per
//! subscription) and for publishes (per bus and per topic).
//!
//! Built on `governor`'s GCRA limiter (the generic cell rate algorithm, an
//! exact token bucket kept as one atomic "theoretical arrival time"),
//! which is lock-free: every lane of a subscription and every publishing
//! thread checks the same limiter with one compare-and-swap.
//!
//! # Algorithm
//!
//! A [`RateLimit`] of `rate` per `per` with burst `b` lets one call through
//! every `per / rate`, and lets up to `b` calls through at once after a
//! quiet spell (the bucket holds `b` tokens, refilled one per `per / rate`).
//!
//! - **Waiting** (`Limiter::acquire`): try to take a token; if there is
//!   none, the limiter says when the next one is due, and the caller sleeps
//!   on the Tokio timer until then and tries again (no spinning). Tokens
//!   that come due while a caller oversleeps stay in the bucket, up to the
//!   burst, so a coarse timer does not lower the long-run rate as long as
//!   the burst covers the timer's slack (hence a default burst of a tenth
//!   of the rate).
//! - **Not waiting** (`Limiter::try_acquire`): take a token or report that
//!   there is none.
//! - **Subscriptions**: one limiter per subscription, shared by its lanes;
//!   each lane worker takes a token before each handler call (a retry is a
//!   call too), waiting in place, so per-key order is kept.
//! - **Publishers** ([`PublishLimits`]): a bus-wide limiter
//!   (`BusConfig::publish_rate_limit`) and one per configured topic
//!   (`TopicOptions::publish_rate_limit`). A publish takes a token from the
//!   bus limiter, then from its topic's. Dead letters the lanes publish are
//!   never limited (a lane must not wait on its own bus's publishers).
//!
//! # Invariants
//!
//! - With no limit configured, a publish reads one relaxed atomic flag and
//!   a handler call checks one `Option`; nothing else.
//! - `try_publish` never waits: without a token it hands the value back in
//!   `TryPublishError::RateLimited`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields};

/// A token-bucket rate limit: `rate` calls per `per`, with bursts of up to
/// `burst` calls.
///
/// In YAML: `{ rate: 1000, per: 1s, burst: 100 }` (`per` defaults to one
/// second; `burst` to a tenth of `rate`, at least 1).
///
/// Where it applies:
///
/// - [`SubscribeOptions::rate_limit`](crate::SubscribeOptions::rate_limit):
///   handler calls of one subscription (all its lanes together).
/// - [`BusConfig::publish_rate_limit`](crate::BusConfig::publish_rate_limit):
///   every publish on the bus.
/// - [`TopicOptions::publish_rate_limit`](crate::TopicOptions::publish_rate_limit):
///   publishes to one topic.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{BusConfig, RateLimit};
///
/// let limit = RateLimit::per_second(1000).with_burst(50);
/// assert_eq!(limit.burst_size(), 50);
/// assert_eq!(RateLimit::per_second(1000).burst_size(), 100);
/// assert_eq!(RateLimit::new(5, Duration::from_secs(60)).burst_size(), 1);
///
/// let c = BusConfig::from_yaml_str(
///     "publish_rate_limit: { rate: 500, burst: 20 }\nsubscribe:\n  rate_limit: { rate: 10, per: 1m }\n",
/// )?;
/// assert_eq!(c.publish_rate_limit, Some(RateLimit::per_second(500).with_burst(20)));
/// assert_eq!(c.subscribe.rate_limit.unwrap().per, Duration::from_secs(60));
///
/// let err = BusConfig::from_yaml_str("subscribe:\n  rate_limit: { rate: 0 }\n").unwrap_err();
/// assert_eq!(err.field(), Some("subscribe.rate_limit.rate"));
/// # Ok::<(), lanebus::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimit {
    /// Calls allowed per `per` (at least 1).
    pub rate: u32,
    /// The period `rate` is counted over (default one second).
    #[serde(with = "duration", default = "one_second")]
    pub per: Duration,
    /// Calls allowed at once after a quiet spell; `None`: a tenth of
    /// `rate`, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

impl RateLimit {
    /// `rate` calls per `per`, with the default burst.
    pub fn new(rate: u32, per: Duration) -> Self {
        Self {
            rate,
            per,
            burst: None,
        }
    }

    /// `rate` calls per second, with the default burst.
    pub fn per_second(rate: u32) -> Self {
        Self::new(rate, one_second())
    }

    /// Sets the burst.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The burst in force: the set one, else a tenth of `rate` (at least 1).
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or((self.rate / 10).max(1))
    }

    /// Checks the fields; `prefix` names where the limit sits in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.range("rate", self.rate, 1..)?;
        fields.ensure("per", !self.per.is_zero(), "must be positive")?;
        fields.ensure(
            "burst",
            self.burst != Some(0),
            "must be positive (omit it for a tenth of the rate)",
        )?;
        fields.ensure(
            "rate",
            self.quota().is_some(),
            "is too high for its period (more than one call per nanosecond)",
        )
    }

    /// The limiter's quota; `None` when `per / rate` rounds to zero.
    fn quota(&self) -> Option<Quota> {
        let interval = self.per / self.rate.max(1);
        let burst = NonZeroU32::new(self.burst_size())?;
        Some(Quota::with_period(interval)?.allow_burst(burst))
    }
}

/// One token bucket (a validated [`RateLimit`]).
pub(crate) struct Limiter {
    inner: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl Limiter {
    /// The limiter of a validated limit (an unvalidated one that cannot be
    /// a quota gets the fastest one governor has: one call per nanosecond).
    pub(crate) fn new(limit: &RateLimit) -> Self {
        let quota = limit.quota().unwrap_or_else(|| {
            Quota::with_period(Duration::from_nanos(1))
                .expect("a positive period")
                .allow_burst(NonZeroU32::MIN)
        });
        Self {
            inner: DefaultDirectRateLimiter::direct(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token if there is one.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        self.inner.check().is_ok()
    }

    /// Takes a token, sleeping until one is due.
    pub(crate) async fn acquire(&self) {
        loop {
            match self.inner.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    tokio::time::sleep(wait.max(Duration::from_micros(1))).await;
                }
            }
        }
    }
}

/// The publish-side limits of one bus: the bus-wide one and those of the
/// configured topics.
pub(crate) struct PublishLimits {
    /// True when any limit exists: the only thing a publish reads when
    /// none does.
    active: AtomicBool,
    bus: Option<Limiter>,
    topics: ArcSwap<HashMap<Box<str>, Arc<Limiter>>>,
    /// Serialises topic changes (rare), so `active` matches the map.
    writer: parking_lot::Mutex<()>,
}

impl PublishLimits {
    /// Limits with the bus-wide `limit`, and no topic limits yet.
    pub(crate) fn new(limit: Option<&RateLimit>) -> Self {
        Self {
            active: AtomicBool::new(limit.is_some()),
            bus: limit.map(Limiter::new),
            topics: ArcSwap::default(),
            writer: parking_lot::Mutex::new(()),
        }
    }

    /// Whether any publish limit is configured.
    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Sets (or, with `None`, removes) the limit of `topic`. A new limit
    /// starts with a full bucket.
    pub(crate) fn set_topic(&self, topic: &str, limit: Option<&RateLimit>) {
        let _writer = self.writer.lock();
        let current = self.topics.load();
        if limit.is_none() && !current.contains_key(topic) {
            return;
        }
        let mut next = HashMap::clone(&current);
        match limit {
            Some(l) => {
                next.insert(topic.into(), Arc::new(Limiter::new(l)));
            }
            None => {
                next.remove(topic);
            }
        }
        let active = self.bus.is_some() || !next.is_empty();
        self.topics.store(Arc::new(next));
        self.active.store(active, Ordering::Relaxed);
    }

    fn topic(&self, topic: &str) -> Option<Arc<Limiter>> {
        let topics = self.topics.load();
        if topics.is_empty() {
            return None;
        }
        topics.get(topic).cloned()
    }

    /// Waits for a token of the bus limit, then of `topic`'s.
    pub(crate) async fn acquire(&self, topic: &str) {
        if let Some(bus) = &self.bus {
            bus.acquire().await;
        }
        if let Some(limiter) = self.topic(topic) {
            limiter.acquire().await;
        }
    }

    /// Takes a token of the bus limit and of `topic`'s, or reports that one
    /// of them has none (the topic's is checked first, so a refusal there
    /// costs the bus limit nothing).
    pub(crate) fn try_acquire(&self, topic: &str) -> bool {
        let limiter = self.topic(topic);
        if let Some(l) = &limiter {
            if !l.try_acquire() {
                return false;
            }
        }
        self.bus.as_ref().is_none_or(Limiter::try_acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let e = RateLimit::per_second(0).validate("subscribe.rate_limit");
        assert_eq!(e.unwrap_err().field(), Some("subscribe.rate_limit.rate"));
        let e = RateLimit::per_second(5).with_burst(0).validate("x");
        assert_eq!(e.unwrap_err().field(), Some("x.burst"));
        let e = RateLimit::new(5, Duration::ZERO).validate("x");
        assert_eq!(e.unwrap_err().field(), Some("x.per"));
        let e = RateLimit::new(u32::MAX, Duration::from_nanos(10)).validate("x");
        assert!(e.unwrap_err().to_string().contains("too high"));
        assert!(RateLimit::per_second(1).validate("x").is_ok());
    }

    #[test]
    fn a_bucket_holds_its_burst_then_refuses() {
        let l = Limiter::new(&RateLimit::new(1, Duration::from_secs(3600)).with_burst(3));
        assert!((0..3).all(|_| l.try_acquire()));
        assert!(!l.try_acquire());
    }

    #[test]
    fn publish_limits_switch_on_and_off_with_topics() {
        let limits = PublishLimits::new(None);
        assert!(!limits.is_active());
        assert!(limits.try_acquire("a"));
        let one = RateLimit::new(1, Duration::from_secs(3600)).with_burst(1);
        limits.set_topic("a", Some(&one));
        assert!(limits.is_active());
        assert!(limits.try_acquire("a"));
        assert!(!limits.try_acquire("a"));
        assert!(limits.try_acquire("b"), "other topics are not limited");
        limits.set_topic("a", None);
        assert!(!limits.is_active());
        assert!(limits.try_acquire("a"));

        let bus = PublishLimits::new(Some(&one));
        assert!(bus.is_active());
        assert!(bus.try_acquire("a"));
        assert!(!bus.try_acquire("b"), "the bus limit covers every topic");
    }
}
