//! What the Kafka bus tests share: the broker harness of the integration
//! tests (included here once, so the test binary has one shared broker),
//! bounded waits, and bus configs for the shared broker or a test's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use tokio::sync::mpsc;

#[path = "../../../tests/common/kafka.rs"]
#[allow(dead_code)]
mod harness;

pub(super) use harness::KafkaBroker;

use crate::{Bus, BusConfig, Message};

pub(super) const STEP: Duration = Duration::from_secs(60);

pub(super) async fn step<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// A Kafka bus config for `brokers`: `kafka_extra` goes into the `kafka`
/// section (indented two spaces, each line ending in a newline), `extra`
/// after it at the top level.
pub(super) fn config_at(
    brokers: &str,
    client_id: &str,
    kafka_extra: &str,
    extra: &str,
) -> BusConfig {
    BusConfig::from_yaml_str(&format!(
        "type: kafka\nkafka:\n  brokers: [\"{brokers}\"]\n  client_id: {client_id}\n  consumer: {{ session_timeout: 6s, heartbeat_interval: 500ms, commit_interval: 200ms }}\n{kafka_extra}{extra}"
    ))
    .unwrap()
}

/// A config for the binary's shared broker, with `extra` at the top level.
pub(super) fn config(extra: &str) -> BusConfig {
    config_at(&KafkaBroker::shared().bootstrap(), "kafka-test", "", extra)
}

pub(super) async fn bus() -> Bus {
    step("connect", Bus::connect(config(""))).await.unwrap()
}

pub(super) async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    step("a message", rx.recv()).await.expect("channel open")
}

/// Polls `check` until it returns true (bounded by the step).
pub(super) async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    step(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until `count` reaches `n`.
pub(super) async fn until(what: &str, count: &AtomicUsize, n: usize) {
    eventually(what, async || count.load(Ordering::Relaxed) >= n).await;
}

pub(super) fn raw_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", KafkaBroker::shared().bootstrap())
        .create()
        .unwrap()
}

/// Produces `count` records to `topic` with the raw client (keys `0`..`63`,
/// payloads their index, up to 1,024 in flight), so that a test starts
/// with a backlog on the broker; returns how many the broker acknowledged.
pub(super) async fn preload(topic: &str, count: usize) -> usize {
    use futures_util::StreamExt;
    use rdkafka::producer::FutureRecord;
    use rdkafka::util::Timeout;

    let producer = raw_producer();
    let sends = (0..count).map(|i| {
        let producer = producer.clone();
        async move {
            let (key, payload) = ((i % 64).to_string(), i.to_string());
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(&payload),
                    Timeout::Never,
                )
                .await
                .is_ok()
        }
    });
    step(
        "backlog",
        futures_util::stream::iter(sends)
            .buffer_unordered(1024)
            .filter(|ok| std::future::ready(*ok))
            .count(),
    )
    .await
}
