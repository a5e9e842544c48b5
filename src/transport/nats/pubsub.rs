//! Core NATS behind the bus: publish and subscribe with no stream and no
//! ack (at-most-once, as fast as the server allows).
//!
//! # Algorithm
//!
//! - **Publish**: the record's payload goes out as the message body (an
//!   envelope as its binary encoding), its routing key (an envelope's
//!   aggregate ID) in the `lanebus-key` header, and every other header as a
//!   NATS header of the same name. `publish` returns once the client has
//!   queued the message for its connection (async-nats writes and flushes
//!   it in the background); nothing confirms that the server got it.
//!   `try_publish` polls the client's queue once without waiting: when the
//!   queue is full the record is handed back as `Full`.
//! - **Subscribe**: one client subscription per bus subscription (a queue
//!   subscription when the options name a group, so a group shares the work
//!   inside the server; `*` and `>` are the server's own wildcards), then a
//!   server round trip, so the server knows the subscription before
//!   `subscribe` returns. A consumer task turns each message into a record (payload,
//!   key from `lanebus-key`, the other headers; the exact subject when the
//!   subscription is a wildcard) and awaits the subscription's
//!   [`deliver`](crate::engine::SubscriptionCore::deliver), so it waits
//!   while the lanes are full and the client buffers meanwhile. It checks
//!   the stop signal once per burst of up to 64 buffered messages, not per
//!   message.
//! - **Stop** (unsubscribe, close): the task makes a server round trip (a
//!   marker message through a private inbox: once it is back, the client
//!   holds every message the server sent this subscription for the
//!   connection's earlier publishes), unsubscribes, delivers
//!   what the client had received, and closes the lanes, which the lane
//!   workers drain.
//!
//! # Invariants
//!
//! - A publish never panics on a header async-nats cannot carry (a name
//!   with `:` or control characters, a value with CR or LF): it is a
//!   [`TransportError`] that hands the value back.
//! - At-most-once, and said so: the client drops messages for a
//!   subscription whose buffer (64 Ki messages) overflows while the lanes
//!   are full, and reports it as [`ConnectionEvent::SlowConsumer`]; records
//!   in flight when a subscription stops are lost.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, HeaderMap, HeaderName, HeaderValue, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{broadcast, oneshot};

use super::ConnectionEvent;
use crate::engine::lanes::Body;
use crate::engine::SubscriptionCore;
use crate::transport::{Ack, Feed};
use crate::{Headers, TransportError, WireFormat};

/// The header that carries a record's routing key.
pub(crate) const KEY_HEADER: &str = "lanebus-key";
/// JetStream's de-duplication header (an envelope's event ID).
const MSG_ID_HEADER: &str = "Nats-Msg-Id";

