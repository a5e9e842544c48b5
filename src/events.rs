//! The bus's state-change events: one stream for backlog, recovery mode,
//! stalls, publisher backlog and broker connection changes.
//!
//! # Algorithm
//!
//! A bus owns one bounded tokio `broadcast` channel ([`EVENT_CAPACITY`]
//! events). Monitors (`pipeline::monitor`) and the NATS connection's event
//! forwarder send into it; [`Bus::events`](crate::Bus::events) hands out
//! receivers. Sending never waits: with no receiver the event is dropped,
//! and a receiver that falls more than [`EVENT_CAPACITY`] events behind
//! loses the oldest and is told how many (`RecvError::Lagged(n)`), then
//! goes on with the oldest it still has.
//!
//! # Invariants
//!
//! - Events are sent only on state *changes* (entered/left), never per
//!   check, so a quiet bus sends nothing.
//! - The hot paths never send events.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Events a receiver may fall behind by before it loses the oldest.
pub const EVENT_CAPACITY: usize = 256;

/// One subscription's backlog as a check saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BacklogState {
    /// The subscription's ID.
    pub subscription: u64,
    /// Its topic (or pattern).
    pub topic: String,
    /// Its group, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Records waiting (memory: in the lanes; JetStream: the consumer's
    /// pending count plus the lanes; Kafka: the summed partition lag).
    pub backlog: u64,
    /// Age of the oldest waiting record, where the transport knows it:
    /// memory → estimated within one check interval; JetStream → from the
    /// stored time of the consumer's oldest unacked message; Kafka → from
    /// the timestamp of the oldest unsettled record among those the
    /// consumer fetched (records not fetched yet are not seen). `None`
    /// when nothing waits.
    #[serde(
        with = "crate::options::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_age: Option<Duration>,
    /// True while the subscription is in recovery mode (as handlers see it,
    /// a manual setting included).
    pub recovering: bool,
    /// True when the mode was set by hand
    /// ([`Subscription::set_recovering`](crate::Subscription::set_recovering)).
    pub manual: bool,
}

/// A lane stuck on one record, or (Kafka) a partition whose commits one
/// record holds back.
///
/// A lane stall has `partition: None`; a partition stall names the
/// partition (`partition: Some(p)`, `topic` then the partition's topic,
/// which for a wildcard subscription is one of those it reads, and `lane`
/// 0: its record may wait in any lane).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StallState {
    /// The subscription's ID.
    pub subscription: u64,
    /// Its topic (or pattern); for a partition stall, the partition's
    /// topic.
    pub topic: String,
    /// Its group, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The lane (0 for a partition stall).
    pub lane: usize,
    /// The Kafka partition whose oldest unsettled record has been held
    /// past `stall_after` (its commits cannot move past that record);
    /// `None` for a lane stall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// How long the record had been in the handler (lane) or held
    /// unsettled since it was handed to the lanes (partition); 0 once the
    /// stall is over.
    #[serde(with = "crate::options::duration")]
    pub age: Duration,
}

/// A state change of the bus; see [`Bus::events`](crate::Bus::events).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use lanebus::{Bus, BusEvent, Message};
///
/// let bus = Bus::memory();
/// let mut events = bus.events();
/// let sub = bus.subscribe("jobs", |_m: Message| async { Ok::<(), lanebus::HandlerError>(()) }).await?;
/// sub.set_recovering(true);
/// let event = events.recv().await?;
/// assert!(matches!(&event, BusEvent::RecoveryEntered(s) if s.manual));
/// assert_eq!(event.to_string(), format!("jobs#{} recovering: backlog 0", sub.id()));
/// assert_eq!(serde_json::to_value(&event)?["recovery_entered"]["topic"], "jobs");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BusEvent {
    /// A subscription entered recovery mode (automatically: its backlog
    /// rose above a threshold; or by hand).
    RecoveryEntered(BacklogState),
    /// A subscription left recovery mode (its backlog stayed below the
    /// thresholds for the hold time; or by hand).
    RecoveryLeft(BacklogState),
    /// A lane's current record has been in the handler past the stall
    /// threshold, or (Kafka, `partition` set) a partition's oldest
    /// unsettled record has been held that long.
    StallEntered(StallState),
    /// The stalled lane moved on, or the stalled partition's commits can
    /// move again (age 0).
    StallCleared(StallState),
    /// Publishers are backlogged (`backlogged: true`) or no longer are.
    PublisherBacklog(PublisherBacklogState),
    /// A broker connection event (NATS: disconnects, reconnects, …), as
    /// [`Bus::connection_events`](crate::Bus::connection_events) gives them.
    #[cfg(feature = "nats")]
    #[serde(serialize_with = "display")]
    Connection(crate::ConnectionEvent),
    /// The background health loop saw a status change
    /// ([`HealthOptions::interval`](crate::HealthOptions)).
    Health(crate::HealthReport),
}

