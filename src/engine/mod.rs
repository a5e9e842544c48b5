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
//! - [`route`]: the fan-out of a record to its topic's targets, and the
//!   round-robin cursor of unkeyed records.
//! - [`dispatch`]: the lane worker: handler call, retry, dead-letter, ack.
//! - [`flight`]: publishes in flight, the read side of the close protocol.
//! - [`pattern`]: subscription topics with `*` / `>` wildcards.
//!
//! # Targets and groups
//!
//! A registry entry lists its topic's *targets*: a subscription without a
//! group gets every record ([`Target::Solo`]); subscriptions that share a
//! group name on the same topic or pattern form one [`Group`] target, and
//! each record goes to one member (competing consumers). A keyed record
//! goes to member `⌊key_hash × members / 2⁶⁴⌋` (the hash's high bits: the
//! member's lane then uses its low bits, so the two choices do not
//! correlate), so one key stays with one member, and within it on one
//! lane, while membership is stable; unkeyed records take the publishing
//! thread's round-robin cursor modulo the member count. A member whose
//! lanes are closed (it is leaving) is passed over for the next one, so the
//! others take over at once.
//!
//! Entries of exact topics also hold the targets of every wildcard
//! subscription matching them (see [`registry`]), so the publish path only
//! ever looks up exact names.
//!
//! Everything here takes its atomics, `Arc`, `UnsafeCell` and locks from
//! the [`sync`] alias (see `crate::sync`).

pub(crate) use crate::sync::std_impl as sync;

pub(crate) mod dispatch;
pub(crate) mod flight;
pub(crate) mod lanes;
pub(crate) mod pattern;
pub(crate) mod reader;
pub(crate) mod recycle;
pub(crate) mod registry;
pub(crate) mod ring;
pub(crate) mod route;

#[cfg(test)]
mod tests;

use lanes::{Lanes, Route};
use pattern::Pattern;
use registry::Registry;
use sync::DataArc;

/// A subscription as the engine sees it: its topic (an exact name or a
/// wildcard pattern), its group and its lanes.
pub(crate) struct SubscriptionCore {
    pub(crate) id: u64,
    pub(crate) topic: DataArc<str>,
    pub(crate) group: Option<DataArc<str>>,
    /// True when `topic` is a wildcard pattern: its records then carry
    /// their exact topic.
    pub(crate) wildcard: bool,
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

    /// The engine's entry point for a broker record: pushes `body` with
    /// its settlement handle into the lane its key picks, waiting for room.
    /// `Err` hands the record back when the subscription is closing.
    #[cfg_attr(not(test), allow(dead_code))] // called by the broker consumer loops
    pub(crate) async fn deliver(
        &self,
        body: lanes::Body,
        ack: crate::transport::Ack,
    ) -> Result<(), lanes::Delivery> {
        let route = Route::of(&body);
        self.lanes.push(lanes::Delivery { body, ack }, route).await
    }

    /// Positions claimed over all lanes (monotone).
    pub(crate) fn claimed(&self) -> u64 {
        self.lanes.iter().map(|l| l.ring.claimed()).sum()
    }
}

/// Where a topic's records go: one subscription, or one member of a group.
#[derive(Clone)]
pub(crate) enum Target {
    /// A subscription without a group: every record.
    Solo(DataArc<SubscriptionCore>),
    /// A group: each record to one member.
    Group(DataArc<Group>),
}

/// Subscriptions sharing a group name on one topic or pattern. Immutable:
/// a membership change builds a new `Group` (copy on write, as the
/// registry does).
pub(crate) struct Group {
    /// The topic or pattern the members subscribed to.
    pub(crate) topic: DataArc<str>,
    /// The group's name.
    pub(crate) name: DataArc<str>,
    /// Members in the order they joined; never empty.
    pub(crate) members: Box<[DataArc<SubscriptionCore>]>,
}

impl Target {
    /// True for the targets of a wildcard subscription (a group's members
    /// share one pattern).
    #[inline]
    pub(crate) fn is_wildcard(&self) -> bool {
        match self {
            Target::Solo(s) => s.wildcard,
            Target::Group(g) => g.members.first().is_some_and(|m| m.wildcard),
        }
    }
}

impl Group {
    /// The member for `route`, and the route to take among its lanes.
    #[inline]
    pub(crate) fn pick(&self, route: Route) -> (usize, Route) {
        let m = self.members.len() as u64;
        match route {
            Route::Keyed(h) => (((u128::from(h) * u128::from(m)) >> 64) as usize, route),
            Route::Spread(rr) => {
                let rr = u64::from(rr);
                ((rr % m) as usize, Route::Spread((rr / m) as u32))
            }
        }
    }

    fn is(&self, topic: &str, name: &str) -> bool {
        *self.topic == *topic && *self.name == *name
    }

