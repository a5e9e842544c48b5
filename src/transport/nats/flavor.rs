//! The `Transport::Nats` flavor: core NATS for ephemeral topics, JetStream
//! for persistent ones, on one connection.
//!
//! # Algorithm
//!
//! Each publish and subscribe looks up the topic's configuration (the
//! bus's registry holds it) and asks [`JetStreamOptions::is_persistent`]:
//! `persistence: persistent` is a stream, `ephemeral` is core NATS, and
//! `auto` (or no configuration) is the bus's `default_persistence`.
//! Wildcard subscriptions are core NATS subscriptions: the server's own
//! wildcards match every topic below the pattern, stream or not (a stream
//! stores, but the publish is a plain NATS message to its subject too), so
//! a wildcard subscription sees what is published while it is subscribed,
//! at most once; a durable subscription names an exact topic.
//!
//! # Invariants
//!
//! - One connection serves both halves, so `flush` and `close` cover all
//!   of a bus's traffic.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::jetstream::JetStream;
use super::{ConnectionEvent, NatsCore, NatsOptions};
use crate::engine::lanes::Body;
use crate::engine::SubscriptionCore;
use crate::transport::Feed;
use crate::{JetStreamOptions, SubscribeOptions, TopicOptions, TransportError};

/// The NATS transport of a bus.
pub(crate) struct Nats {
    core: NatsCore,
    js: JetStream,
    options: JetStreamOptions,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("core", &self.core)
            .field("jetstream", &self.options)
            .finish()
    }
}

impl Nats {
    /// Connects with `options` (see `connect`).
    pub(crate) async fn connect(options: &NatsOptions) -> Result<Self, TransportError> {
        let events = super::event_channel();
        let client = super::connect(options, events.clone()).await?;
        let js = JetStream::new(client.clone(), options.name.as_deref(), &options.jetstream);
        Ok(Self {
            core: NatsCore::new(
                client,
                events,
                options.connect_timeout,
                options.jetstream.wire_format,
            ),
            js,
            options: options.jetstream.clone(),
        })
    }

    /// A receiver of the connection's events from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.core.events()
    }

    /// True when `config` (none: an unconfigured topic) is a stream.
    #[inline]
    pub(crate) fn is_persistent(&self, config: Option<&TopicOptions>) -> bool {
        self.options
            .is_persistent(config.map_or(crate::Persistence::Auto, |c| c.persistence))
    }

    /// Publishes `body`: to the topic's stream, waiting for the server's
    /// ack, or on core NATS.
    pub(crate) async fn publish(
        &self,
        topic: &str,
        config: Option<&TopicOptions>,
        body: &Body,
    ) -> Result<(), TransportError> {
        if self.is_persistent(config) {
            let default = TopicOptions::default();
            self.js
                .publish(topic, config.unwrap_or(&default), body)
                .await
        } else {
            self.core.publish(topic, body).await
        }
    }

    /// The core NATS side (ephemeral topics).
    #[inline]
    pub(crate) fn core(&self) -> &NatsCore {
        &self.core
    }

    /// Publishes `body` without waiting: `Ok(None)` when it went,
    /// `Ok(Some(body))` when there is no room now.
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        config: Option<&TopicOptions>,
        body: Body,
    ) -> Result<Option<Body>, (Body, TransportError)> {
        if self.is_persistent(config) {
            let config = config.cloned().unwrap_or_default();
            self.js.try_publish(topic, config, body)
        } else {
            match self.core.try_publish(topic, &body) {
                Ok(true) => Ok(None),
                Ok(false) => Ok(Some(body)),
                Err(e) => Err((body, e)),
            }
        }
    }

    /// Subscribes `core`: a durable consumer on a persistent exact topic,
    /// a core subscription otherwise.
    pub(crate) async fn subscribe(
        &self,
        core: &Arc<SubscriptionCore>,
        options: &SubscribeOptions,
        config: Option<&TopicOptions>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Feed, TransportError> {
        if !core.wildcard && self.is_persistent(config) {
            let default = TopicOptions::default();
            self.js
                .subscribe(core, options, config.unwrap_or(&default), runtime)
                .await
        } else {
            self.core.subscribe(core, runtime).await
        }
    }

    /// The stream manager.
    pub(crate) fn streams(&self) -> &super::jetstream::streams::Streams {
        self.js.streams()
    }

    /// Flushes (a server round trip: every ack and publish sent before is
    /// at the server), then closes the connection.
    pub(crate) async fn close(&self) {
        if let Err(e) = self.core.flush().await {
            tracing::warn!(error = %e, "flush at close failed");
        }
        if let Err(e) = self.core.drain().await {
            tracing::debug!(error = %e, "closing the connection failed");
        }
    }

    /// The connection is up and the server answers; then the stream of
    /// each configured persistent topic exists.
    pub(crate) async fn health(
        &self,
        topics: &[(String, TopicOptions)],
    ) -> Result<(), TransportError> {
        self.core.health().await?;
        for (topic, config) in topics {
            if self.is_persistent(Some(config))
                && self.streams().read(topic, Some(config)).await?.is_none()
            {
                return Err(TransportError::new(
                    "nats",
                    format!(
                        "the stream {} of topic {topic} does not exist",
                        super::jetstream::streams::stream_name(topic, Some(config))
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }
}
