//! Metrics export: the bus's counters, gauges and handler durations through
//! the [`metrics`] facade (Prometheus, StatsD, … whatever recorder the
//! application installs), switched on by [`BusConfig::metrics`](crate::BusConfig::metrics).
//!
//! # Algorithm
//!
//! The hot paths do not call the facade. They keep counting in the
//! contention-free counters behind [`Bus::stats`](crate::Bus::stats)
//! (sharded publish counters, single-writer lane counters), and a lane
//! worker of a bus with metrics on also times each handler call with
//! `quanta` (a TSC read, ~10 ns) into its own lane's duration buckets (a
//! plain load + store, one writer). An export task wakes every
//! `metrics.interval` (and `close` and [`Bus::export_metrics`](crate::Bus::export_metrics)
//! run one export on demand) and writes the figures to the facade:
//! counters with `Counter::absolute` (the counts are cumulative), gauges
//! with `Gauge::set`, and each duration bucket's growth since the last
//! export with `Histogram::record_many` at the bucket's upper bound.
//!
//! Duration buckets are powers of two from 1 µs to 2²⁴ µs (≈ 16.8 s), plus
//! one overflow bucket; [`HANDLER_DURATION_BUCKETS`] lists the bounds in
//! seconds so a Prometheus exporter can be given the same buckets (then its
//! bucket counts are exact; its `_sum` adds upper bounds, so it is an upper
//! estimate).
//!
//! A subscription is tracked from its `subscribe` until the first export
//! after it left (unsubscribed or closed) and finished its lanes, so its
//! final counts are exported once; its series keep those values.
//!
//! # Metrics
//!
//! See the README's *Metrics* section for the table of names and labels.
//! Every series carries `bus` (the configured `bus_name`) and the
//! configured extra labels; per-subscription series add `topic` and
//! `subscription` (the consumer name, else the group, else `#<id>`).
//!
//! # Invariants
//!
//! - With metrics off nothing here runs: no task, no clock read, no
//!   facade call; the lane worker checks one `Option`.
//! - Exported counters equal what `stats()` reports at the moment of the
//!   export (same sources, read the same way).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use metrics::Label;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::engine::SubscriptionCore;
use crate::options::{duration, ConfigError, Fields};
use crate::pipeline::metrics::{LaneStats, SoloCounter, SubscriptionStats};

/// Duration buckets per lane: 25 bounded ones and the overflow.
const BUCKETS: usize = 26;

/// The upper bounds (seconds) of the handler-duration buckets: 1 µs × 2ᵏ
/// for k = 0..=24. Give them to a Prometheus exporter for exact bucket
/// counts (`set_buckets_for_metric`).
///
/// # Examples
///
/// ```
/// assert_eq!(lanebus::HANDLER_DURATION_BUCKETS[0], 1e-6);
/// assert_eq!(lanebus::HANDLER_DURATION_BUCKETS.len(), 25);
/// ```
pub const HANDLER_DURATION_BUCKETS: [f64; BUCKETS - 1] = {
    let mut b = [0.0; BUCKETS - 1];
    let mut i = 0;
    let mut us = 1u64;
    while i < BUCKETS - 1 {
        b[i] = us as f64 / 1e6;
        us *= 2;
        i += 1;
    }
    b
};

/// The value recorded for the overflow bucket (above the last bound).
const OVERFLOW_SECONDS: f64 = (1u64 << 25) as f64 / 1e6;

/// Reserved label names (the bus sets them).
const RESERVED: [&str; 6] = ["bus", "topic", "subscription", "lane", "partition", "le"];

