//! The `Transport::Kafka` flavor: the producer, the client configs, and
//! the subscriptions' consumers (see the parent module for the algorithm).
//!
//! # Invariants
//!
//! - `publish` returns `Ok` only after the record's delivery report.
//! - Every librdkafka property the bus sets comes from a typed option;
//!   pass-through properties can add to them, never override them
//!   (`KafkaOptions::validate` refuses the overlap).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::records::{self, Outbound};
use super::topics::Topics;
use super::{consumer, error, KafkaAcks, KafkaCompression, KafkaOffsetReset, KafkaOptions};
use crate::engine::lanes::Body;
use crate::engine::SubscriptionCore;
use crate::transport::names::Names;
use crate::transport::Feed;
use crate::{SubscribeOptions, TransportError};

/// The Kafka transport of a bus.
pub(crate) struct Kafka {
    options: KafkaOptions,
    producer: FutureProducer,
    topics: Topics,
    names: Names,
}

impl std::fmt::Debug for Kafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kafka")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// What every client of the bus shares: brokers, client ID, pass-through
/// properties.
fn base_config(o: &KafkaOptions) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", o.brokers.join(","));
    c.set("client.id", &o.client_id);
    for (name, value) in &o.properties {
        c.set(name, value);
    }
    c
}

fn producer_config(o: &KafkaOptions) -> ClientConfig {
    let p = &o.producer;
    let mut c = base_config(o);
    c.set(
        "acks",
        match p.acks {
            KafkaAcks::All => "all",
            _ => "1",
        },
    );
    c.set("enable.idempotence", p.idempotence.to_string());
    c.set(
        "compression.type",
        match p.compression {
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
            _ => "none",
        },
    );
    c.set("linger.ms", millis(p.linger));
    if let Some(bytes) = p.batch_size {
        c.set("batch.size", bytes.to_string());
    }
    c.set("message.timeout.ms", millis(p.message_timeout));
    c
}

fn consumer_config(o: &KafkaOptions, group: &str) -> ClientConfig {
    let k = &o.consumer;
    let mut c = base_config(o);
    c.set("group.id", group);
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("enable.partition.eof", "false");
    c.set(
        "auto.offset.reset",
        match k.auto_offset_reset {
            KafkaOffsetReset::Latest => "latest",
            _ => "earliest",
        },
    );
    c.set("session.timeout.ms", millis(k.session_timeout));
    c.set("heartbeat.interval.ms", millis(k.heartbeat_interval));
    c.set("max.poll.interval.ms", millis(k.max_poll_interval));
    // A paused partition is fetched again at once when resumed, and the
    // client's prefetch stays near what the lanes take.
    c.set("fetch.queue.backoff.ms", "1");
    c.set("queued.min.messages", consumer::PARK_LIMIT.to_string());
    // Incremental rebalances: a member joining or leaving moves only the
    // partitions that change owner (a pass-through property may choose
    // an eager strategy instead; the consumer handles both).
    if !o.properties.contains_key("partition.assignment.strategy") {
        c.set("partition.assignment.strategy", "cooperative-sticky");
    }
    // Lag per partition, and new topics matching a pattern.
    c.set("statistics.interval.ms", "1000");
    c.set("topic.metadata.refresh.interval.ms", "5000");
    c
}

/// The Kafka subscription of a topic or pattern: `orders.*` matches one
/// more segment, `orders.>` one or more (a regex, which librdkafka marks
/// with a leading `^`).
pub(crate) fn subscription_pattern(topic: &str) -> String {
    if !topic.split('.').any(|s| s == "*" || s == ">") {
        return topic.to_owned();
    }
    let segments: Vec<String> = topic
        .split('.')
        .map(|s| match s {
            "*" => "[^.]+".to_owned(),
            ">" => ".+".to_owned(),
            literal => literal.to_owned(),
        })
        .collect();
    format!("^{}$", segments.join("\\."))
}

impl Kafka {
    /// Builds the producer and checks that the brokers answer.
    pub(crate) async fn connect(options: &KafkaOptions) -> Result<Self, TransportError> {
        options.validate("kafka").map_err(|e| {
            TransportError::new("kafka", format!("invalid options: {e}"), Some(Box::new(e)))
        })?;
        let producer: FutureProducer = producer_config(options)
            .create()
            .map_err(|e| error("cannot create the producer", e))?;
        // The topic manager's clients never make a broker auto-create a
        // topic by asking about it (with its default settings).
        let mut admin = base_config(options);
        admin.set("allow.auto.create.topics", "false");
        let metadata: FutureProducer = admin
            .create()
            .map_err(|e| error("cannot create the admin client", e))?;
        let topics = Topics::new(
            &admin,
            metadata,
            options.topic_strategy,
            options.api_timeout,
        )?;
        let kafka = Self {
            options: options.clone(),
            producer,
            topics,
            names: Names::default(),
        };
        kafka.health().await?;
        Ok(kafka)
    }

