//! JetStream subscriptions: a durable pull consumer per subscription, and
//! the loop that feeds its records into the subscription's lanes.
//!
//! # Algorithm
//!
//! - **Identity**: the consumer's durable name is the subscribe option
//!   `consumer`, else the group, else `<client name>-<topic>` (client name
//!   `lanebus` when the options name none), with `.` written as `_` (a
//!   consumer name holds no `.`). Whoever opens the same name on the same
//!   stream shares its records: two bus instances in one group split the
//!   work, and a restarted service resumes where its consumer stood. Two
//!   subscriptions of one bus that would get the same name without a group
//!   get `-2`, `-3`, … suffixes, so that each gets every record, as on the
//!   memory transport.
//! - **Creation**: explicit acks, `ack_wait`, `max_deliver` (unlimited by
//!   default) and `max_ack_pending` (default: what the lanes hold) from the
//!   subscribe options; a new consumer starts at the stream's first
//!   record. An existing consumer is opened as it is (a warning names the
//!   options it does not share): updating it would make the server restart
//!   it from its ack floor and forget the delivery counts of its pending
//!   records.
//! - **Loop**: one pull request at a time, for as many records as the
//!   subscription's lanes have free slots (at most 512), standing on the
//!   server until they came or it expired (1 s); the next one is made when
//!   it ended. What the bus holds is bounded by the lanes plus one request,
//!   however long the server's backlog. Each record becomes a lane record:
//!   its payload, the key from the `lanebus-key` header (when it is
//!   absent, as from the Go system's publisher, an envelope subscription
//!   decodes the envelope and takes its aggregate ID), the other headers,
//!   a [`JsAck`] and the server's delivery count. `deliver` waits while the
//!   lane is full, and while it waits nothing more is pulled.
//! - **Figures**: about once a second the consumer's info gives its
//!   pending, ack-pending and redelivered counts; when something waits,
//!   one raw get (`STREAM.MSG.GET`, next message of the consumer's filter,
//!   `>` when it has none, from the ack floor's stream sequence + 1: the
//!   oldest message not acked) reads that message's stored time, which
//!   the backlog monitor turns into the oldest waiting record's age (only
//!   for a subscription with backlog options). Two requests a second per
//!   subscription at most, never one per record.
//! - **Stop**: make no new request; take in everything the standing one
//!   brings (it ends within its 1 s expiry), so no record is left sent to
//!   this client but untaken; close the lanes, which the workers drain,
//!   acking what they finish.
//!
//! # Invariants
//!
//! - Every delivered record is settled once by its lane worker (or nacked
//!   when its handle is dropped unsettled); none is acked before its
//!   handler succeeded, skipped it or it was dead-lettered.
//! - The pacer keeps each unsettled record alive on the server (see
//!   `ack`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use async_nats::Client;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::super::pubsub::record_parts;
use super::ack::{pace, JsAck, Unsettled};
use crate::engine::lanes::Body;
use crate::engine::SubscriptionCore;
use crate::pipeline::metrics::BrokerGauges;
use crate::transport::names::NameLease;
use crate::transport::{Ack, Feed};
use crate::{Envelope, SubscribeOptions, TransportError};

/// Most records one pull asks for.
const MAX_BATCH: usize = 512;
/// How long one pull request waits on the server: an idle subscription
/// asks once per this, and a stop waits at most this for the standing
/// request to end.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How often the consumer's figures are read from the server.
const INFO_EVERY: Duration = Duration::from_secs(1);