/// How a bus exports metrics (the `metrics` section of [`BusConfig`](crate::BusConfig)).
/// Off by default.
///
/// # Examples
///
/// ```
/// use lanebus::BusConfig;
///
/// let c = BusConfig::from_yaml_str(
///     "metrics:\n  enabled: true\n  bus_name: orders\n  interval: 500ms\n  labels: { service: billing }\n",
/// )?;
/// assert!(c.metrics.enabled);
/// assert_eq!(c.metrics.bus_name, "orders");
/// let bad = BusConfig::from_yaml_str("metrics:\n  labels: { topic: x }\n").unwrap_err();
/// assert_eq!(bad.field(), Some("metrics.labels.topic"));
/// # Ok::<(), lanebus::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsOptions {
    /// Export through the `metrics` facade (default false).
    pub enabled: bool,
    /// The `bus` label of every series (default `default`): tells apart the
    /// buses of one process (the dual-bus pattern).
    pub bus_name: String,
    /// How often the export task writes the figures (default 1 s).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Extra labels on every series (e.g. `service`); the bus's own names
    /// (`bus`, `topic`, `subscription`, `lane`, `partition`, `le`) are
    /// refused.
    pub labels: BTreeMap<String, String>,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            bus_name: "default".to_owned(),
            interval: Duration::from_secs(1),
            labels: BTreeMap::new(),
        }
    }
}

impl MetricsOptions {
    /// Metrics on, with `bus_name` as the `bus` label.
    ///
    /// # Examples
    ///
    /// ```
    /// let m = lanebus::MetricsOptions::on("orders");
    /// assert!(m.enabled && m.bus_name == "orders");
    /// ```
    pub fn on(bus_name: impl Into<String>) -> Self {
        Self {
            enabled: true,
            bus_name: bus_name.into(),
            ..Self::default()
        }
    }

    /// Sets the export interval.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Adds a label to every series.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }

    pub(crate) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub(crate) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let f = Fields::at(path);
        f.ensure("bus_name", !self.bus_name.is_empty(), "must not be empty")?;
        f.ensure("interval", !self.interval.is_zero(), "must be positive")?;
        for name in self.labels.keys() {
            let field = format!("labels.{name}");
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with("__");
            f.ensure(
                &field,
                valid,
                "a label name is [a-zA-Z_][a-zA-Z0-9_]* and does not start with __",
            )?;
            f.ensure(
                &field,
                !RESERVED.contains(&name.as_str()),
                "is a label the bus sets itself",
            )?;
        }
        Ok(())
    }
}

/// Handler-call duration buckets of one subscription, one set per lane
/// (each written by its lane's worker only).
pub(crate) struct HandlerTimings {
    lanes: Box<[CachePadded<[SoloCounter; BUCKETS]>]>,
}

impl HandlerTimings {
    pub(crate) fn new(lanes: usize) -> Self {
        Self {
            lanes: (0..lanes)
                .map(|_| CachePadded::new(std::array::from_fn(|_| SoloCounter::default())))
                .collect(),
        }
    }

    /// Starts timing a call.
    #[inline]
    pub(crate) fn start() -> quanta::Instant {
        quanta::Instant::now()
    }

    /// Counts a call of lane `lane` that began at `started`. Only that
    /// lane's worker calls this.
    #[inline]
    pub(crate) fn record(&self, lane: usize, started: quanta::Instant) {
        let us = (started.elapsed().as_nanos() as u64).div_ceil(1000);
        self.lanes[lane][bucket_of(us)].bump(1);
    }

    /// Calls per bucket, summed over the lanes.
    fn totals(&self) -> [u64; BUCKETS] {
        let mut t = [0u64; BUCKETS];
        for lane in self.lanes.iter() {
            for (sum, c) in t.iter_mut().zip(lane.iter()) {
                *sum += c.get();
            }
        }
        t
    }
}

/// The bucket of a call of `us` microseconds (rounded up): the least k
/// with `us <= 2^k`, or the overflow bucket.
#[inline]
fn bucket_of(us: u64) -> usize {
    let k = if us <= 1 {
        0
    } else {
        (64 - (us - 1).leading_zeros()) as usize
    };
    k.min(BUCKETS - 1)
}

