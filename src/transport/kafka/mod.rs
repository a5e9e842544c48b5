//! The Kafka transport (cargo feature `kafka`, on rdkafka): being built.
//!
//! - `options`: `KafkaOptions` (brokers, client ID, producer and consumer
//!   settings, pass-through librdkafka properties), plain data.
//! - `offsets`: which offset of a partition may be committed while lanes
//!   finish its records out of order.

pub(crate) mod offsets;
pub(crate) mod options;
