//! Topic configuration on a bus: configure, read back, list, remove.
//!
//! # Algorithm
//!
//! The bus's registry records every configured topic's options, on every
//! transport. On NATS a persistent topic is also a JetStream stream:
//! `configure_topic` makes the stream ready per the bus's stream strategy
//! before it records the options, `topic_config` reads the server's stream
//! back, `list_topics` adds the streams lanebus manages, and
//! `remove_topic` deletes the stream with its messages. On Kafka every
//! topic is a Kafka topic, made ready through the admin API; `list_topics`
//! gives the configured topics that exist, and `remove_topic` deletes the
//! topic with its records.
//!
//! # Invariants
//!
//! - A topic whose stream could not be made ready keeps its earlier
//!   options: the registry never records what the server refused.

use crate::engine::pattern::validate_publish_name;
#[cfg(any(feature = "nats", feature = "kafka"))]
use crate::transport::Transport;
use crate::{Bus, TopicConfigError, TopicOptions};

impl Bus {
    /// Creates or replaces a topic's configuration.
    ///
    /// On NATS, a persistent topic's stream is created, updated or checked
    /// now, per `nats.jetstream.stream_strategy`.
    ///
    /// # Errors
    ///
    /// [`TopicConfigError::InvalidTopic`] or
    /// [`InvalidOptions`](TopicConfigError::InvalidOptions) for bad input,
    /// [`Transport`](TopicConfigError::Transport) when the server refused
    /// the stream (or, with `validate_only`, it is missing or differs).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), lanebus::TopicConfigError> {
    /// use std::time::Duration;
    /// use lanebus::{Bus, TopicOptions};
    ///
    /// let bus = Bus::memory();
    /// let options = TopicOptions::persistent().max_age(Duration::from_secs(3600));
    /// bus.configure_topic("orders.events", options.clone()).await?;
    /// assert_eq!(bus.topic_config("orders.events").await?, Some(options));
    /// assert_eq!(bus.list_topics().await?, ["orders.events"]);
    /// assert!(bus.remove_topic("orders.events").await?);
    /// # Ok(()) }
    /// ```
    pub async fn configure_topic(
        &self,
        topic: &str,
        options: TopicOptions,
    ) -> Result<(), TopicConfigError> {
        if self.is_closed() {
            return Err(TopicConfigError::Closed);
        }
        validate_publish_name(topic)?;
        options.validate("options")?;
        crate::topic::warn_unhonoured(topic, &options, &self.inner.config);
        #[cfg(feature = "nats")]
        if let Transport::Nats(n) = &self.inner.transport {
            if n.is_persistent(Some(&options)) {
                n.streams().forget(topic);
                n.streams()
                    .ensure(topic, &options)
                    .await
                    .map_err(TopicConfigError::Transport)?;
            }
        }
        #[cfg(feature = "kafka")]
        if let Transport::Kafka(k) = &self.inner.transport {
            k.topics()
                .ensure(topic, &options)
                .await
                .map_err(TopicConfigError::Transport)?;
        }
        self.inner.set_topic_config(topic, Some(options));
        Ok(())
    }

    /// A topic's configuration: on NATS, a persistent topic's stream as the
    /// server has it (`None` when there is no stream); elsewhere, the
    /// options it was configured with (`None` when it was not).
    ///
    /// # Errors
    ///
    /// [`TopicConfigError::Transport`] when the server cannot be asked.
    pub async fn topic_config(
        &self,
        topic: &str,
    ) -> Result<Option<TopicOptions>, TopicConfigError> {
        let configured = self.inner.topic_options(topic);
        #[cfg(feature = "nats")]
        if let Transport::Nats(n) = &self.inner.transport {
            if n.is_persistent(configured.as_deref()) {
                return n
                    .streams()
                    .read(topic, configured.as_deref())
                    .await
                    .map(|o| with_local(o, configured.as_deref()))
                    .map_err(TopicConfigError::Transport);
            }
        }
        #[cfg(feature = "kafka")]
        if let Transport::Kafka(k) = &self.inner.transport {
            return k
                .topics()
                .read(topic)
                .await
                .map(|o| with_local(o, configured.as_deref()))
                .map_err(TopicConfigError::Transport);
        }
        Ok(configured.as_deref().cloned())
    }

    /// The topics configured on this bus and, on NATS, the topics of the
    /// streams lanebus manages on the server; sorted, without duplicates.
    ///
    /// # Errors
    ///
    /// [`TopicConfigError::Transport`] when the server cannot be asked.
    pub async fn list_topics(&self) -> Result<Vec<String>, TopicConfigError> {
        let configured = self.inner.configured_topics();
        #[allow(unused_mut)]
        let mut topics: Vec<String> = configured.iter().map(|(t, _)| t.clone()).collect();
        #[cfg(feature = "nats")]
        if let Transport::Nats(n) = &self.inner.transport {
            let managed = n
                .streams()
                .list(&configured)
                .await
                .map_err(TopicConfigError::Transport)?;
            topics.extend(managed);
            topics.sort();
            topics.dedup();
        }
        #[cfg(feature = "kafka")]
        if let Transport::Kafka(k) = &self.inner.transport {
            // Kafka keeps no mark of who made a topic: the configured ones
            // that exist.
            topics = k
                .topics()
                .existing(&topics)
                .await
                .map_err(TopicConfigError::Transport)?;
        }
        Ok(topics)
    }

    /// Removes a topic's configuration and, on NATS, its stream **with all
    /// its messages**. Returns whether there was either. Live subscriptions
    /// on the topic are not stopped (on NATS, their consumers go with the
    /// stream).
    ///
    /// # Errors
    ///
    /// [`TopicConfigError::Transport`] when the server refused the delete.
    pub async fn remove_topic(&self, topic: &str) -> Result<bool, TopicConfigError> {
        #[allow(unused_mut)]
        let mut removed = false;
        #[cfg(feature = "nats")]
        if let Transport::Nats(n) = &self.inner.transport {
            let configured = self.inner.topic_options(topic);
            if n.is_persistent(configured.as_deref()) {
                removed = n
                    .streams()
                    .remove(topic, configured.as_deref())
                    .await
                    .map_err(TopicConfigError::Transport)?;
            }
        }
        #[cfg(feature = "kafka")]
        if let Transport::Kafka(k) = &self.inner.transport {
            removed = k
                .topics()
                .remove(topic)
                .await
                .map_err(TopicConfigError::Transport)?;
        }
        Ok(self.inner.set_topic_config(topic, None) || removed)
    }
}

/// A broker's topic options with the options only this bus keeps (the
/// publish rate limit) copied from its configuration.
#[cfg(any(feature = "nats", feature = "kafka"))]
fn with_local(
    read: Option<TopicOptions>,
    configured: Option<&TopicOptions>,
) -> Option<TopicOptions> {
    read.map(|mut o| {
        o.publish_rate_limit = configured.and_then(|c| c.publish_rate_limit.clone());
        o
    })
}
