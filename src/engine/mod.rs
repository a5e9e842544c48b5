//! The lock-free engine: rings, registry, lanes and dispatch.
//!
//! ```text
//!  publish ──► registry.load() ──► topic entry ──► lanes[hash(key) % N]
//!              (atomic snapshot)    (subscriptions)   (bounded MPSC ring)
//!                                                          │
//!                                              lane worker (one task/lane)
//!                                              handler → ack / retry / DLQ
//! ```
//!
//! - [`ring`]: the bounded lock-free MPSC ring (the crate's only `unsafe`).
//! - [`registry`]: topic → subscriptions, an atomic snapshot with
//!   copy-on-write updates.
//! - [`reader`]: the per-thread snapshot cache publishers look topics up in.
//! - [`lanes`]: a subscription's rings and the key → lane mapping.
//! - [`dispatch`]: the lane worker: handler call, retry, dead-letter, ack.
//! - [`flight`]: publishes in flight, the read side of the close protocol.
//!
//! Everything here takes its atomics, `Arc`, `UnsafeCell` and locks from
//! the [`sync`] alias (see `crate::sync`).

pub(crate) use crate::sync::std_impl as sync;

pub(crate) mod dispatch;
pub(crate) mod flight;
pub(crate) mod lanes;
pub(crate) mod reader;
pub(crate) mod registry;
pub(crate) mod ring;

#[cfg(test)]
mod tests;

use lanes::Lanes;
use sync::DataArc;

/// A subscription as the engine sees it: its topic and its lanes.
pub(crate) struct SubscriptionCore {
    pub(crate) id: u64,
    pub(crate) topic: DataArc<str>,
    pub(crate) kind: &'static str,
    pub(crate) lanes: Lanes,
}

impl SubscriptionCore {
    /// True when every lane has processed everything it accepted.
    pub(crate) fn is_idle(&self) -> bool {
        self.lanes.iter().all(|l| l.is_idle())
    }

    /// Records accepted but not yet processed, over all lanes.
    pub(crate) fn pending(&self) -> u64 {
        self.lanes.iter().map(|l| l.pending()).sum()
    }

    /// Positions claimed over all lanes (monotone).
    pub(crate) fn claimed(&self) -> u64 {
        self.lanes.iter().map(|l| l.ring.claimed()).sum()
    }
}

/// What the registry keeps per topic.
#[derive(Clone, Default)]
pub(crate) struct TopicEntry {
    pub(crate) subs: DataArc<[DataArc<SubscriptionCore>]>,
    pub(crate) config: Option<DataArc<crate::TopicOptions>>,
}

impl TopicEntry {
    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.config.is_none()
    }
}
