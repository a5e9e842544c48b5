//! The JetStream half of the NATS transport: publish to a topic's stream
//! after the server's ack, subscribe with a durable consumer.
//!
//! # Algorithm
//!
//! - **Publish**: make the topic's stream ready (once per topic, through
//!   the stream manager's single flight), send the record (payload and
//!   headers as on core NATS; an envelope with `Nats-Msg-Id` set to its
//!   event ID), then wait for the server's ack, which says the stream
//!   stored it. Throughput comes from many publishes in flight: each
//!   publish waits only for its own ack, and the client pipelines them
//!   (at most 5,000 unacknowledged, beyond which a publish waits).
//! - **Try publish**: no waiting is allowed, so the record is handed to a
//!   background task that publishes and waits for the ack; at most
//!   [`TRY_IN_FLIGHT`] such publishes are unconfirmed at once, beyond which
//!   the record is handed back as `Full`. A failure in the background is
//!   logged at error level with the topic: `try_publish` on a persistent
//!   topic is at-most-once from the publisher's view; `publish` is the
//!   at-least-once call.
//! - **Subscribe**: make the stream ready, open the subscription's durable
//!   consumer and start its loop (see `consumer`).
//!
//! # Invariants
//!
//! - `publish` returns `Ok` only after the server's ack.
//! - A durable name is held by one subscription of this bus at a time
//!   (unless it is a group's or named explicitly): the lease is returned
//!   when the consumer loop ends.

use std::sync::Arc;

use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::Context;
use async_nats::Client;
use tokio::sync::Semaphore;

use super::super::pubsub::outbound;
use super::streams::Streams;
use crate::engine::lanes::Body;
use crate::engine::SubscriptionCore;
use crate::transport::names::{NameLease, Names};
use crate::transport::Feed;
use crate::{JetStreamOptions, SubscribeOptions, TopicOptions, TransportError};

/// Most `try_publish` records waiting for their ack in the background.
pub(crate) const TRY_IN_FLIGHT: usize = 4096;

fn error(
    message: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> TransportError {
    TransportError::new("nats", message, source)
}

/// The JetStream half of the NATS transport.
pub(crate) struct JetStream {
    js: Context,
    client: Client,
    streams: Arc<Streams>,
    options: JetStreamOptions,
    /// The client name that prefixes default consumer names.
    client_name: String,
    /// Default durable names in use by this bus's subscriptions.
    names: Names,
    background: Arc<Semaphore>,
}

impl JetStream {
    /// JetStream on `client`, with `client_name` for default consumer
    /// names.
    pub(crate) fn new(
        client: Client,
        client_name: Option<&str>,
        options: &JetStreamOptions,
    ) -> Self {
        let js = ContextBuilder::new()
            .timeout(options.api_timeout)
            .ack_timeout(options.api_timeout)
            .build(client.clone());
        Self {
            streams: Arc::new(Streams::new(js.clone(), options)),
            js,
            client,
            options: options.clone(),
            client_name: client_name.unwrap_or("lanebus").to_owned(),
            names: Names::default(),
            background: Arc::new(Semaphore::new(TRY_IN_FLIGHT)),
        }
    }

    /// The stream manager.
    pub(crate) fn streams(&self) -> &Streams {
        &self.streams
    }

    /// Publishes `body` to `topic`'s stream and waits for the server's ack.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        config: &TopicOptions,
        body: &Body,
    ) -> Result<(), TransportError> {
        let message = prepare(body, self.options.wire_format)?;
        send(&self.js, &self.streams, topic, config, message).await
    }

    /// Encodes `body` and hands it to a background publish when fewer
    /// than [`TRY_IN_FLIGHT`] are unconfirmed: `Ok(None)`; `Ok(Some(body))`
    /// when they are not; `Err` when the record cannot be sent at all.
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        config: TopicOptions,
        body: Body,
    ) -> Result<Option<Body>, (Body, TransportError)> {
        let message = match prepare(&body, self.options.wire_format) {
            Ok(m) => m,
            Err(e) => return Err((body, e)),
        };
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return Ok(Some(body));
        };
        let js = self.js.clone();
        let streams = self.streams.clone();
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = send(&js, &streams, &topic, &config, message).await {
                tracing::error!(topic, error = %e, "try_publish to a persistent topic failed after it returned; the record was not stored");
            }
        });
        Ok(None)
    }

    /// Opens the durable consumer of `core` and starts its loop.
    pub(crate) async fn subscribe(
        &self,
        core: &Arc<SubscriptionCore>,
        options: &SubscribeOptions,
        config: &TopicOptions,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Feed, TransportError> {
        let stream = self.streams.ensure(&core.topic, config).await?;
        let (name, lease) = self.durable_name(&core.topic, options);
        let consumer =
            super::consumer::open(&self.js, &stream, &name, &core.topic, options).await?;
        Ok(super::consumer::spawn(
            consumer,
            &name,
            core.clone(),
            self.client.clone(),
            options,
            lease,
            runtime,
        ))
    }

    /// The durable name of a subscription (see `consumer`), and its lease.
    fn durable_name(&self, topic: &str, options: &SubscribeOptions) -> (String, NameLease) {
        let shared = options
            .consumer
            .as_deref()
            .or(options.group.as_deref())
            .map(consumer_name);
        let base = consumer_name(&format!("{}-{topic}", self.client_name));
        self.names.pick(shared, base)
    }
}

/// A consumer name from a group, topic or client name: `.` (and anything
/// else a consumer name cannot hold) becomes `_`. Names need only differ
/// on one stream, so the readable form is kept (`orders.billing` and
/// `orders_billing` would share a consumer; name one explicitly then).
fn consumer_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The JetStream message of `body`.
fn prepare(body: &Body, format: crate::WireFormat) -> Result<PublishMessage, TransportError> {
    let (payload, headers) = outbound(body, format)?;
    let message = PublishMessage::build().payload(payload);
    Ok(match headers {
        Some(headers) => message.headers(headers),
        None => message,
    })
}

/// Makes the stream ready, sends, and waits for the server's ack.
async fn send(
    js: &Context,
    streams: &Streams,
    topic: &str,
    config: &TopicOptions,
    message: PublishMessage,
) -> Result<(), TransportError> {
    streams.ensure(topic, config).await?;
    let ack = js
        .send_publish(topic.to_owned(), message)
        .await
        .map_err(|e| error(format!("publish to {topic} failed"), Some(e.into())))?;
    ack.await.map_err(|e| {
        error(
            format!("publish to {topic} was not acknowledged by its stream"),
            Some(e.into()),
        )
    })?;
    Ok(())
}
