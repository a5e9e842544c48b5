//! The engine's fan-out: a record into the lanes of every target of its
//! topic.
//!
//! # Algorithm
//!
//! A publish loads the registry snapshot, finds the topic's targets and
//! pushes one record into one lane of each (fan-out: every subscription
//! gets every message published after it subscribed, except that a group
//! target takes one record for all its members, see
//! [`Target`]). Nothing is encoded: payloads are
//! shared `Bytes`, envelopes are shared `Arc<Envelope>`s.
//!
//! - `route_now` tries every target without waiting while it holds the
//!   snapshot; `Waiting::finish` then waits, snapshot released, only for
//!   the lanes that were full, in target order. Cancelling the wait midway
//!   may leave a fan-out partly delivered. A topic with one subscription
//!   and no group takes a path of its own: one push, no loop.
//! - `try_route` is all-or-nothing: with several targets it first reserves
//!   a slot in one lane of each and only writes once all reservations
//!   succeeded; on `Full` the reservations become tombstones and the body
//!   is handed back.
//!
//! In a group, a keyed record waits for room on its member (per-key order);
//! an unkeyed one tries every member before it waits.
//!
//! A subscription whose lanes are closed (it is being removed) is skipped;
//! in a group the next member takes the record instead, so a member
//! leaving loses none of the group's records. Only when every member of
//! the group in the publisher's snapshot has left is the record not
//! routed to that group.
//!
//! Unkeyed records take the publishing thread's round-robin cursor
//! ([`next_round_robin`]), which moves to the next lane every [`LANE_RUN`]
//! records.
//!
//! # Invariants
//!
//! - Each target gets the record at most once; a keyed record only ever
//!   enters lane `hash % N` of the member its key picks.
//! - `try_route` delivers to every target or to none.
//!
//! The memory transport publishes through here directly; a broker
//! transport's consumer loop feeds a subscription through
//! [`SubscriptionCore::deliver`](super::SubscriptionCore::deliver) instead,
//! since the broker does the fan-out.

use std::cell::Cell;

use super::lanes::{Body, Delivery, Route};
use super::reader::with_topic;
use super::registry::Registry;
use super::ring::{Reservation, ReserveError, TryPushError};
use super::{Target, TopicEntry};
use crate::pipeline::metrics::thread_shard;

/// What a route did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The topic has no live subscription (the body was dropped).
    Unrouted,
    /// Delivered to this many targets (a group counts once).
    Delivered(usize),
}

impl Routed {
    fn of(delivered: usize) -> Self {
        if delivered == 0 {
            Routed::Unrouted
        } else {
            Routed::Delivered(delivered)
        }
    }
}

/// Why a non-waiting route failed.
pub(crate) enum TryRouteError {
    /// The topic is not registered; the body is handed back so the caller
    /// can check the name.
    Unknown(Body),
    /// A lane is full; nothing was delivered.
    Full(Body),
}

/// A record whose lane was full: the target, the member to wait on (0 for
/// a single subscription) and the route among its lanes.
struct Pending {
    target: Target,
    member: usize,
    route: Route,
    delivery: Delivery,
}

/// A route that found full lanes: the records still to push, in target
/// order.
pub(crate) struct Waiting {
    delivered: usize,
    /// The first full lane's record (inline: a single-target topic waits
    /// without another allocation), then any others.
    first: Pending,
    rest: Vec<Pending>,
}

/// What [`route_now`] did. Flat, each variant at most one word: the
/// result then comes back from the snapshot lookup's closure in two
/// registers (nested, as `Routed(Routed)`, it was returned through memory
/// and read back with wider loads than its stores, a store-forwarding
/// stall on every publish).
pub(crate) enum RouteNow {
    /// Done without waiting: no live subscription (see [`Routed`]).
    Unrouted,
    /// Done without waiting: delivered to this many targets.
    Delivered(usize),
    /// Some lanes were full: finish with [`Waiting::finish`]. Boxed: the
    /// rare case should not make the common result larger to move.
    Wait(Box<Waiting>),
    /// The topic is not registered; the body was left in place.
    Unknown,
}

