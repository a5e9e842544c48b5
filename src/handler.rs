//! Handlers and the errors they return.
//!
//! A handler is anything implementing [`Handler<M>`]: most often an async
//! closure `|msg: Message| async move { ... }` or `|ev: Envelope| async move
//! { ... }` (or `|ev: Arc<Envelope>|`, sharing the lane's envelope, see
//! [`FromEnvelope`]), or a type with an `async fn handle`. Lane workers are generic
//! over the handler type, so the hot path has no boxing and no dynamic
//! dispatch.
//!
//! Every handler can see its delivery [`Context`] (topic,
//! attempt, redeliveries): plain handlers through
//! [`Message::context`](crate::Message::context), envelope handlers by
//! taking [`Event`].
//!
//! A struct handler shared with the rest of a service is subscribed as an
//! `Arc<MyHandler>`: `Arc<H>` is a handler whenever `H` is.
//!
//! A [`HandlerError`] carries its [`ErrorClass`]: `Retryable` failures are
//! retried with backoff and dead-lettered once the attempts run out;
//! `Permanent` ones (poison messages) go straight to the dead-letter topic;
//! `Skip` acknowledges the message without handling it. Any
//! `std::error::Error` converts into a retryable `HandlerError`, so `?`
//! works inside handlers. A handler that panics counts as a retryable
//! failure and its lane carries on.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::context::{Context, Event, Inbound, InboundBody};
use crate::{Envelope, Message};

/// Handles messages of type `M`: [`Message`] for
/// [`subscribe`](crate::Bus::subscribe); `Envelope`, `Arc<Envelope>` or
/// [`Event`] for
/// [`subscribe_envelope`](crate::Bus::subscribe_envelope).
///
/// Implemented for every `Fn(M) -> impl Future<Output = Result<(),
/// HandlerError>>` closure, and for `Arc<H>` when `H` is a handler.
///
/// A panic anywhere in a handler (in `handle` itself or in the future it
/// returns) is a failed attempt, retried like a retryable error; the lane
/// carries on.
///
/// # Examples
///
/// ```
/// use lanebus::{Envelope, Handler, HandlerError};
///
/// struct Projector;
///
/// impl Handler<Envelope> for Projector {
///     async fn handle(&self, ev: Envelope) -> Result<(), HandlerError> {
///         if ev.event_type.is_empty() {
///             return Err(HandlerError::permanent("event without a type"));
///         }
///         Ok(())
///     }
/// }
///
/// // Shared with the rest of the service:
/// # async fn subscribe(bus: lanebus::Bus) -> Result<(), lanebus::SubscribeError> {
/// let projector = std::sync::Arc::new(Projector);
/// let _sub = bus.subscribe_envelope("orders.events", projector.clone()).await?;
/// # Ok(()) }
/// ```
///
/// A value that is not a handler is refused at compile time with a message
/// naming what a handler can be (here a struct that implements `Handler`
/// for envelopes, subscribed for plain messages):
///
/// ```compile_fail
/// # use lanebus::{Envelope, Handler, HandlerError};
/// # struct Projector;
/// # impl Handler<Envelope> for Projector {
/// #     async fn handle(&self, _ev: Envelope) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # async fn subscribe(bus: lanebus::Bus) -> Result<(), lanebus::SubscribeError> {
/// // error: `Projector` is not a lanebus handler of `Message`
/// let _sub = bus.subscribe("orders.events", Projector).await?;
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a lanebus handler of `{M}`",
    label = "not a `Handler<{M}>`",
    note = "a handler is an async closure `|msg: {M}| async move {{ .. Ok::<(), HandlerError>(()) }}`, a type implementing `Handler<{M}>`, or an `Arc` of one",
    note = "plain subscriptions take `Message`; envelope subscriptions take `Envelope`, `Arc<Envelope>` or `Event`"
)]
pub trait Handler<M>: Send + Sync + 'static {
    /// Handles one message. Called once per attempt.
    fn handle(&self, msg: M) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

impl<M, F, Fut> Handler<M> for F
where
    F: Fn(M) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    #[inline]
    fn handle(&self, msg: M) -> impl Future<Output = Result<(), HandlerError>> + Send {
        self(msg)
    }
}

impl<M, H: Handler<M>> Handler<M> for Arc<H> {
    #[inline]
    fn handle(&self, msg: M) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (**self).handle(msg)
    }
}

/// What an envelope handler can take: [`Envelope`],
/// `Arc<Envelope>` or [`Event`].
///
/// The lane keeps every envelope until it is settled, for retries and the
/// dead-letter topic. A handler taking `Envelope` gets its own copy per
/// attempt; one taking `Arc<Envelope>` shares the lane's, which costs two
/// reference-count operations, and is the faster choice when the handler
/// only reads the envelope; one taking `Event` shares it too and also sees
/// the delivery [`Context`].
///
/// Sealed: implemented for those three types only.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use lanebus::{Bus, Envelope, HandlerError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::memory();
/// let _projection = bus
///     .subscribe_envelope("orders.events", |ev: Arc<Envelope>| async move {
///         println!("{} v{}", ev.aggregate_id, ev.event_version);
///         Ok::<(), HandlerError>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub trait FromEnvelope: sealed::Incoming {}

impl FromEnvelope for Envelope {}
impl FromEnvelope for Arc<Envelope> {}
impl FromEnvelope for Event {}

