//! The Kafka test harness against a real Apache Kafka broker, with raw
//! rdkafka (no lanebus code): the broker the harness starts takes admin,
//! idempotent produce, consumer-group and commit requests, and keeps every
//! acknowledged record across a `SIGKILL` and a restart on the same port
//! and storage. Needs the broker's jars (`scripts/kafka.sh fetch`).
//!
//! Timeouts here are hang guards only; nothing asserts on speed.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::kafka::KafkaBroker;
use futures_util::future::join_all;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset};
use tokio::task::block_in_place;

/// A hang guard for one request or one received record.
const GUARD: Duration = Duration::from_secs(60);

/// The partitions of every topic the tests create.
const PARTITIONS: i32 = 8;

/// A topic or group name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("create an admin client")
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(GUARD))
}

/// Creates `topic` with [`PARTITIONS`] partitions and one replica.
async fn create_topic(bootstrap: &str, topic: &str) {
    let results = admin(bootstrap)
        .create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &admin_options(),
        )
        .await
        .expect("create_topics request");
    assert_eq!(results, vec![Ok(topic.to_owned())]);
}

/// An idempotent producer that waits for every in-sync replica, and retries
/// (for up to two minutes) across a broker that is down.
fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("create a producer")
}

/// A consumer in `group` that commits only when told and starts at the
/// earliest offset when the group has none.
fn consumer(bootstrap: &str, group: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("create a consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

fn key_of(i: u64) -> String {
    format!("key-{}", i % 64)
}

/// One acknowledged or consumed record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Record {
    partition: i32,
    offset: i64,
    key: String,
    value: u64,
}

/// Produces `values` with their keys, all in flight at once, and returns
/// the delivery reports (each must be `Ok`).
async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    values: std::ops::Range<u64>,
) -> Vec<Record> {
    let sends = values.map(|i| async move {
        let key = key_of(i);
        let payload = i.to_string();
        let report = tokio::time::timeout(
            GUARD,
            producer.send(
                FutureRecord::to(topic).key(&key).payload(&payload),
                Duration::from_secs(0),
            ),
        )
        .await
        .expect("delivery report did not arrive");
        let delivery = report.unwrap_or_else(|(e, _)| panic!("record {i} was not delivered: {e}"));
        Record {
            partition: delivery.partition,
            offset: delivery.offset,
            key,
            value: i,
        }
    });
    join_all(sends).await
}

/// Receives one record or fails the test after [`GUARD`].
async fn next_record(consumer: &StreamConsumer) -> Record {
    let message = tokio::time::timeout(GUARD, consumer.recv())
        .await
        .expect("no record arrived")
        .expect("consumer error");
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: String::from_utf8(message.key().expect("a key").to_vec()).expect("UTF-8 key"),
        value: std::str::from_utf8(message.payload().expect("a payload"))
            .expect("UTF-8 payload")
            .parse()
            .expect("a number"),
    }
}

/// Closes a consumer (leaves its group) off the runtime's threads, with a
/// hang guard: rdkafka's drop blocks until librdkafka has shut down.
async fn close(consumer: StreamConsumer) {
    tokio::time::timeout(GUARD, tokio::task::spawn_blocking(move || drop(consumer)))
        .await
        .expect("the consumer did not close")
        .expect("the closing task");
}