impl From<Routed> for RouteNow {
    #[inline(always)]
    fn from(routed: Routed) -> Self {
        match routed {
            Routed::Unrouted => RouteNow::Unrouted,
            Routed::Delivered(n) => RouteNow::Delivered(n),
        }
    }
}

/// Unkeyed records a thread sends to one lane before moving to the next.
/// Runs keep lane workers draining whole batches (one wake-up per run, not
/// per record) while still spreading a thread's traffic over every lane.
pub(crate) const LANE_RUN: u32 = 32;

thread_local! {
    /// This thread's starting lane (its shard; `u32::MAX` until first
    /// used) and round-robin count, in one cell: one thread-local access
    /// per unkeyed publish.
    static CURSOR: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
}

/// The lane cursor of this thread for an unkeyed record: starts at the
/// thread's shard (threads start on different lanes) and moves on by one
/// every [`LANE_RUN`] records.
#[inline]
pub(crate) fn next_round_robin() -> u32 {
    CURSOR.with(|c| {
        let (mut start, rr) = c.get();
        if start == u32::MAX {
            start = thread_shard() as u32 & (u32::MAX >> 1);
        }
        c.set((start, rr.wrapping_add(1)));
        start.wrapping_add(rr / LANE_RUN)
    })
}

/// Routes the body in `slot` to every target of `topic`, pushing without
/// waiting where there is room (the common case: no future, no allocation)
/// and handing back the records whose lanes were full. The body is taken
/// from `slot` unless the topic is unknown. `bus` keys the calling thread's
/// snapshot cache.
#[inline]
pub(crate) fn route_now(
    bus: u64,
    registry: &Registry<TopicEntry>,
    topic: &str,
    slot: &mut Option<Body>,
) -> RouteNow {
    // The closure captures one pointer: `with_topic` moves it, and a
    // capture of several words was read back with wider loads than the
    // caller's stores (a store-forwarding stall on every publish).
    let mut args = (slot, topic);
    let args = &mut args;
    with_topic(bus, registry, topic, move |entry| {
        let (slot, topic) = (&mut *args.0, args.1);
        let subs = match entry {
            Some(entry) if !entry.subs.is_empty() => &entry.subs,
            Some(_) => {
                *slot = None;
                return RouteNow::Unrouted;
            }
            None => return RouteNow::Unknown,
        };
        let Some(body) = slot.take() else {
            return RouteNow::Unrouted;
        };
        let route = Route::of(&body);
        if let [Target::Solo(sub)] = &subs[..] {
            return match sub.lanes.try_push(record(body, sub.wildcard, topic), route) {
                Ok(()) => RouteNow::Delivered(1),
                Err(TryPushError::Closed(_)) => RouteNow::Unrouted,
                Err(TryPushError::Full(delivery)) => RouteNow::Wait(Box::new(Waiting {
                    delivered: 0,
                    first: Pending {
                        target: subs[0].clone(),
                        member: 0,
                        route,
                        delivery,
                    },
                    rest: Vec::new(),
                })),
            };
        }
        let mut delivered = 0usize;
        let mut pending = Vec::new();
        let last = subs.len() - 1;
        let mut body = Some(body);
        for (i, target) in subs.iter().enumerate() {
            let b = fan_out(&mut body, i == last);
            match try_push(target, record(b, target.is_wildcard(), topic), route) {
                Ok(()) => delivered += 1,
                Err(None) => {}
                Err(Some(p)) => pending.push(p),
            }
        }
        let mut pending = pending.into_iter();
        match pending.next() {
            None => Routed::of(delivered).into(),
            Some(first) => RouteNow::Wait(Box::new(Waiting {
                delivered,
                first,
                rest: pending.collect(),
            })),
        }
    })
}

