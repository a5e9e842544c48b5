//! The handler options of the operations issue on Kafka, against a real
//! broker (the shared scenarios of
//! [`handler_scenarios`](crate::transport::handler_scenarios), each on its
//! own topics, made first): rate limit with per-key order, timeout then
//! retry, classifier to the dead-letter topic, an envelope published twice
//! handled once, a stalled lane reported and cleared.

use super::test_support::bus;
use crate::transport::handler_scenarios as scenario;
use crate::{Bus, TopicOptions};

/// A bus on the shared broker with the scenario topics of `prefix` made.
async fn bus_with_topics(prefix: &str) -> Bus {
    let bus = bus().await;
    for topic in scenario::topics(prefix) {
        bus.configure_topic(&topic, TopicOptions::persistent().partitions(4))
            .await
            .unwrap();
    }
    bus
}

#[tokio::test]
async fn a_rate_limit_keeps_per_key_order() {
    let bus = bus_with_topics("kh1").await;
    scenario::a_rate_limit_keeps_per_key_order(&bus, "kh1").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_timed_out_call_is_dropped_then_retried_to_success() {
    let bus = bus_with_topics("kh2").await;
    scenario::a_timed_out_call_is_dropped_then_retried_to_success(&bus, "kh2").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_classifier_dead_letters_a_custom_error_with_its_class() {
    let bus = bus_with_topics("kh3").await;
    scenario::a_classifier_dead_letters_a_custom_error_with_its_class(&bus, "kh3").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_envelope_published_twice_is_handled_once() {
    let bus = bus_with_topics("kh4").await;
    scenario::an_envelope_published_twice_is_handled_once(&bus, "kh4", false).await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_stalled_lane_is_reported_then_cleared() {
    let bus = bus_with_topics("kh5").await;
    scenario::a_stalled_lane_is_reported_then_cleared(&bus, "kh5").await;
    bus.close().await.unwrap();
}