/// The backlog figures of a subscription, for the gauges: the backlog the
/// monitor measured (`pipeline::monitor`) when the subscription has
/// backlog options, else the broker's pending count (JetStream pending,
/// Kafka lag summed over partitions) when it has a broker consumer, else
/// the records waiting in its lanes; and its recovery mode (automatic or
/// set by hand).
pub(crate) struct BacklogFigures {
    pub(crate) count: u64,
    pub(crate) recovering: Option<bool>,
}

pub(crate) fn backlog_figures(s: &SubscriptionStats) -> BacklogFigures {
    let count = match (&s.backlog, &s.broker) {
        (Some(b), _) => b.backlog,
        (None, Some(b)) => b.pending,
        (None, None) => s.total.depth as u64,
    };
    BacklogFigures {
        count,
        recovering: Some(s.recovering),
    }
}

/// A subscription the exporter follows.
struct Tracked {
    core: Arc<SubscriptionCore>,
    /// Its recovery mode and backlog state.
    watch: Arc<crate::pipeline::monitor::Watch>,
    timings: Arc<HandlerTimings>,
    labels: Vec<Label>,
    /// Bucket totals at the last export.
    exported: [u64; BUCKETS],
    /// Partitions whose stall gauge was set above 0 at the last export
    /// (set back to 0 once they are no longer stalled).
    stalled: Vec<(String, i32)>,
}

/// The exporter of one bus (present only with metrics on).
pub(crate) struct Exporter {
    options: MetricsOptions,
    /// `bus` and the extra labels.
    base: Vec<Label>,
    tracked: Mutex<Vec<Tracked>>,
    task_started: AtomicBool,
}

/// A subscription's `subscription` label: its consumer name, else its
/// group, else `#<id>`.
pub(crate) fn subscription_label(id: u64, options: &crate::SubscribeOptions) -> String {
    options
        .consumer
        .clone()
        .or_else(|| options.group.clone())
        .unwrap_or_else(|| format!("#{id}"))
}

impl Exporter {
    pub(crate) fn new(options: &MetricsOptions) -> Option<Self> {
        if !options.enabled {
            return None;
        }
        let mut base = vec![Label::new("bus", options.bus_name.clone())];
        base.extend(
            options
                .labels
                .iter()
                .map(|(k, v)| Label::new(k.clone(), v.clone())),
        );
        Some(Self {
            options: options.clone(),
            base,
            tracked: Mutex::new(Vec::new()),
            task_started: AtomicBool::new(false),
        })
    }

    /// Follows a subscription whose workers fill `timings`. Call it once
    /// the subscription is live (in the bus's live set): one not live
    /// whose lanes are closed and idle is exported a last time and let go.
    pub(crate) fn track(
        &self,
        core: &Arc<SubscriptionCore>,
        watch: &Arc<crate::pipeline::monitor::Watch>,
        name: &str,
        timings: &Arc<HandlerTimings>,
    ) {
        let mut labels = self.base.clone();
        labels.push(Label::new("topic", core.topic.to_string()));
        labels.push(Label::new("subscription", name.to_owned()));
        self.tracked.lock().push(Tracked {
            core: core.clone(),
            watch: watch.clone(),
            timings: timings.clone(),
            labels,
            exported: [0; BUCKETS],
            stalled: Vec::new(),
        });
    }

    /// Starts the periodic export task on `runtime` (once).
    pub(crate) fn start<F>(&self, runtime: &tokio::runtime::Handle, bus: Weak<F>)
    where
        F: Exports + Send + Sync + 'static,
    {
        if self.task_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let interval = self.options.interval;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(bus) = bus.upgrade() else { return };
                if !bus.export_tick() {
                    return;
                }
            }
        });
    }

    /// Writes every figure to the facade. `live` gives the broker figures
    /// of the live subscriptions (by ID); a tracked subscription not in it
    /// whose lanes are done is exported a last time and let go.
    pub(crate) fn export(
        &self,
        published: u64,
        unrouted: u64,
        mut broker: impl FnMut(u64) -> Option<Option<crate::BrokerStats>>,
    ) {
        describe();
        metrics::counter!("lanebus_published_total", self.base.clone()).absolute(published);
        metrics::counter!("lanebus_unrouted_total", self.base.clone()).absolute(unrouted);
        let mut tracked = self.tracked.lock();
        tracked.retain_mut(|t| {
            let live = broker(t.core.id);
            let mut stats = crate::bus::subscription_stats(&t.core, &t.watch);
            if let Some(b) = &live {
                stats.broker = b.clone();
            }
            export_subscription(t, &stats);
            // Let go once it left, its lanes are closed (no feed pushes
            // into them any more) and they processed all they took.
            let done = live.is_none()
                && t.core.lanes.iter().all(|l| l.ring.is_closed())
                && t.core.is_idle();
            !done
        });
    }
}

