//! Duplicate suppression: at-least-once brokers redeliver (an ack lost in
//! a reconnect, a consumer that restarted before committing), and a
//! publisher may send one event twice; with [`Dedup`] on, a subscription
//! acknowledges an envelope whose event ID it handled recently without
//! calling its handler again, and counts it as a duplicate.
//!
//! # Algorithm
//!
//! One bounded concurrent cache per subscription, shared by its lanes:
//! `scc::HashCache`, a 32-way set-associative hash table that evicts the
//! least recently used entry of a full bucket, with no global lock. It maps
//! an event ID to the time it was handled.
//!
//! - Before a record is handled, its event ID (an in-process envelope's,
//!   or, for a broker record of an envelope subscription, the decoded
//!   envelope's) is looked up; an entry younger than the window (any
//!   entry, without a window) makes the record a duplicate: acked, counted
//!   as `duplicates`, not handled.
//! - A record whose handler succeeded or skipped it is remembered under
//!   its ID, stamped now. A record that failed (dead-lettered or dropped)
//!   is not remembered: its redelivery gets a fresh try.
//!
//! # Invariants
//!
//! - The cache holds at most about `max_ids` IDs (the table rounds its
//!   capacity up to a power of two, at least 64, and evicts per bucket, so
//!   an ID may leave a little before `max_ids` newer ones push it out).
//! - Records without an event ID (plain messages) are always handled.
//! - Two copies handled concurrently by different lanes (unkeyed records
//!   only: one aggregate's records share a lane) may both run; the check
//!   and the record are not one transaction.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::context::InboundBody;
use crate::envelope::EventId;
use crate::options::{duration, ConfigError, Fields};

/// Duplicate suppression of one subscription (off unless set): an
/// envelope whose event ID the subscription handled among the last
/// `max_ids` IDs, and within `window` when one is set, is acknowledged
/// without calling the handler, and counted in
/// [`LaneStats::duplicates`](crate::LaneStats::duplicates).
///
/// Plain messages have no event ID and are always handled.
///
/// In YAML: `dedup: { max_ids: 100000, window: 10m }`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{BusConfig, Dedup, SubscribeOptions};
///
/// let options = SubscribeOptions::default()
///     .dedup(Dedup::last(50_000).within(Duration::from_secs(600)));
/// assert!(options.validate("subscribe").is_ok());
///
/// let c = BusConfig::from_yaml_str("subscribe:\n  dedup: { max_ids: 1000, window: 5m }\n")?;
/// assert_eq!(c.subscribe.dedup, Some(Dedup::last(1000).within(Duration::from_secs(300))));
/// let err = BusConfig::from_yaml_str("subscribe:\n  dedup: { max_ids: 0 }\n").unwrap_err();
/// assert_eq!(err.field(), Some("subscribe.dedup.max_ids"));
/// # Ok::<(), lanebus::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Dedup {
    /// How many recently handled event IDs are remembered (default
    /// 10,000); the least recently used are forgotten first.
    pub max_ids: usize,
    /// How long a handled event ID counts (default: as long as it is
    /// remembered).
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Most IDs a cache may be asked to remember.
pub const MAX_DEDUP_IDS: usize = 1 << 26;

impl Default for Dedup {
    fn default() -> Self {
        Self {
            max_ids: 10_000,
            window: None,
        }
    }
}

impl Dedup {
    /// Remember the last `max_ids` handled event IDs.
    pub fn last(max_ids: usize) -> Self {
        Self {
            max_ids,
            window: None,
        }
    }

    /// Count an ID as handled only for `window` after it was.
    pub fn within(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.range("max_ids", self.max_ids, 1..=MAX_DEDUP_IDS)?;
        fields.ensure(
            "window",
            self.window.is_none_or(|w| !w.is_zero()),
            "must be positive (omit it for no time limit)",
        )
    }
}

/// The recently handled event IDs of one subscription.
pub(crate) struct DedupCache {
    ids: scc::HashCache<EventId, Instant>,
    window: Option<Duration>,
}

impl DedupCache {
    pub(crate) fn new(options: &Dedup) -> Self {
        Self {
            ids: scc::HashCache::with_capacity(0, options.max_ids),
            window: options.window,
        }
    }

    /// The event ID of a record, if it has one: an in-process envelope's,
    /// or for an envelope subscription the encoded envelope's.
    pub(crate) fn event_id(body: InboundBody<'_>, envelopes: bool) -> Option<EventId> {
        match body {
            InboundBody::Envelope(e) => Some(e.event_id.clone()),
            InboundBody::Plain { payload, .. } if envelopes => {
                crate::Envelope::decode_bytes(payload)
                    .ok()
                    .map(|e| e.event_id)
            }
            InboundBody::Plain { .. } => None,
        }
    }

    /// True when `id` was handled recently.
    pub(crate) fn seen(&self, id: &EventId) -> bool {
        let window = self.window;
        self.ids
            .read_sync(id, |_, at| window.is_none_or(|w| at.elapsed() < w))
            .unwrap_or(false)
    }

    /// Remembers `id` as handled now.
    pub(crate) fn remember(&self, id: EventId) {
        let now = Instant::now();
        match self.ids.entry_sync(id) {
            scc::hash_cache::Entry::Occupied(mut o) => *o.get_mut() = now,
            scc::hash_cache::Entry::Vacant(v) => {
                v.put_entry(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_field() {
        let e = Dedup::last(0).validate("s.dedup").unwrap_err();
        assert_eq!(e.field(), Some("s.dedup.max_ids"));
        let e = Dedup::last(5).within(Duration::ZERO).validate("s.dedup");
        assert_eq!(e.unwrap_err().field(), Some("s.dedup.window"));
        assert!(Dedup::default().validate("s.dedup").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_remembered_within_the_window() {
        let cache = DedupCache::new(&Dedup::last(100).within(Duration::from_secs(60)));
        let id = EventId::from("evt-1");
        assert!(!cache.seen(&id));
        cache.remember(id.clone());
        assert!(cache.seen(&id));
        assert!(!cache.seen(&EventId::from("evt-2")));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!cache.seen(&id), "the window has passed");
        cache.remember(id.clone());
        assert!(cache.seen(&id), "remembered again, stamped anew");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = DedupCache::new(&Dedup::last(64));
        for i in 0..10_000 {
            cache.remember(EventId::from(format!("evt-{i}")));
        }
        assert!(cache.ids.len() <= 128, "{}", cache.ids.len());
        assert!(cache.seen(&EventId::from("evt-9999")));
    }

    #[test]
    fn plain_records_of_plain_subscriptions_have_no_id() {
        let payload = bytes::Bytes::from_static(b"x");
        let body = InboundBody::Plain {
            payload: &payload,
            key: None,
            headers: None,
        };
        assert_eq!(DedupCache::event_id(body, false), None);
        let env = crate::Envelope::new("a", "T", 1, "{}");
        let bytes = env.encode();
        let body = InboundBody::Plain {
            payload: &bytes,
            key: None,
            headers: None,
        };
        assert_eq!(DedupCache::event_id(body, true), Some(env.event_id));
    }
}
