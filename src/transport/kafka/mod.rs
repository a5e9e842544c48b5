//! The Kafka transport (cargo feature `kafka`, on rdkafka): being built.
//!
//! - `offsets`: which offset of a partition may be committed while lanes
//!   finish its records out of order.

pub(crate) mod offsets;