/// Pushes into `target` without waiting. `Err(None)`: every subscription
/// it names is closed; `Err(Some(_))`: full, the record to wait with.
fn try_push(target: &Target, d: Delivery, route: Route) -> Result<(), Option<Pending>> {
    let group = match target {
        Target::Solo(sub) => {
            return match sub.lanes.try_push(d, route) {
                Ok(()) => Ok(()),
                Err(TryPushError::Closed(_)) => Err(None),
                Err(TryPushError::Full(delivery)) => Err(Some(Pending {
                    target: target.clone(),
                    member: 0,
                    route,
                    delivery,
                })),
            };
        }
        Target::Group(g) => g,
    };
    let (first, inner) = group.pick(route);
    let m = group.members.len();
    let mut d = d;
    let mut wait_on = None;
    for j in 0..m {
        let i = (first + j) % m;
        match group.members[i].lanes.try_push(d, inner) {
            Ok(()) => return Ok(()),
            // Leaving: the next member takes over.
            Err(TryPushError::Closed(back)) => d = back,
            Err(TryPushError::Full(back)) => {
                d = back;
                wait_on.get_or_insert(i);
                // A key waits on its member; unkeyed records try the rest.
                if let Route::Keyed(_) = inner {
                    break;
                }
            }
        }
    }
    match wait_on {
        Some(member) => Err(Some(Pending {
            target: target.clone(),
            member,
            route: inner,
            delivery: d,
        })),
        None => Err(None),
    }
}

impl Pending {
    /// Pushes, waiting for room; in a group, a member found closed hands
    /// the record to the next one. False when none took it.
    async fn push(self) -> bool {
        let Pending {
            target,
            member,
            route,
            delivery,
        } = self;
        match &target {
            Target::Solo(sub) => sub.lanes.push(delivery, route).await.is_ok(),
            Target::Group(g) => {
                let m = g.members.len();
                let mut d = delivery;
                for j in 0..m {
                    match g.members[(member + j) % m].lanes.push(d, route).await {
                        Ok(()) => return true,
                        Err(back) => d = back,
                    }
                }
                false
            }
        }
    }
}

impl Waiting {
    /// Pushes the records whose lanes were full, waiting for room, with the
    /// snapshot released.
    pub(crate) async fn finish(self) -> Routed {
        let mut delivered = self.delivered;
        for p in std::iter::once(self.first).chain(self.rest) {
            if p.push().await {
                delivered += 1;
            }
        }
        Routed::of(delivered)
    }
}

/// Routes `body` to every target of `topic` without waiting,
/// all-or-nothing.
pub(crate) fn try_route(
    bus: u64,
    registry: &Registry<TopicEntry>,
    topic: &str,
    body: Body,
) -> Result<Routed, TryRouteError> {
    with_topic(bus, registry, topic, |entry| {
        try_route_in(entry, topic, body)
    })
}

fn try_route_in(
    entry: Option<&TopicEntry>,
    topic: &str,
    body: Body,
) -> Result<Routed, TryRouteError> {
    let subs = match entry {
        Some(entry) if !entry.subs.is_empty() => &entry.subs,
        Some(_) => return Ok(Routed::Unrouted),
        None => return Err(TryRouteError::Unknown(body)),
    };
    let route = Route::of(&body);
    if let [Target::Solo(sub)] = &subs[..] {
        return match sub.lanes.try_push(record(body, sub.wildcard, topic), route) {
            Ok(()) => Ok(Routed::Delivered(1)),
            Err(TryPushError::Closed(_)) => Ok(Routed::Unrouted),
            Err(TryPushError::Full(d)) => Err(TryRouteError::Full(d.body)),
        };
    }
    let mut reservations = Vec::with_capacity(subs.len());
    for target in subs.iter() {
        match try_reserve(target, route) {
            Ok(Some(r)) => reservations.push((r, target.is_wildcard())),
            Ok(None) => {}
            // Dropping `reservations` turns them into tombstones.
            Err(ReserveError::Full | ReserveError::Closed) => {
                return Err(TryRouteError::Full(body))
            }
        }
    }
    let n = reservations.len();
    if n == 0 {
        return Ok(Routed::Unrouted);
    }
    let mut body = Some(body);
    for (i, (r, wildcard)) in reservations.into_iter().enumerate() {
        let b = fan_out(&mut body, i + 1 == n);
        r.write(record(b, wildcard, topic));
    }
    Ok(Routed::Delivered(n))
}

