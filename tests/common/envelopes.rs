//! Envelope fixtures shared by the envelope test files.
#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use lanebus::Envelope;

/// 2024-05-01T02:30:00Z.
pub const MAY_FIRST: u64 = 1_714_530_600;

pub fn minimal() -> Envelope {
    Envelope::new("order-1", "OrderPlaced", 1, &b"{}"[..])
        .with_event_id("01890a5d-ac96-7e4b-8f6b-2d5a9c1e0f3a")
        .with_timestamp(SystemTime::UNIX_EPOCH + Duration::new(MAY_FIRST, 5))
}

pub fn full() -> Envelope {
    minimal()
        .with_trace_id("4bf92f3577b34da6a3ce929d0e0e4736")
        .with_correlation_id("corr-9")
        .with_tenant_id("1024")
        .with_headers(
            [("source", "checkout"), ("retry", "0"), ("source", "api")]
                .into_iter()
                .collect(),
        )
}
