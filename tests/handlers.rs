//! Handler timeouts, error classifiers and duplicate suppression on the
//! memory transport.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanebus::{
    Bus, BusConfig, DeadLetterInfo, Dedup, Envelope, ErrorClass, HandlerError, Message,
    RetryPolicy, SubscribeOptions,
};
use tokio::sync::mpsc;

/// Subscribes to `topic` and forwards what its dead letters say.
async fn dead_letters(
    bus: &Bus,
    topic: &str,
) -> (
    lanebus::Subscription,
    mpsc::UnboundedReceiver<DeadLetterInfo>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = bus
        .subscribe(topic, move |m: Message| {
            let tx = tx.clone();
            async move {
                tx.send(m.dead_letter().expect("dead-letter headers")).ok();
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    (sub, rx)
}

async fn recv<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("nothing arrived within 10 s")
        .expect("channel closed")
}

/// Sets its flag when dropped: shows that a timed-out call was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::attempts(attempts).with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_is_cancelled_retried_and_then_succeeds() {
    let bus = Bus::memory();
    let cancelled = Arc::new(AtomicBool::new(false));
    let attempts_seen = Arc::new(AtomicU32::new(0));
    let (flag, seen) = (cancelled.clone(), attempts_seen.clone());
    let options = SubscribeOptions::default()
        .handler_timeout(Duration::from_millis(50))
        .retry(quick_retries(3));
    let _sub = bus
        .subscribe_with("jobs", options, move |m: Message| {
            let (flag, seen) = (flag.clone(), seen.clone());
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if m.attempt() == 1 {
                    let _guard = DropFlag(flag);
                    std::future::pending::<()>().await;
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    bus.publish("jobs", "1").await.unwrap();
    bus.close().await.unwrap();
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the first call was dropped"
    );
    assert_eq!(attempts_seen.load(Ordering::SeqCst), 2);
    let t = bus.stats().total;
    assert_eq!((t.delivered, t.failed, t.retried), (1, 1, 1));
    assert_eq!(t.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_that_use_up_the_attempts_are_dead_lettered_as_timeout() {
    let bus = Bus::memory();
    let (_dlq, mut rx) = dead_letters(&bus, "jobs.dlq").await;
    let options = SubscribeOptions::default()
        .handler_timeout(Duration::from_millis(20))
        .retry(quick_retries(2));
    let _sub = bus
        .subscribe_with("jobs", options, |_m: Message| async {
            std::future::pending::<()>().await;
            Ok::<(), HandlerError>(())
        })
        .await
        .unwrap();
    bus.publish("jobs", "1").await.unwrap();
    let info = recv(&mut rx).await;
    assert_eq!(info.error_class, "timeout");
    assert_eq!(info.attempts, 2);
    assert_eq!(info.error, "handler timed out after 20ms");
    assert_eq!(info.source_topic, "jobs");
    bus.close().await.unwrap();
    let jobs = totals(&bus, "jobs");
    assert_eq!((jobs.failed, jobs.dead_lettered), (2, 1));
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("database unavailable")]
    Database,
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("order {0} was cancelled")]
    Cancelled(u32),
}

fn order_handler(
    calls: Arc<AtomicU32>,
) -> impl Fn(
    Message,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HandlerError>> + Send>>
       + Send
       + Sync
       + 'static {
    move |m: Message| {
        let calls = calls.clone();
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let text = std::str::from_utf8(m.payload())?.to_owned();
            // `?` makes every one of these retryable.
            let result: Result<(), OrderError> = match text.as_str() {
                "db" if m.attempt() == 1 => Err(OrderError::Database),
                "db" => Ok(()),
                "cancelled" => Err(OrderError::Cancelled(7)),
                product => Err(OrderError::UnknownProduct(product.to_owned())),
            };
            result?;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classifier_sends_a_custom_error_to_the_dead_letter_topic_with_its_class() {
    let bus = Bus::memory();
    let (_dlq, mut rx) = dead_letters(&bus, "orders.dlq").await;
    let calls = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default()
        .lanes(1)
        .retry(quick_retries(5))
        .classify(
            |err: &HandlerError| match err.source().downcast_ref::<OrderError>() {
                Some(OrderError::UnknownProduct(_)) => ErrorClass::Permanent,
                Some(OrderError::Cancelled(_)) => ErrorClass::Skip,
                _ => err.class(),
            },
        );
    let _sub = bus
        .subscribe_with("orders", options, order_handler(calls.clone()))
        .await
        .unwrap();
    bus.publish("orders", "db").await.unwrap();
    bus.publish("orders", "cancelled").await.unwrap();
    bus.publish("orders", "gizmo").await.unwrap();
    let info = recv(&mut rx).await;
    assert_eq!(info.error_class, "permanent");
    assert_eq!(info.error, "unknown product gizmo");
    assert_eq!(info.attempts, 1, "a permanent error is not retried");
    bus.close().await.unwrap();
    // db: 2 calls (retryable, kept), cancelled: 1 (skipped), gizmo: 1.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let t = totals(&bus, "orders");
    assert_eq!(
        (t.delivered, t.skipped, t.dead_lettered, t.retried),
        (1, 1, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_classifier_the_same_error_is_retried_until_dead_lettered() {
    let bus = Bus::memory();
    let (_dlq, mut rx) = dead_letters(&bus, "orders.dlq").await;
    let calls = Arc::new(AtomicU32::new(0));
    let options = SubscribeOptions::default().retry(quick_retries(3));
    let _sub = bus
        .subscribe_with("orders", options, order_handler(calls.clone()))
        .await
        .unwrap();
    bus.publish("orders", "gizmo").await.unwrap();
    let info = recv(&mut rx).await;
    assert_eq!((info.error_class.as_str(), info.attempts), ("retryable", 3));
    bus.close().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_published_twice_is_handled_once_and_counted() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let options = SubscribeOptions::default()
        .lanes(1)
        .dedup(Dedup::last(1000));
    let _sub = bus
        .subscribe_envelope_with("orders", options, move |_e: Arc<Envelope>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    let first = Envelope::new("order-1", "OrderPlaced", 1, "{}");
    bus.publish_envelope("orders", first.clone()).await.unwrap();
    bus.publish_envelope("orders", first.clone()).await.unwrap();
    // Another event of the same aggregate is not a duplicate.
    bus.publish_envelope("orders", Envelope::new("order-1", "OrderPaid", 2, "{}"))
        .await
        .unwrap();
    // A copy published encoded, as a broker delivers it, is one: its
    // event ID is read from the decoded envelope. (One lane, so the
    // unkeyed copy cannot overtake the first.)
    bus.publish("orders", first.encode()).await.unwrap();
    bus.close().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let t = bus.stats().total;
    assert_eq!((t.delivered, t.duplicates), (2, 2));
    let json = serde_json::to_value(bus.stats()).unwrap();
    assert_eq!(json["total"]["duplicates"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_envelope_is_not_remembered_and_is_handled_again() {
    let bus = Bus::memory();
    let (_dlq, mut rx) = dead_letters(&bus, "orders.dlq").await;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let options = SubscribeOptions::default()
        .retry(RetryPolicy::none())
        .dedup(Dedup::default());
    let _sub = bus
        .subscribe_envelope_with("orders", options, move |_e: Envelope| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    return Err(HandlerError::permanent("first try fails"));
                }
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    let env = Envelope::new("order-2", "OrderPlaced", 1, "{}");
    bus.publish_envelope("orders", env.clone()).await.unwrap();
    recv(&mut rx).await;
    bus.publish_envelope("orders", env).await.unwrap();
    bus.close().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let orders = totals(&bus, "orders");
    assert_eq!((orders.delivered, orders.duplicates), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_messages_have_no_event_id_and_are_always_handled() {
    let bus = Bus::memory();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let _sub = bus
        .subscribe_with(
            "t",
            SubscribeOptions::default().dedup(Dedup::default()),
            move |_m: Message| {
                c.fetch_add(1, Ordering::SeqCst);
                async { Ok::<(), HandlerError>(()) }
            },
        )
        .await
        .unwrap();
    bus.publish("t", "same").await.unwrap();
    bus.publish("t", "same").await.unwrap();
    bus.close().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(bus.stats().total.duplicates, 0);
}

#[test]
fn handler_options_read_from_config_and_name_bad_fields() {
    let c = BusConfig::from_yaml_str(
        "subscribe:\n  handler_timeout: 5s\n  dedup: { max_ids: 500, window: 10m }\n",
    )
    .unwrap();
    assert_eq!(c.subscribe.handler_timeout, Some(Duration::from_secs(5)));
    assert_eq!(
        c.subscribe.dedup,
        Some(Dedup::last(500).within(Duration::from_secs(600)))
    );
    let toml = toml::to_string(&c).unwrap();
    assert_eq!(BusConfig::from_toml_str(&toml).unwrap(), c);
    let off = BusConfig::from_yaml_str("subscribe:\n  lanes: 2\n").unwrap();
    assert_eq!(
        (off.subscribe.handler_timeout, off.subscribe.dedup),
        (None, None)
    );

    for (yaml, field) in [
        (
            "subscribe:\n  handler_timeout: 0s\n",
            "subscribe.handler_timeout",
        ),
        (
            "subscribe:\n  handler_timeout: 5\n",
            "subscribe.handler_timeout",
        ),
        (
            "subscribe:\n  dedup: { max_ids: 0 }\n",
            "subscribe.dedup.max_ids",
        ),
        (
            "subscribe:\n  dedup: { window: 0s }\n",
            "subscribe.dedup.window",
        ),
    ] {
        let err = BusConfig::from_yaml_str(yaml).unwrap_err();
        assert_eq!(err.field(), Some(field), "{yaml}: {err}");
    }
    // A classifier is code: it has no config form.
    let err = BusConfig::from_yaml_str("subscribe:\n  classifier: x\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `classifier`"),
        "{err}"
    );
}

/// The counts of the subscription to `topic` over all its lanes.
fn totals(bus: &lanebus::Bus, topic: &str) -> lanebus::LaneStats {
    bus.stats()
        .subscriptions
        .into_iter()
        .find(|s| s.topic == topic)
        .unwrap_or_else(|| panic!("no subscription to {topic}"))
        .total
}
