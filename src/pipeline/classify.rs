//! Handler timeouts and error classifiers: how a lane worker decides what
//! a failed handler call was.
//!
//! # Algorithm
//!
//! - **Timeout** (`SubscribeOptions::handler_timeout`): the handler's
//!   future is raced against a Tokio timer; when the timer wins, the
//!   future is dropped (cancelled at the await point it was parked on) and
//!   the attempt fails with the class `timeout`, which is retryable:
//!   retried with the policy's backoff, dead-lettered with
//!   `lanebus-error-class: timeout` once the attempts run out.
//! - **Classifier** (`SubscribeOptions::classify`): an [`ErrorClassifier`]
//!   maps each [`HandlerError`] the handler returns to an [`ErrorClass`],
//!   in place of the class the error was made with; a handler returning its
//!   own error types (converted with `?`, so all retryable) can then mark
//!   some of them permanent or skipped. Panics and timeouts are not handler
//!   errors and are not classified.
//!
//! # Invariants
//!
//! - Without a timeout the handler's future is awaited as is (no timer);
//!   without a classifier an error keeps its own class.
//! - A timed-out call never settles its record: the worker does, once.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::{ErrorClass, HandlerError};

type ClassifyFn = dyn Fn(&HandlerError) -> ErrorClass + Send + Sync + 'static;

/// A function from a handler's error to what the lane does with it:
/// retry ([`ErrorClass::Retryable`]), dead-letter at once
/// ([`ErrorClass::Permanent`]) or acknowledge and move on
/// ([`ErrorClass::Skip`]). Set with
/// [`SubscribeOptions::classify`](crate::SubscribeOptions::classify).
///
/// The handler's own error is reached with
/// `err.source().downcast_ref::<MyError>()`. Compared by identity (two
/// classifiers are equal when they are clones of one).
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, ErrorClass, HandlerError, Message, SubscribeOptions};
///
/// #[derive(Debug, thiserror::Error)]
/// enum OrderError {
///     #[error("database unavailable")]
///     Database,
///     #[error("unknown product {0}")]
///     UnknownProduct(String),
/// }
///
/// let options = SubscribeOptions::default().classify(|err: &HandlerError| {
///     match err.source().downcast_ref::<OrderError>() {
///         Some(OrderError::UnknownProduct(_)) => ErrorClass::Permanent,
///         _ => err.class(),
///     }
/// });
/// let c = options.classifier.as_ref().unwrap();
/// let err = HandlerError::from(OrderError::UnknownProduct("x".into()));
/// assert_eq!(err.class(), ErrorClass::Retryable); // as `?` makes it
/// assert_eq!(c.classify(&err), ErrorClass::Permanent);
/// assert_eq!(c.classify(&HandlerError::from(OrderError::Database)), ErrorClass::Retryable);
/// ```
#[derive(Clone)]
pub struct ErrorClassifier(Arc<ClassifyFn>);

impl ErrorClassifier {
    /// A classifier calling `f`.
    pub fn new(f: impl Fn(&HandlerError) -> ErrorClass + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The class of `err`.
    pub fn classify(&self, err: &HandlerError) -> ErrorClass {
        (self.0)(err)
    }
}

impl fmt::Debug for ErrorClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorClassifier(..)")
    }
}

impl PartialEq for ErrorClassifier {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The class of a handler's error: the classifier's verdict if there is
/// one, else the error's own class.
#[inline]
pub(crate) fn class_of(err: &HandlerError, classifier: Option<&ErrorClassifier>) -> ErrorClass {
    match classifier {
        None => err.class(),
        Some(c) => c.classify(err),
    }
}

/// Runs `call` for at most `limit`; `Err` holds the text of the timeout
/// (the call was dropped).
pub(crate) async fn within<T>(limit: Duration, call: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, call).await.map_err(|_| {
        format!(
            "handler timed out after {}",
            crate::options::duration::format(limit)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classifier_overrides_the_class_and_none_keeps_it() {
        let err = HandlerError::retryable("boom");
        assert_eq!(class_of(&err, None), ErrorClass::Retryable);
        let skip_all = ErrorClassifier::new(|_| ErrorClass::Skip);
        assert_eq!(class_of(&err, Some(&skip_all)), ErrorClass::Skip);
        assert_eq!(skip_all, skip_all.clone());
        assert_ne!(skip_all, ErrorClassifier::new(|_| ErrorClass::Skip));
        assert_eq!(format!("{skip_all:?}"), "ErrorClassifier(..)");
    }

    #[tokio::test(start_paused = true)]
    async fn within_cancels_a_slow_call() {
        let done = within(Duration::from_millis(5), async { 7 }).await;
        assert_eq!(done, Ok(7));
        let slow = within(Duration::from_millis(5), std::future::pending::<()>()).await;
        assert_eq!(slow, Err("handler timed out after 5ms".to_owned()));
    }
}
