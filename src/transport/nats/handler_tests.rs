//! The handler options of the operations issue on JetStream, against a
//! real `nats-server` (the shared scenarios of
//! [`handler_scenarios`](crate::transport::handler_scenarios), each on
//! its own topics): rate limit with per-key order, timeout then retry,
//! classifier to the dead-letter stream, an envelope published twice
//! handled once (JetStream itself drops the copy, by its message ID), a
//! stalled lane reported and cleared.

use super::test_support::bus;
use crate::transport::handler_scenarios as scenario;

#[tokio::test]
async fn a_rate_limit_keeps_per_key_order() {
    let bus = bus("handlers-limit", "").await;
    scenario::a_rate_limit_keeps_per_key_order(&bus, "nh1").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_timed_out_call_is_dropped_then_retried_to_success() {
    let bus = bus("handlers-timeout", "").await;
    scenario::a_timed_out_call_is_dropped_then_retried_to_success(&bus, "nh2").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_classifier_dead_letters_a_custom_error_with_its_class() {
    let bus = bus("handlers-classify", "").await;
    scenario::a_classifier_dead_letters_a_custom_error_with_its_class(&bus, "nh3").await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn an_envelope_published_twice_is_handled_once() {
    let bus = bus("handlers-dedup", "").await;
    scenario::an_envelope_published_twice_is_handled_once(&bus, "nh4", true).await;
    bus.close().await.unwrap();
}

#[tokio::test]
async fn a_stalled_lane_is_reported_then_cleared() {
    let bus = bus("handlers-stall", "").await;
    scenario::a_stalled_lane_is_reported_then_cleared(&bus, "nh5").await;
    bus.close().await.unwrap();
}
