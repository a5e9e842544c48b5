//! Handlers and the errors they return.
//!
//! A handler is anything implementing [`Handler<M>`]: most often an async
//! closure `|msg: Message| async move { ... }` or `|ev: Envelope| async move
//! { ... }` (or `|ev: Arc<Envelope>|`, sharing the lane's envelope, see
//! [`FromEnvelope`]), or a type with an `async fn handle`. Lane workers are generic
//! over the handler type, so the hot path has no boxing and no dynamic
//! dispatch.
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

/// Handles messages of type `M` ([`Message`](crate::Message) or
/// [`Envelope`](crate::Envelope)).
///
/// Implemented for every `Fn(M) -> impl Future<Output = Result<(),
/// HandlerError>>` closure.
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
/// ```
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

/// What an envelope handler can take: [`Envelope`](crate::Envelope) or
/// `Arc<Envelope>`.
///
/// The lane keeps every envelope until it is settled, for retries and the
/// dead-letter topic. A handler taking `Envelope` gets its own copy per
/// attempt (three `String` clones); one taking `Arc<Envelope>` shares the
/// lane's, which costs two reference-count operations, and is the faster
/// choice when the handler only reads the envelope.
///
/// Sealed: implemented for those two types only.
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
pub trait FromEnvelope: crate::engine::dispatch::Deliverable {}

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