/// The sealing trait: how each handler message type is built from a lane
/// record. `pub` inside a private module, so public traits can name it as a
/// supertrait while users can neither name nor implement it.
pub(crate) mod sealed {
    use super::*;

    pub trait Incoming: Sized + Send + 'static {
        /// `plain` or `envelope`, for stats.
        const KIND: &'static str;

        /// Builds the handler's message for one attempt; `Err` explains
        /// why the record is malformed.
        #[doc(hidden)]
        #[allow(private_interfaces)]
        fn build(record: Inbound<'_>) -> Result<Self, String>;

        /// The envelope this message carries, for the handler span's
        /// fields (`None` for plain messages).
        #[doc(hidden)]
        #[inline]
        fn envelope(&self) -> Option<&Envelope> {
            None
        }
    }

    impl Incoming for Message {
        const KIND: &'static str = "plain";

        // Always inlined: out of line (the worker grew), its result was
        // written to memory and read back in pieces, 9% of the plain row.
        #[inline(always)]
        #[allow(private_interfaces)]
        fn build(record: Inbound<'_>) -> Result<Self, String> {
            let context = record.context();
            let (payload, key, headers) = record.body.parts();
            Ok(Message {
                context,
                payload,
                key,
                headers,
            })
        }
    }

    fn decode(payload: &bytes::Bytes) -> Result<Envelope, String> {
        Envelope::decode_bytes(payload).map_err(|e| format!("malformed envelope: {e}"))
    }

    impl Incoming for Arc<Envelope> {
        const KIND: &'static str = "envelope";

        /// Shared with the lane: no copy for in-process envelopes.
        #[inline]
        #[allow(private_interfaces)]
        fn build(record: Inbound<'_>) -> Result<Self, String> {
            match record.body {
                InboundBody::Envelope(e) => Ok(e.clone()),
                InboundBody::Plain { payload, .. } => decode(payload).map(Arc::new),
            }
        }

        #[inline]
        fn envelope(&self) -> Option<&Envelope> {
            Some(self)
        }
    }

    impl Incoming for Envelope {
        const KIND: &'static str = "envelope";

        /// A copy per attempt: the lane keeps the original for retries and
        /// the dead-letter topic.
        #[inline]
        #[allow(private_interfaces)]
        fn build(record: Inbound<'_>) -> Result<Self, String> {
            match record.body {
                InboundBody::Envelope(e) => Ok((**e).clone()),
                InboundBody::Plain { payload, .. } => decode(payload),
            }
        }

        #[inline]
        fn envelope(&self) -> Option<&Envelope> {
            Some(self)
        }
    }

    impl Incoming for Event {
        const KIND: &'static str = "envelope";

        #[inline]
        #[allow(private_interfaces)]
        fn build(record: Inbound<'_>) -> Result<Self, String> {
            let headers = match &record.body {
                InboundBody::Plain { headers, .. } => headers.cloned().unwrap_or_default(),
                InboundBody::Envelope(_) => crate::Headers::new(),
            };
            let context: Context = record.context();
            let envelope = <Arc<Envelope> as Incoming>::build(record)?;
            Ok(Event::new(envelope, context, headers))
        }

        #[inline]
        fn envelope(&self) -> Option<&Envelope> {
            Some(self)
        }
    }
}

/// How the engine treats a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Try again after a backoff; dead-letter when attempts run out.
    Retryable,
    /// Never retry: dead-letter at once (a poison message).
    Permanent,
    /// Acknowledge and drop on purpose, without dead-lettering.
    Skip,
}

impl ErrorClass {
    /// The lower-case name used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retryable => "retryable",
            Self::Permanent => "permanent",
            Self::Skip => "skip",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error a handler returns.
///
/// Like `anyhow::Error`, it does not implement `std::error::Error` itself,
/// so that every error type converts into it with `?` (as retryable).
///
/// # Examples
///
/// ```
/// use lanebus::{ErrorClass, HandlerError};
///
/// fn parse(bytes: &[u8]) -> Result<u32, HandlerError> {
///     let text = std::str::from_utf8(bytes).map_err(HandlerError::permanent)?;
///     Ok(text.parse::<u32>()?) // a ParseIntError becomes retryable
/// }
/// assert_eq!(parse(b"\xff").unwrap_err().class(), ErrorClass::Permanent);
/// assert_eq!(parse(b"x").unwrap_err().class(), ErrorClass::Retryable);
/// ```
pub struct HandlerError {
    class: ErrorClass,
    source: BoxError,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn retryable(err: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Retryable, err)
    }

    /// A failure no retry can fix: dead-letter at once.
    pub fn permanent(err: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Permanent, err)
    }

    /// Acknowledge the message without handling it.
    pub fn skip(reason: impl Into<BoxError>) -> Self {
        Self::new(ErrorClass::Skip, reason)
    }

    /// An error of the given class.
    pub fn new(class: ErrorClass, err: impl Into<BoxError>) -> Self {
        Self {
            class,
            source: err.into(),
        }
    }

    /// Its class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The underlying error.
    pub fn source(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.source
    }

    /// The underlying error, owned.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for HandlerError {
    fn from(err: E) -> Self {
        Self::retryable(err)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("class", &self.class)
            .field("source", &self.source)
            .finish()
    }
}
