//! Duplicate suppression on JetStream, against a real `nats-server`: a
//! record the server redelivers after the subscription handled it is
//! acknowledged without a second handler call.
//!
//! The redelivery is made deterministic: while the handler's first call
//! waits, a raw client listening on `$JS.ACK.>` learns the delivery's ack
//! subject from the bus's own in-progress ack and sends `-NAK` to it, so
//! the server delivers the record again at once, into the lane behind the
//! first call. The first call then succeeds, and the redelivered copy
//! meets the remembered event ID.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};

use crate::transport::nats::test_support::NatsServer;
use crate::{Bus, BusConfig, Dedup, Envelope, Event, HandlerError, SubscribeOptions};

const STEP: Duration = Duration::from_secs(30);

async fn step<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

#[tokio::test]
async fn a_redelivery_of_a_handled_envelope_is_suppressed() {
    let url = NatsServer::shared().url();
    let yaml = format!("type: nats\nnats:\n  urls: [\"{url}\"]\n  name: dedup-test\n");
    let bus = step(
        "connect",
        Bus::connect(BusConfig::from_yaml_str(&yaml).unwrap()),
    )
    .await
    .unwrap();
    let raw = step("raw connect", async_nats::connect(url.as_str()))
        .await
        .unwrap();
    let mut acks = raw.subscribe("$JS.ACK.>").await.unwrap();
    raw.flush().await.unwrap();

    let calls = Arc::new(AtomicU32::new(0));
    let release = Arc::new(Notify::new());
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let options = SubscribeOptions::default()
        .lanes(1)
        .ack_wait(Duration::from_secs(2))
        .dedup(Dedup::default());
    let sub = {
        let (calls, release) = (calls.clone(), release.clone());
        bus.subscribe_envelope_with("jsdedup1.orders", options, move |ev: Event| {
            let (calls, release, entered_tx) = (calls.clone(), release.clone(), entered_tx.clone());
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    let _ = entered_tx.send(ev.context().redelivered());
                    release.notified().await;
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap()
    };
    bus.publish_envelope(
        "jsdedup1.orders",
        Envelope::new("order-1", "OrderPlaced", 1, "{}"),
    )
    .await
    .unwrap();
    let first = step("first call", entered.recv()).await.unwrap();
    assert_eq!(first, 0, "the first call is the first delivery");

    // The pacer's in-progress ack (after half the ack wait) names the
    // delivery's ack subject; a NAK there makes the server redeliver now.
    let stream = format!(".{}.", super::streams::stream_name("jsdedup1.orders", None));
    let wpi = loop {
        let m = step("an in-progress ack", acks.next()).await.unwrap();
        if m.subject.as_str().contains(&stream) && m.payload.starts_with(b"+WPI") {
            break m;
        }
    };
    raw.publish(wpi.subject.clone(), "-NAK".into())
        .await
        .unwrap();
    raw.flush().await.unwrap();

    // The redelivered copy reaches the lane (behind the waiting call)
    // before the first call is let go.
    step("the redelivery", async {
        while sub.stats().total.depth == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    release.notify_one();
    step("the duplicate", async {
        while sub.stats().total.duplicates == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let total = sub.stats().total;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!((total.delivered, total.duplicates), (1, 1));
    bus.close().await.unwrap();
}