    /// The topic manager.
    pub(crate) fn topics(&self) -> &Topics {
        &self.topics
    }

    /// A metadata round trip to the brokers.
    pub(crate) async fn health(&self) -> Result<(), TransportError> {
        self.topics.metadata(None).await.map(drop).map_err(|e| {
            error(
                format!(
                    "brokers {} did not answer a metadata request within {}",
                    self.options.brokers.join(", "),
                    crate::options::duration::format(self.options.api_timeout)
                ),
                e,
            )
        })
    }

    fn record<'a>(topic: &'a str, out: &'a Outbound) -> FutureRecord<'a, [u8], [u8]> {
        let mut record = FutureRecord::to(topic).payload(&out.payload[..]);
        if let Some(key) = &out.key {
            record = record.key(key.as_bytes());
        }
        if let Some(headers) = &out.headers {
            record = record.headers(headers.clone());
        }
        record
    }

    /// Records in the producer's queue or awaiting the brokers' ack
    /// (`try_publish`es included): the publisher-side backlog.
    pub(crate) fn in_flight(&self) -> u64 {
        self.producer.in_flight_count().max(0) as u64
    }

    /// Produces `body` to `topic` and waits for its delivery report.
    pub(crate) async fn publish(&self, topic: &str, body: &Body) -> Result<(), TransportError> {
        let out = records::outbound(body, self.options.wire_format)?;
        self.producer
            .send(Self::record(topic, &out), Timeout::Never)
            .await
            .map(drop)
            .map_err(|(e, _)| error(format!("publish to {topic} failed"), e))
    }

    /// Enqueues `body` when the producer's queue has room (`Ok(None)`;
    /// the report is awaited in the background), `Ok(Some(body))` when
    /// it has none, `Err` when the record cannot be produced at all.
    pub(crate) fn try_publish(
        &self,
        topic: &str,
        body: Body,
    ) -> Result<Option<Body>, (Body, TransportError)> {
        let out = match records::outbound(&body, self.options.wire_format) {
            Ok(out) => out,
            Err(e) => return Err((body, e)),
        };
        match self.producer.send_result(Self::record(topic, &out)) {
            Ok(report) => {
                let topic = topic.to_owned();
                tokio::spawn(async move {
                    match report.await {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => {
                            tracing::error!(topic, error = %e, "try_publish failed after it returned; the record was not stored")
                        }
                        Err(_) => {
                            tracing::error!(
                                topic,
                                "try_publish lost its delivery report (the producer closed)"
                            )
                        }
                    }
                });
                Ok(None)
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => Ok(Some(body)),
            Err((e, _)) => Err((body, error(format!("publish to {topic} failed"), e))),
        }
    }

    /// Starts the consumer group member of `core`.
    pub(crate) fn subscribe(
        &self,
        core: &Arc<SubscriptionCore>,
        options: &SubscribeOptions,
        drain_limit: Duration,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Feed, TransportError> {
        let shared = options.group.clone().or_else(|| options.consumer.clone());
        let base = format!("{}-{}", self.options.client_id, core.topic);
        let (group, lease) = self.names.pick(shared, base);
        let config = consumer_config(&self.options, &group);
        let pattern = subscription_pattern(&core.topic);
        // A revocation waits at most half the session timeout for the
        // lanes, so the member answers the coordinator in time.
        let revoke_wait = (self.options.consumer.session_timeout / 2).min(Duration::from_secs(10));
        let opened = consumer::open(&config, core, &pattern, &group, revoke_wait)?;
        Ok(consumer::spawn(
            opened,
            self.options.consumer.commit_interval,
            drain_limit,
            lease,
            runtime,
        ))
    }

    /// Flushes the producer: every queued record gets its report.
    pub(crate) async fn close(&self) {
        let producer = self.producer.clone();
        let timeout = self.options.producer.message_timeout;
        let flushed = tokio::task::spawn_blocking(move || producer.flush(timeout)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "producer flush at close failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subscription_pattern;

    #[test]
    fn wildcards_become_anchored_patterns() {
        assert_eq!(subscription_pattern("orders.created"), "orders.created");
        assert_eq!(subscription_pattern("orders.*"), "^orders\\.[^.]+$");
        assert_eq!(subscription_pattern("orders.>"), "^orders\\..+$");
        assert_eq!(subscription_pattern("a.*.c"), "^a\\.[^.]+\\.c$");
    }
}
