//! Subscription options and the [`Subscription`] handle.
//!
//! Dropping a `Subscription` (or calling [`Subscription::unsubscribe`])
//! removes it from the topic, so later publishes no longer reach it, and
//! closes its lanes: the workers handle everything the lanes had already
//! accepted, then stop. `unsubscribe().await` waits for that drain; a drop
//! lets it finish in the background.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bus::BusInner;
use crate::engine::SubscriptionCore;
use crate::options::ConfigError;
use crate::{DeadLetter, RetryPolicy, SubscriptionStats};

/// Most lanes one subscription may have.
pub const MAX_LANES: usize = 4096;
/// Largest ring capacity per lane.
pub const MAX_RING_CAPACITY: usize = 1 << 22;

/// Options of one subscription.
///
/// # Examples
///
/// ```
/// use lanebus::{DeadLetter, RetryPolicy, SubscribeOptions};
///
/// let opts = SubscribeOptions::default()
///     .lanes(16)
///     .ring_capacity(4096)
///     .retry(RetryPolicy::attempts(5))
///     .dead_letter(DeadLetter::Topic("orders.failed".into()));
/// assert!(opts.validate("subscribe").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Lanes (rings + worker tasks). Keys are spread over them; each lane
    /// handles one record at a time.
    pub lanes: usize,
    /// Slots per lane ring (rounded up to a power of two). When a lane is
    /// full, `publish` waits and `try_publish` returns `Full`.
    pub ring_capacity: usize,
    /// Records a worker takes from its ring at once.
    pub drain_batch: usize,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// Where failed messages go.
    pub dead_letter: DeadLetter,
    /// Competing consumers: subscriptions with the same group name on the
    /// same topic (or pattern) share its messages, each going to one
    /// member; records with one key go to one member while membership is
    /// stable, unkeyed records are spread over the members. When a member
    /// joins or leaves, keys move between members: records of a key still
    /// queued at its old member may then be handled beside newer ones at
    /// its new member. A member that leaves hands nothing back: it handles
    /// what its lanes hold, the others get what comes after. `None` (the
    /// default): this subscription gets every message. Named like a topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Brokers: the durable consumer's name (JetStream), in place of the
    /// default (the group, else the client name and topic; see the NATS
    /// transport's docs). Named like a topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// Brokers: how long the broker waits for a record's ack before it
    /// delivers it again (JetStream's `ack_wait`). Records that wait in a
    /// lane or retry for longer than half of it get in-progress acks.
    /// Default: 30 s.
    #[serde(with = "crate::options::duration")]
    pub ack_wait: Duration,
    /// Brokers: deliveries of one record the broker makes at most
    /// (JetStream's `max_deliver`). `None` (the default): unlimited; the
    /// retry policy, which counts redeliveries, dead-letters it first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_deliver: Option<u32>,
    /// Brokers: records delivered but not yet acked, at most (JetStream's
    /// `max_ack_pending`). `None` (the default): what the lanes hold,
    /// `lanes × ring_capacity`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ack_pending: Option<u32>,
    /// Handler calls allowed per period, all lanes of the subscription
    /// together (a retry is a call too). Each lane worker waits for a
    /// token before a call, so per-key order is kept. `None` (the
    /// default): no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::RateLimit>,
    /// Longest a handler call may run: past it the call is cancelled
    /// (its future dropped at the await point it waits on; a handler that
    /// blocks its thread cannot be cancelled before it yields) and counts
    /// as a retryable failed attempt of class `timeout`, as the dead-letter
    /// headers then say. `None` (the default): no limit.
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub handler_timeout: Option<Duration>,
    /// Decides the class of the handler's errors in place of the class
    /// they carry (code only, not read from a config). `None` (the
    /// default): an error's own class.
    #[serde(skip)]
    pub classifier: Option<crate::ErrorClassifier>,
    /// Duplicate suppression of envelopes by event ID. `None` (the
    /// default): off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<crate::Dedup>,
    /// Backlog monitoring, recovery mode and stall detection. `None` (the
    /// default): off, and the lane workers do no work for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backlog: Option<crate::BacklogOptions>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            lanes: 8,
            ring_capacity: 1024,
            drain_batch: 64,
            retry: RetryPolicy::default(),
            dead_letter: DeadLetter::Default,
            group: None,
            consumer: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: None,
            max_ack_pending: None,
            rate_limit: None,
            handler_timeout: None,
            classifier: None,
            dedup: None,
            backlog: None,
        }
    }
}

impl SubscribeOptions {
    /// Sets the lane count.
    pub fn lanes(mut self, lanes: usize) -> Self {
        self.lanes = lanes;
        self
    }

    /// Sets the ring capacity per lane.
    pub fn ring_capacity(mut self, capacity: usize) -> Self {
        self.ring_capacity = capacity;
        self
    }

