//! What the bench tool's broker rows (`--transport nats` and `--transport
//! kafka`) share: the phases, the runs and the report of a row. Each
//! transport (`nats.rs`, `kafka.rs`) implements [`Broker`] (how one side
//! opens its sink, publishes and tears down) and [`Scenario`] (its rows);
//! the rest is here, written once.
//!
//! # Algorithm
//!
//! - Phase ([`phase`]): one side's throughput (`rate: None`) or latency
//!   (`rate: Some`) measurement on a topic of its own,
//!   `bench.<row>.<pid>.<n>`. The transport opens the side's sink before
//!   the clock starts (connection, topic, consumer, subscription; Kafka
//!   also waits for its warm-up record), the clock starts at the first
//!   publish, and the phase ends when every message was handled or nothing
//!   was handled for the transport's [`Broker::STALL`]. The rate is handled
//!   messages over the time from the first publish to the last handled one;
//!   what is missing is reported as lost. Then the transport tears the sink
//!   down.
//! - Payloads ([`Payloads`]): plain messages carry 32 bytes (a send
//!   timestamp in latency phases); keyed message `i` is version
//!   `i / 1000 + 1` of aggregate `agg-(i % 1000)`, built while publishing,
//!   with 8 bytes (or the timestamp) of payload.
//! - Row ([`run_rows`]): every run measures the throughput of both sides,
//!   then their latency at half the throughput lanebus reached in that run;
//!   lanebus goes first in even runs and the baseline in odd ones (so that
//!   neither side always meets a broker the other one warmed up). The
//!   report gives the medians over the runs, and the median of the runs'
//!   own ratios.
//!
//! # Invariants
//!
//! - Both sides of a row publish the same messages at the same rate and are
//!   measured by the same clock and the same [`Probe`].
//! - A lost message or a per-key order violation is counted in the report
//!   and described on stderr; it is never dropped from the figures.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lanebus::{Bus, Envelope, Subscription};

use super::measure::{stamp, OrderCheck, Probe, Report};
use super::publish::OrSay;
use super::{Args, AGGREGATES};

/// How long a latency phase publishes for.
const LATENCY_SECS: f64 = 2.0;

/// One row of a broker transport.
pub(crate) trait Scenario: Copy + Eq + Send + Sync + 'static {
    /// The transport's name, as `--transport` writes it.
    const TRANSPORT: &'static str;
    /// Every row, in the order the tool runs them by default.
    const ALL: &'static [Self];

    /// The row's name, as `--scenario` writes it.
    fn name(self) -> &'static str;

    /// Whether the row publishes envelopes keyed by aggregate (and checks
    /// their order).
    fn keyed(self) -> bool;

    /// Unpaced messages per phase at `--scale 1`.
    fn messages(self) -> f64 {
        100_000.0
    }
}

/// The rows `names` asks for.
pub(crate) fn parse_rows<R: Scenario>(names: &[String]) -> Result<Vec<R>, String> {
    names
        .iter()
        .map(|name| {
            R::ALL
                .iter()
                .copied()
                .find(|r| r.name() == name)
                .ok_or_else(|| {
                    let all: Vec<&str> = R::ALL.iter().map(|r| r.name()).collect();
                    format!(
                        "unknown {} scenario `{name}` (available: {})",
                        R::TRANSPORT,
                        all.join(", ")
                    )
                })
        })
        .collect()
}

/// What every phase needs, whatever the transport.
pub(crate) struct Common {
    /// The clock every timestamp counts from.
    pub(crate) base: Instant,
    /// Publishes in flight at once.
    pub(crate) window: usize,
    /// Lanes of the plain rows' subscriptions.
    pub(crate) lanes: usize,
    /// Lanes of the keyed row's subscriptions.
    pub(crate) keyed_lanes: usize,
    /// Whether rows measure latency after throughput.
    pub(crate) latency: bool,
    /// `--verbose`: each phase's timings on stderr.
    pub(crate) verbose: bool,
    /// The keyed row's aggregate IDs.
    pub(crate) ids: Vec<String>,
}

impl Common {
    pub(crate) fn new(args: &Args, base: Instant, latency: bool) -> Common {
        Common {
            base,
            window: args.window,
            lanes: args.lanes,
            keyed_lanes: args.keyed_lanes,
            latency,
            verbose: args.verbose,
            ids: (0..AGGREGATES).map(|i| format!("agg-{i}")).collect(),
        }
    }
}

/// What a phase publishes.
pub(crate) struct Payloads<'a> {
    base: Instant,
    /// Paced (latency phase): payloads carry their send time.
    timed: bool,
    ids: &'a [String],
}

