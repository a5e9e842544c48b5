//! The in-process transport: the engine's rings are the transport.
//!
//! A publish loads the registry snapshot, finds the topic's subscriptions
//! and pushes one record into one lane of each (fan-out: every subscription
//! gets every message published after it subscribed). Nothing is encoded:
//! payloads are shared `Bytes`, envelopes are shared `Arc<Envelope>`s.
//!
//! - `route_now` tries every subscription without waiting while it holds
//!   the snapshot; `Waiting::finish` then waits, snapshot released, only for
//!   the lanes that were full, in subscription order. Cancelling the wait
//!   midway may leave a fan-out partly delivered.
//! - `try_route` is all-or-nothing: with several subscriptions it first
//!   reserves a slot in each lane and only writes once all reservations
//!   succeeded; on `Full` the reservations become tombstones and the body
//!   is handed back.
//!
//! A subscription whose lanes are closed (it is being removed) is skipped.

use std::sync::Arc;

use crate::engine::lanes::{Body, Delivery, Route};
use crate::engine::reader::with_topic;
use crate::engine::registry::Registry;
use crate::engine::ring::{ReserveError, TryPushError};
use crate::engine::{SubscriptionCore, TopicEntry};

/// What a route did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The topic has no live subscription (the body was dropped).
    Unrouted,
    /// Delivered to this many subscriptions.
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

/// A route that found full lanes: the records still to push, in
/// subscription order.
pub(crate) struct Waiting {
    route: Route,
    delivered: usize,
    /// The first full lane's record (inline: a single-subscription topic
    /// waits without another allocation), then any others.
    first: (Arc<SubscriptionCore>, Delivery),
    rest: Vec<(Arc<SubscriptionCore>, Delivery)>,
}

/// What [`route_now`] did. Two words: the common result is cheap to return
/// through the layers of a publish.
pub(crate) enum RouteNow {
    /// Done without waiting.
    Routed(Routed),
    /// Some lanes were full: finish with [`Waiting::finish`]. Boxed: the
    /// rare case should not make the common result larger to move.
    Wait(Box<Waiting>),
    /// The topic is not registered; the body was left in place.
    Unknown,
}

/// Routes the body in `slot` to every subscription of `topic`, pushing
/// without waiting where there is room (the common case: no future, no
/// allocation) and handing back the records whose lanes were full. The body
/// is taken from `slot` unless the topic is unknown. `bus` keys the calling
/// thread's snapshot cache.
#[inline]
pub(crate) fn route_now(
    bus: u64,
    registry: &Registry<TopicEntry>,
    topic: &str,
    slot: &mut Option<Body>,
) -> RouteNow {
    with_topic(bus, registry, topic, |entry| {
        let subs = match entry {
            Some(entry) if !entry.subs.is_empty() => &entry.subs,
            Some(_) => {
                *slot = None;
                return RouteNow::Routed(Routed::Unrouted);
            }
            None => return RouteNow::Unknown,
        };
        let Some(body) = slot.take() else {
            return RouteNow::Routed(Routed::Unrouted);
        };
        let route = Route::of(&body);
        if let [sub] = &subs[..] {
            return match sub.lanes.try_push(Delivery::new(body), route) {
                Ok(()) => RouteNow::Routed(Routed::Delivered(1)),
                Err(TryPushError::Closed(_)) => RouteNow::Routed(Routed::Unrouted),
                Err(TryPushError::Full(d)) => RouteNow::Wait(Box::new(Waiting {
                    route,
                    delivered: 0,
                    first: (sub.clone(), d),
                    rest: Vec::new(),
                })),
            };
        }
        let mut delivered = 0usize;
        let mut pending = Vec::new();
        let last = subs.len() - 1;
        let mut body = Some(body);
        for (i, sub) in subs.iter().enumerate() {
            let b = fan_out(&mut body, i == last);
            match sub.lanes.try_push(Delivery::new(b), route) {
                Ok(()) => delivered += 1,
                Err(TryPushError::Closed(_)) => {}
                Err(TryPushError::Full(d)) => pending.push((sub.clone(), d)),
            }
        }
        let mut pending = pending.into_iter();
        match pending.next() {
            None => RouteNow::Routed(Routed::of(delivered)),
            Some(first) => RouteNow::Wait(Box::new(Waiting {
                route,
                delivered,
                first,
                rest: pending.collect(),
            })),
        }
    })
}

impl Waiting {
    /// Pushes the records whose lanes were full, waiting for room, with the
    /// snapshot released.
    pub(crate) async fn finish(self) -> Routed {
        let mut delivered = self.delivered;
        for (sub, d) in std::iter::once(self.first).chain(self.rest) {
            if sub.lanes.push(d, self.route).await.is_ok() {
                delivered += 1;
            }
        }
        Routed::of(delivered)
    }
}

/// Routes `body` to every subscription of `topic` without waiting,
/// all-or-nothing.
pub(crate) fn try_route(
    bus: u64,
    registry: &Registry<TopicEntry>,
    topic: &str,
    body: Body,
) -> Result<Routed, TryRouteError> {
    with_topic(bus, registry, topic, |entry| try_route_in(entry, body))
}

fn try_route_in(entry: Option<&TopicEntry>, body: Body) -> Result<Routed, TryRouteError> {
    let subs = match entry {
        Some(entry) if !entry.subs.is_empty() => &entry.subs,
        Some(_) => return Ok(Routed::Unrouted),
        None => return Err(TryRouteError::Unknown(body)),
    };
    let route = Route::of(&body);
    if let [sub] = &subs[..] {
        return match sub.lanes.try_push(Delivery::new(body), route) {
            Ok(()) => Ok(Routed::Delivered(1)),
            Err(TryPushError::Closed(_)) => Ok(Routed::Unrouted),
            Err(TryPushError::Full(d)) => Err(TryRouteError::Full(d.body)),
        };
    }
    let mut reservations = Vec::with_capacity(subs.len());
    for sub in subs.iter() {
        match sub.lanes.try_reserve(route) {
            Ok(r) => reservations.push(r),
            Err(ReserveError::Closed) => {}
            // Dropping `reservations` turns them into tombstones.
            Err(ReserveError::Full) => return Err(TryRouteError::Full(body)),
        }
    }
    let n = reservations.len();
    if n == 0 {
        return Ok(Routed::Unrouted);
    }
    let mut body = Some(body);
    for (i, r) in reservations.into_iter().enumerate() {
        let b = fan_out(&mut body, i + 1 == n);
        r.write(Delivery::new(b));
    }
    Ok(Routed::Delivered(n))
}

/// The body for the next subscription of a fan-out: a shared copy, or the
/// body itself for the last one (so a single subscription never copies).
#[inline]
fn fan_out(body: &mut Option<Body>, last: bool) -> Body {
    if last {
        body.take().expect("body moved once")
    } else {
        body.as_ref().expect("body present").share()
    }
}
