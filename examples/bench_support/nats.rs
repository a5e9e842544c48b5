//! The bench tool's NATS rows (`--transport nats`, cargo feature `nats`):
//! lanebus on a real `nats-server`, beside raw async-nats doing the same
//! work in the same run.
//!
//! - `persistent`: plain messages on a JetStream-backed topic, each publish
//!   awaiting the server's ack with `--window` publishes in flight, handled
//!   by a subscription with `--lanes` lanes. Baseline: `jetstream::Context`
//!   publishes with the same window of ack futures, and a durable pull
//!   consumer (explicit acks) whose task acks every message.
//! - `keyed`: envelopes over 1,000 aggregate IDs on JetStream
//!   (`publish_envelope`, `subscribe_envelope` on `--keyed-lanes` lanes),
//!   each aggregate's versions checked to arrive 1, 2, 3, … Baseline: the
//!   same envelopes' `encode()` bytes published raw (with `Nats-Msg-Id` set
//!   to the event ID, as lanebus does, so the server's duplicate window does
//!   the same work), decoded by the pull consumer's task, same order check.
//! - `ephemeral`: core NATS, the topic configured `persistence: ephemeral`.
//!   Baseline: `Client::publish` and a `Client::subscribe` task.
//!
//! Every row also measures latency (p50/p99, publish → handler; the
//! baseline's in the `base p50`/`base p99` columns) at half the throughput
//! lanebus reached in that run, both sides at that rate (`--no-latency`
//! skips it).
//!
//! # Algorithm
//!
//! - Server: the one `--url` names, else one started here through the
//!   integration tests' harness (`tests/common/nats.rs`: `nats-server -js`
//!   on a free loopback port with a temporary store), killed at the end.
//! - Phases: a phase is one side's throughput or latency measurement. Each
//!   has a topic of its own, `bench.<row>.<pid>.<n>`, set up before its
//!   clock starts (connection, stream, consumer, subscription) and torn down
//!   after it: lanebus unsubscribes and removes the topic (on JetStream,
//!   that deletes the stream), the baseline deletes its stream. So no phase
//!   sees an earlier one's messages, and a server given by `--url` keeps no
//!   bench streams.
//! - Publishing: one task keeps up to `--window` publishes in flight,
//!   paced in latency phases, keyed messages released in per-aggregate
//!   order (see `publish.rs`).
//! - Waiting and runs: shared with the Kafka rows (`broker.rs`). A phase
//!   gives up when nothing was handled for 5 s; every run measures both
//!   sides, lanebus first in even runs and the baseline first in odd ones;
//!   the table gives the medians.
//!
//! # Invariants
//!
//! - Nothing is dropped to go faster: every JetStream publish awaits its
//!   ack, and the raw consumer acks every message it takes.
//! - A lost message or a per-key order violation on a JetStream row fails
//!   the tool after the table is printed (with the violations listed); on
//!   core NATS (at-most-once) a loss is reported in the table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use lanebus::{Bus, BusConfig, Envelope, TopicOptions};

use super::broker::{self, close_bus, Broker, Common, Payloads, Scenario};
use super::measure::{OrderCheck, Probe, Report};
use super::publish::{drive, OrSay};
use super::{keyed_subscription, plain_subscription, Args};

// The bench uses the start, the URL and the drop of the harness.
#[allow(dead_code)]
#[path = "../../tests/common/nats.rs"]
mod server;

/// Lane ring capacity of every lanebus subscription (the memory rows' too).
const RING: usize = super::RING;

/// Messages the raw pull consumer asks for per pull request.
const PULL_BATCH: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Row {
    Persistent,
    Keyed,
    Ephemeral,
}

impl Scenario for Row {
    const TRANSPORT: &'static str = "nats";
    const ALL: &'static [Row] = &[Row::Persistent, Row::Keyed, Row::Ephemeral];

    fn name(self) -> &'static str {
        match self {
            Row::Persistent => "persistent",
            Row::Keyed => "keyed",
            Row::Ephemeral => "ephemeral",
        }
    }

    fn keyed(self) -> bool {
        self == Row::Keyed
    }

    fn messages(self) -> f64 {
        match self {
            Row::Persistent | Row::Keyed => 100_000.0,
            Row::Ephemeral => 500_000.0,
        }
    }
}

/// What every phase needs.
struct Ctx {
    url: String,
    common: Common,
}

/// The raw side's stream name for `topic` (letters, digits and `_`).
fn stream_name(topic: &str) -> String {
    topic.replace('.', "_")
}