/// What the export task needs of its bus.
pub(crate) trait Exports {
    /// Exports now; false when the bus is closed (the task then stops).
    fn export_tick(&self) -> bool;
}

fn export_subscription(t: &mut Tracked, s: &SubscriptionStats) {
    let labels = &t.labels;
    let LaneStats {
        delivered,
        failed,
        retried,
        dead_lettered,
        skipped,
        dropped,
        released,
        duplicates,
        ..
    } = s.total;
    for (name, v) in [
        ("lanebus_received_total", t.core.claimed()),
        ("lanebus_delivered_total", delivered),
        ("lanebus_failed_total", failed),
        ("lanebus_retried_total", retried),
        ("lanebus_dead_lettered_total", dead_lettered),
        ("lanebus_skipped_total", skipped),
        ("lanebus_dropped_total", dropped),
        ("lanebus_released_total", released),
        ("lanebus_duplicates_total", duplicates),
    ] {
        metrics::counter!(name, labels.clone()).absolute(v);
    }
    for (i, lane) in s.lanes.iter().enumerate() {
        let mut l = labels.clone();
        l.push(Label::new("lane", i.to_string()));
        metrics::gauge!("lanebus_lane_depth", l).set(lane.depth as f64);
    }
    let backlog = backlog_figures(s);
    metrics::gauge!("lanebus_backlog", labels.clone()).set(backlog.count as f64);
    if let Some(recovering) = backlog.recovering {
        metrics::gauge!("lanebus_recovery_mode", labels.clone())
            .set(f64::from(u8::from(recovering)));
    }
    if let Some(b) = &s.broker {
        metrics::gauge!("lanebus_consumer_pending", labels.clone()).set(b.pending as f64);
        metrics::gauge!("lanebus_consumer_ack_pending", labels.clone()).set(b.ack_pending as f64);
        for p in &b.partitions {
            let l = partition_labels(labels, &p.topic, p.partition);
            metrics::gauge!("lanebus_partition_lag", l).set(p.lag as f64);
        }
    }
    // Stalled partitions (Kafka): their stall age; those stalled at the
    // last export and no longer go back to 0.
    let stalled = s.broker.iter().flat_map(|b| &b.stalled);
    let mut now: Vec<(String, i32)> = Vec::new();
    for p in stalled {
        let l = partition_labels(labels, &p.topic, p.partition);
        metrics::gauge!("lanebus_partition_stall_seconds", l).set(p.age.as_secs_f64());
        now.push((p.topic.clone(), p.partition));
    }
    for (topic, partition) in std::mem::replace(&mut t.stalled, now) {
        if !t
            .stalled
            .iter()
            .any(|(t, p)| *p == partition && *t == topic)
        {
            let l = partition_labels(labels, &topic, partition);
            metrics::gauge!("lanebus_partition_stall_seconds", l).set(0.0);
        }
    }
    let totals = t.timings.totals();
    let histogram = metrics::histogram!("lanebus_handler_duration_seconds", labels.clone());
    for (k, (&now, before)) in totals.iter().zip(t.exported.iter_mut()).enumerate() {
        let delta = now.wrapping_sub(*before);
        if delta > 0 {
            let bound = HANDLER_DURATION_BUCKETS
                .get(k)
                .copied()
                .unwrap_or(OVERFLOW_SECONDS);
            histogram.record_many(bound, delta as usize);
            *before = now;
        }
    }
}

