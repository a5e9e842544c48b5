//! The in-process transport: the engine's rings are the transport.
//!
//! A publish is the engine's fan-out itself ([`crate::engine::route`]):
//! the registry snapshot names the topic's targets and the record goes
//! straight into their lanes, unencoded (payloads are shared `Bytes`,
//! envelopes shared `Arc<Envelope>`s). Nothing is stored for absent
//! subscribers, nothing is acknowledged (in-process records carry no ack
//! handle), and a dead letter to a topic nobody subscribes to is gone,
//! which the lane counts as `dropped`.
//!
//! Topic options a broker would honour (retention, replicas, partitions)
//! have no meaning here; they are accepted and warned about once.

use crate::engine::lanes::Body;
use crate::engine::registry::Registry;
use crate::engine::route::{self, RouteNow, Routed, TryRouteError};
use crate::engine::TopicEntry;

/// The memory transport. Stateless: the bus's registry and lanes are all
/// it needs.
#[derive(Debug, Default)]
pub(crate) struct Memory;

impl Memory {
    /// Routes the body in `slot` into the lanes of `topic`'s targets,
    /// without waiting (see [`route::route_now`]).
    #[inline]
    pub(crate) fn route_now(
        &self,
        bus: u64,
        registry: &Registry<TopicEntry>,
        topic: &str,
        slot: &mut Option<Body>,
    ) -> RouteNow {
        route::route_now(bus, registry, topic, slot)
    }

    /// Routes `body` all-or-nothing without waiting (see
    /// [`route::try_route`]).
    #[inline]
    pub(crate) fn try_route(
        &self,
        bus: u64,
        registry: &Registry<TopicEntry>,
        topic: &str,
        body: Body,
    ) -> Result<Routed, TryRouteError> {
        route::try_route(bus, registry, topic, body)
    }
}