/// What receives one phase's messages.
// One per phase, never moved in a loop: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Sink {
    Bus {
        bus: Bus,
        sub: lanebus::Subscription,
    },
    Raw {
        client: async_nats::Client,
        js: jetstream::Context,
        /// The JetStream rows' stream and durable consumer.
        stream: Option<(String, consumer::PullConsumer)>,
        task: tokio::task::JoinHandle<()>,
    },
}

/// Where a sink is opened: the phase's row, topic, probe and order check.
struct Site<'a> {
    ctx: &'a Ctx,
    row: Row,
    topic: &'a str,
    probe: &'a Probe,
    order: Option<Arc<OrderCheck>>,
}

impl Sink {
    /// A lanebus bus on its own connection, the topic configured for the
    /// row, and a subscription reporting to `probe` (and `order`).
    async fn bus(on: Site<'_>) -> Result<Sink, String> {
        let (ctx, topic, probe) = (on.ctx, on.topic, on.probe);
        let yaml = format!(
            "type: nats\nnats:\n  urls: [\"{}\"]\n  name: lanebus-bench\n  \
             jetstream: {{ default_persistence: persistent, wire_format: binary }}\n",
            ctx.url
        );
        let config = BusConfig::from_yaml_str(&yaml).or_say("lanebus config")?;
        let bus = Bus::connect(config).await.or_say("lanebus connect")?;
        let options = match on.row {
            Row::Ephemeral => TopicOptions::ephemeral(),
            Row::Persistent | Row::Keyed => TopicOptions::persistent(),
        };
        bus.configure_topic(topic, options)
            .await
            .or_say("lanebus configure topic")?;
        let sub = match on.order {
            None => plain_subscription(&bus, topic, ctx.common.lanes, probe).await,
            Some(order) => {
                keyed_subscription(&bus, topic, ctx.common.keyed_lanes, probe, order).await
            }
        };
        Ok(Sink::Bus { bus, sub })
    }

    /// Raw async-nats on its own connection: a stream and a durable pull
    /// consumer with explicit acks (JetStream rows), or a core subscription
    /// (ephemeral), drained by a task reporting to `probe` (and `order`).
    async fn raw(on: Site<'_>) -> Result<Sink, String> {
        let (ctx, row, topic, order) = (on.ctx, on.row, on.topic, on.order);
        let client = async_nats::connect(ctx.url.as_str())
            .await
            .or_say("raw connect")?;
        let js = jetstream::new(client.clone());
        let p = on.probe.clone();
        if row == Row::Ephemeral {
            let mut sub = client
                .subscribe(topic.to_owned())
                .await
                .or_say("raw subscribe")?;
            // The server knows the subscription before the first publish.
            client.flush().await.or_say("raw flush")?;
            let task = tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    p.hit(&m.payload);
                }
            });
            return Ok(Sink::Raw {
                client,
                js,
                stream: None,
                task,
            });
        }
        let name = stream_name(topic);
        let st = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![topic.to_owned()],
                ..Default::default()
            })
            .await
            .or_say("raw create stream")?;
        // As many unacked messages as lanebus's default for the row's
        // subscription: what its lanes hold.
        let lanes = if row == Row::Keyed {
            ctx.common.keyed_lanes
        } else {
            ctx.common.lanes
        };
        let durable = format!("{name}_raw");
        let pull: consumer::PullConsumer = st
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: (lanes * RING) as i64,
                    ..Default::default()
                },
            )
            .await
            .or_say("raw create consumer")?;
        let mut messages = pull
            .clone()
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .messages()
            .await
            .or_say("raw pull")?;
        let task = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("raw pull consumer: {e}");
                        continue;
                    }
                };
                match &order {
                    None => p.hit(&m.payload),
                    Some(order) => match Envelope::decode_bytes(&m.payload) {
                        Ok(ev) => {
                            order.see(&ev.aggregate_id, ev.event_version);
                            p.hit(&ev.payload);
                        }
                        Err(e) => eprintln!("raw consumer: undecodable envelope: {e}"),
                    },
                }
                if let Err(e) = m.ack().await {
                    eprintln!("raw consumer: ack failed: {e}");
                }
            }
        });
        Ok(Sink::Raw {
            client,
            js,
            stream: Some((name, pull)),
            task,
        })
    }

    /// Tears down what the phase set up (see the module docs). On the raw
    /// JetStream side, first checks with the server that the consumer
    /// acked all `handled` messages, none redelivered and none pending.
    async fn close(self, topic: &str, handled: u64) -> Result<(), String> {
        match self {
            Sink::Bus { bus, sub } => close_bus(bus, sub, topic).await,
            Sink::Raw {
                client,
                js,
                stream,
                task,
            } => {
                let checked = match &stream {
                    Some((_, pull)) => acked_all(&client, pull, handled).await,
                    None => Ok(()),
                };
                task.abort();
                let _ = task.await;
                if let Some((name, _)) = stream {
                    js.delete_stream(&name).await.or_say("raw delete stream")?;
                }
                client.drain().await.or_say("raw drain")?;
                checked
            }
        }
    }
}

