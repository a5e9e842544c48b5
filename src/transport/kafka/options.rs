//! [`KafkaOptions`]: where and how the Kafka transport connects, produces
//! and consumes, as plain data (read and checked on builds without the
//! `kafka` feature too).
//!
//! # Algorithm
//!
//! Serde reads every struct with `default` and `deny_unknown_fields`;
//! `validate` names the first bad field by its dotted path. The typed
//! fields cover the settings services tune most (the seeds' producer and
//! consumer settings); anything else librdkafka takes (`ssl.*`, `sasl.*`,
//! `socket.*`, …) goes in `properties`, passed through as it is. A
//! property that a typed field sets is refused, so that no setting has two
//! sources.
//!
//! # Invariants
//!
//! - `Debug` never prints a secret: a property whose name holds
//!   `password`, `secret` or `key` (as in `ssl.key.password`,
//!   `sasl.password`, `ssl.key.pem`) shows as `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::options::{duration, ConfigError, Fields};
use crate::{StreamStrategy, WireFormat};

/// The broker address a default [`KafkaOptions`] connects to.
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

/// How many replicas must have a record before the broker acknowledges it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KafkaAcks {
    /// Every in-sync replica (`acks=all`, the default; needed for
    /// idempotence).
    #[default]
    All,
    /// The partition leader only (`acks=1`).
    Leader,
}

/// How the producer compresses batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KafkaCompression {
    /// No compression (the default).
    #[default]
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

/// Where a new consumer group starts in a partition with no committed
/// offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KafkaOffsetReset {
    /// At the oldest record kept (the default: a new group handles what
    /// the topic holds).
    #[default]
    Earliest,
    /// At the next record produced.
    Latest,
}

/// Producer settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaProducerOptions {
    /// Default: `all`.
    pub acks: KafkaAcks,
    /// Idempotent producer (no duplicates from the producer's own
    /// retries). Default: on; needs `acks: all`.
    pub idempotence: bool,
    /// Default: `none`.
    pub compression: KafkaCompression,
    /// How long the producer waits to fill a batch (`linger.ms`). Default:
    /// 5 ms.
    #[serde(with = "duration")]
    pub linger: Duration,
    /// Largest batch in bytes (`batch.size`); `None`: librdkafka's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// How long a record may wait for its delivery report before it fails
    /// (`message.timeout.ms`). Default: 30 s.
    #[serde(with = "duration")]
    pub message_timeout: Duration,
}

impl Default for KafkaProducerOptions {
    fn default() -> Self {
        Self {
            acks: KafkaAcks::All,
            idempotence: true,
            compression: KafkaCompression::None,
            linger: Duration::from_millis(5),
            batch_size: None,
            message_timeout: Duration::from_secs(30),
        }
    }
}

/// Consumer settings (the group comes from each subscription's options).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaConsumerOptions {
    /// Where a group with no committed offset starts. Default: `earliest`.
    pub auto_offset_reset: KafkaOffsetReset,
    /// How long the group coordinator waits for a heartbeat before it
    /// drops the member (`session.timeout.ms`). Default: 45 s.
    #[serde(with = "duration")]
    pub session_timeout: Duration,
    /// Default: 3 s.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Longest pause between two polls before the member leaves the group
    /// (`max.poll.interval.ms`). The consumer keeps polling while its
    /// lanes are full (it pauses the partitions instead), so a slow
    /// handler does not trip it. Default: 5 min.
    #[serde(with = "duration")]
    pub max_poll_interval: Duration,
    /// How often finished offsets are committed. Default: 1 s.
    #[serde(with = "duration")]
    pub commit_interval: Duration,
}

impl Default for KafkaConsumerOptions {
    fn default() -> Self {
        Self {
            auto_offset_reset: KafkaOffsetReset::Earliest,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            commit_interval: Duration::from_secs(1),
        }
    }
}

/// How the Kafka transport connects, produces and consumes.
///
/// # Examples
///
/// ```
/// use lanebus::KafkaOptions;
///
/// let opts = KafkaOptions::default()
///     .brokers(["10.0.0.1:9092", "10.0.0.2:9092"])
///     .property("security.protocol", "sasl_ssl")
///     .property("sasl.password", "s3cret");
/// assert!(opts.validate("kafka").is_ok());
/// assert!(!format!("{opts:?}").contains("s3cret"));
///
/// let twice = KafkaOptions::default().property("acks", "1");
/// assert_eq!(twice.validate("kafka").unwrap_err().field(), Some("kafka.properties.acks"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KafkaOptions {
    /// Bootstrap brokers, `host:port`. Default: `["127.0.0.1:9092"]`.
    pub brokers: Vec<String>,
    /// The client ID the broker logs. Default: `lanebus`.
    pub client_id: String,
    /// Producer settings.
    pub producer: KafkaProducerOptions,
    /// Consumer settings.
    pub consumer: KafkaConsumerOptions,
    /// What the bus does with a configured topic before first using it
    /// (as for JetStream streams). Default: `create_or_update`.
    pub topic_strategy: StreamStrategy,
    /// How envelopes are written: `binary` (default) or `json` (the Go
    /// system's form and its `X-*` headers). Inbound, the form is detected.
    pub wire_format: WireFormat,
    /// How long an admin request (topic calls, metadata) may take.
    /// Default: 10 s.
    #[serde(with = "duration")]
    pub api_timeout: Duration,
    /// Any other librdkafka property, passed through (`ssl.ca.location`,
    /// `sasl.mechanisms`, …).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        Self {
            brokers: vec![DEFAULT_KAFKA_BROKERS.to_owned()],
            client_id: "lanebus".to_owned(),
            producer: KafkaProducerOptions::default(),
            consumer: KafkaConsumerOptions::default(),
            topic_strategy: StreamStrategy::CreateOrUpdate,
            wire_format: WireFormat::Binary,
            api_timeout: Duration::from_secs(10),
            properties: BTreeMap::new(),
        }
    }
}

