//! Kafka topics from [`TopicOptions`], through the admin API, per the
//! bus's topic strategy.
//!
//! # Algorithm
//!
//! - **Mapping**: `partitions` and `replicas` are the topic's; the
//!   retention limits are the topic configs `retention.ms` and
//!   `retention.bytes` (`-1`: unlimited; Kafka counts bytes per
//!   partition); `cleanup.policy` is `delete`.
//! - **Ensure** (at connect for configured topics, and at
//!   `configure_topic`), serialised per topic so that concurrent callers
//!   make one create call: read the topic (metadata for partitions and
//!   replicas, configs for retention); missing → create
//!   (`create_or_update`, `create_only`), then wait until the metadata
//!   shows it (a broker's metadata lags its controller a moment), or fail
//!   (`validate_only`); present
//!   and different → alter the configs and add partitions
//!   (`create_or_update`; Kafka cannot remove partitions or change the
//!   replica count here, which is an error naming both values), keep
//!   (`create_only`, with a warning), or fail (`validate_only`, naming the
//!   first difference); `skip` makes no call.
//! - **List**: the configured topics that exist on the brokers (Kafka
//!   keeps no mark of who made a topic). **Remove** deletes the topic and
//!   its records, and returns once the metadata no longer shows it.
//!
//! # Invariants
//!
//! - Every admin call is bounded by `api_timeout` and its error names the
//!   topic.
//! - A topic `ensure` made is readable when it returns; a topic `remove`
//!   deleted reads as missing when it returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer as _};
use rdkafka::ClientConfig;

use crate::options::duration::format as show;
use crate::{Persistence, StreamStrategy, TopicOptions, TransportError};

fn error(message: impl Into<String>) -> TransportError {
    TransportError::new("kafka", message, None)
}

/// A topic as the brokers have it, in the fields lanebus manages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Actual {
    partitions: u32,
    replicas: u32,
    retention_ms: i64,
    retention_bytes: i64,
}

impl Actual {
    fn wanted(options: &TopicOptions) -> Self {
        Self {
            partitions: options.partitions,
            replicas: options.replicas,
            retention_ms: options
                .retention
                .max_age
                .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            retention_bytes: options
                .retention
                .max_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
        }
    }

    /// The first field that differs, with both values.
    fn difference(&self, wanted: &Actual) -> Option<String> {
        let fields = [
            (
                "partitions",
                i64::from(self.partitions),
                i64::from(wanted.partitions),
            ),
            (
                "replicas",
                i64::from(self.replicas),
                i64::from(wanted.replicas),
            ),
            (
                "retention.max_age (retention.ms)",
                self.retention_ms,
                wanted.retention_ms,
            ),
            (
                "retention.max_bytes (retention.bytes)",
                self.retention_bytes,
                wanted.retention_bytes,
            ),
        ];
        fields
            .into_iter()
            .find(|(_, have, want)| have != want)
            .map(|(name, have, want)| {
                format!("{name} is {have} on the brokers, {want} in the options")
            })
    }

    fn into_options(self) -> TopicOptions {
        let mut o = TopicOptions {
            persistence: Persistence::Persistent,
            partitions: self.partitions,
            replicas: self.replicas,
            ..TopicOptions::default()
        };
        o.retention.max_age = u64::try_from(self.retention_ms)
            .ok()
            .map(Duration::from_millis);
        o.retention.max_bytes = u64::try_from(self.retention_bytes).ok();
        o
    }
}

