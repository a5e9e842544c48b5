//! The Kafka transport (cargo feature `kafka`, on rdkafka): every topic is
//! a Kafka topic, produced to with delivery reports and consumed by one
//! consumer group member per subscription.
//!
//! ```text
//!   Bus ── Transport::Kafka(Kafka)
//!            │ publish: FutureProducer (idempotent, acks=all),
//!            │          returns after the delivery report      (records)
//!            │ subscribe: a group member polled on its own thread,
//!            │          records → lanes with a KafkaAck         (consumer, ack)
//!            └ commits: per partition, the settled prefix only   (offsets)
//! ```
//!
//! - `options` (always compiled, plain data): [`KafkaOptions`].
//! - `records`: lane records to Kafka records and back (key, headers, the
//!   Go system's `X-*` headers for the JSON wire form).
//! - `consumer`, `ack`, `offsets`: the consumer side.
//! - `topics`: topics from `TopicOptions` through the admin API.
//!
//! # Algorithm
//!
//! - **Connect**: build the producer from the options (typed fields, then
//!   the pass-through properties) and ask the brokers for their metadata
//!   once, so that unreachable brokers are an error at once.
//! - **Publish**: produce the record and wait for its delivery report
//!   (the broker has it, on every in-sync replica with `acks=all`).
//!   Throughput comes from many publishes in flight: the producer batches
//!   them (`linger`), each caller waits for its own report.
//! - **Try publish**: enqueue without waiting when the producer's queue
//!   has room (else `Full`), and await the report in a background task,
//!   which logs a failure at error level: at-most-once from the caller's
//!   view, as on JetStream.
//! - **Close**: flush the producer (every queued record gets its report).
//! - **Health**: a metadata round trip to the brokers; then, per
//!   subscription, its consumer runs and is a steady member of its group
//!   (`consumer::GroupHealth`, read from librdkafka's statistics without
//!   waiting on the consumer's thread). A member joining, or a rebalance
//!   under way, reports unhealthy until it settles.
//!
//! [`KafkaOptions`]: crate::KafkaOptions

#[cfg(feature = "kafka")]
mod ack;
#[cfg(feature = "kafka")]
mod consumer;
#[cfg(any(test, feature = "kafka"))]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))] // only its tests without the feature
pub(crate) mod offsets;
mod options;
#[cfg(feature = "kafka")]
mod records;
#[cfg(feature = "kafka")]
mod topics;

pub use options::{
    KafkaAcks, KafkaCompression, KafkaConsumerOptions, KafkaOffsetReset, KafkaOptions,
    KafkaProducerOptions, DEFAULT_KAFKA_BROKERS,
};

#[cfg(feature = "kafka")]
mod client;
#[cfg(feature = "kafka")]
pub(crate) use client::Kafka;

#[cfg(all(test, feature = "kafka"))]
mod backlog_tests;
#[cfg(all(test, feature = "kafka"))]
mod bus_tests;
#[cfg(all(test, feature = "kafka"))]
mod fault_tests;
#[cfg(all(test, feature = "kafka"))]
mod handler_tests;
#[cfg(all(test, feature = "kafka"))]
mod health_tests;
#[cfg(all(test, feature = "kafka"))]
mod test_support;
#[cfg(all(test, feature = "kafka"))]
use consumer::PARK_LIMIT;

#[cfg(feature = "kafka")]
fn error(message: impl Into<String>, e: rdkafka::error::KafkaError) -> crate::TransportError {
    crate::TransportError::new("kafka", message, Some(Box::new(e)))
}
