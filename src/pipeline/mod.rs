//! What happens around a handler call, once for every transport: retry with
//! backoff, dead-lettering and the counters behind `Bus::stats`. (Rate
//! limiting and backlog detection join here in later versions.)

pub(crate) mod dead_letter;
pub(crate) mod metrics;
pub(crate) mod retry;