/// Reserves a slot in one lane of `target`: `Ok(None)` when every
/// subscription it names is closed, `Err(Full)` when the lane a record
/// must take (or, unkeyed, every lane) is full. Group members are chosen
/// as [`try_push`] chooses them.
fn try_reserve(
    target: &Target,
    route: Route,
) -> Result<Option<Reservation<'_, Delivery>>, ReserveError> {
    let group = match target {
        Target::Solo(sub) => {
            return match sub.lanes.try_reserve(route) {
                Ok(r) => Ok(Some(r)),
                Err(ReserveError::Closed) => Ok(None),
                Err(ReserveError::Full) => Err(ReserveError::Full),
            };
        }
        Target::Group(g) => g,
    };
    let (first, inner) = group.pick(route);
    let m = group.members.len();
    let mut full = false;
    for j in 0..m {
        match group.members[(first + j) % m].lanes.try_reserve(inner) {
            Ok(r) => return Ok(Some(r)),
            Err(ReserveError::Closed) => {}
            Err(ReserveError::Full) => {
                full = true;
                if let Route::Keyed(_) = inner {
                    break;
                }
            }
        }
    }
    if full {
        Err(ReserveError::Full)
    } else {
        Ok(None)
    }
}

/// The lane record of `body` published to `topic`: a wildcard
/// subscription's record carries its exact topic (one allocation, on that
/// path only).
#[inline]
fn record(body: Body, wildcard: bool, topic: &str) -> Delivery {
    if wildcard {
        Delivery::in_topic(body, topic)
    } else {
        Delivery::new(body)
    }
}

/// The body for the next target of a fan-out: a shared copy, or the body
/// itself for the last one (so a single target never copies).
#[inline]
fn fan_out(body: &mut Option<Body>, last: bool) -> Body {
    if last {
        body.take().expect("body moved once")
    } else {
        body.as_ref().expect("body present").share()
    }
}

#[cfg(test)]
mod tests {
    use super::super::sync::DataArc as Arc;

    use bytes::Bytes;

    use super::*;
    use crate::engine::lanes::Lanes;
    use crate::engine::ring::Consumer;
    use crate::engine::SubscriptionCore;

    /// A bus ID no real bus takes (those count up from 1).
    const BUS: u64 = u64::MAX - 1000;

    /// A one-lane subscription and its lane's consumer end.
    struct Member {
        core: Arc<SubscriptionCore>,
        rx: Consumer<Delivery>,
    }

    impl Member {
        fn new(id: u64, group: Option<&str>, capacity: usize) -> Self {
            let (lanes, mut consumers) = Lanes::new(1, capacity);
            let core = Arc::new(SubscriptionCore {
                id,
                topic: "t".into(),
                group: group.map(Arc::from),
                wildcard: false,
                kind: "plain",
                lanes,
            });
            let rx = consumers.pop().expect("one lane");
            Self { core, rx }
        }

        /// Records written to its lane since the last call (reservations
        /// dropped by a refused route are skipped).
        fn taken(&mut self) -> usize {
            let mut buf = Vec::new();
            self.rx.try_drain(&mut buf, usize::MAX);
            buf.len()
        }
    }