/// A subscription's labels for one of its partitions: the partition's
/// own topic (a wildcard subscription reads many) and its number.
fn partition_labels(labels: &[Label], topic: &str, partition: i32) -> Vec<Label> {
    let mut l = labels.to_vec();
    if let Some(t) = l.iter_mut().find(|l| l.key() == "topic") {
        *t = Label::new("topic", topic.to_owned());
    }
    l.push(Label::new("partition", partition.to_string()));
    l
}

/// Describes the metrics to the recorder (units and help text). Run on
/// every export (a few map inserts a second): a recorder installed after
/// the bus was built still gets them.
fn describe() {
    use metrics::Unit;
    {
        for (name, help) in [
            (
                "lanebus_published_total",
                "User publishes accepted by the bus.",
            ),
            (
                "lanebus_unrouted_total",
                "Accepted publishes no subscription received.",
            ),
            (
                "lanebus_received_total",
                "Records that entered the subscription's lanes.",
            ),
            (
                "lanebus_delivered_total",
                "Records whose handler succeeded.",
            ),
            (
                "lanebus_failed_total",
                "Failed handler attempts (errors, panics, timeouts).",
            ),
            ("lanebus_retried_total", "Attempts retried after a failure."),
            (
                "lanebus_dead_lettered_total",
                "Records sent to the dead-letter topic.",
            ),
            (
                "lanebus_skipped_total",
                "Records the handler skipped on purpose.",
            ),
            (
                "lanebus_dropped_total",
                "Failed records dropped (no dead-letter topic took them).",
            ),
            (
                "lanebus_released_total",
                "Broker records released unhandled (partition revoked).",
            ),
            (
                "lanebus_duplicates_total",
                "Envelopes acknowledged unhandled as recent duplicates.",
            ),
        ] {
            metrics::describe_counter!(name, Unit::Count, help);
        }
        for (name, help) in [
            ("lanebus_lane_depth", "Records waiting in the lane's ring."),
            (
                "lanebus_backlog",
                "Records waiting for the subscription (the backlog monitor's figure, else broker pending, else lane depth).",
            ),
            (
                "lanebus_recovery_mode",
                "1 while the subscription is in recovery mode.",
            ),
            (
                "lanebus_consumer_pending",
                "Records the broker holds for the consumer, undelivered.",
            ),
            (
                "lanebus_consumer_ack_pending",
                "Records delivered by the broker and not yet acked.",
            ),
            (
                "lanebus_partition_lag",
                "Kafka: records between the committed offset and the high watermark.",
            ),
        ] {
            metrics::describe_gauge!(name, Unit::Count, help);
        }
        metrics::describe_gauge!(
            "lanebus_partition_stall_seconds",
            Unit::Seconds,
            "Kafka: how long a stalled partition's oldest unsettled record has held its commits back (0: not stalled)."
        );
        metrics::describe_histogram!(
            "lanebus_handler_duration_seconds",
            Unit::Seconds,
            "Handler call durations (each attempt)."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_least_power_of_two_above() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 2);
        assert_eq!(bucket_of(4), 2);
        assert_eq!(bucket_of(5), 3);
        assert_eq!(bucket_of(1 << 24), 24);
        assert_eq!(bucket_of((1 << 24) + 1), 25);
        assert_eq!(bucket_of(u64::MAX), 25);
        assert_eq!(HANDLER_DURATION_BUCKETS[24], 16.777216);
    }

    /// A broker subscription's figures reach the gauges: pending as the
    /// backlog, and one lag series per partition under its own topic.
    #[test]
    fn broker_figures_become_backlog_and_partition_lag() {
        let (lanes, _consumers) = crate::engine::lanes::Lanes::new(2, 16);
        let core = Arc::new(SubscriptionCore {
            id: 9,
            topic: Arc::from("orders.*"),
            group: None,
            wildcard: true,
            kind: "plain",
            lanes,
        });
        let exporter = Exporter::new(&MetricsOptions::on("unit").label("service", "s")).unwrap();
        let timings = Arc::new(HandlerTimings::new(2));
        let watch = Arc::new(crate::pipeline::monitor::Watch::new(None, 2));
        watch.set_manual(Some(true));
        exporter.track(&core, &watch, "billing", &timings);
        timings.record(1, HandlerTimings::start());
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let broker = crate::BrokerStats {
            consumer: "billing".into(),
            pending: 7,
            ack_pending: 2,
            partitions: vec![
                crate::PartitionLag::new("orders.eu", 0, 3, 10),
                crate::PartitionLag::new("orders.us", 1, 4, 20),
            ],
            stalled: vec![crate::StalledPartition::new(
                "orders.us",
                1,
                Duration::from_millis(2500),
            )],
            ..Default::default()
        };
        metrics::with_local_recorder(&recorder, || {
            exporter.export(5, 1, |id| (id == 9).then(|| Some(broker.clone())));
        });
        let page = handle.render();
        let base = r#"bus="unit",service="s",topic="orders.*",subscription="billing""#;
        for line in [
            r#"lanebus_published_total{bus="unit",service="s"} 5"#.to_owned(),
            r#"lanebus_unrouted_total{bus="unit",service="s"} 1"#.to_owned(),
            format!("lanebus_backlog{{{base}}} 7"),
            format!("lanebus_consumer_pending{{{base}}} 7"),
            format!("lanebus_recovery_mode{{{base}}} 1"),
            format!("lanebus_consumer_ack_pending{{{base}}} 2"),
            format!("lanebus_lane_depth{{{base},lane=\"1\"}} 0"),
            r#"lanebus_partition_lag{bus="unit",service="s",topic="orders.eu",subscription="billing",partition="0"} 3"#.to_owned(),
            r#"lanebus_partition_lag{bus="unit",service="s",topic="orders.us",subscription="billing",partition="1"} 4"#.to_owned(),
            format!("lanebus_handler_duration_seconds_count{{{base}}} 1"),
            r#"lanebus_partition_stall_seconds{bus="unit",service="s",topic="orders.us",subscription="billing",partition="1"} 2.5"#.to_owned(),
        ] {
            assert!(page.contains(&line), "{line} not in\n{page}");
        }
        // The stall over: its gauge goes back to 0.
        let moving = crate::BrokerStats {
            stalled: Vec::new(),
            ..broker.clone()
        };
        metrics::with_local_recorder(&recorder, || {
            exporter.export(5, 1, |id| (id == 9).then(|| Some(moving.clone())));
        });
        let stall = r#"lanebus_partition_stall_seconds{bus="unit",service="s",topic="orders.us",subscription="billing",partition="1"} 0"#;
        assert!(handle.render().contains(stall), "{}", handle.render());
        // Still live (the broker figures were there): tracked on.
        assert_eq!(exporter.tracked.lock().len(), 1);
        // Gone from the live set but its lanes still open (a broker feed
        // may still push into them): kept.
        exporter.export(5, 1, |_| None);
        assert_eq!(exporter.tracked.lock().len(), 1);
        // Closed and idle: exported once more, let go.
        core.lanes.close();
        exporter.export(5, 1, |_| None);
        assert!(exporter.tracked.lock().is_empty());
    }

    #[test]
    fn options_validate_label_names() {
        assert!(MetricsOptions::default().validate("metrics").is_ok());
        let e = MetricsOptions::on("x")
            .label("1bad", "v")
            .validate("metrics")
            .unwrap_err();
        assert_eq!(e.field(), Some("metrics.labels.1bad"));
        let e = MetricsOptions::on("").validate("metrics").unwrap_err();
        assert_eq!(e.field(), Some("metrics.bus_name"));
        let e = MetricsOptions::on("x")
            .interval(Duration::ZERO)
            .validate("metrics")
            .unwrap_err();
        assert_eq!(e.field(), Some("metrics.interval"));
    }
}
