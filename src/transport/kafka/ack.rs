//! The Kafka ack handle: settling a record marks its offset finished in its
//! partition's tracker.
//!
//! # Algorithm
//!
//! Kafka has no per-record ack: the consumer commits one position per
//! partition. A [`KafkaAck`] holds its partition's [`PartitionOffsets`] (of
//! the assignment the record came in) and its offset:
//!
//! - `ack` and `terminate` settle the offset, so the committed position
//!   may move past it;
//! - `nack` leaves it unsettled: the position stops below it, and the
//!   record comes again to whoever consumes the partition after a
//!   rebalance or a restart (Kafka cannot redeliver one record alone);
//! - `progress` does nothing (Kafka has no ack timer per record);
//! - `position` gives the record's partition and offset (the handler's
//!   `Context` and the dead-letter headers show them);
//! - a record of a partition this consumer has let go of is stale: the
//!   lane worker releases it unhandled, since the partition's new owner
//!   gets it from the last commit.
//!
//! # Invariants
//!
//! - Only settling moves a partition's committable position.

use std::sync::Arc;
use std::time::Duration;

use super::offsets::PartitionOffsets;
use crate::transport::{AckHandle, BoxFuture};
use crate::TransportError;

/// The settlement handle of one Kafka record.
pub(crate) struct KafkaAck {
    tracker: Arc<PartitionOffsets>,
    partition: i32,
    offset: i64,
}

impl KafkaAck {
    /// A handle for `offset` of `partition`, tracked in `tracker` (the
    /// poll loop hands it out there before the record enters a lane).
    pub(crate) fn new(tracker: Arc<PartitionOffsets>, partition: i32, offset: i64) -> Self {
        Self {
            tracker,
            partition,
            offset,
        }
    }
}

fn done() -> BoxFuture<'static, Result<(), TransportError>> {
    Box::pin(std::future::ready(Ok(())))
}

impl AckHandle for KafkaAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.tracker.settled(self.offset);
        done()
    }

    fn nack(
        self: Box<Self>,
        _delay: Option<Duration>,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        // Left unsettled: see the module docs.
        done()
    }

    fn progress(&self) -> BoxFuture<'static, Result<(), TransportError>> {
        done()
    }

    fn terminate(self: Box<Self>) -> BoxFuture<'static, Result<(), TransportError>> {
        self.tracker.settled(self.offset);
        done()
    }

    fn is_stale(&self) -> bool {
        self.tracker.is_released()
    }

    fn position(&self) -> Option<(i32, i64)> {
        Some((self.partition, self.offset))
    }
}
