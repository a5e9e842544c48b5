//! # lanebus
//!
//! One event-bus API for services — domain events (enveloped, per-aggregate
//! ordered, at-least-once) and plain messages (fast, concurrent) — over an
//! in-process transport, NATS (feature `nats`: JetStream for persistent
//! topics, core NATS for ephemeral ones) and Kafka (feature `kafka`), built
//! on a lock-free engine.
//!
//! ```text
//!  publish / publish_envelope            transports feed records in
//!         |                                      |
//!         v                                      v
//!  +------------------- engine (no locks on these paths) -------------------+
//!  | registry: atomic snapshot  topic -> subscriptions (ahash), COW on change |
//!  | lanes:    N bounded MPSC rings per subscription; key hash -> lane        |
//!  |           (envelopes: aggregate ID; plain: key or round-robin)            |
//!  | dispatch: one worker task per lane drains its ring in order, runs the    |
//!  |           handler, then acks / retries / dead-letters                     |
//!  +--------------------------------------------------------------------------+
//!         |                                  |
//!   memory transport                  NATS (feature `nats`): JetStream
//!   (the rings are the transport)     streams (publish after the server's
//!                                     ack; a durable pull consumer per
//!                                     subscription feeds its lanes, records
//!                                     carry ack handles) or core NATS;
//!                                     Kafka (feature `kafka`): a group
//!                                     member per subscription, commits of
//!                                     the finished offset prefix
//! ```
//!
//! ## Where things are
//!
//! | you want to | look at |
//! |---|---|
//! | publish and subscribe, flush, close, observe | [`Bus`], [`Subscription`], [`BusStats`], [`HealthReport`] |
//! | write a handler | [`Handler`], [`HandlerError`] and its [`ErrorClass`], [`Message`], [`Event`], [`Context`] |
//! | build and read domain events | [`Envelope`], [`envelope`] (codecs, limits, [`key_hash`]), [`WireFormat`] |
//! | publish with a key or headers | [`OutboundMessage`], [`Headers`] |
//! | tune a subscription | [`SubscribeOptions`], [`RetryPolicy`], [`DeadLetter`], [`RateLimit`], [`ErrorClassifier`], [`Dedup`] |
//! | read a dead letter | [`DeadLetterInfo`], [`HEADER_SOURCE_TOPIC`] and the other header names |
//! | configure from YAML or TOML | [`BusConfig`], [`TopicOptions`], [`ConfigError`] |
//! | run on NATS (feature `nats`) | [`Bus::connect`], [`NatsOptions`], [`JetStreamOptions`], [`ConnectionEvent`], [`BrokerStats`] |
//! | run on Kafka (feature `kafka`) | [`Bus::connect`], [`KafkaOptions`], [`BrokerStats`], [`PartitionLag`] |
//! | handle failures of the bus itself | [`PublishError`], [`TryPublishError`], [`SubscribeError`], [`CloseError`] |
//!
//! Inside, the engine (`src/engine/`: the ring, the registry and its
//! per-thread reader, the lanes, the lane workers), the pipeline
//! (`src/pipeline/`: retry, dead letters, counters) and the transports
//! (`src/transport/`) are private; each file opens with the algorithm it
//! implements and its invariants.
//!
//! ## Quick start
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use lanebus::{Bus, HandlerError, Message};
//!
//! let bus = Bus::memory();
//! let _sub = bus
//!     .subscribe("notifications", |msg: Message| async move {
//!         assert_eq!(msg.payload().as_ref(), b"hello");
//!         Ok::<(), HandlerError>(())
//!     })
//!     .await?;
//! bus.publish("notifications", "hello").await?;
//! bus.close().await?; // drains every lane first
//! assert_eq!(bus.stats().total.delivered, 1);
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod bus;
mod config;
mod context;
pub(crate) mod engine;
pub mod envelope;
mod error;
mod events;
mod handler;
mod headers;
mod message;
mod options;
pub(crate) mod pipeline;
mod subscription;
pub(crate) mod sync;
mod topic;
pub(crate) mod transport;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(feature = "loom")]
#[allow(clippy::duplicate_mod)]
pub(crate) mod loom_engine;

#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod __bench;

#[cfg(all(test, feature = "loom"))]
#[path = "../loom-tests/mod.rs"]
mod loom_models;

pub use bus::{BuildError, Bus, HealthOptions, HealthPart, HealthReport, HealthStatus};
pub use bytes::Bytes;
pub use config::BusConfig;
pub use context::{Context, Event};
pub use envelope::{key_hash, DecodeError, EncodeError, Envelope, EnvelopeError, WireFormat};
pub use error::{
    CloseError, HealthError, PublishError, SubscribeError, TopicConfigError, TryPublishError,
};
pub use events::{BacklogState, BusEvent, PublisherBacklogState, StallState, EVENT_CAPACITY};
pub use handler::{ErrorClass, FromEnvelope, Handler, HandlerError};
pub use headers::Headers;
pub use message::{Message, OutboundMessage};
pub use options::{ConfigError, TransportKind};
pub use pipeline::backlog::{BacklogOptions, PublisherBacklogOptions};
pub use pipeline::classify::ErrorClassifier;
pub use pipeline::dead_letter::{
    DeadLetter, DeadLetterInfo, HEADER_ATTEMPTS, HEADER_DEAD_LETTER_TRAIL, HEADER_ERROR,
    HEADER_ERROR_CLASS, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
};
pub use pipeline::dedup::{Dedup, MAX_DEDUP_IDS};
pub use pipeline::export::{MetricsOptions, HANDLER_DURATION_BUCKETS};
pub use pipeline::metrics::{
    BacklogStats, BrokerStats, BusStats, LaneStats, PartitionLag, StalledLane, StalledPartition,
    SubscriptionStats,
};
pub use pipeline::rate_limit::RateLimit;
pub use pipeline::retry::RetryPolicy;
pub use pipeline::trace::{TraceContext, TRACEPARENT};
pub use subscription::{SubscribeOptions, Subscription, MAX_LANES, MAX_RING_CAPACITY};
pub use topic::{
    validate_topic_name, Discard, Persistence, Retention, Storage, TopicError, TopicOptions,
    MAX_TOPIC_LEN,
};
pub use transport::kafka::{
    KafkaAcks, KafkaCompression, KafkaConsumerOptions, KafkaOffsetReset, KafkaOptions,
    KafkaProducerOptions, DEFAULT_KAFKA_BROKERS,
};
pub use transport::nats::{
    ConnectionEvent, JetStreamOptions, NatsAuth, NatsOptions, NatsReconnect, NatsTls,
    StreamStrategy, DEFAULT_NATS_URL,
};
pub use transport::{AckHandle, BoxFuture, TransportError};