/// The librdkafka properties the typed fields set.
pub(crate) const TYPED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "client.id",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "compression.type",
    "compression.codec",
    "linger.ms",
    "queue.buffering.max.ms",
    "batch.size",
    "message.timeout.ms",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

impl KafkaOptions {
    /// Connects to these brokers (replacing the list).
    pub fn brokers<I, S>(mut self, brokers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.brokers = brokers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the client ID.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// Sets the producer settings.
    pub fn producer(mut self, producer: KafkaProducerOptions) -> Self {
        self.producer = producer;
        self
    }

    /// Sets the consumer settings.
    pub fn consumer(mut self, consumer: KafkaConsumerOptions) -> Self {
        self.consumer = consumer;
        self
    }

    /// Sets the envelope wire form.
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.wire_format = format;
        self
    }

    /// Adds a librdkafka property, passed through.
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.ensure(
            "brokers",
            !self.brokers.is_empty(),
            "needs at least one broker",
        )?;
        for (i, broker) in self.brokers.iter().enumerate() {
            let ok = broker.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !ok {
                return Err(ConfigError::invalid(
                    fields.path(&format!("brokers[{i}]")),
                    format!("{broker:?} is not host:port (for example 127.0.0.1:9092)"),
                ));
            }
        }
        fields.ensure(
            "client_id",
            !self.client_id.trim().is_empty(),
            "must not be empty",
        )?;
        fields.ensure(
            "producer.idempotence",
            !self.producer.idempotence || self.producer.acks == KafkaAcks::All,
            "an idempotent producer needs `acks: all`",
        )?;
        for (field, d) in [
            ("producer.message_timeout", self.producer.message_timeout),
            ("consumer.session_timeout", self.consumer.session_timeout),
            (
                "consumer.heartbeat_interval",
                self.consumer.heartbeat_interval,
            ),
            (
                "consumer.max_poll_interval",
                self.consumer.max_poll_interval,
            ),
            ("consumer.commit_interval", self.consumer.commit_interval),
            ("api_timeout", self.api_timeout),
        ] {
            fields.ensure(field, !d.is_zero(), "must be positive")?;
        }
        fields.ensure(
            "consumer.heartbeat_interval",
            self.consumer.heartbeat_interval < self.consumer.session_timeout,
            "must be shorter than consumer.session_timeout",
        )?;
        for name in self.properties.keys() {
            if name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    fields.path("properties"),
                    "a property name is empty",
                ));
            }
            if TYPED_PROPERTIES.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    fields.path(&format!("properties.{name}")),
                    "set by a typed field (brokers, client_id, producer.*, consumer.*) or by the bus itself; set it there",
                ));
            }
        }
        Ok(())
    }
}

/// True for a property name that may hold a secret.
fn is_secret(name: &str) -> bool {
    ["password", "secret", "key"]
        .iter()
        .any(|s| name.contains(s))
}

impl fmt::Debug for KafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaOptions")
            .field("brokers", &self.brokers)
            .field("client_id", &self.client_id)
            .field("producer", &self.producer)
            .field("consumer", &self.consumer)
            .field("topic_strategy", &self.topic_strategy)
            .field("wire_format", &self.wire_format)
            .field("api_timeout", &self.api_timeout)
            .field("properties", &properties)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_from_yaml_and_names_bad_fields() {
        let opts: KafkaOptions = serde_yaml_ng::from_str(
            "brokers: [\"a:9092\"]\nproducer: { compression: lz4, linger: 10ms }\nconsumer: { auto_offset_reset: latest }\nproperties: { security.protocol: ssl }\n",
        )
        .unwrap();
        assert_eq!(opts.producer.compression, KafkaCompression::Lz4);
        assert_eq!(opts.consumer.auto_offset_reset, KafkaOffsetReset::Latest);
        assert!(opts.validate("kafka").is_ok());
        let text = serde_yaml_ng::to_string(&opts).unwrap();
        assert_eq!(
            serde_yaml_ng::from_str::<KafkaOptions>(&text).unwrap(),
            opts
        );

        let cases = [
            (
                KafkaOptions::default().brokers(["nohost"]),
                "kafka.brokers[0]",
            ),
            (
                KafkaOptions::default().brokers(Vec::<String>::new()),
                "kafka.brokers",
            ),
            (KafkaOptions::default().client_id(" "), "kafka.client_id"),
            (
                KafkaOptions::default().property("group.id", "x"),
                "kafka.properties.group.id",
            ),
            (
                KafkaOptions::default().producer(KafkaProducerOptions {
                    acks: KafkaAcks::Leader,
                    ..KafkaProducerOptions::default()
                }),
                "kafka.producer.idempotence",
            ),
        ];
        for (opts, field) in cases {
            assert_eq!(opts.validate("kafka").unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let opts = KafkaOptions::default()
            .property("sasl.password", "p4ss")
            .property("ssl.key.pem", "-----BEGIN")
            .property("sasl.username", "svc");
        let shown = format!("{opts:?}");
        assert!(
            !shown.contains("p4ss") && !shown.contains("BEGIN"),
            "{shown}"
        );
        assert!(shown.contains("svc"));
    }
}