/// The topic manager of a Kafka bus.
pub(crate) struct Topics {
    admin: AdminClient<DefaultClientContext>,
    /// For metadata requests (a cheap, sendable handle on a client).
    metadata: FutureProducer,
    strategy: StreamStrategy,
    timeout: Duration,
    creates: AtomicU64,
    /// One lock per topic: concurrent `ensure` calls for a topic queue
    /// behind the first, and find the topic made.
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Topics {
    /// A manager on the brokers of `config`.
    pub(crate) fn new(
        config: &ClientConfig,
        metadata: FutureProducer,
        strategy: StreamStrategy,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let admin = config
            .create()
            .map_err(|e| super::error("cannot create the admin client", e))?;
        Ok(Self {
            admin,
            metadata,
            strategy,
            timeout,
            creates: AtomicU64::new(0),
            locks: parking_lot::Mutex::default(),
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Create and alter calls made so far.
    #[cfg(test)]
    pub(crate) fn create_calls(&self) -> u64 {
        self.creates.load(Ordering::Relaxed)
    }

    /// A metadata request (for `topic`, else for every topic), off the
    /// runtime's threads: librdkafka's call blocks. The client asking never
    /// makes the broker auto-create a topic.
    pub(crate) async fn metadata(
        &self,
        topic: Option<&str>,
    ) -> Result<rdkafka::metadata::Metadata, rdkafka::error::KafkaError> {
        let client = self.metadata.clone();
        let (name, timeout) = (topic.map(str::to_owned), self.timeout);
        tokio::task::spawn_blocking(move || {
            client.client().fetch_metadata(name.as_deref(), timeout)
        })
        .await
        .unwrap_or(Err(rdkafka::error::KafkaError::Canceled))
    }

    /// The topic as the brokers have it; `None` when it does not exist.
    async fn actual(&self, topic: &str) -> Result<Option<Actual>, TransportError> {
        let metadata = self
            .metadata(Some(topic))
            .await
            .map_err(|e| super::error(format!("metadata request for topic {topic} failed"), e))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        if t.error().is_some() || t.partitions().is_empty() {
            return Ok(None); // unknown topic (or being deleted)
        }
        let partitions = t.partitions().len() as u32;
        let replicas = t.partitions()[0].replicas().len() as u32;
        let configs = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &self.options())
            .await
            .map_err(|e| super::error(format!("cannot read the configs of topic {topic}"), e))?;
        let resource = configs
            .into_iter()
            .next()
            .ok_or_else(|| error(format!("no configs came back for topic {topic}")))?;
        let resource = match resource {
            Ok(resource) => resource,
            // Deleted between the two requests.
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
            Err(code) => {
                return Err(error(format!(
                    "cannot read the configs of topic {topic}: {code}"
                )))
            }
        };
        let number = |name: &str| {
            resource
                .get(name)
                .and_then(|e| e.value.as_deref())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        };
        Ok(Some(Actual {
            partitions,
            replicas,
            retention_ms: number("retention.ms"),
            retention_bytes: number("retention.bytes"),
        }))
    }

    /// Waits until the metadata shows `topic` present (or gone), which a
    /// broker may not for a moment after the controller made (or deleted)
    /// it; bounded by `api_timeout`. Returns the topic when present.
    async fn settled(&self, topic: &str, present: bool) -> Result<Option<Actual>, TransportError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            let actual = self.actual(topic).await?;
            if actual.is_some() == present {
                return Ok(actual);
            }
            if tokio::time::Instant::now() + pause > deadline {
                let what = if present { "created" } else { "deleted" };
                return Err(error(format!(
                    "topic {topic} was {what} but the brokers' metadata did not show it within {}",
                    show(self.timeout)
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Makes `topic` ready per the strategy (see the module docs).
    pub(crate) async fn ensure(
        &self,
        topic: &str,
        options: &TopicOptions,
    ) -> Result<(), TransportError> {
        if self.strategy == StreamStrategy::Skip {
            return Ok(());
        }
        let lock = self
            .locks
            .lock()
            .entry(topic.to_owned())
            .or_default()
            .clone();
        let _serial = lock.lock().await;
        let wanted = Actual::wanted(options);
        let strategy = self.strategy.as_str();
        let actual = match self.actual(topic).await? {
            Some(actual) => actual,
            None if self.strategy == StreamStrategy::ValidateOnly => {
                return Err(error(format!(
                    "topic {topic} does not exist (topic_strategy: {strategy})"
                )))
            }
            None => {
                let made = self.create(topic, &wanted).await?;
                let seen = self.settled(topic, true).await?;
                match seen {
                    // Another client made it since the read: compare as usual.
                    Some(seen) if !made => seen,
                    _ => return Ok(()),
                }
            }
        };
        match self.strategy {
            _ if actual == wanted => Ok(()),
            StreamStrategy::ValidateOnly => Err(error(format!(
                "topic {topic} differs: {} (topic_strategy: {strategy})",
                actual.difference(&wanted).unwrap_or_default()
            ))),
            StreamStrategy::CreateOnly => {
                tracing::warn!(topic, difference = %actual.difference(&wanted).unwrap_or_default(), "topic kept as it is (topic_strategy: create_only)");
                Ok(())
            }
            _ => self.update(topic, &actual, &wanted).await,
        }
    }

    fn configs(wanted: &Actual) -> [(&'static str, String); 3] {
        [
            ("retention.ms", wanted.retention_ms.to_string()),
            ("retention.bytes", wanted.retention_bytes.to_string()),
            ("cleanup.policy", "delete".to_owned()),
        ]
    }

    /// Creates `topic`: true when this call made it, false when it was
    /// there already.
    async fn create(&self, topic: &str, wanted: &Actual) -> Result<bool, TransportError> {
        self.creates.fetch_add(1, Ordering::Relaxed);
        let configs = Self::configs(wanted);
        let mut new = NewTopic::new(
            topic,
            wanted.partitions as i32,
            TopicReplication::Fixed(wanted.replicas as i32),
        );
        for (name, value) in &configs {
            new = new.set(name, value);
        }
        let results = self
            .admin
            .create_topics(&[new], &self.options())
            .await
            .map_err(|e| super::error(format!("cannot create topic {topic}"), e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
            Some(Err((_, code))) => Err(error(format!("cannot create topic {topic}: {code}"))),
            None => Err(error(format!("no answer to creating topic {topic}"))),
        }
    }

    async fn update(
        &self,
        topic: &str,
        actual: &Actual,
        wanted: &Actual,
    ) -> Result<(), TransportError> {
        if wanted.partitions < actual.partitions || wanted.replicas != actual.replicas {
            return Err(error(format!(
                "topic {topic} cannot be updated: {} (Kafka cannot remove partitions, and replicas are changed by reassignment)",
                actual.difference(wanted).unwrap_or_default()
            )));
        }
        self.creates.fetch_add(1, Ordering::Relaxed);
        if wanted.partitions > actual.partitions {
            let more = NewPartitions::new(topic, wanted.partitions as usize);
            let results = self
                .admin
                .create_partitions(&[more], &self.options())
                .await
                .map_err(|e| super::error(format!("cannot add partitions to topic {topic}"), e))?;
            if let Some(Err((_, code))) = results.into_iter().next() {
                return Err(error(format!(
                    "cannot add partitions to topic {topic}: {code}"
                )));
            }
        }
        let configs = Self::configs(wanted);
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(topic));
        for (name, value) in &configs {
            alter = alter.set(name, value);
        }
        let results = self
            .admin
            .alter_configs(&[alter], &self.options())
            .await
            .map_err(|e| super::error(format!("cannot alter topic {topic}"), e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(()),
            Some(Err((_, code))) => Err(error(format!("cannot alter topic {topic}: {code}"))),
            None => Err(error(format!(
                "no answer to altering topic {topic} within {}",
                show(self.timeout)
            ))),
        }
    }

    /// The topic as the brokers have it, as options; `None` when missing.
    pub(crate) async fn read(&self, topic: &str) -> Result<Option<TopicOptions>, TransportError> {
        Ok(self.actual(topic).await?.map(Actual::into_options))
    }

    /// Deletes `topic` and its records; false when it did not exist.
    pub(crate) async fn remove(&self, topic: &str) -> Result<bool, TransportError> {
        let results = self
            .admin
            .delete_topics(&[topic], &self.options())
            .await
            .map_err(|e| super::error(format!("cannot delete topic {topic}"), e))?;
        match results.into_iter().next() {
            Some(Ok(_)) => self.settled(topic, false).await.map(|_| true),
            Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) => Ok(false),
            Some(Err((_, code))) => Err(error(format!("cannot delete topic {topic}: {code}"))),
            None => Err(error(format!("no answer to deleting topic {topic}"))),
        }
    }

    /// Which of `topics` exist on the brokers.
    pub(crate) async fn existing(&self, topics: &[String]) -> Result<Vec<String>, TransportError> {
        let metadata = self
            .metadata(None)
            .await
            .map_err(|e| super::error("metadata request failed", e))?;
        let present: std::collections::HashSet<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| t.name())
            .collect();
        Ok(topics
            .iter()
            .filter(|t| present.contains(t.as_str()))
            .cloned()
            .collect())
    }
}