    /// A key whose record goes to member `m` of a group of `n`.
    fn keyed_to(m: usize, n: usize) -> Body {
        (0..)
            .map(|k| format!("key-{k}"))
            .find(|k| {
                let h = crate::key_hash(k.as_bytes());
                ((u128::from(h) * n as u128) >> 64) as usize == m
            })
            .map(|k| Body::plain_with(Bytes::from_static(b"x"), Some(k.into()), Default::default()))
            .expect("some key maps to every member")
    }

    #[test]
    fn a_closed_member_in_a_stale_snapshot_hands_its_records_on() {
        let (mut a, mut b) = (Member::new(1, Some("g"), 4), Member::new(2, Some("g"), 4));
        let entry = TopicEntry::default().with_sub(&a.core).with_sub(&b.core);
        // `a` is leaving: its lanes are closed, the snapshot still lists it.
        a.core.lanes.close();
        let routed = try_route_in(Some(&entry), "t", keyed_to(0, 2));
        assert!(matches!(routed, Ok(Routed::Delivered(1))));
        let reg = Registry::new();
        reg.update("t", |_| (Some(entry.clone()), ()));
        let mut slot = Some(keyed_to(0, 2));
        let now = route_now(BUS, &reg, "t", &mut slot);
        assert!(matches!(now, RouteNow::Delivered(1)));
        assert_eq!((a.taken(), b.taken()), (0, 2));
        // Every member gone: the group is not routed to.
        b.core.lanes.close();
        assert!(matches!(
            try_route_in(Some(&entry), "t", keyed_to(1, 2)),
            Ok(Routed::Unrouted)
        ));
    }

    #[test]
    fn try_route_over_a_group_is_all_or_nothing() {
        let mut solo = Member::new(1, None, 8);
        let (mut a, mut b) = (Member::new(2, Some("g"), 2), Member::new(3, Some("g"), 2));
        let entry = TopicEntry::default()
            .with_sub(&solo.core)
            .with_sub(&a.core)
            .with_sub(&b.core);
        // Fill member 0 (`a`) with its keys.
        let mut accepted = 0;
        while try_route_in(Some(&entry), "t", keyed_to(0, 2)).is_ok() {
            accepted += 1;
        }
        assert_eq!(accepted, 2, "a lane of two slots");
        assert_eq!((solo.taken(), b.taken()), (2, 0));
        // A key of the full member is refused, and the others got nothing.
        assert!(matches!(
            try_route_in(Some(&entry), "t", keyed_to(0, 2)),
            Err(TryRouteError::Full(_))
        ));
        assert_eq!((solo.taken(), b.taken()), (0, 0));
        // Unkeyed records still find room in the other member.
        let unkeyed = Body::plain(Bytes::from_static(b"u"));
        assert!(matches!(
            try_route_in(Some(&entry), "t", unkeyed),
            Ok(Routed::Delivered(2))
        ));
        assert_eq!((solo.taken(), a.taken(), b.taken()), (1, 2, 1));
    }

    #[test]
    fn a_member_closing_while_a_record_waits_for_it_hands_the_record_on() {
        let (mut a, mut b) = (Member::new(1, Some("g"), 2), Member::new(2, Some("g"), 2));
        let reg = Registry::new();
        let entry = TopicEntry::default().with_sub(&a.core).with_sub(&b.core);
        reg.update("t", |_| (Some(entry), ()));
        let route = |body| {
            let mut slot = Some(body);
            route_now(BUS + 1, &reg, "t", &mut slot)
        };
        for _ in 0..2 {
            assert!(matches!(route(keyed_to(0, 2)), RouteNow::Delivered(_)));
        }
        let RouteNow::Wait(waiting) = route(keyed_to(0, 2)) else {
            panic!("member 0 is full: the key waits for it");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let routed = rt.block_on(async {
            let finish = tokio::spawn(waiting.finish());
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            assert!(!finish.is_finished(), "waits while member 0 is full");
            a.core.lanes.close();
            finish.await.expect("finish")
        });
        assert_eq!(routed, Routed::Delivered(1));
        assert_eq!((a.taken(), b.taken()), (2, 1));
    }
}