fn error(
    message: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> TransportError {
    TransportError::new("nats", message, source)
}

/// A subscription's durable consumer and its stream.
pub(crate) struct Opened {
    consumer: PullConsumer,
    /// For the raw gets of the oldest unacked message's time.
    stream: Stream<()>,
}

/// The durable consumer for a subscription: the existing one, else a new
/// one.
pub(crate) async fn open(
    js: &Context,
    stream: &str,
    name: &str,
    topic: &str,
    options: &SubscribeOptions,
) -> Result<Opened, TransportError> {
    let config = pull::Config {
        durable_name: Some(name.to_owned()),
        description: Some(format!("lanebus subscription to {topic}")),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: options.max_deliver.map_or(-1, i64::from),
        max_ack_pending: i64::from(options.ack_pending_limit()),
        deliver_policy: DeliverPolicy::All,
        ..Default::default()
    };
    let handle = js.get_stream_no_info(stream).await.map_err(|e| {
        error(
            format!("stream {stream} of topic {topic} is not available"),
            Some(e.into()),
        )
    })?;
    // An existing consumer is opened as it is: re-creating it with other
    // options makes this server (2.9) restart it from its ack floor as if
    // new, which would lose the delivery counts of pending records.
    if let Ok(mut consumer) = handle.get_consumer::<pull::Config>(name).await {
        if let Ok(info) = consumer.info().await {
            let c = &info.config;
            if c.ack_wait != config.ack_wait
                || c.max_deliver != config.max_deliver
                || c.max_ack_pending != config.max_ack_pending
            {
                tracing::warn!(topic, stream, consumer = name, "the existing consumer keeps its own ack_wait, max_deliver and max_ack_pending; delete it (or name another) to change them");
            }
        }
        return Ok(Opened {
            consumer,
            stream: handle,
        });
    }
    let consumer = handle.create_consumer(config).await.map_err(|e| {
        error(
            format!("cannot create consumer {name} on stream {stream} of topic {topic}"),
            Some(e.into()),
        )
    })?;
    Ok(Opened {
        consumer,
        stream: handle,
    })
}

/// Starts the consumer loop and the pacer of `core` on `runtime`.
pub(crate) fn spawn(
    opened: Opened,
    name: &str,
    core: Arc<SubscriptionCore>,
    client: Client,
    options: &SubscribeOptions,
    lease: NameLease,
    runtime: &tokio::runtime::Handle,
) -> Feed {
    let unsettled = Arc::new(Unsettled::default());
    let gauges = Arc::new(BrokerGauges::named(name));
    runtime.spawn(pace(
        Arc::downgrade(&unsettled),
        client.clone(),
        options.ack_wait,
    ));
    let Opened { consumer, stream } = opened;
    // The oldest message's time only serves the backlog monitor.
    let stream = options.backlog.is_some().then_some(stream);
    runtime.spawn(watch(
        consumer.clone(),
        stream,
        Arc::downgrade(&unsettled),
        Arc::downgrade(&gauges),
    ));
    let (stop, stopped) = oneshot::channel();
    let task = runtime.spawn(async move {
        consume(consumer, core, client, unsettled, MAX_BATCH, stopped).await;
        drop(lease);
    });
    Feed::new(stop, task).with_gauges(gauges)
}

/// Reads the consumer's figures from the server about once a second,
/// while the subscription lives, and with `stream` (the subscription is
/// monitored) the oldest unacked message's stored time when something
/// waits.
async fn watch(
    mut consumer: PullConsumer,
    stream: Option<Stream<()>>,
    unsettled: std::sync::Weak<Unsettled>,
    gauges: std::sync::Weak<BrokerGauges>,
) {
    let mut tick = tokio::time::interval(INFO_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(unsettled), Some(gauges)) = (unsettled.upgrade(), gauges.upgrade()) else {
            return;
        };
        gauges
            .unsettled_here
            .store(unsettled.len() as u64, Ordering::Relaxed);
        drop(unsettled);
        if let Ok(info) = consumer.info().await {
            gauges.pending.store(info.num_pending, Ordering::Relaxed);
            gauges
                .ack_pending
                .store(info.num_ack_pending as u64, Ordering::Relaxed);
            gauges
                .redelivered
                .store(info.num_redelivered as u64, Ordering::Relaxed);
            let waiting = info.num_pending > 0 || info.num_ack_pending > 0;
            let oldest = match &stream {
                Some(stream) if waiting => oldest_stored(stream, info).await,
                _ => 0,
            };
            gauges.oldest_unix_ms.store(oldest, Ordering::Relaxed);
        }
    }
}