/// The server's view of the raw consumer: every one of the `handled`
/// messages acked (the ack floor at stream sequence `handled`), none
/// pending, none redelivered. Acks are fire-and-forget publishes, so it
/// waits (up to 5 s) for the server to have processed them.
async fn acked_all(
    client: &async_nats::Client,
    pull: &consumer::PullConsumer,
    handled: u64,
) -> Result<(), String> {
    client.flush().await.or_say("raw flush")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = pull.get_info().await.or_say("raw consumer info")?;
        let done = info.ack_floor.stream_sequence == handled
            && info.num_ack_pending == 0
            && info.num_redelivered == 0;
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "raw consumer {}: acked up to stream sequence {} of {handled}, \
                 {} ack pending, {} redelivered",
                info.name,
                info.ack_floor.stream_sequence,
                info.num_ack_pending,
                info.num_redelivered
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Broker for Ctx {
    type Row = Row;
    type Sink = Sink;

    const STALL: Duration = Duration::from_secs(5);

    fn common(&self) -> &Common {
        &self.common
    }

    async fn open(
        &self,
        row: Row,
        lanebus: bool,
        topic: &str,
        probe: &Probe,
        order: Option<Arc<OrderCheck>>,
    ) -> Result<Sink, String> {
        let site = Site {
            ctx: self,
            row,
            topic,
            probe,
            order,
        };
        if lanebus {
            Sink::bus(site).await
        } else {
            Sink::raw(site).await
        }
    }

    async fn publish(
        &self,
        sink: &Sink,
        row: Row,
        topic: &str,
        n: u64,
        rate: Option<f64>,
        payloads: &Payloads<'_>,
    ) -> Result<(), String> {
        let window = self.common.window;
        match (sink, row) {
            (Sink::Bus { bus, .. }, Row::Persistent | Row::Ephemeral) => {
                drive(n, rate, window, false, |_| {
                    bus.publish(topic, payloads.plain())
                })
                .await
            }
            (Sink::Bus { bus, .. }, Row::Keyed) => {
                drive(n, rate, window, true, |i| {
                    bus.publish_envelope(topic, payloads.envelope(i))
                })
                .await
            }
            (Sink::Raw { js, .. }, Row::Persistent) => {
                drive(n, rate, window, false, |_| {
                    let send = js.publish(topic.to_owned(), payloads.plain());
                    async move { send.await?.await }
                })
                .await
            }
            (Sink::Raw { js, .. }, Row::Keyed) => {
                drive(n, rate, window, true, |i| {
                    let ev = payloads.envelope(i);
                    let message = jetstream::message::PublishMessage::build()
                        .payload(ev.encode())
                        .message_id(&ev.event_id);
                    let send = js.send_publish(topic.to_owned(), message);
                    async move { send.await?.await }
                })
                .await
            }
            (Sink::Raw { client, .. }, Row::Ephemeral) => {
                drive(n, rate, window, false, |_| {
                    client.publish(topic.to_owned(), payloads.plain())
                })
                .await
            }
        }
    }

    async fn close(&self, sink: Sink, topic: &str, handled: u64) -> Result<(), String> {
        sink.close(topic, handled).await
    }
}

/// Runs the NATS rows `args` asks for on `rt` and returns one report per
/// row (medians over `--runs`).
pub(crate) fn run(
    args: &Args,
    rt: &tokio::runtime::Runtime,
    base: Instant,
    latency: bool,
) -> Result<Vec<Report>, Box<dyn std::error::Error>> {
    let rows = broker::parse_rows::<Row>(&args.scenarios)?;
    // Started before the first row, killed when this returns.
    let own_server = match &args.url {
        Some(_) => None,
        None => Some(server::NatsServer::start()),
    };
    let url = match (&args.url, &own_server) {
        (Some(url), _) => url.clone(),
        (None, Some(s)) => s.url(),
        (None, None) => unreachable!("a server was started"),
    };
    if !args.json {
        println!(
            "nats: {} ({}), window {} publishes in flight",
            url,
            if own_server.is_some() {
                "nats-server -js started by the bench, temporary store"
            } else {
                "--url"
            },
            args.window
        );
    }
    let ctx = Arc::new(Ctx {
        url,
        common: Common::new(args, base, latency),
    });
    let reports = broker::run_rows(&ctx, &rows, args, rt)?;
    drop(own_server);
    Ok(reports)
}
