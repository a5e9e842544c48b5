//! The raw rdkafka side of the bench's Kafka rows: a `FutureProducer`
//! with lanebus's producer settings, and a `BaseConsumer` in a group of its
//! own polled on a thread of its own, committing by hand.
//!
//! Included by `bench_support/kafka.rs` through `#[path]`.
//!
//! # Algorithm
//!
//! - Producer: `acks=all`, `enable.idempotence=true`, `linger.ms=5`,
//!   `message.timeout.ms=30000` (lanebus's defaults, set by hand); each
//!   publish awaits its delivery report.
//! - Consumer loop: poll (50 ms), run the handler, store the record's
//!   offset (`enable.auto.offset.store=false`), and commit the stored
//!   offsets asynchronously every [`COMMIT_EVERY`] records or
//!   [`COMMIT_INTERVAL`], whichever comes first
//!   (`enable.auto.commit=false`). At stop, a last synchronous commit.
//!
//! # Invariants
//!
//! - An offset is stored only after its record's handler ran.
//! - The loop returns the sum of its group's committed offsets, which
//!   on a fresh topic is how many records it committed; the caller checks
//!   it against what was handled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanebus::Envelope;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message as _, Offset};

use super::{OrSay, Seen};

/// The raw consumer commits after this many records …
const COMMIT_EVERY: u64 = 1_000;
/// … or this long after its last commit, whichever comes first.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// The raw producer: lanebus's producer settings, set by hand.
pub(super) fn raw_producer(brokers: &str) -> Result<FutureProducer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "raw-bench")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .or_say("raw producer")
}

/// The raw consumer, in group `group`, committing by hand.
pub(super) fn raw_consumer(
    brokers: &str,
    group: &str,
    topic: &str,
) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("client.id", "raw-bench")
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .or_say("raw consumer")?;
    consumer.subscribe(&[topic]).or_say("raw subscribe")?;
    Ok(consumer)
}

/// Produces `record` and waits for its delivery report.
pub(super) async fn send<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &FutureProducer,
    record: FutureRecord<'_, K, [u8]>,
) -> Result<(), rdkafka::error::KafkaError> {
    producer
        .send(record, Timeout::Never)
        .await
        .map(drop)
        .map_err(|(e, _)| e)
}

/// The raw consumer's loop: poll, handle, store the offset, commit every
/// [`COMMIT_EVERY`] records or [`COMMIT_INTERVAL`]; at `stop`, a last
/// synchronous commit. Returns the sum of the group's committed offsets
/// (on a fresh topic: how many records it committed).
pub(super) fn consume(
    consumer: BaseConsumer,
    seen: &Seen,
    stop: &AtomicBool,
) -> Result<i64, String> {
    let mut stored = 0u64;
    let mut last_commit = Instant::now();
    let mut errors = 0u64;
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                if seen.order.is_some() {
                    match Envelope::decode(payload) {
                        Ok(ev) => seen.envelope(&ev),
                        Err(e) => eprintln!("raw consumer: undecodable envelope: {e}"),
                    }
                } else {
                    seen.plain(payload);
                }
                consumer
                    .store_offset_from_message(&m)
                    .or_say("raw store offset")?;
                stored += 1;
            }
            Some(Err(e)) => {
                errors += 1;
                if errors == 1 {
                    eprintln!("raw consumer: {e}");
                }
            }
            None => {}
        }
        if stored >= COMMIT_EVERY || (stored > 0 && last_commit.elapsed() >= COMMIT_INTERVAL) {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                eprintln!("raw consumer: commit failed: {e}");
            }
            stored = 0;
            last_commit = Instant::now();
        }
    }
    // Nothing new stored is an error here (no offset to commit): the
    // check below is what counts.
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    let committed = consumer
        .committed(Duration::from_secs(10))
        .or_say("raw committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum())
}
