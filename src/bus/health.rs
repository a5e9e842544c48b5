//! Health: the per-part report behind [`Bus::health`] and
//! [`Bus::health_check`], the end-to-end probe, and the background health
//! loop.
//!
//! # Algorithm
//!
//! A check looks at the parts in order and gives each a status:
//!
//! - **bus**: closed → unhealthy (and nothing else is checked);
//! - **transport**: memory is always up; NATS: the connection is up, the
//!   server answers a round trip, configured persistent topics have their
//!   streams; Kafka: the brokers answer a metadata request. The broker
//!   connection's reconnects so far are counted in the report;
//! - **each subscription**: a stopped lane worker or an unhealthy broker
//!   consumer → unhealthy; recovery mode, a stalled lane or a stalled
//!   Kafka partition → degraded;
//! - **lanes**: a probe record makes a round trip through a lane ring;
//! - **publishers** (with `publisher_backlog`): more publishes waiting
//!   than its threshold → degraded;
//! - **probe** (with `health.probe`): a small message published on the
//!   health topic (`lanebus.health.<random bus token>` unless configured)
//!   comes back through the transport to the bus's own probe subscription
//!   within `probe_timeout`, so a broker that accepts connections but does
//!   not deliver is caught.
//!
//! The overall status is the worst part's. `health_check` keeps its
//! contract: the first unhealthy part's error, else the report.
//!
//! The health loop (with `health.interval`) runs a check every interval
//! and sends [`BusEvent::Health`](crate::BusEvent) when the overall status
//! or any part's status changed (the first check counts as a change).
//!
//! # Invariants
//!
//! - A check never holds a lock across an await.
//! - The probe's nonces grow; the probe waits for its own nonce or a later
//!   one, so concurrent checks never wait for each other's.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Bus, BusInner};
use crate::engine::lanes::{Body, Lanes};
use crate::options::Fields;
use crate::transport::Transport;
use crate::{ConfigError, HealthError, HealthReport, Message, SubscribeOptions, TransportError};

/// How a part of the bus (or the bus as a whole) is doing.
///
/// # Examples
///
/// ```
/// use lanebus::HealthStatus;
///
/// assert!(HealthStatus::Healthy < HealthStatus::Degraded);
/// assert_eq!(HealthStatus::Unhealthy.to_string(), "unhealthy");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Working as it should.
    Healthy,
    /// Working, but behind or stuck somewhere (recovery mode, a stalled
    /// lane, a publisher backlog).
    Degraded,
    /// Not working.
    Unhealthy,
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One part of a [`HealthReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct HealthPart {
    /// `bus`, `transport`, `subscription <topic>#<id>`, `lanes`,
    /// `publishers` or `probe`.
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// What was seen, in a few words.
    pub detail: String,
}

/// The health check's options (`BusConfig::health`); `None` (the
/// default): no probe and no loop.
///
/// # Examples
///
/// ```
/// use lanebus::HealthOptions;
///
/// let h: HealthOptions = serde_yaml_ng::from_str("interval: 5s\nprobe_timeout: 1s\n").unwrap();
/// assert!(h.probe);
/// assert!(h.validate("health").is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthOptions {
    /// Runs the end-to-end probe in every check. Default: true.
    pub probe: bool,
    /// The probe's topic. Default: `lanebus.health.<a random token of
    /// this bus>`. The bus subscribes to it at the first check (the
    /// subscription is listed in `stats()`, not among the report's
    /// subscriptions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// How long the probe waits for its message. Default: 5 s.
    #[serde(with = "crate::options::duration")]
    pub probe_timeout: Duration,
    /// Runs a check in the background every `interval` and sends changes
    /// as [`BusEvent::Health`](crate::BusEvent). `None` (the default): no
    /// background loop.
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
}

impl Default for HealthOptions {
    fn default() -> Self {
        Self {
            probe: true,
            topic: None,
            probe_timeout: Duration::from_secs(5),
            interval: None,
        }
    }
}

impl HealthOptions {
    /// Sets the background loop's interval.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Sets the probe's deadline.
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Checks the fields; `prefix` names where they sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let f = Fields::at(prefix);
        if let Some(Err(e)) = self.topic.as_deref().map(crate::validate_topic_name) {
            return Err(ConfigError::invalid(
                f.path("topic"),
                format!("not a valid topic name: {e}"),
            ));
        }
        f.ensure(
            "probe_timeout",
            !self.probe_timeout.is_zero(),
            "must be positive",
        )?;
        f.ensure(
            "interval",
            self.interval.is_none_or(|i| i >= Duration::from_millis(1)),
            "must be at least 1ms (omit it for no health loop)",
        )
    }
}

/// The bus's probe subscription and the latest nonce it saw.
pub(super) struct Probe {
    sub: crate::Subscription,
    topic: String,
    seen: tokio::sync::watch::Receiver<u64>,
}

/// A check's parts and the error `health_check` reports.
struct Parts {
    parts: Vec<HealthPart>,
    error: Option<HealthError>,
}