/// The publisher side's backlog at a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PublisherBacklogState {
    /// Publishes waiting (for lane room on memory, for the broker's ack on
    /// NATS and Kafka) at the check.
    pub waiting: u64,
    /// True when entering the backlog, false when leaving it.
    pub backlogged: bool,
}

#[cfg(feature = "nats")]
fn display<S: serde::Serializer>(v: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl fmt::Display for BusEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusEvent::RecoveryEntered(s) => write!(
                f,
                "{}#{} recovering: backlog {}",
                s.topic, s.subscription, s.backlog
            ),
            BusEvent::RecoveryLeft(s) => write!(
                f,
                "{}#{} recovered: backlog {}",
                s.topic, s.subscription, s.backlog
            ),
            BusEvent::StallEntered(s) if s.partition.is_some() => write!(
                f,
                "{}#{} partition {} stalled for {}",
                s.topic,
                s.subscription,
                s.partition.unwrap_or_default(),
                short(s.age)
            ),
            BusEvent::StallCleared(s) if s.partition.is_some() => write!(
                f,
                "{}#{} partition {} moving again",
                s.topic,
                s.subscription,
                s.partition.unwrap_or_default()
            ),
            BusEvent::StallEntered(s) => write!(
                f,
                "{}#{} lane {} stalled for {}",
                s.topic,
                s.subscription,
                s.lane,
                short(s.age)
            ),
            BusEvent::StallCleared(s) => write!(
                f,
                "{}#{} lane {} moving again",
                s.topic, s.subscription, s.lane
            ),
            BusEvent::PublisherBacklog(p) if p.backlogged => {
                write!(f, "publisher backlog: {} waiting", p.waiting)
            }
            BusEvent::PublisherBacklog(p) => {
                write!(f, "publisher backlog over: {} waiting", p.waiting)
            }
            #[cfg(feature = "nats")]
            BusEvent::Connection(c) => write!(f, "connection: {c}"),
            BusEvent::Health(r) => write!(f, "health: {}", r.status),
        }
    }
}

/// A duration as short text, to the millisecond (`1s 354ms`).
pub(crate) fn short(d: Duration) -> String {
    crate::options::duration::format(Duration::from_millis(d.as_millis() as u64))
}

/// The sending side of a bus's event stream.
#[derive(Debug)]
pub(crate) struct EventHub {
    tx: tokio::sync::broadcast::Sender<BusEvent>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self {
            tx: tokio::sync::broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl EventHub {
    /// Sends `event` to the current receivers (none: dropped).
    pub(crate) fn emit(&self, event: BusEvent) {
        tracing::info!(%event, "bus event");
        let _ = self.tx.send(event);
    }

    /// A receiver of the events sent from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }

    /// A sender for a forwarding task.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn sender(&self) -> tokio::sync::broadcast::Sender<BusEvent> {
        self.tx.clone()
    }
}

impl crate::Bus {
    /// The bus's state changes from now on ([`BusEvent`](crate::BusEvent)):
    /// a subscription entering or leaving recovery mode, a lane (or a Kafka
    /// partition) stalling or
    /// moving again, publishers backlogged or no longer, and on NATS the
    /// connection's events (as [`connection_events`](Self::connection_events)
    /// gives them, wrapped in `BusEvent::Connection`).
    ///
    /// The stream is a bounded broadcast channel of
    /// [`EVENT_CAPACITY`](crate::EVENT_CAPACITY) events: sending never
    /// waits, so a receiver that falls more than that far behind loses the
    /// oldest and gets `RecvError::Lagged(n)` telling how many, then goes
    /// on. Events are sent on changes only.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use lanebus::{Bus, BusEvent, Message};
    ///
    /// let bus = Bus::memory();
    /// let mut events = bus.events();
    /// let sub = bus.subscribe("jobs", |_m: Message| async { Ok::<(), lanebus::HandlerError>(()) }).await?;
    /// sub.set_recovering(true);
    /// match events.recv().await? {
    ///     BusEvent::RecoveryEntered(state) => assert!(state.manual && state.recovering),
    ///     other => panic!("unexpected {other}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<crate::BusEvent> {
        self.inner.events.subscribe()
    }
}

