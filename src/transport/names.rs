//! Default consumer names for broker subscriptions (a JetStream durable
//! consumer, a Kafka consumer group), leased so that two subscriptions of
//! one bus never share one by accident.
//!
//! # Algorithm
//!
//! A subscription with a group (or an explicit name) uses that name:
//! sharing is what a group means. Without one, its name is derived from
//! the client name and the topic, and leased in the bus: the first
//! subscription gets the base name, the next ones `-2`, `-3`, …, so that
//! each gets every record, as on the memory transport. A lease ends when
//! its subscription's consumer loop ends. Names stay stable across
//! restarts when a service subscribes in the same order.
//!
//! # Invariants
//!
//! - A leased name is held by one live subscription of the bus at a time.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

/// The leased default names of one bus.
#[derive(Debug, Default)]
pub(crate) struct Names {
    leased: Arc<Mutex<HashSet<String>>>,
}

/// A name held by one subscription; returned on drop.
#[derive(Debug)]
pub(crate) struct NameLease {
    leased: Option<(Arc<Mutex<HashSet<String>>>, String)>,
}

impl Drop for NameLease {
    fn drop(&mut self) {
        if let Some((leased, name)) = self.leased.take() {
            leased.lock().remove(&name);
        }
    }
}

impl Names {
    /// `shared` when given (no lease: sharing is meant), else the first
    /// free name of `base`, `base-2`, `base-3`, …, leased.
    pub(crate) fn pick(&self, shared: Option<String>, base: String) -> (String, NameLease) {
        if let Some(name) = shared {
            return (name, NameLease { leased: None });
        }
        let mut leased = self.leased.lock();
        let name = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|name| !leased.contains(name))
            .expect("an unbounded range has a free name");
        leased.insert(name.clone());
        let lease = NameLease {
            leased: Some((self.leased.clone(), name.clone())),
        };
        (name, lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_leased_and_groups_shared() {
        let names = Names::default();
        let (a, lease_a) = names.pick(None, "svc-orders".into());
        let (b, _lease_b) = names.pick(None, "svc-orders".into());
        assert_eq!((a.as_str(), b.as_str()), ("svc-orders", "svc-orders-2"));
        drop(lease_a);
        assert_eq!(names.pick(None, "svc-orders".into()).0, "svc-orders");
        let (g1, _) = names.pick(Some("billing".into()), "x".into());
        let (g2, _) = names.pick(Some("billing".into()), "x".into());
        assert_eq!((g1.as_str(), g2.as_str()), ("billing", "billing"));
    }
}
