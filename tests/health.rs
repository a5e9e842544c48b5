//! Health on the memory transport: the per-part report and its overall
//! status, the end-to-end probe, and the background loop's events.

use std::time::Duration;

use lanebus::{
    BacklogOptions, Bus, BusConfig, BusEvent, HandlerError, HealthError, HealthOptions,
    HealthReport, HealthStatus, Message, SubscribeOptions,
};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(60);

/// The next health event whose report `want` accepts.
async fn health_event(
    rx: &mut broadcast::Receiver<BusEvent>,
    want: impl Fn(&HealthReport) -> bool,
) -> HealthReport {
    tokio::time::timeout(WAIT, async {
        loop {
            if let BusEvent::Health(r) = rx.recv().await.expect("events open") {
                if want(&r) {
                    return r;
                }
            }
        }
    })
    .await
    .expect("the health event arrived in time")
}

fn part<'a>(r: &'a HealthReport, prefix: &str) -> &'a lanebus::HealthPart {
    r.parts
        .iter()
        .find(|p| p.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no part {prefix} in {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_reports_changes_of_the_parts_and_the_probe_comes_back() {
    let mut config = BusConfig::memory();
    config.health = Some(HealthOptions::default().interval(Duration::from_millis(20)));
    let bus = Bus::from_config(config).unwrap();
    let mut events = bus.events();
    let sub = bus
        .subscribe("jobs", |_m: Message| async { Ok::<(), HandlerError>(()) })
        .await
        .unwrap();
    let healthy = health_event(&mut events, |r| {
        r.status == HealthStatus::Healthy && r.subscriptions == 1
    })
    .await;
    assert!(healthy.probe.is_some(), "the probe came back: {healthy:?}");
    assert_eq!(part(&healthy, "probe").status, HealthStatus::Healthy);
    assert_eq!(
        part(&healthy, "subscription jobs#").status,
        HealthStatus::Healthy
    );
    assert_eq!(part(&healthy, "transport").status, HealthStatus::Healthy);
    let json = serde_json::to_value(&healthy).unwrap();
    assert_eq!(json["status"], "healthy");

    sub.set_recovering(true);
    let degraded = health_event(&mut events, |r| r.status == HealthStatus::Degraded).await;
    let p = part(&degraded, "subscription jobs#");
    assert_eq!(p.status, HealthStatus::Degraded);
    assert!(p.detail.contains("recovering"), "{p:?}");
    assert!(bus.health_check().await.is_ok(), "degraded is not an error");

    sub.clear_recovering();
    health_event(&mut events, |r| r.status == HealthStatus::Healthy).await;
    bus.close().await.unwrap();
    match bus.health_check().await {
        Err(HealthError::Closed) => {}
        other => panic!("expected Closed, got {other:?}"),
    }
    let closed = bus.health().await;
    assert_eq!(closed.status, HealthStatus::Unhealthy);
    assert_eq!(part(&closed, "bus").status, HealthStatus::Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lane_degrades_the_report() {
    let bus = Bus::memory();
    let (open, gate) = tokio::sync::watch::channel(false);
    let options = SubscribeOptions::default().backlog(
        BacklogOptions::default()
            .check_interval(Duration::from_millis(10))
            .stall_after(Duration::from_millis(50)),
    );
    let _sub = bus
        .subscribe_with("stuck", options, move |_m: Message| {
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    bus.publish("stuck", "x").await.unwrap();
    let report = tokio::time::timeout(WAIT, async {
        loop {
            let r = bus.health().await;
            if r.status == HealthStatus::Degraded {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert!(part(&report, "subscription stuck#")
        .detail
        .contains("stalled"));
    assert!(report.probe.is_none(), "no probe without health options");
    open.send(true).unwrap();
    bus.close().await.unwrap();
}

#[test]
fn health_options_are_checked() {
    let e = BusConfig::from_yaml_str("health:\n  probe_timeout: 0s\n").unwrap_err();
    assert_eq!(e.field(), Some("health.probe_timeout"));
    let e = BusConfig::from_yaml_str("health:\n  topic: \"bad topic\"\n").unwrap_err();
    assert_eq!(e.field(), Some("health.topic"));
}
