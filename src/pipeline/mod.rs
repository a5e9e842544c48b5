//! What happens around a handler call, once for every transport: retry with
//! backoff, dead-lettering, the counters behind `Bus::stats`, rate limits
//! (handler calls and publishes), handler timeouts and error classifiers,
//! duplicate suppression, metrics export (`export`) and handler spans
//! (`trace`). (Backlog detection joins here in
//! a later version.)

pub(crate) mod backlog;
pub(crate) mod classify;
pub(crate) mod dead_letter;
pub(crate) mod dedup;
pub(crate) mod export;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod rate_limit;
pub(crate) mod retry;
pub(crate) mod trace;