impl Parts {
    fn push(&mut self, name: impl Into<String>, status: HealthStatus, detail: impl Into<String>) {
        self.parts.push(HealthPart {
            name: name.into(),
            status,
            detail: detail.into(),
        });
    }

    fn fail(&mut self, name: impl Into<String>, error: HealthError) {
        self.push(name, HealthStatus::Unhealthy, error.to_string());
        self.error.get_or_insert(error);
    }
}

impl Bus {
    /// The bus's health, part by part, with an overall status (see
    /// [`HealthReport`]). Never fails: an unhealthy part is in the report.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanebus::{Bus, HealthStatus, Message};
    ///
    /// let bus = Bus::memory();
    /// let sub = bus.subscribe("jobs", |_m: Message| async { Ok::<(), lanebus::HandlerError>(()) }).await?;
    /// assert_eq!(bus.health().await.status, HealthStatus::Healthy);
    /// sub.set_recovering(true);
    /// let report = bus.health().await;
    /// assert_eq!(report.status, HealthStatus::Degraded);
    /// assert!(report.parts.iter().any(|p| p.name.starts_with("subscription jobs#")
    ///     && p.status == HealthStatus::Degraded));
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> HealthReport {
        self.check_parts().await.0
    }

    /// Checks that the bus is open, its lane workers are alive, and a probe
    /// record makes a round trip through a lane ring. On NATS, first that
    /// the connection is up, the server answers a round trip (a flush)
    /// within the connect timeout, and the stream of each configured
    /// persistent topic exists. On Kafka, first that the brokers answer a
    /// metadata request, then that each subscription's consumer is running
    /// and a member of its group in a steady state (joined, its assignment
    /// taken; see the Kafka transport's docs); a subscription made a moment
    /// ago is unhealthy until its member joined, and so is one whose group
    /// is rebalancing, until the rebalance settles. With
    /// [`HealthOptions::probe`], also that the end-to-end probe came back.
    ///
    /// `Err` is the first unhealthy part's error; a degraded bus is `Ok`
    /// (its report says so). [`health`](Self::health) gives the report in
    /// every case.
    pub async fn health_check(&self) -> Result<HealthReport, HealthError> {
        match self.check_parts().await {
            (_, Some(e)) => Err(e),
            (report, None) => Ok(report),
        }
    }

    async fn check_parts(&self) -> (HealthReport, Option<HealthError>) {
        let inner = &self.inner;
        let mut p = Parts {
            parts: Vec::new(),
            error: None,
        };
        let reconnects = inner.reconnects.load(Ordering::Relaxed);
        let mut report = HealthReport {
            transport: inner.transport.name(),
            subscriptions: 0,
            lanes: 0,
            round_trip: Duration::ZERO,
            status: HealthStatus::Healthy,
            parts: Vec::new(),
            probe: None,
            reconnects,
        };
        if self.is_closed() {
            p.fail("bus", HealthError::Closed);
            report.status = HealthStatus::Unhealthy;
            report.parts = p.parts;
            return (report, p.error);
        }
        p.push("bus", HealthStatus::Healthy, "open");
        let transport: Result<(), TransportError> = match &inner.transport {
            Transport::Memory(_) => Ok(()),
            #[cfg(feature = "nats")]
            Transport::Nats(n) => n.health(&inner.configured_topics()).await,
            #[cfg(feature = "kafka")]
            Transport::Kafka(k) => k.health().await,
        };
        match transport {
            Ok(()) if report.transport == "nats" => p.push(
                "transport",
                HealthStatus::Healthy,
                format!("nats up, {reconnects} reconnects"),
            ),
            Ok(()) => p.push(
                "transport",
                HealthStatus::Healthy,
                format!("{} up", report.transport),
            ),
            Err(e) => p.fail("transport", HealthError::Transport(e)),
        }
        let probe_id = inner.probe.get().map(|probe| probe.sub.id());
        {
            let live = inner.live.lock();
            let mut ids: Vec<&u64> = live.keys().filter(|id| Some(**id) != probe_id).collect();
            ids.sort();
            for id in ids {
                let l = &live[id];
                let name = format!("subscription {}#{}", l.core.topic, id);
                report.subscriptions += 1;
                report.lanes += l.core.lanes.len();
                if l.workers.iter().any(|w| w.is_finished()) {
                    let topic = l.core.topic.to_string();
                    p.fail(name, HealthError::WorkerStopped { topic });
                    continue;
                }
                if let Some(Err(e)) = l.feed.as_ref().map(|f| f.health()) {
                    p.fail(name, HealthError::Transport(e));
                    continue;
                }
                let last = l.watch.snapshot();
                let mut notes = Vec::new();
                if l.watch.recovering() {
                    notes.push(format!("recovering, backlog {}", last.backlog));
                }
                for (lane, age) in &last.stalled {
                    let age = crate::events::short(*age);
                    notes.push(format!("lane {lane} stalled for {age}"));
                }
                let broker = l.feed.as_ref().and_then(|f| f.broker_stats());
                for stalled in broker.iter().flat_map(|b| &b.stalled) {
                    let age = crate::events::short(stalled.age);
                    notes.push(format!(
                        "partition {} of {} stalled for {age}",
                        stalled.partition, stalled.topic
                    ));
                }
                if notes.is_empty() {
                    let detail = format!("{} lanes, backlog {}", l.core.lanes.len(), last.backlog);
                    p.push(name, HealthStatus::Healthy, detail);
                } else {
                    p.push(name, HealthStatus::Degraded, notes.join(", "));
                }
            }
        }
        match lane_round_trip().await {
            Ok(rt) => {
                report.round_trip = rt;
                p.push("lanes", HealthStatus::Healthy, "a probe record went round");
            }
            Err(e) => p.fail("lanes", e),
        }
        if let Some(options) = &inner.config.publisher_backlog {
            let waiting = inner.waiting_now();
            let status = if waiting > options.max_waiting {
                HealthStatus::Degraded
            } else {
                HealthStatus::Healthy
            };
            p.push("publishers", status, format!("{waiting} publishes waiting"));
        }
        if let Some(options) = inner.config.health.as_ref().filter(|o| o.probe) {
            match self.probe(options).await {
                Ok(rt) => {
                    report.probe = Some(rt);
                    let rt = crate::events::short(rt);
                    p.push("probe", HealthStatus::Healthy, format!("came back in {rt}"));
                }
                Err(reason) => p.fail("probe", HealthError::Probe(reason)),
            }
        }
        report.status = p
            .parts
            .iter()
            .map(|part| part.status)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        report.parts = p.parts;
        (report, p.error)
    }

