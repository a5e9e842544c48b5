//! Keyed lanes: a subscription's rings and the mapping of keys onto them.
//!
//! # Algorithm
//!
//! A subscription owns `N` lanes; each lane is one bounded MPSC
//! [`Ring`] drained by one worker task. A record with a
//! key (an envelope's aggregate ID, or a plain message's key) goes to lane
//! `key_hash(key) % N`, where [`key_hash`](crate::key_hash) is lanebus key
//! hash v1, fixed across processes, platforms and restarts. One worker per
//! lane handles its records one at a time, so records of one key are handled
//! in the order they entered the lane, and a slow key holds up only its own
//! lane. A record without a key goes to the lane picked by the publishing
//! thread's round-robin cursor; if that lane is full it tries the others
//! once before waiting, so unkeyed traffic balances over idle lanes.
//!
//! The key hash is computed once per publish and reused for every
//! subscription of a fan-out.
//!
//! # Invariants
//!
//! - A keyed record only ever enters lane `hash % N` of a subscription.
//! - Each record enters at most one lane of a subscription.

use bytes::Bytes;
use crossbeam_utils::CachePadded;

use super::ring::{Consumer, Reservation, ReserveError, Ring, TryPushError};
use super::sync::{Arc, DataArc};
use crate::context::InboundBody;
use crate::pipeline::metrics::{LaneCounters, LaneStats};
use crate::transport::Ack;
use crate::{Envelope, Headers, OutboundMessage};

/// A plain record's key and headers, boxed: most records have neither,
/// and a lane slot stays within one cache line without them.
#[derive(Clone)]
pub(crate) struct Meta {
    pub(crate) key: Option<DataArc<str>>,
    pub(crate) headers: Headers,
}

/// What a lane carries.
pub(crate) enum Body {
    /// A plain message (or an encoded envelope from a broker).
    Plain {
        payload: Bytes,
        meta: Option<Box<Meta>>,
    },
    /// An envelope published in-process: handed over without encoding.
    Envelope(DataArc<Envelope>),
}

impl Body {
    /// A plain record without key or headers.
    #[inline]
    pub(crate) fn plain(payload: Bytes) -> Body {
        Body::Plain {
            payload,
            meta: None,
        }
    }

    /// A plain record with an optional key and headers.
    pub(crate) fn plain_with(payload: Bytes, key: Option<DataArc<str>>, headers: Headers) -> Body {
        let meta = (key.is_some() || !headers.is_empty()).then(|| Box::new(Meta { key, headers }));
        Body::Plain { payload, meta }
    }

    /// The routing key.
    #[inline]
    pub(crate) fn key(&self) -> Option<&str> {
        match self {
            Body::Plain { meta, .. } => meta.as_ref().and_then(|m| m.key.as_deref()),
            Body::Envelope(e) => Some(&e.aggregate_id),
        }
    }

    /// Payload, key and headers of a plain record, cloned (reference
    /// counts; headers only when present). For an envelope: its binary
    /// encoding, aggregate ID and headers.
    pub(crate) fn parts(&self) -> (Bytes, Option<DataArc<str>>, Headers) {
        self.inbound().parts()
    }

    /// The record as handler message types see it (public types only).
    #[inline]
    pub(crate) fn inbound(&self) -> InboundBody<'_> {
        match self {
            Body::Plain { payload, meta } => InboundBody::Plain {
                payload,
                key: meta.as_ref().and_then(|m| m.key.as_ref()),
                headers: meta.as_ref().map(|m| &m.headers),
            },
            Body::Envelope(e) => InboundBody::Envelope(e),
        }
    }

    /// The record of an outbound plain message.
    pub(crate) fn from_outbound(msg: OutboundMessage) -> Body {
        Body::plain_with(msg.payload, msg.key, msg.headers)
    }

    /// The payload handed back by a refused plain publish (an envelope's
    /// binary encoding, should one be refused there).
    pub(crate) fn into_payload(self) -> Bytes {
        match self {
            Body::Plain { payload, .. } => payload,
            Body::Envelope(e) => e.encode(),
        }
    }

    /// The message handed back by a refused `publish_with`.
    pub(crate) fn into_outbound(self) -> OutboundMessage {
        let (payload, key, headers) = self.parts();
        OutboundMessage {
            payload,
            key,
            headers,
        }
    }

    /// The envelope handed back by a refused envelope publish: the original
    /// when no lane shares it, else a copy.
    pub(crate) fn into_envelope(self) -> Envelope {
        match self {
            Body::Envelope(e) => DataArc::try_unwrap(e).unwrap_or_else(|e| (*e).clone()),
            Body::Plain { .. } => unreachable!("an envelope publish routes an envelope body"),
        }
    }

    /// A copy for another subscription of a fan-out (reference counts only,
    /// plus the boxed key and headers if any).
    pub(crate) fn share(&self) -> Body {
        match self {
            Body::Plain { payload, meta } => Body::Plain {
                payload: payload.clone(),
                meta: meta.clone(),
            },
            Body::Envelope(e) => Body::Envelope(e.clone()),
        }
    }
}

/// One record in a lane.
pub(crate) struct Delivery {
    pub(crate) body: Body,
    /// Settlement handle (brokers), with the broker's redelivery count.
    pub(crate) ack: Ack,
}

impl Delivery {
    /// A fresh in-process record.
    #[inline]
    pub(crate) fn new(body: Body) -> Self {
        Self {
            body,
            ack: Ack::NONE,
        }
    }

