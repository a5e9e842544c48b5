//! Rate limits on the memory transport: a subscription's handler-call
//! limit keeps per-key order, `try_publish` hands the value back as
//! `RateLimited`, `publish` waits for a token instead of failing, and bad
//! limits are config errors naming their field. (Rates themselves are
//! measured by the bench tool's `ratelimit` scenario, not asserted here.)

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lanebus::{
    Bus, BusConfig, Envelope, HandlerError, Message, OutboundMessage, RateLimit, SubscribeOptions,
    TopicOptions, TryPublishError,
};

/// A limit that refills one token an hour: after its burst, every
/// non-waiting call is refused for the rest of the test.
fn hourly(burst: u32) -> RateLimit {
    RateLimit::new(1, Duration::from_secs(3600)).with_burst(burst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_limit_keeps_per_key_order() {
    let bus = Bus::memory();
    let seen: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let sink = seen.clone();
    let options = SubscribeOptions::default()
        .lanes(4)
        .rate_limit(RateLimit::per_second(400).with_burst(4));
    let _sub = bus
        .subscribe_with("orders", options, move |m: Message| {
            let sink = sink.clone();
            async move {
                let n: u32 = std::str::from_utf8(m.payload())?.parse()?;
                let key = m.key().unwrap_or_default().to_owned();
                sink.lock().unwrap().entry(key).or_default().push(n);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    for n in 0..200u32 {
        let key = format!("k{}", n % 7);
        bus.publish_with("orders", OutboundMessage::new(n.to_string()).with_key(key))
            .await
            .unwrap();
    }
    bus.close().await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 7);
    for (key, got) in seen.iter() {
        let k: u32 = key[1..].parse().unwrap();
        let want: Vec<u32> = (0..200).filter(|n| n % 7 == k).collect();
        assert_eq!(got, &want, "key {key}");
    }
    assert_eq!(bus.stats().total.delivered, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_publish_hands_the_value_back_when_rate_limited() {
    let mut config = BusConfig::memory();
    config.publish_rate_limit = Some(hourly(3));
    let bus = Bus::from_config(config).unwrap();
    bus.try_publish("a", "1").unwrap();
    bus.try_publish_with("b", OutboundMessage::new("2"))
        .unwrap();
    bus.try_publish_envelope("c", Envelope::new("agg", "Made", 1, "{}"))
        .unwrap();

    let err = bus.try_publish("a", "plain").unwrap_err();
    assert!(err.is_rate_limited(), "{err:?}");
    assert_eq!(err.to_string(), "publish rate limit reached");
    assert_eq!(err.into_inner(), "plain");

    let msg = OutboundMessage::new("keyed").with_key("k");
    match bus.try_publish_with("b", msg) {
        Err(TryPublishError::RateLimited(back)) => {
            assert_eq!(back.payload().as_ref(), b"keyed");
            assert_eq!(back.key(), Some("k"));
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }

    let env = Envelope::new("order-9", "OrderPlaced", 1, "{}");
    let id = env.event_id.clone();
    match bus.try_publish_envelope("c", env) {
        Err(TryPublishError::RateLimited(back)) => assert_eq!(back.event_id, id),
        other => panic!("expected RateLimited, got {other:?}"),
    }
    // Refused publishes are not counted as published.
    assert_eq!(bus.stats().published, 3);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_limit_leaves_other_topics_alone() {
    let mut config = BusConfig::memory();
    config.topics.insert(
        "slow".into(),
        TopicOptions::default().publish_rate_limit(hourly(1)),
    );
    let bus = Bus::from_config(config).unwrap();
    bus.try_publish("slow", "1").unwrap();
    assert!(bus.try_publish("slow", "2").unwrap_err().is_rate_limited());
    for i in 0..100 {
        bus.try_publish("fast", format!("{i}")).unwrap();
    }
    // Configured later, and removed again.
    bus.configure_topic(
        "fast",
        TopicOptions::default().publish_rate_limit(hourly(1)),
    )
    .await
    .unwrap();
    bus.try_publish("fast", "x").unwrap();
    assert!(bus.try_publish("fast", "y").unwrap_err().is_rate_limited());
    bus.configure_topic("fast", TopicOptions::default())
        .await
        .unwrap();
    bus.try_publish("fast", "z").unwrap();
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_waits_for_a_token_instead_of_failing() {
    let mut config = BusConfig::memory();
    config.publish_rate_limit = Some(RateLimit::per_second(50).with_burst(1));
    let bus = Bus::from_config(config).unwrap();
    let count = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = count.clone();
    let _sub = bus
        .subscribe("ticks", move |_m: Message| {
            let c = c.clone();
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        })
        .await
        .unwrap();
    bus.try_publish("ticks", "0").unwrap();
    // The bucket (burst 1) is empty now: try_publish is refused, while
    // publish of the value it handed back waits and succeeds.
    let back = bus.try_publish("ticks", "1").unwrap_err().into_inner();
    bus.publish("ticks", back).await.unwrap();
    for i in 2..10 {
        bus.publish("ticks", format!("{i}")).await.unwrap();
    }
    bus.close().await.unwrap();
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 10);
    let stats = bus.stats();
    assert_eq!((stats.published, stats.total.delivered), (10, 10));
}

#[test]
fn bad_limits_are_config_errors_naming_the_field() {
    let cases = [
        (
            "publish_rate_limit: { rate: 0 }\n",
            "publish_rate_limit.rate",
        ),
        (
            "publish_rate_limit: { rate: 10, burst: 0 }\n",
            "publish_rate_limit.burst",
        ),
        (
            "subscribe:\n  rate_limit: { rate: 10, per: 0s }\n",
            "subscribe.rate_limit.per",
        ),
        (
            "topics:\n  orders:\n    publish_rate_limit: { rate: 5, burst: 0 }\n",
            "topics.orders.publish_rate_limit.burst",
        ),
    ];
    for (yaml, field) in cases {
        let err = BusConfig::from_yaml_str(yaml).unwrap_err();
        assert_eq!(err.field(), Some(field), "{yaml}: {err}");
    }
    // A bare number of seconds is refused, like every duration.
    let err =
        BusConfig::from_yaml_str("subscribe:\n  rate_limit: { rate: 10, per: 1 }\n").unwrap_err();
    assert_eq!(err.field(), Some("subscribe.rate_limit.per"), "{err}");
    // `rate` has no default.
    let err = BusConfig::from_yaml_str("publish_rate_limit: { burst: 3 }\n").unwrap_err();
    assert!(err.to_string().contains("rate"), "{err}");

    let c = BusConfig::from_toml_str(
        "[publish_rate_limit]\nrate = 1000\nburst = 50\n[subscribe.rate_limit]\nrate = 10\nper = \"1m\"\n",
    )
    .unwrap();
    assert_eq!(
        c.publish_rate_limit,
        Some(RateLimit::per_second(1000).with_burst(50))
    );
    assert_eq!(
        c.subscribe.rate_limit,
        Some(RateLimit::new(10, Duration::from_secs(60)))
    );
    let yaml = serde_yaml_ng::to_string(&c).unwrap();
    assert_eq!(BusConfig::from_yaml_str(&yaml).unwrap(), c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_refuses_a_bad_limit() {
    let bus = Bus::memory();
    let err = bus
        .subscribe_with(
            "t",
            SubscribeOptions::default().rate_limit(RateLimit::per_second(0)),
            |_m: Message| async { Ok::<(), HandlerError>(()) },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("options.rate_limit.rate"), "{err}");
}