    fn with_members(&self, members: Box<[DataArc<SubscriptionCore>]>) -> Target {
        Target::Group(DataArc::new(Group {
            topic: self.topic.clone(),
            name: self.name.clone(),
            members,
        }))
    }
}

/// What the registry keeps per topic (and per wildcard pattern).
#[derive(Clone, Default)]
pub(crate) struct TopicEntry {
    pub(crate) subs: DataArc<[Target]>,
    pub(crate) config: Option<DataArc<crate::TopicOptions>>,
}

impl TopicEntry {
    /// True when nothing routes through the entry and nothing configures it.
    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty() && self.config.is_none()
    }

    /// This entry with `core` added: as a target of its own, or as the last
    /// member of its group (same topic or pattern, same name).
    pub(crate) fn with_sub(&self, core: &DataArc<SubscriptionCore>) -> TopicEntry {
        let mut subs = self.subs.to_vec();
        match &core.group {
            None => subs.push(Target::Solo(core.clone())),
            Some(name) => {
                let group = subs
                    .iter_mut()
                    .find(|t| matches!(t, Target::Group(g) if g.is(&core.topic, name)));
                match group {
                    Some(t) => {
                        if let Target::Group(g) = t {
                            let members = g.members.iter().chain([core]).cloned().collect();
                            *t = g.with_members(members);
                        }
                    }
                    None => subs.push(Target::Group(DataArc::new(Group {
                        topic: core.topic.clone(),
                        name: name.clone(),
                        members: Box::new([core.clone()]),
                    }))),
                }
            }
        }
        TopicEntry {
            subs: subs.into(),
            config: self.config.clone(),
        }
    }

    /// This entry without subscription `id`; a group losing its last member
    /// goes.
    pub(crate) fn without_sub(&self, id: u64) -> TopicEntry {
        let subs = self
            .subs
            .iter()
            .filter_map(|t| match t {
                Target::Solo(s) => (s.id != id).then(|| t.clone()),
                Target::Group(g) if g.members.iter().all(|m| m.id != id) => Some(t.clone()),
                Target::Group(g) => {
                    let members: Box<[_]> =
                        g.members.iter().filter(|m| m.id != id).cloned().collect();
                    (!members.is_empty()).then(|| g.with_members(members))
                }
            })
            .collect();
        TopicEntry {
            subs,
            config: self.config.clone(),
        }
    }
}

impl registry::Layer for TopicEntry {
    /// A wildcard pattern's targets join an exact topic's entry.
    fn layer(&mut self, over: &Self) {
        self.subs = self.subs.iter().chain(over.subs.iter()).cloned().collect();
    }
}

/// Adds the wildcard subscription `core` to `pattern`'s value (where new
/// topics start from) and to every topic entry `pattern` matches, as one
/// registry change.
pub(crate) fn add_wildcard_sub(
    registry: &Registry<TopicEntry>,
    pattern: &Pattern,
    core: &DataArc<SubscriptionCore>,
) {
    registry.update_all(|patterns, entries| {
        match patterns.iter_mut().find(|(p, _)| p == pattern) {
            Some((_, e)) => *e = e.with_sub(core),
            None => patterns.push((pattern.clone(), TopicEntry::default().with_sub(core))),
        }
        for (topic, e) in entries.iter_mut() {
            if pattern.matches(topic) {
                *e = e.with_sub(core);
            }
        }
    });
}