/// The stored time (ms since the Unix epoch) of the consumer's oldest
/// unacked message: the first of its filter from the ack floor's stream
/// sequence + 1 (everything up to the floor is acked, and the floor stops
/// below the first message that is not). 0 when it cannot be read (it
/// was deleted meanwhile, the server did not answer).
async fn oldest_stored(stream: &Stream<()>, info: &async_nats::jetstream::consumer::Info) -> u64 {
    let filter = match info.config.filter_subject.as_str() {
        "" => ">",
        subject => subject,
    };
    let from = info.ack_floor.stream_sequence + 1;
    match stream.get_first_raw_message_by_subject(filter, from).await {
        Ok(msg) => u64::try_from(msg.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        Err(e) => {
            tracing::debug!(stream = %info.stream_name, from, error = %e, "cannot read the oldest unacked message's time");
            0
        }
    }
}

/// The lane record and ack of one JetStream delivery.
fn inbound(
    msg: async_nats::jetstream::Message,
    core: &SubscriptionCore,
    client: &Client,
    unsettled: &Arc<Unsettled>,
) -> (Body, Ack) {
    let delivered = msg.info().map_or(1, |i| i.delivered.max(1));
    let redelivered = u32::try_from(delivered - 1).unwrap_or(u32::MAX);
    let mut msg = msg.message;
    let topic = core.wildcard.then(|| msg.subject.to_string());
    let handle = msg
        .reply
        .take()
        .map(|reply| Box::new(JsAck::new(client.clone(), reply, unsettled)) as Box<_>);
    let (key, headers) = record_parts(msg.headers.as_ref());
    let body = if key.is_none() && core.kind == "envelope" {
        // No routing key (a foreign publisher): the aggregate ID decides
        // the lane. A payload that does not decode goes on as it is, and
        // its handler call dead-letters it as malformed.
        match Envelope::decode_bytes(&msg.payload) {
            Ok(envelope) => Body::Envelope(Arc::new(envelope)),
            Err(_) => Body::plain_with(msg.payload, None, headers),
        }
    } else {
        Body::plain_with(msg.payload, key, headers)
    };
    (
        body,
        Ack::from_broker(handle, redelivered, topic.as_deref()),
    )
}

/// Free slots over the lanes of `core`.
fn free_room(core: &SubscriptionCore) -> usize {
    core.lanes
        .iter()
        .map(|l| {
            let capacity = l.ring.capacity() as u64;
            capacity.saturating_sub(l.pending()) as usize
        })
        .sum()
}

/// The consumer loop of one subscription (see the module docs).
async fn consume(
    consumer: PullConsumer,
    core: Arc<SubscriptionCore>,
    client: Client,
    unsettled: Arc<Unsettled>,
    max_batch: usize,
    mut stop: oneshot::Receiver<()>,
) {
    let mut failures = 0u32;
    let mut stopping = false;
    while !stopping {
        let room = free_room(&core).clamp(1, max_batch);
        let opened = consumer
            .batch()
            .max_messages(room)
            .expires(PULL_EXPIRES)
            .messages();
        let mut batch = tokio::select! {
            biased;
            _ = &mut stop => break,
            opened = opened => match opened {
                Ok(batch) => batch,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(topic = %core.topic, error = %e, "cannot pull from the consumer; retrying");
                    }
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(retry_pause(failures)) => continue,
                    }
                }
            },
        };
        // The request stands until `room` records came or it expired.
        // Everything it brings is taken, even after the stop signal, so
        // that no record is left delivered but untaken (the server would
        // hold it back for `ack_wait`).
        loop {
            let next = if stopping {
                batch.next().await
            } else {
                tokio::select! {
                    biased;
                    _ = &mut stop => {
                        stopping = true;
                        continue;
                    }
                    next = batch.next() => next,
                }
            };
            match next {
                Some(Ok(msg)) => {
                    failures = 0;
                    let (body, ack) = inbound(msg, &core, &client, &unsettled);
                    if core.deliver(body, ack).await.is_err() {
                        return; // the lanes are closed already
                    }
                }
                Some(Err(e)) => {
                    // A status the request ended on (the consumer was
                    // deleted, the server is restarting): pull again
                    // after a pause.
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(topic = %core.topic, error = %e, "pull failed; retrying");
                    }
                    if !stopping {
                        tokio::select! {
                            biased;
                            _ = &mut stop => stopping = true,
                            _ = tokio::time::sleep(retry_pause(failures)) => {}
                        }
                    }
                    break;
                }
                None => break,
            }
        }
    }
    core.lanes.close();
}

/// Pause before the `n`th consecutive retry: 100 ms doubling to 5 s.
fn retry_pause(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(6))).min(Duration::from_secs(5))
}
