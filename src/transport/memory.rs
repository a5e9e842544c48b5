//! The in-process transport: the engine's rings are the transport.
//!
//! A publish loads the registry snapshot, finds the topic's subscriptions
//! and pushes one record into one lane of each (fan-out: every subscription
//! gets every message published after it subscribed). Nothing is encoded:
//! payloads are shared `Bytes`, envelopes are shared `Arc<Envelope>`s.
//!
//! - `route` (async) tries every subscription without waiting while it holds
//!   the snapshot, then waits, snapshot released, only for the lanes that were
//!   full, in subscription order. Cancelling it midway may leave a fan-out
//!   partly delivered.
//! - `try_route` is all-or-nothing: with several subscriptions it first
//!   reserves a slot in each lane and only writes once all reservations
//!   succeeded; on `Full` the reservations become tombstones and the body
//!   is handed back.
//!
//! A subscription whose lanes are closed (it is being removed) is skipped.

use std::sync::Arc;

use crate::engine::lanes::{Body, Delivery, Route};
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

/// Why a non-waiting route failed.
pub(crate) enum TryRouteError {
    /// The topic is not registered; the body is handed back so the caller
    /// can check the name.
    Unknown(Body),
    /// A lane is full; nothing was delivered.
    Full(Body),
}

/// Routes `body` to every subscription of `topic`, waiting on full lanes.
/// `Err(body)` when the topic is not registered.
pub(crate) async fn route(
    registry: &Registry<TopicEntry>,
    topic: &str,
    body: Body,
) -> Result<Routed, Body> {
    let mut waiting: Vec<(Arc<SubscriptionCore>, Delivery)> = Vec::new();
    let route;
    let mut delivered = 0usize;
    {
        let snapshot = registry.load();
        let subs = match snapshot.get(topic) {
            Some(entry) if !entry.subs.is_empty() => &entry.subs,
            Some(_) => return Ok(Routed::Unrouted),
            None => return Err(body),
        };
        route = Route::of(&body);
        let last = subs.len() - 1;
        let mut body = Some(body);
        for (i, sub) in subs.iter().enumerate() {
            let b = if i == last {
                body.take().expect("body moved once")
            } else {
                body.as_ref().expect("body present").share()
            };
            match sub.lanes.try_push(Delivery::new(b), route) {
                Ok(()) => delivered += 1,
                Err(TryPushError::Closed(_)) => {}
                Err(TryPushError::Full(d)) => waiting.push((sub.clone(), d)),
            }
        }
    }
    for (sub, d) in waiting {
        if sub.lanes.push(d, route).await.is_ok() {
            delivered += 1;
        }
    }
    Ok(if delivered == 0 {
        Routed::Unrouted
    } else {
        Routed::Delivered(delivered)
    })
}

/// Routes `body` to every subscription of `topic` without waiting,
/// all-or-nothing.
pub(crate) fn try_route(
    registry: &Registry<TopicEntry>,
    topic: &str,
    body: Body,
) -> Result<Routed, TryRouteError> {
    let snapshot = registry.load();
    let subs = match snapshot.get(topic) {
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
        let b = if i + 1 == n {
            body.take().expect("body moved once")
        } else {
            body.as_ref().expect("body present").share()
        };
        r.write(Delivery::new(b));
    }
    Ok(Routed::Delivered(n))
}
