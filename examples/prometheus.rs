//! A bus exporting its metrics to Prometheus: `/metrics` on a loopback port.
//!
//! ```text
//! cargo run --example prometheus [-- 127.0.0.1:9464]
//! curl -s http://127.0.0.1:9464/metrics | grep lanebus_
//! ```
//!
//! The recorder is installed before the bus is built (the bus writes to
//! whatever recorder is installed when it exports). The handler-duration
//! histogram gets the bus's own bucket bounds, so its bucket counts are
//! exact. The example publishes for a few seconds (one message in ten is
//! poison and goes to the dead-letter topic), prints the page once, and
//! closes.

use std::net::SocketAddr;
use std::time::Duration;

use lanebus::{Bus, BusConfig, HandlerError, Message, MetricsOptions, HANDLER_DURATION_BUCKETS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9464".to_owned())
        .parse()?;
    // `build` binds the listener; its future serves the page. Keep a
    // handle to print the page at the end too.
    let (recorder, serve) = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("lanebus_handler_duration_seconds".into()),
            &HANDLER_DURATION_BUCKETS,
        )?
        .build()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    tokio::spawn(serve);

    let mut config = BusConfig::memory();
    config.metrics = MetricsOptions::on("orders-service").interval(Duration::from_millis(500));
    let bus = Bus::from_config(config)?;
    let _orders = bus
        .subscribe("orders.created", |m: Message| async move {
            if m.payload().ends_with(b"7") {
                return Err(HandlerError::permanent("poison"));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
            Ok(())
        })
        .await?;
    let _dlq = bus
        .subscribe("orders.created.dlq", |_m: Message| async {
            Ok::<(), HandlerError>(())
        })
        .await?;
    println!("serving http://{addr}/metrics");
    for i in 0..10_000u32 {
        bus.publish("orders.created", format!("order-{i}")).await?;
        if i.is_multiple_of(100) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    bus.flush().await;
    bus.export_metrics();
    println!("{}", handle.render());
    bus.close().await?;
    println!("{}", bus.stats());
    Ok(())
}