fn error(
    message: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> TransportError {
    TransportError::new("nats", message, source)
}

/// The NATS flavor of the bus's transport: the client and the sender of
/// its connection events.
pub(crate) struct NatsCore {
    client: Client,
    events: broadcast::Sender<ConnectionEvent>,
    /// How long a flush (a server round trip) may take before it is given
    /// up on: the options' connect timeout.
    flush_within: Duration,
    /// How envelopes are written.
    format: WireFormat,
}

impl fmt::Debug for NatsCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCore")
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

impl NatsCore {
    /// The transport over a connected client.
    pub(crate) fn new(
        client: Client,
        events: broadcast::Sender<ConnectionEvent>,
        flush_within: Duration,
        format: WireFormat,
    ) -> Self {
        Self {
            client,
            events,
            flush_within,
            format,
        }
    }

    /// A receiver of the connection's events from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// Publishes `body` to the subject `topic`, waiting while the client's
    /// queue is full.
    pub(crate) async fn publish(&self, topic: &str, body: &Body) -> Result<(), TransportError> {
        let (payload, headers) = outbound(body, self.format)?;
        send(&self.client, topic, payload, headers).await
    }

    /// [`publish`](Self::publish) when it completes on its first poll:
    /// `None` when it would wait (the client's queue is full, or the task
    /// spent its cooperative budget: the caller then awaits `publish`,
    /// which yields to the runtime as every await on the client does).
    #[inline]
    pub(crate) fn publish_now(
        &self,
        topic: &str,
        body: &Body,
    ) -> Option<Result<(), TransportError>> {
        self.publish_once(topic, body, true)
    }

    /// Publishes `body` if the client's queue has room now; `Ok(false)`
    /// when it has none (nothing was sent).
    pub(crate) fn try_publish(&self, topic: &str, body: &Body) -> Result<bool, TransportError> {
        // Outside tokio's cooperative budget, so that a full queue is the
        // only reason for "not now".
        self.publish_once(topic, body, false)
            .map_or(Ok(false), |sent| sent.map(|()| true))
    }

    /// One poll of [`publish`](Self::publish), within the task's
    /// cooperative budget or outside it: `None` when it would wait. A
    /// dropped send future has sent nothing (the queue's send is
    /// cancel-safe).
    #[inline]
    fn publish_once(
        &self,
        topic: &str,
        body: &Body,
        budgeted: bool,
    ) -> Option<Result<(), TransportError>> {
        let (payload, headers) = match outbound(body, self.format) {
            Ok(parts) => parts,
            Err(e) => return Some(Err(e)),
        };
        let send = send(&self.client, topic, payload, headers);
        if budgeted {
            send.now_or_never()
        } else {
            tokio::task::unconstrained(send).now_or_never()
        }
    }

    /// Opens the client subscription for `core` and starts its consumer
    /// task on `runtime`.
    pub(crate) async fn subscribe(
        &self,
        core: &Arc<SubscriptionCore>,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Feed, TransportError> {
        let subject = core.topic.to_string();
        let sub = match &core.group {
            None => self.client.subscribe(subject).await,
            Some(group) => {
                self.client
                    .queue_subscribe(subject, group.to_string())
                    .await
            }
        }
        .map_err(|e| {
            error(
                format!("subscribe to {} failed", core.topic),
                Some(e.into()),
            )
        })?;
        // Best effort: when the server is away the subscription is made
        // on reconnect, and `subscribe` does not wait for that.
        let _ = self.flush().await;
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(consume(
            sub,
            core.clone(),
            self.client.clone(),
            self.flush_within,
            stopped,
        ));
        Ok(Feed::new(stop, task))
    }

    /// A server round trip (see [`flush`]): everything published before
    /// is at the server.
    pub(crate) async fn flush(&self) -> Result<(), TransportError> {
        flush(&self.client, self.flush_within).await
    }

    /// Drains the client (its subscriptions end, what it buffered is
    /// written) and closes the connection.
    pub(crate) async fn drain(&self) -> Result<(), TransportError> {
        self.client
            .drain()
            .await
            .map_err(|e| error("closing the connection failed", Some(e.into())))
    }

    /// The connection is up and the server answers.
    pub(crate) async fn health(&self) -> Result<(), TransportError> {
        match self.client.connection_state() {
            State::Connected => self.flush().await,
            state => Err(error(format!("connection is {state}"), None)),
        }
    }
}

/// A server round trip: a marker message to a fresh inbox this connection
/// subscribes to. The server handles one connection's operations in order
/// and writes to it in order, and the client hands incoming messages to
/// its subscriptions in order, so when the marker is back, every earlier
/// publish of this connection is at the server and every message the
/// server sent for this connection's subscriptions before it is in their
/// buffers. (`Client::flush` only writes the client's buffer out.)
async fn flush(client: &Client, within: Duration) -> Result<(), TransportError> {
    let trip = async {
        let inbox = client.new_inbox();
        let mut marker = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| error("round trip failed", Some(e.into())))?;
        client
            .publish(inbox, Bytes::new())
            .await
            .map_err(|e| error("round trip failed", Some(e.into())))?;
        match marker.next().await {
            Some(_) => Ok(()),
            None => Err(error("round trip failed: the client closed", None)),
        }
    };
    match tokio::time::timeout(within, trip).await {
        Ok(result) => result,
        Err(_) => Err(error(
            format!(
                "server round trip timed out (after {})",
                crate::options::duration::format(within)
            ),
            None,
        )),
    }
}

async fn send(
    client: &Client,
    topic: &str,
    payload: Bytes,
    headers: Option<HeaderMap>,
) -> Result<(), TransportError> {
    let subject = topic.to_owned();
    match headers {
        None => client.publish(subject, payload).await,
        Some(h) => client.publish_with_headers(subject, h, payload).await,
    }
    .map_err(|e| error("publish failed", Some(e.into())))
}

/// The payload and NATS headers of an outbound record. An envelope is
/// written in `format`, its aggregate ID in the key header and its event ID
/// in `Nats-Msg-Id` (JetStream's duplicate window drops a re-publish); its
/// own headers travel inside the encoding.
pub(crate) fn outbound(
    body: &Body,
    format: WireFormat,
) -> Result<(Bytes, Option<HeaderMap>), TransportError> {
    if let Body::Envelope(e) = body {
        let payload = match format {
            WireFormat::Json => e.encode_json().map_err(|err| {
                error(
                    format!("the envelope cannot be written in the json wire form: {err}"),
                    Some(Box::new(err)),
                )
            })?,
            _ => e.encode(),
        };
        let mut map = HeaderMap::new();
        map.insert(
            KEY_HEADER,
            header_value("the routing key", &e.aggregate_id)?,
        );
        map.insert(
            MSG_ID_HEADER,
            header_value("the event id", e.event_id.as_ref())?,
        );
        return Ok((payload, Some(map)));
    }
    let (payload, key, headers) = body.parts();
    if key.is_none() && headers.is_empty() {
        return Ok((payload, None));
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        if name == KEY_HEADER {
            return Err(error(
                format!("header `{KEY_HEADER}` is reserved for the routing key"),
                None,
            ));
        }
        let n = HeaderName::from_str(name).map_err(|_| {
            error(
                format!(
                    "header name {name:?} cannot be sent (no `:`, control or non-ascii characters)"
                ),
                None,
            )
        })?;
        map.append(n, header_value(name, value)?);
    }
    if let Some(key) = key {
        map.insert(KEY_HEADER, header_value("the routing key", &key)?);
    }
    Ok((payload, Some(map)))
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, TransportError> {
    HeaderValue::from_str(value).map_err(|_| {
        error(
            format!("{what:?} cannot be sent: its value holds a line break"),
            None,
        )
    })
}

/// The routing key (from [`KEY_HEADER`]) and the other headers of an
/// inbound message.
pub(crate) fn record_parts(map: Option<&HeaderMap>) -> (Option<Arc<str>>, Headers) {
    let mut key = None;
    let mut headers = Headers::new();
    if let Some(map) = map {
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            if name == KEY_HEADER {
                key = values.first().map(|v| Arc::from(v.as_str()));
            } else {
                for v in values {
                    headers.append(name, v.as_str());
                }
            }
        }
    }
    (key, headers)
}

/// The record and ack of an inbound message.
fn inbound(msg: async_nats::Message, wildcard: bool) -> (Body, Ack) {
    let ack = if wildcard {
        Ack::in_topic(msg.subject.as_str())
    } else {
        Ack::NONE
    };
    let (key, headers) = record_parts(msg.headers.as_ref());
    (Body::plain_with(msg.payload, key, headers), ack)
}

/// Messages the consumer task takes from the client's buffer between two
/// looks at the stop signal.
const BURST: usize = 64;

/// The consumer task of one subscription (see the module docs).
async fn consume(
    mut sub: Subscriber,
    core: Arc<SubscriptionCore>,
    client: Client,
    flush_within: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut stop => break,
            next = sub.next() => next,
        };
        let Some(msg) = next else {
            // The client is gone (the bus was dropped).
            core.lanes.close();
            return;
        };
        let (body, ack) = inbound(msg, core.wildcard);
        if core.deliver(body, ack).await.is_err() {
            return; // the lanes are closed already
        }
        // What the client already holds is taken without another `select!`
        // (which would poll, and re-register on, the stop signal per
        // message), up to `BURST` messages: the stop is still seen soon
        // under a steady stream.
        for _ in 0..BURST {
            let Some(Some(msg)) = sub.next().now_or_never() else {
                break;
            };
            let (body, ack) = inbound(msg, core.wildcard);
            if core.deliver(body, ack).await.is_err() {
                return;
            }
        }
    }
    // What the server sent before the round trip's marker is in the
    // client when the marker is back; after the unsubscribe the client
    // takes no more.
    let _ = flush(&client, flush_within).await;
    let _ = sub.unsubscribe().await;
    while let Some(msg) = sub.next().await {
        let (body, ack) = inbound(msg, core.wildcard);
        if core.deliver(body, ack).await.is_err() {
            break;
        }
    }
    core.lanes.close();
}
