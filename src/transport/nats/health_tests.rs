//! Health on NATS against a `nats-server` of the test's own: the
//! background health loop reports the bus unhealthy when the server is
//! killed (the transport and the end-to-end probe fail) and healthy again
//! once it is back, with the reconnect counted and the connection's
//! events in the same stream.

use super::test_support::{bus_on, off_thread, step, NatsServer};
use crate::{BusEvent, ConnectionEvent, HealthReport, HealthStatus};

fn part<'a>(r: &'a HealthReport, name: &str) -> &'a crate::HealthPart {
    r.parts
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no part {name} in {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_when_the_server_stops_and_starts_again() {
    let server = NatsServer::start();
    let extra = "  reconnect: { initial_delay: 20ms, max_delay: 200ms }\nhealth: { interval: 100ms, probe_timeout: 1s }\n";
    let bus = bus_on(&server.url(), "lanebus-health-test", extra).await;
    let mut events = bus.events();
    let mut seen = Vec::new();
    let mut next = async |want: &dyn Fn(&BusEvent) -> bool| -> BusEvent {
        step("an event", async {
            loop {
                let e = events.recv().await.expect("events open");
                seen.push(e.to_string());
                if want(&e) {
                    return e;
                }
            }
        })
        .await
    };
    let healthy = |e: &BusEvent| matches!(e, BusEvent::Health(r) if r.status == HealthStatus::Healthy && r.probe.is_some());
    let BusEvent::Health(up) = next(&healthy).await else {
        unreachable!()
    };
    assert_eq!(part(&up, "probe").status, HealthStatus::Healthy);
    assert_eq!(up.reconnects, 0);

    let server = off_thread(server, NatsServer::kill).await;
    let BusEvent::Health(down) = next(
        &|e: &BusEvent| matches!(e, BusEvent::Health(r) if r.status == HealthStatus::Unhealthy),
    )
    .await
    else {
        unreachable!()
    };
    assert_eq!(part(&down, "transport").status, HealthStatus::Unhealthy);
    assert!(bus.health_check().await.is_err());

    let server = off_thread(server, NatsServer::start_again).await;
    next(&|e: &BusEvent| matches!(e, BusEvent::Connection(ConnectionEvent::Reconnected))).await;
    let BusEvent::Health(again) = next(&healthy).await else {
        unreachable!()
    };
    assert!(again.reconnects >= 1, "{again:?}");
    assert_eq!(part(&again, "probe").status, HealthStatus::Healthy);
    println!("events: {seen:?}");
    bus.close().await.unwrap();
    drop(server);
}

#[tokio::test]
async fn the_probe_goes_through_the_server_on_the_health_topic() {
    let server = NatsServer::shared();
    let extra = "health: { topic: lanebus.health.probe-test, probe_timeout: 5s }\n";
    let bus = bus_on(&server.url(), "lanebus-health-test", extra).await;
    let (client, _) = super::test_support::raw().await;
    let mut watch = client.subscribe("lanebus.health.probe-test").await.unwrap();
    client.flush().await.unwrap();
    let report = step("health", bus.health_check()).await.unwrap();
    assert!(report.probe.is_some());
    use futures_util::StreamExt;
    let msg = step("the probe on the wire", watch.next()).await.unwrap();
    assert!(std::str::from_utf8(&msg.payload)
        .unwrap()
        .parse::<u64>()
        .is_ok());
    // The probe's own subscription is not one of the user's.
    assert_eq!(report.subscriptions, 0);
    assert_eq!(part(&report, "probe").status, HealthStatus::Healthy);
    bus.close().await.unwrap();
}