/// Removes the wildcard subscription `id` of `pattern` from the pattern and
/// from every topic entry, as one registry change. When the last pattern
/// goes, the entries left with nothing (materialised for publishes while
/// patterns existed) go too.
pub(crate) fn remove_wildcard_sub(registry: &Registry<TopicEntry>, pattern: &Pattern, id: u64) {
    registry.update_all(|patterns, entries| {
        for (_, e) in patterns.iter_mut().filter(|(p, _)| p == pattern) {
            *e = e.without_sub(id);
        }
        patterns.retain(|(_, e)| !e.is_empty());
        for (topic, e) in entries.iter_mut() {
            if pattern.matches(topic) {
                *e = e.without_sub(id);
            }
        }
        if patterns.is_empty() {
            entries.retain(|(_, e)| !e.is_empty());
        }
    });
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    fn core(id: u64, topic: &str, group: Option<&str>) -> DataArc<SubscriptionCore> {
        DataArc::new(SubscriptionCore {
            id,
            topic: topic.into(),
            group: group.map(DataArc::from),
            wildcard: topic.contains(['*', '>']),
            kind: "plain",
            lanes: Lanes::new(1, 2).0,
        })
    }

    /// Subscription IDs per target, groups as one list of members.
    fn shape(entry: Option<&TopicEntry>) -> Vec<Vec<u64>> {
        entry.map_or_else(Vec::new, |e| {
            e.subs
                .iter()
                .map(|t| match t {
                    Target::Solo(s) => vec![s.id],
                    Target::Group(g) => g.members.iter().map(|m| m.id).collect(),
                })
                .collect()
        })
    }

    #[test]
    fn groups_gather_by_topic_and_name() {
        let e = TopicEntry::default()
            .with_sub(&core(1, "t", Some("g")))
            .with_sub(&core(2, "t", None))
            .with_sub(&core(3, "t", Some("g")))
            .with_sub(&core(4, "t", Some("h")))
            .with_sub(&core(5, "t.*", Some("g")));
        assert_eq!(shape(Some(&e)), vec![vec![1, 3], vec![2], vec![4], vec![5]]);
        let e = e.without_sub(1).without_sub(4);
        assert_eq!(shape(Some(&e)), vec![vec![3], vec![2], vec![5]]);
        assert!(e.without_sub(3).without_sub(2).without_sub(5).is_empty());
    }

    #[test]
    fn group_pick_is_stable_and_spreads() {
        let g = Group {
            topic: "t".into(),
            name: "g".into(),
            members: (0..3).map(|i| core(i, "t", Some("g"))).collect(),
        };
        let mut per_member = [0usize; 3];
        for k in 0..3000u64 {
            let h = crate::key_hash(&k.to_le_bytes());
            let (m, inner) = g.pick(Route::Keyed(h));
            assert_eq!(g.pick(Route::Keyed(h)).0, m, "stable");
            assert!(matches!(inner, Route::Keyed(x) if x == h));
            per_member[m] += 1;
        }
        assert!(per_member.iter().all(|&n| n > 800), "{per_member:?}");
        // Unkeyed: consecutive cursor values take members in turn, and each
        // member's own cursor moves on by one per round.
        let picks: Vec<(usize, u32)> = (0..6u32)
            .map(|rr| match g.pick(Route::Spread(rr)) {
                (m, Route::Spread(inner)) => (m, inner),
                (_, Route::Keyed(_)) => unreachable!(),
            })
            .collect();
        assert_eq!(picks, vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn patterns_materialise_and_leave_nothing_behind() {
        let reg = Registry::<TopicEntry>::new();
        let exact = core(1, "orders.a", None);
        reg.update("orders.a", |e| {
            (Some(e.cloned().unwrap_or_default().with_sub(&exact)), ())
        });
        // No pattern: a miss stays a miss, without taking the lock.
        assert!(!reg.materialise("orders.b"));
        let star = Pattern::parse("orders.*").unwrap();
        let wild = core(2, "orders.*", None);
        add_wildcard_sub(&reg, &star, &wild);
        assert_eq!(shape(reg.load().get("orders.a")), vec![vec![1], vec![2]]);
        // A publish to a new matching topic, and to one nothing matches.
        assert!(reg.materialise("orders.b"));
        assert!(reg.materialise("payments.x"));
        assert_eq!(shape(reg.load().get("orders.b")), vec![vec![2]]);
        assert_eq!(shape(reg.load().get("payments.x")), Vec::<Vec<u64>>::new());
        // A topic created by subscribe or configure starts from the pattern.
        let late = core(3, "orders.c", None);
        reg.update("orders.c", |e| {
            (Some(e.cloned().unwrap_or_default().with_sub(&late)), ())
        });
        assert_eq!(shape(reg.load().get("orders.c")), vec![vec![2], vec![3]]);
        assert_eq!(reg.load().len(), 4);
        remove_wildcard_sub(&reg, &star, 2);
        let snap = reg.load();
        assert_eq!(shape(snap.get("orders.a")), vec![vec![1]]);
        assert_eq!(shape(snap.get("orders.c")), vec![vec![3]]);
        assert!(snap.get("orders.b").is_none() && snap.get("payments.x").is_none());
        assert_eq!(snap.len(), 2);
        assert!(!reg.materialise("orders.b"));
    }

    /// A wildcard subscribe racing first publishes to new topics: every
    /// topic ends up with the pattern's subscription, whichever came first.
    #[test]
    fn wildcard_subscribe_racing_materialise_loses_no_entry() {
        for round in 0..50 {
            let reg = DataArc::new(Registry::<TopicEntry>::new());
            // Another pattern exists, so publishes take the materialise path.
            let other = Pattern::parse("x.>").unwrap();
            add_wildcard_sub(&reg, &other, &core(1, "x.>", None));
            let publisher = {
                let reg = reg.clone();
                std::thread::spawn(move || {
                    for i in 0..20 {
                        assert!(reg.materialise(&format!("orders.t{i}")));
                    }
                })
            };
            let star = Pattern::parse("orders.*").unwrap();
            add_wildcard_sub(&reg, &star, &core(2, "orders.*", None));
            publisher.join().unwrap();
            for i in 0..20 {
                let topic = format!("orders.t{i}");
                assert!(reg.materialise(&topic));
                assert_eq!(
                    shape(reg.load().get(&topic)),
                    vec![vec![2]],
                    "round {round}, {topic}"
                );
            }
        }
    }
}
