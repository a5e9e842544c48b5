//! What happens around a handler call, once for every transport: retry with
//! backoff, dead-lettering, the counters behind `Bus::stats`, and rate
//! limits (handler calls and publishes). (Backlog detection joins here in
//! a later version.)

pub(crate) mod dead_letter;
pub(crate) mod metrics;
pub(crate) mod rate_limit;
pub(crate) mod retry;
