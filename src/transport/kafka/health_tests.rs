//! Health on Kafka against a broker of the test's own: the background
//! health loop, with the end-to-end probe going through the broker on the
//! health topic, reports the bus unhealthy when the broker is killed and
//! healthy again once it is back.

use super::test_support::{config_at, step, KafkaBroker};
use crate::{Bus, BusEvent, HealthReport, HealthStatus};

async fn health_event(
    events: &mut tokio::sync::broadcast::Receiver<BusEvent>,
    status: HealthStatus,
) -> HealthReport {
    step("a health event", async {
        loop {
            if let BusEvent::Health(r) = events.recv().await.expect("events open") {
                println!("kafka health: {} {:?}", r.status, r.parts);
                if r.status == status {
                    return r;
                }
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_loop_follows_the_broker_down_and_up() {
    let mut broker = KafkaBroker::start();
    let config = config_at(
        &broker.bootstrap(),
        "health-loop-test",
        "  api_timeout: 2s\n",
        "topics:\n  kh2.health: { partitions: 1 }\nhealth: { topic: kh2.health, interval: 200ms, probe_timeout: 5s }\n",
    );
    let bus = step("connect", Bus::connect(config)).await.unwrap();
    let mut events = bus.events();
    // Healthy once the probe's member joined and a probe came back.
    let up = health_event(&mut events, HealthStatus::Healthy).await;
    assert!(up.probe.is_some(), "{up:?}");

    broker.kill();
    let down = health_event(&mut events, HealthStatus::Unhealthy).await;
    assert!(
        down.parts
            .iter()
            .any(|p| p.name == "transport" && p.status == HealthStatus::Unhealthy),
        "{down:?}"
    );

    broker.start_again();
    let again = health_event(&mut events, HealthStatus::Healthy).await;
    assert!(again.probe.is_some());
    bus.close().await.unwrap();
}