/// Every key's records sit in one partition, in the order of their values.
fn assert_keys_keep_partition_and_order(records: &[Record]) {
    let mut by_key: HashMap<&str, Vec<&Record>> = HashMap::new();
    for r in records {
        by_key.entry(&r.key).or_default().push(r);
    }
    for (key, mut rs) in by_key {
        rs.sort_by_key(|r| r.offset);
        let partitions: HashSet<i32> = rs.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "{key} spread over partitions {partitions:?}"
        );
        assert!(
            rs.windows(2).all(|w| w[0].value < w[1].value),
            "{key}'s records are out of order in partition {partitions:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_a_topic_with_8_partitions_and_reads_it_back() {
    let broker = block_in_place(KafkaBroker::shared);
    let admin = admin(&broker.bootstrap());
    let topic = unique("admin");
    let created = admin
        .create_topics(
            &[
                NewTopic::new(&topic, PARTITIONS, TopicReplication::Fixed(1))
                    .set("retention.ms", "3600000")
                    .set("cleanup.policy", "delete"),
            ],
            &admin_options(),
        )
        .await
        .expect("create_topics request");
    assert_eq!(created, vec![Ok(topic.clone())]);

    let metadata = block_in_place(|| admin.inner().fetch_metadata(Some(&topic), GUARD))
        .expect("fetch metadata");
    let [described] = metadata.topics() else {
        panic!("asked for one topic, got {}", metadata.topics().len());
    };
    assert_eq!(described.name(), topic);
    assert!(described.error().is_none(), "{:?}", described.error());
    let mut ids: Vec<i32> = described.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..PARTITIONS).collect::<Vec<_>>());
    for partition in described.partitions() {
        assert_eq!(partition.leader(), 1, "partition {}", partition.id());
        assert_eq!(partition.replicas(), &[1], "partition {}", partition.id());
    }

    let configs = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &admin_options())
        .await
        .expect("describe_configs request");
    let [Ok(config)] = configs.as_slice() else {
        panic!("describe_configs: {configs:?}");
    };
    let value = |name: &str| config.get(name).and_then(|e| e.value.clone());
    assert_eq!(value("retention.ms").as_deref(), Some("3600000"));
    assert_eq!(value("cleanup.policy").as_deref(), Some("delete"));

    let again = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &admin_options(),
        )
        .await
        .expect("create_topics request");
    assert_eq!(
        again,
        vec![Err((topic.clone(), RDKafkaErrorCode::TopicAlreadyExists))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumes_keyed_records_commits_and_resumes_after_a_broker_restart() {
    const FIRST: u64 = 1_000;
    const SECOND: u64 = 200;
    let mut broker = block_in_place(KafkaBroker::start);
    let bootstrap = broker.bootstrap();
    let topic = unique("group");
    let group = unique("group");
    create_topic(&bootstrap, &topic).await;

    // An idempotent producer with every record in flight at once.
    let producer = producer(&bootstrap);
    let delivered = produce_all(&producer, &topic, 0..FIRST).await;
    assert_keys_keep_partition_and_order(&delivered);
    let delivered: HashSet<Record> = delivered.into_iter().collect();
    assert_eq!(delivered.len() as u64, FIRST, "two reports share an offset");

    // The group's first consumer gets exactly what was delivered.
    let first = consumer(&bootstrap, &group, &topic);
    let mut consumed = Vec::new();
    while consumed.len() < delivered.len() {
        consumed.push(next_record(&first).await);
    }
    assert_keys_keep_partition_and_order(&consumed);
    assert_eq!(consumed.iter().cloned().collect::<HashSet<_>>(), delivered);
    block_in_place(|| first.commit_consumer_state(CommitMode::Sync)).expect("commit");
    let mut ends = BTreeMap::new();
    for r in &delivered {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    {
        // The list holds references to the consumer's partitions, and so
        // to its broker threads: dropping the consumer while the list lives
        // hangs in librdkafka's destroy (seen here). The list goes first.
        let committed = block_in_place(|| first.committed(GUARD)).expect("read committed offsets");
        for (&partition, &end) in &ends {
            let offset = committed
                .find_partition(&topic, partition)
                .unwrap_or_else(|| panic!("partition {partition} has no committed offset"))
                .offset();
            assert_eq!(offset, Offset::Offset(end), "partition {partition}");
        }
    }
    close(first).await;

    // The broker crashes and comes back on the same port and storage.
    block_in_place(|| broker.restart());

    // More records; a second consumer of the group starts after the
    // committed offsets: it sees every new record and none of the old ones.
    let more: HashSet<Record> = produce_all(&producer, &topic, FIRST..FIRST + SECOND)
        .await
        .into_iter()
        .collect();
    let second = consumer(&bootstrap, &group, &topic);
    let mut resumed = Vec::new();
    while resumed.len() < more.len() {
        let record = next_record(&second).await;
        assert!(
            record.value >= FIRST,
            "the group's second consumer got {record:?}, committed before the restart"
        );
        resumed.push(record);
    }
    assert_eq!(resumed.iter().cloned().collect::<HashSet<_>>(), more);
    assert_keys_keep_partition_and_order(&resumed);
    close(second).await;
    eprintln!(
        "broker RSS after {} records through a group: {} MiB",
        FIRST + SECOND,
        broker.rss_kib().unwrap_or(0) / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_broker_restarted_on_its_storage_keeps_every_acknowledged_record() {
    const TOTAL: u64 = 3_000;
    const WAVE: u64 = 100;
    let mut broker = block_in_place(KafkaBroker::start);
    let bootstrap = broker.bootstrap();
    let topic = unique("crash");
    create_topic(&bootstrap, &topic).await;

    // Waves of records in flight; the broker is killed mid-stream.
    let producer = Arc::new(producer(&bootstrap));
    let acked = Arc::new(AtomicUsize::new(0));
    let stream = {
        let (producer, topic, acked) = (producer.clone(), topic.clone(), acked.clone());
        tokio::spawn(async move {
            let mut reports = Vec::new();
            for wave in (0..TOTAL).step_by(WAVE as usize) {
                let sends = (wave..wave + WAVE).map(|i| {
                    let (producer, topic, acked) = (&producer, &topic, &acked);
                    async move {
                        let key = key_of(i);
                        let payload = i.to_string();
                        let report = tokio::time::timeout(
                            Duration::from_secs(180),
                            producer.send(
                                FutureRecord::to(topic).key(&key).payload(&payload),
                                Duration::from_secs(0),
                            ),
                        )
                        .await
                        .expect("delivery report did not arrive");
                        if report.is_ok() {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        (
                            i,
                            key,
                            report.map(|d| (d.partition, d.offset)).map_err(|(e, _)| e),
                        )
                    }
                });
                reports.extend(join_all(sends).await);
            }
            reports
        })
    };
    while acked.load(Ordering::Relaxed) < (TOTAL / 3) as usize {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rss_under_load = broker.rss_kib().unwrap_or(0);
    let acked_before_kill = acked.load(Ordering::Relaxed);
    block_in_place(|| broker.kill());
    tokio::time::sleep(Duration::from_millis(500)).await;
    block_in_place(|| broker.start_again());
    let reports = stream.await.expect("the producing task");

    let mut acked_records = Vec::new();
    let mut failed: Vec<(u64, KafkaError)> = Vec::new();
    for (value, key, report) in reports {
        match report {
            Ok((partition, offset)) => acked_records.push(Record {
                partition,
                offset,
                key,
                value,
            }),
            Err(e) => failed.push((value, e)),
        }
    }

    // A fresh group reads the topic from the start: every acknowledged
    // record is at its reported partition and offset.
    let reader = consumer(&bootstrap, &unique("reader"), &topic);
    let wanted: HashSet<Record> = acked_records.iter().cloned().collect();
    let mut seen: HashSet<Record> = HashSet::new();
    let mut values_seen: HashMap<u64, usize> = HashMap::new();
    while !wanted.is_subset(&seen) {
        let record = next_record(&reader).await;
        *values_seen.entry(record.value).or_default() += 1;
        seen.insert(record);
    }
    close(reader).await;
    let duplicates: usize = values_seen.values().map(|n| n - 1).sum();
    let lost = wanted.difference(&seen).count();
    eprintln!(
        "crash: published {TOTAL}, acknowledged {} ({acked_before_kill} before the kill), \
         failed {}, read back {}, duplicated {duplicates}, lost {lost}; \
         broker RSS under load {} MiB, after the restart and read-back {} MiB",
        acked_records.len(),
        failed.len(),
        seen.len(),
        rss_under_load / 1024,
        broker.rss_kib().unwrap_or(0) / 1024
    );
    assert_eq!(lost, 0);
    assert!(
        failed.is_empty(),
        "the idempotent producer gave up on {} records across the restart, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(acked_records.len() as u64, TOTAL);
    assert_keys_keep_partition_and_order(&acked_records);
}