    /// Publishes a nonce on the health topic and waits until the probe
    /// subscription saw it (or a later one), within the deadline.
    async fn probe(&self, options: &HealthOptions) -> Result<Duration, String> {
        let started = Instant::now();
        let deadline = options.probe_timeout;
        let work = async {
            let probe = self
                .inner
                .probe
                .get_or_try_init(|| self.start_probe(options))
                .await?;
            let nonce = self.inner.probe_nonce.fetch_add(1, Ordering::Relaxed) + 1;
            self.publish(&probe.topic, nonce.to_string())
                .await
                .map_err(|e| format!("probe publish failed: {e}"))?;
            let mut seen = probe.seen.clone();
            seen.wait_for(|&n| n >= nonce)
                .await
                .map_err(|_| "the probe subscription stopped".to_owned())?;
            Ok::<_, String>(())
        };
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err(format!(
                "the probe did not come back within {}",
                crate::options::duration::format(deadline)
            )),
        }
    }

    async fn start_probe(&self, options: &HealthOptions) -> Result<Probe, String> {
        let topic = options
            .topic
            .clone()
            .unwrap_or_else(|| format!("lanebus.health.{:016x}", self.inner.token));
        let (tx, seen) = tokio::sync::watch::channel(0u64);
        let sub_options = SubscribeOptions::default()
            .lanes(1)
            .ring_capacity(16)
            .dead_letter(crate::DeadLetter::Disabled)
            .group(format!("lanebus-health-{:016x}", self.inner.token));
        let sub = self
            .subscribe_with(&topic, sub_options, move |m: Message| {
                if let Some(n) = std::str::from_utf8(m.payload())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    tx.send_modify(|seen| *seen = (*seen).max(n));
                }
                async { Ok::<(), crate::HandlerError>(()) }
            })
            .await
            .map_err(|e| format!("cannot subscribe to the health topic {topic}: {e}"))?;
        Ok(Probe { sub, topic, seen })
    }
}

/// A probe record's round trip through a lane ring of its own.
async fn lane_round_trip() -> Result<Duration, HealthError> {
    let started = Instant::now();
    let (probe, mut consumers) = Lanes::new(1, 1);
    probe
        .get(0)
        .ring
        .push(crate::engine::lanes::Delivery::new(Body::plain(
            Bytes::from_static(b"health"),
        )))
        .await
        .map_err(|_| HealthError::Closed)?;
    let mut buf = Vec::with_capacity(1);
    let mut receiver = consumers.pop().expect("one consumer per lane");
    receiver.drain(&mut buf, 1).await;
    if buf.len() != 1 {
        return Err(HealthError::Closed);
    }
    Ok(started.elapsed())
}

/// Starts the background health loop (with `health.interval`): a check
/// every interval, an event when a status changed.
pub(super) fn spawn_loop(runtime: &tokio::runtime::Handle, inner: &Arc<BusInner>) {
    let Some(interval) = inner.config.health.as_ref().and_then(|h| h.interval) else {
        return;
    };
    let weak = Arc::downgrade(inner);
    drop(runtime.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Vec<(String, HealthStatus)>> = None;
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.load(Ordering::Acquire) {
                return;
            }
            let bus = Bus { inner };
            let report = bus.health().await;
            let mut key: Vec<(String, HealthStatus)> = report
                .parts
                .iter()
                .map(|p| (p.name.clone(), p.status))
                .collect();
            key.push((String::new(), report.status));
            if last.as_ref() != Some(&key) && !bus.is_closed() {
                bus.inner.events.emit(crate::BusEvent::Health(report));
                last = Some(key);
            }
        }
    }));
}