    /// A fresh in-process record for a wildcard subscription, carrying the
    /// exact topic it was published to.
    pub(crate) fn in_topic(body: Body, topic: &str) -> Self {
        Self {
            body,
            ack: Ack::in_topic(topic),
        }
    }
}

/// Where a record goes among a subscription's lanes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Route {
    /// `key_hash(key)`: always the same lane.
    Keyed(u64),
    /// Round-robin cursor value: any lane will do.
    Spread(u32),
}

impl Route {
    /// The route of a body: keyed when it has a key.
    #[inline]
    pub(crate) fn of(body: &Body) -> Route {
        match body.key() {
            Some(k) => Route::Keyed(crate::key_hash(k.as_bytes())),
            None => Route::Spread(super::route::next_round_robin()),
        }
    }
}

/// One lane: a ring plus its worker's counters.
pub(crate) struct Lane {
    pub(crate) ring: Arc<Ring<Delivery>>,
    pub(crate) counters: CachePadded<LaneCounters>,
}

impl Lane {
    /// True when everything that entered the lane has been processed.
    pub(crate) fn is_idle(&self) -> bool {
        self.counters.processed.get() == self.ring.claimed()
    }

    /// Ring positions fully processed so far (monotone).
    pub(crate) fn processed(&self) -> u64 {
        self.counters.processed.get()
    }

    /// Records accepted but not yet fully processed.
    pub(crate) fn pending(&self) -> u64 {
        self.ring
            .claimed()
            .saturating_sub(self.counters.processed.get())
    }
}

/// The lanes of one subscription.
pub(crate) struct Lanes {
    lanes: Box<[Lane]>,
    /// `len - 1` when the lane count is a power of two: `x % len` is then
    /// `x & mask`, without a division on every publish.
    mask: Option<u64>,
}

impl Lanes {
    /// `count` lanes of `capacity` slots each, with their consumers.
    pub(crate) fn new(count: usize, capacity: usize) -> (Self, Vec<Consumer<Delivery>>) {
        let mut consumers = Vec::with_capacity(count);
        let lanes = (0..count.max(1))
            .map(|_| {
                let (ring, consumer) = Ring::with_capacity(capacity);
                consumers.push(consumer);
                Lane {
                    ring,
                    counters: CachePadded::new(LaneCounters::default()),
                }
            })
            .collect::<Box<[Lane]>>();
        let n = lanes.len() as u64;
        let mask = n.is_power_of_two().then(|| n - 1);
        (Self { lanes, mask }, consumers)
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.len()
    }

    pub(crate) fn get(&self, i: usize) -> &Lane {
        &self.lanes[i]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Lane> {
        self.lanes.iter()
    }

    /// The lane for `route`: `hash % len` for a keyed route (the stable
    /// mapping), the cursor modulo `len` for a spread one.
    #[inline]
    pub(crate) fn first_choice(&self, route: Route) -> usize {
        let x = match route {
            Route::Keyed(h) => h,
            Route::Spread(rr) => u64::from(rr),
        };
        match self.mask {
            Some(mask) => (x & mask) as usize,
            None => (x % self.lanes.len() as u64) as usize,
        }
    }

    /// Reserves a slot on the lane for `route` without waiting. Unkeyed
    /// routes try every lane before reporting `Full`.
    ///
    /// The first choice is inlined into the publish path and the others
    /// are a call (one call for both cost 25 instructions per publish,
    /// passing the reservation back through memory).
    #[inline(always)]
    pub(crate) fn try_reserve(
        &self,
        route: Route,
    ) -> Result<Reservation<'_, Delivery>, ReserveError> {
        let first = self.first_choice(route);
        match self.lanes[first].ring.try_reserve() {
            Err(ReserveError::Full) if matches!(route, Route::Spread(_)) => self.try_others(first),
            other => other,
        }
    }

    /// [`try_reserve`](Self::try_reserve) of an unkeyed record whose first
    /// choice was full: the other lanes in turn.
    #[inline(never)]
    fn try_others(&self, first: usize) -> Result<Reservation<'_, Delivery>, ReserveError> {
        let n = self.lanes.len();
        for i in 1..n {
            match self.lanes[(first + i) % n].ring.try_reserve() {
                Err(ReserveError::Full) => continue,
                other => return other,
            }
        }
        Err(ReserveError::Full)
    }

    /// Pushes without waiting.
    #[inline(always)]
    pub(crate) fn try_push(&self, d: Delivery, route: Route) -> Result<(), TryPushError<Delivery>> {
        match self.try_reserve(route) {
            Ok(r) => {
                r.write(d);
                Ok(())
            }
            Err(ReserveError::Full) => Err(TryPushError::Full(d)),
            Err(ReserveError::Closed) => Err(TryPushError::Closed(d)),
        }
    }

    /// Pushes, waiting for room on the first-choice lane. `Err` hands the
    /// record back when the lanes are closed.
    pub(crate) async fn push(&self, d: Delivery, route: Route) -> Result<(), Delivery> {
        let d = match self.try_push(d, route) {
            Ok(()) => return Ok(()),
            Err(TryPushError::Closed(d)) => return Err(d),
            Err(TryPushError::Full(d)) => d,
        };
        self.lanes[self.first_choice(route)].ring.push(d).await
    }

    /// Closes every lane's ring.
    pub(crate) fn close(&self) {
        for lane in self.lanes.iter() {
            lane.ring.close();
        }
    }

    /// Per-lane stats.
    pub(crate) fn stats(&self) -> Vec<LaneStats> {
        self.lanes
            .iter()
            .map(|l| LaneStats::read(&l.counters, l.ring.len()))
            .collect()
    }
}