impl Payloads<'_> {
    /// A plain message's payload.
    pub(crate) fn plain(&self) -> Bytes {
        if self.timed {
            stamp(self.base)
        } else {
            Bytes::from_static(&[0u8; 32])
        }
    }

    /// Keyed message `i`: version `i / 1000 + 1` of aggregate `i % 1000`.
    pub(crate) fn envelope(&self, i: u64) -> Envelope {
        let payload = if self.timed {
            stamp(self.base)
        } else {
            Bytes::from_static(&[0u8; 8])
        };
        let (agg, version) = (i as usize % AGGREGATES, i / AGGREGATES as u64 + 1);
        Envelope::new(self.ids[agg].as_str(), "Updated", version as i64, payload)
    }
}

/// One broker transport's side-specific work; [`phase`] drives it.
pub(crate) trait Broker: Send + Sync + 'static {
    type Row: Scenario;
    /// What receives one phase's messages (either side).
    type Sink: Send + Sync;

    /// A phase gives up waiting when nothing was handled for this long.
    const STALL: Duration;

    fn common(&self) -> &Common;

    /// Opens one side's sink on the fresh `topic`, its handlers reporting
    /// to `probe` (and `order`), ready before the clock starts. On an error
    /// it has torn down what it set up.
    fn open(
        &self,
        row: Self::Row,
        lanebus: bool,
        topic: &str,
        probe: &Probe,
        order: Option<Arc<OrderCheck>>,
    ) -> impl Future<Output = Result<Self::Sink, String>> + Send;

    /// Publishes messages `0..n` of the row to `topic`, up to `--window` in
    /// flight, paced at `rate` when given (see `publish.rs`).
    fn publish(
        &self,
        sink: &Self::Sink,
        row: Self::Row,
        topic: &str,
        n: u64,
        rate: Option<f64>,
        payloads: &Payloads<'_>,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Tears down what [`Broker::open`] set up, after checking what the
    /// transport can check of the `handled` messages.
    fn close(
        &self,
        sink: Self::Sink,
        topic: &str,
        handled: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// The lanebus side's teardown: unsubscribes, removes the topic, closes.
pub(crate) async fn close_bus(bus: Bus, sub: Subscription, topic: &str) -> Result<(), String> {
    sub.unsubscribe().await;
    bus.remove_topic(topic)
        .await
        .or_say("lanebus remove_topic")?;
    bus.close().await.or_say("lanebus close")
}

/// A fresh topic name, never used before by this process.
fn fresh_topic(row: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench.{row}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub(crate) fn side(lanebus: bool) -> &'static str {
    if lanebus {
        "lanebus"
    } else {
        "baseline"
    }
}

/// What one phase measured.
pub(crate) struct Phase {
    rate: f64,
    lost: u64,
    probe: Probe,
    order: Option<Arc<OrderCheck>>,
    /// Whether each aggregate's versions all arrived, in order.
    order_held: Option<bool>,
}

/// One side's throughput (`rate: None`) or latency (`rate: Some`) phase.
pub(crate) async fn phase<B: Broker>(
    b: &B,
    row: B::Row,
    lanebus: bool,
    n: u64,
    rate: Option<f64>,
) -> Result<Phase, String> {
    let common = b.common();
    let topic = fresh_topic(row.name());
    let probe = Probe::new(common.base);
    probe.timing.store(rate.is_some(), Ordering::Relaxed);
    let order = row.keyed().then(|| Arc::new(OrderCheck::new(AGGREGATES)));
    let sink = b.open(row, lanebus, &topic, &probe, order.clone()).await?;
    let payloads = Payloads {
        base: common.base,
        timed: rate.is_some(),
        ids: &common.ids,
    };
    let start = Instant::now();
    if let Err(e) = b.publish(&sink, row, &topic, n, rate, &payloads).await {
        let _ = b.close(sink, &topic, 0).await;
        return Err(format!("{} ({}): {e}", row.name(), side(lanebus)));
    }
    let published_in = start.elapsed().as_secs_f64();
    let (handled, last) = probe.wait_or_stall(n, B::STALL).await;
    let elapsed = last.saturating_duration_since(start).as_secs_f64();
    if common.verbose {
        // Where the time went: a consumer that keeps up handles its last
        // message just after the last publish's acknowledgement.
        eprintln!(
            "{:<10} {:<8} {:<10} {n:>7} messages: published in {published_in:.3} s, \
             last handled at {elapsed:.3} s ({:.0} msgs/s)",
            row.name(),
            side(lanebus),
            if rate.is_some() {
                "latency"
            } else {
                "throughput"
            },
            handled as f64 / elapsed
        );
    }
    b.close(sink, &topic, handled).await?;
    // Keyed phases publish whole rounds: every aggregate up to n / 1000.
    let order_held = order
        .as_ref()
        .map(|o| o.held(&vec![(n / AGGREGATES as u64) as i64; AGGREGATES]));
    if let Some(o) = order.as_ref().filter(|o| o.disorder() > 0) {
        eprintln!(
            "{} ({}): {} per-aggregate order violations; the first:",
            row.name(),
            side(lanebus),
            o.disorder()
        );
        for line in o.examples() {
            eprintln!("  {line}");
        }
    }
    if handled < n {
        eprintln!(
            "{} ({}): {} of {n} messages handled, {} lost (nothing handled for {:?})",
            row.name(),
            side(lanebus),
            handled,
            n - handled,
            B::STALL
        );
    }
    Ok(Phase {
        rate: handled as f64 / elapsed,
        lost: n - handled.min(n),
        probe,
        order,
        order_held,
    })
}

/// Both sides' phases, lanebus first when `bus_first`.
pub(crate) async fn both<B: Broker>(
    b: &B,
    row: B::Row,
    n: u64,
    rate: Option<f64>,
    bus_first: bool,
) -> Result<(Phase, Phase), String> {
    if bus_first {
        let ours = phase(b, row, true, n, rate).await?;
        Ok((ours, phase(b, row, false, n, rate).await?))
    } else {
        let theirs = phase(b, row, false, n, rate).await?;
        Ok((phase(b, row, true, n, rate).await?, theirs))
    }
}

/// One run of one row: throughput of both sides, then latency of both at
/// half lanebus's throughput.
async fn run_row<B: Broker>(b: &B, row: B::Row, n: u64, run: usize) -> Result<Report, String> {
    let bus_first = run.is_multiple_of(2);
    let (ours, theirs) = both(b, row, n, None, bus_first).await?;
    let mut report = Report {
        baseline_msgs_per_sec: theirs.rate,
        lost: ours.lost + theirs.lost,
        disorder: [&ours, &theirs]
            .iter()
            .filter_map(|p| p.order.as_ref().map(|o| o.disorder()))
            .sum(),
        ..Report::throughput_only(
            row.name(),
            n,
            ours.rate,
            ours.order_held.zip(theirs.order_held).map(|(a, b)| a && b),
        )
    };
    if !b.common().latency {
        return Ok(report);
    }
    let rate = ours.rate * 0.5;
    let mut lat_n = (rate * LATENCY_SECS).clamp(2_000.0, 200_000.0) as u64;
    if row.keyed() {
        lat_n = lat_n.div_ceil(AGGREGATES as u64) * AGGREGATES as u64;
    }
    let (ours, theirs) = both(b, row, lat_n, Some(rate), bus_first).await?;
    report.p50_us = ours.probe.hist.quantile_us(0.50);
    report.p99_us = ours.probe.hist.quantile_us(0.99);
    report.baseline_p50_us = theirs.probe.hist.quantile_us(0.50);
    report.baseline_p99_us = theirs.probe.hist.quantile_us(0.99);
    report.lost += ours.lost + theirs.lost;
    for p in [&ours, &theirs] {
        if let Some(o) = &p.order {
            report.disorder += o.disorder();
        }
    }
    if let (Some(held), Some(a), Some(b)) = (report.order_ok, ours.order_held, theirs.order_held) {
        report.order_ok = Some(held && a && b);
    }
    Ok(report)
}

/// Unpaced messages of a `row` phase at `scale`: at least 10,000, and
/// whole rounds over the aggregates (at least 10) for a keyed row.
fn messages<R: Scenario>(row: R, scale: f64) -> u64 {
    let n = (row.messages() * scale) as u64;
    if row.keyed() {
        (n / AGGREGATES as u64).max(10) * AGGREGATES as u64
    } else {
        n.max(10_000)
    }
}

/// Runs `rows` `--runs` times each on `rt` and returns one report per row
/// (medians over the runs).
pub(crate) fn run_rows<B: Broker>(
    b: &Arc<B>,
    rows: &[B::Row],
    args: &Args,
    rt: &tokio::runtime::Runtime,
) -> Result<Vec<Report>, Box<dyn std::error::Error>> {
    let mut reports = Vec::new();
    for &row in rows {
        let n = messages(row, args.scale);
        let mut runs = Vec::with_capacity(args.runs);
        for run in 0..args.runs {
            let b = b.clone();
            runs.push(rt.block_on(rt.spawn(async move { run_row(&*b, row, n, run).await }))??);
        }
        reports.push(Report::median(runs));
    }
    Ok(reports)
}
