//! The hang guard of the broker tests: every step against a real server
//! (connect, publish, receive, …) gets a generous bound, so a server that
//! stops answering fails the test with the step's name instead of hanging
//! it. A guard, not a speed check.
//!
//! Shared by the integration tests (`common::step`) and the NATS unit
//! tests (`src/transport/nats/test_support.rs` includes this file by path).

use std::time::Duration;

/// How long one step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(30);

/// Runs `future`, or fails the test after [`STEP`] naming `what`.
pub async fn step<F: std::future::IntoFuture>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP, future.into_future())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}