/// Forwards a NATS connection's events into the bus's stream (counting
/// reconnects); the task ends when the connection's sender is dropped
/// with the bus.
#[cfg(feature = "nats")]
pub(crate) fn forward_connection_events(
    runtime: &tokio::runtime::Handle,
    mut from: tokio::sync::broadcast::Receiver<crate::ConnectionEvent>,
    to: tokio::sync::broadcast::Sender<BusEvent>,
    reconnects: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    drop(runtime.spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match from.recv().await {
                Ok(e) => {
                    if e == crate::ConnectionEvent::Reconnected {
                        reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    drop(to.send(BusEvent::Connection(e)));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(recovering: bool) -> BacklogState {
        BacklogState {
            subscription: 3,
            topic: "orders".into(),
            group: Some("billing".into()),
            backlog: 10_000,
            oldest_age: Some(Duration::from_millis(1500)),
            recovering,
            manual: false,
        }
    }

    #[test]
    fn display_is_short_and_lower_case() {
        assert_eq!(
            BusEvent::RecoveryEntered(state(true)).to_string(),
            "orders#3 recovering: backlog 10000"
        );
        assert_eq!(
            BusEvent::RecoveryLeft(state(false)).to_string(),
            "orders#3 recovered: backlog 10000"
        );
        let stall = StallState {
            subscription: 3,
            topic: "orders".into(),
            group: None,
            lane: 2,
            partition: None,
            age: Duration::from_secs(31),
        };
        assert_eq!(
            BusEvent::StallEntered(stall.clone()).to_string(),
            "orders#3 lane 2 stalled for 31s"
        );
        assert_eq!(
            BusEvent::StallCleared(stall.clone()).to_string(),
            "orders#3 lane 2 moving again"
        );
        let v = serde_json::to_value(BusEvent::StallCleared(stall.clone())).unwrap();
        assert!(v["stall_cleared"].get("partition").is_none(), "{v}");
        let partition = StallState {
            lane: 0,
            partition: Some(4),
            ..stall
        };
        assert_eq!(
            BusEvent::StallEntered(partition.clone()).to_string(),
            "orders#3 partition 4 stalled for 31s"
        );
        assert_eq!(
            BusEvent::StallCleared(partition.clone()).to_string(),
            "orders#3 partition 4 moving again"
        );
        let v = serde_json::to_value(BusEvent::StallEntered(partition)).unwrap();
        assert_eq!(v["stall_entered"]["partition"], 4);
        assert_eq!(v["stall_entered"]["age"], "31s");
    }

    #[test]
    fn serializes_with_humantime_ages() {
        let v = serde_json::to_value(BusEvent::RecoveryEntered(state(true))).unwrap();
        assert_eq!(v["recovery_entered"]["oldest_age"], "1500ms");
        assert_eq!(v["recovery_entered"]["group"], "billing");
        assert_eq!(v["recovery_entered"]["recovering"], true);
    }

    #[tokio::test]
    async fn a_lagging_receiver_is_told_how_many_it_lost() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe();
        for waiting in 0..(EVENT_CAPACITY as u64 + 5) {
            hub.emit(BusEvent::PublisherBacklog(PublisherBacklogState {
                waiting,
                backlogged: true,
            }));
        }
        match rx.recv().await {
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 5),
            other => panic!("expected a lag report, got {other:?}"),
        }
        match rx.recv().await.unwrap() {
            BusEvent::PublisherBacklog(p) => assert_eq!(p.waiting, 5),
            other => panic!("unexpected {other:?}"),
        }
    }
}