    /// Sets the drain batch.
    pub fn drain_batch(mut self, batch: usize) -> Self {
        self.drain_batch = batch;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the dead-letter destination.
    pub fn dead_letter(mut self, dead_letter: DeadLetter) -> Self {
        self.dead_letter = dead_letter;
        self
    }

    /// Joins the group `name`: the subscriptions of one group on one topic
    /// (or pattern) share its messages (competing consumers, like NATS
    /// queue groups and Kafka consumer groups).
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::SubscribeOptions;
    ///
    /// let opts = SubscribeOptions::default().group("billing");
    /// assert_eq!(opts.group.as_deref(), Some("billing"));
    /// assert!(opts.validate("subscribe").is_ok());
    /// assert!(SubscribeOptions::default().group("no space").validate("s").is_err());
    /// ```
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Names the durable consumer (brokers).
    pub fn consumer(mut self, name: impl Into<String>) -> Self {
        self.consumer = Some(name.into());
        self
    }

    /// Sets the broker's ack wait.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets the broker's delivery limit per record.
    pub fn max_deliver(mut self, deliveries: u32) -> Self {
        self.max_deliver = Some(deliveries);
        self
    }

    /// Limits the subscription's handler calls.
    ///
    /// # Examples
    ///
    /// ```
    /// use lanebus::{RateLimit, SubscribeOptions};
    ///
    /// let opts = SubscribeOptions::default().rate_limit(RateLimit::per_second(1000).with_burst(50));
    /// assert!(opts.validate("subscribe").is_ok());
    /// let bad = SubscribeOptions::default().rate_limit(RateLimit::per_second(0));
    /// assert_eq!(bad.validate("subscribe").unwrap_err().field(), Some("subscribe.rate_limit.rate"));
    /// ```
    pub fn rate_limit(mut self, limit: crate::RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Cancels a handler call that runs longer than `limit`; it counts as
    /// a retryable failed attempt (class `timeout`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use lanebus::SubscribeOptions;
    ///
    /// let opts = SubscribeOptions::default().handler_timeout(Duration::from_secs(5));
    /// assert!(opts.validate("subscribe").is_ok());
    /// let bad = SubscribeOptions::default().handler_timeout(Duration::ZERO);
    /// assert_eq!(bad.validate("subscribe").unwrap_err().field(), Some("subscribe.handler_timeout"));
    /// ```
    pub fn handler_timeout(mut self, limit: Duration) -> Self {
        self.handler_timeout = Some(limit);
        self
    }

    /// Classifies the handler's errors with `f` (retry, dead-letter at
    /// once, or skip); see [`ErrorClassifier`](crate::ErrorClassifier).
    pub fn classify(
        mut self,
        f: impl Fn(&crate::HandlerError) -> crate::ErrorClass + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(crate::ErrorClassifier::new(f));
        self
    }

    /// Turns on duplicate suppression; see [`Dedup`](crate::Dedup).
    pub fn dedup(mut self, dedup: crate::Dedup) -> Self {
        self.dedup = Some(dedup);
        self
    }

    /// Turns on backlog monitoring and recovery mode; see
    /// [`BacklogOptions`](crate::BacklogOptions).
    pub fn backlog(mut self, backlog: crate::BacklogOptions) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Sets the broker's limit of unacked records.
    pub fn max_ack_pending(mut self, records: u32) -> Self {
        self.max_ack_pending = Some(records);
        self
    }

    /// The broker's limit of unacked records: the option, else what the
    /// lanes hold.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn ack_pending_limit(&self) -> u32 {
        self.max_ack_pending.unwrap_or_else(|| {
            let held = self
                .lanes
                .saturating_mul(self.ring_capacity.next_power_of_two());
            u32::try_from(held).unwrap_or(u32::MAX)
        })
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = crate::options::Fields::at(prefix);
        fields.range("lanes", self.lanes, 1..=MAX_LANES)?;
        fields.range("ring_capacity", self.ring_capacity, 1..=MAX_RING_CAPACITY)?;
        fields.range("drain_batch", self.drain_batch, 1..)?;
        self.retry.validate(&fields.path("retry"))?;
        self.dead_letter
            .validate(&fields.path("dead_letter.topic"))?;
        validate_group(self.group.as_deref(), prefix)?;
        if let Some(Err(e)) = self.consumer.as_deref().map(crate::validate_topic_name) {
            return Err(ConfigError::invalid(
                fields.path("consumer"),
                format!("not a valid consumer name: {e}"),
            ));
        }
        fields.ensure("ack_wait", !self.ack_wait.is_zero(), "must be positive")?;
        fields.ensure(
            "max_deliver",
            self.max_deliver != Some(0),
            crate::options::NO_ZERO_LIMIT,
        )?;
        fields.ensure(
            "max_ack_pending",
            self.max_ack_pending != Some(0),
            crate::options::NO_ZERO_LIMIT,
        )?;
        if let Some(limit) = &self.rate_limit {
            limit.validate(&fields.path("rate_limit"))?;
        }
        fields.ensure(
            "handler_timeout",
            self.handler_timeout.is_none_or(|t| !t.is_zero()),
            "must be positive (omit it for no limit)",
        )?;
        if let Some(dedup) = &self.dedup {
            dedup.validate(&fields.path("dedup"))?;
        }
        if let Some(backlog) = &self.backlog {
            backlog.validate(&fields.path("backlog"))?;
        }
        Ok(())
    }
}

/// A group name follows the topic-name rules.
fn validate_group(group: Option<&str>, prefix: &str) -> Result<(), ConfigError> {
    match group.map(crate::validate_topic_name) {
        Some(Err(e)) => Err(ConfigError::invalid(
            format!("{prefix}.group"),
            format!("not a valid group name: {e}"),
        )),
        _ => Ok(()),
    }
}

/// A live subscription. Drop it or call [`unsubscribe`](Self::unsubscribe)
/// to stop it.
#[must_use = "dropping a Subscription unsubscribes at once"]
pub struct Subscription {
    pub(crate) core: Arc<SubscriptionCore>,
    pub(crate) bus: Weak<BusInner>,
    /// Recovery mode, stall clocks and the last backlog check.
    pub(crate) watch: Arc<crate::pipeline::monitor::Watch>,
    pub(crate) done: bool,
}

impl Subscription {
    /// Its ID, unique within the bus.
    pub fn id(&self) -> u64 {
        self.core.id
    }

    /// Its topic as subscribed: an exact name, or a wildcard pattern
    /// (`orders.*`: one segment; `orders.>`: one or more trailing
    /// segments, as NATS writes them).
    pub fn topic(&self) -> &str {
        &self.core.topic
    }

    /// Its counters.
    pub fn stats(&self) -> SubscriptionStats {
        crate::bus::subscription_stats(&self.core, &self.watch)
    }

    /// True while the subscription is in recovery mode, as its handlers
    /// see it ([`Context::recovering`](crate::Context::recovering)): the
    /// manual setting when one holds, else the backlog monitor's mode
    /// (always false without [`BacklogOptions`](crate::BacklogOptions)).
    pub fn recovering(&self) -> bool {
        self.watch.recovering()
    }

    /// Sets recovery mode by hand. The setting overrides the backlog
    /// monitor until [`clear_recovering`](Self::clear_recovering): the
    /// monitor keeps checking (and reporting its own transitions as
    /// events, with `manual: true`), but handlers see this value. A change
    /// of the mode handlers see is sent as
    /// [`BusEvent::RecoveryEntered`](crate::BusEvent) or `RecoveryLeft`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanebus::{Bus, Message};
    ///
    /// let bus = Bus::memory();
    /// let sub = bus
    ///     .subscribe("jobs", |m: Message| async move {
    ///         assert!(m.context().recovering());
    ///         Ok::<(), lanebus::HandlerError>(())
    ///     })
    ///     .await?;
    /// sub.set_recovering(true);
    /// bus.publish("jobs", "replayed").await?;
    /// bus.flush().await;
    /// sub.clear_recovering();
    /// assert!(!sub.recovering());
    /// # Ok(()) }
    /// ```
    pub fn set_recovering(&self, recovering: bool) {
        self.set_manual(Some(recovering));
    }

    /// Ends a manual setting: the backlog monitor's mode holds again.
    pub fn clear_recovering(&self) {
        self.set_manual(None);
    }

    fn set_manual(&self, value: Option<bool>) {
        let (before, after) = self.watch.set_manual(value);
        if before == after {
            return;
        }
        if let Some(bus) = self.bus.upgrade() {
            let mut state = self.watch.state(&self.core);
            state.manual = true;
            bus.events.emit(if after {
                crate::BusEvent::RecoveryEntered(state)
            } else {
                crate::BusEvent::RecoveryLeft(state)
            });
        }
    }

    /// Stops delivery of new messages, waits until the lanes have handled
    /// everything they had accepted, then returns.
    pub async fn unsubscribe(mut self) {
        self.done = true;
        let workers = match self.bus.upgrade() {
            Some(bus) => bus.detach(&self.core),
            None => {
                self.core.lanes.close();
                Vec::new()
            }
        };
        for w in workers {
            let _ = w.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.bus.upgrade() {
            // The workers finish draining on their own.
            Some(bus) => drop(bus.detach(&self.core)),
            None => self.core.lanes.close(),
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.core.id)
            .field("topic", &self.core.topic)
            .field("kind", &self.core.kind)
            .field("lanes", &self.core.lanes.len())
            .finish()
    }
}
