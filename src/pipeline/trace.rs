//! Tracing: a span per handler call, and the W3C `traceparent` header.
//!
//! # Algorithm
//!
//! - **Handler span.** Before each handler call the lane worker asks
//!   whether `INFO` is enabled at all (one atomic load of tracing's global
//!   max level: with no subscriber, or one filtering INFO out, that is the
//!   whole cost); only then it builds the span `lanebus.handle` (target
//!   `lanebus::handler`, so a filter such as `lanebus::handler=off` turns
//!   it off alone) out of line, and runs the call inside it. Fields:
//!   `topic`, `subscription`, `lane`, `attempt`; for envelopes
//!   `aggregate_id`, `event_type`, `event_version`, `event_id`, `trace_id`,
//!   `correlation_id`; and `traceparent` when the record carries one (a
//!   plain record's headers, else the envelope's headers).
//! - **`traceparent` on publish.** lanebus does not depend on
//!   OpenTelemetry. A [`TraceContext`] hook in the bus config (`None` by
//!   default) returns the publisher's current W3C `traceparent`, if any;
//!   with it set, each user publish that has no `traceparent` yet gets the
//!   hook's value as a header (a plain record's headers, an envelope's
//!   headers), and an envelope without a trace ID takes the traceparent's
//!   trace ID. A `traceparent` the user set is kept as it is. Headers
//!   travel with the record over every transport and into its dead
//!   letters (which copy the original headers), so the consumer's span
//!   and a dead letter's reader see the publisher's trace context. A
//!   value that is not a valid version-00 traceparent is ignored.
//!
//! # Invariants
//!
//! - No span is built, and no field is computed, when no subscriber wants
//!   `INFO` spans of target `lanebus::handler`.
//! - Dead letters are never stamped by the hook (they keep the original's
//!   headers).

use std::fmt;
use std::sync::Arc;

use tracing::field::Empty;
use tracing::Span;

use crate::context::InboundBody;
use crate::engine::lanes::{Body, Meta};
use crate::{Envelope, Headers};

/// The header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

type TraceFn = dyn Fn() -> Option<String> + Send + Sync;

/// A hook returning the caller's current W3C `traceparent`
/// (`00-<32 hex trace ID>-<16 hex span ID>-<2 hex flags>`), if it has one;
/// see [`BusConfig::trace_context`](crate::BusConfig::trace_context). Two
/// hooks are equal when they are clones of one.
///
/// # Examples
///
/// ```
/// use lanebus::{Bus, BusConfig, HandlerError, Message, TraceContext};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // With tracing-opentelemetry, the hook would inject
/// // `tracing::Span::current().context()` through a `TraceContextPropagator`.
/// let mut config = BusConfig::memory();
/// config.trace_context = Some(TraceContext::new(|| {
///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())
/// }));
/// let bus = Bus::from_config(config)?;
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let _sub = bus
///     .subscribe("jobs", move |m: Message| {
///         let _ = tx.send(m.headers().get("traceparent").map(str::to_owned));
///         async { Ok::<(), HandlerError>(()) }
///     })
///     .await?;
/// bus.publish("jobs", "1").await?;
/// let seen = rx.recv().await.flatten();
/// assert_eq!(seen.as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TraceContext(Arc<TraceFn>);

impl TraceContext {
    /// A hook calling `f` on each publish.
    pub fn new(f: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The hook's traceparent now, if it gives a valid one.
    fn current(&self) -> Option<String> {
        let tp = (self.0)()?;
        if trace_id_of(&tp).is_some() {
            Some(tp)
        } else {
            tracing::debug!(traceparent = %tp, "trace context hook returned an invalid traceparent; ignored");
            None
        }
    }

    /// Adds the traceparent to `headers` unless they have one.
    pub(crate) fn stamp_headers(&self, headers: &mut Headers) {
        if headers.get(TRACEPARENT).is_none() {
            if let Some(tp) = self.current() {
                headers.insert(TRACEPARENT, tp);
            }
        }
    }

    /// Adds the traceparent to an envelope's headers unless they have one,
    /// and its trace ID when the envelope has none.
    pub(crate) fn stamp_envelope(&self, e: &mut Envelope) {
        if e.headers.get(TRACEPARENT).is_some() {
            return;
        }
        if let Some(tp) = self.current() {
            if e.trace_id.is_none() {
                e.trace_id = trace_id_of(&tp).map(Into::into);
            }
            e.headers.insert(TRACEPARENT, tp);
        }
    }
}

/// `body` with the hook's traceparent (see [`TraceContext`]): a plain
/// record gets the header, an envelope the header and, when it has none,
/// the trace ID. An envelope shared with someone else is copied first
/// (a fresh publish holds the only reference, so this does not happen).
pub(crate) fn stamp_body(hook: &TraceContext, body: Body) -> Body {
    match body {
        Body::Plain { payload, meta } => {
            let mut meta = meta.unwrap_or_else(|| {
                Box::new(Meta {
                    key: None,
                    headers: Headers::new(),
                })
            });
            hook.stamp_headers(&mut meta.headers);
            let meta = (meta.key.is_some() || !meta.headers.is_empty()).then_some(meta);
            Body::Plain { payload, meta }
        }
        Body::Envelope(mut e) => {
            hook.stamp_envelope(Arc::make_mut(&mut e));
            Body::Envelope(e)
        }
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TraceContext(..)")
    }
}

impl PartialEq for TraceContext {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The trace ID of a valid version-00 W3C traceparent.
pub(crate) fn trace_id_of(tp: &str) -> Option<&str> {
    let mut parts = tp.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    let ok = parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && !zero(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2);
    ok.then_some(trace)
}

/// Where a handler call runs.
pub(crate) struct CallSite<'a> {
    pub(crate) topic: &'a str,
    pub(crate) subscription: &'a str,
    pub(crate) lane: usize,
    pub(crate) attempt: u32,
}

/// True when some subscriber may want INFO spans: one atomic load of
/// tracing's global max level (false with no subscriber at all).
#[inline]
pub(crate) fn spans_wanted() -> bool {
    tracing::level_enabled!(tracing::Level::INFO)
}

/// The span of one handler call; a disabled span when no subscriber wants
/// it (say, a filter on its target). Call it when [`spans_wanted`].
#[inline(never)]
pub(crate) fn handler_span(
    site: CallSite<'_>,
    body: InboundBody<'_>,
    envelope: Option<&Envelope>,
) -> Span {
    let span = tracing::info_span!(
        target: "lanebus::handler",
        "lanebus.handle",
        topic = site.topic,
        subscription = site.subscription,
        lane = site.lane as u64,
        attempt = site.attempt,
        aggregate_id = Empty,
        event_type = Empty,
        event_version = Empty,
        event_id = Empty,
        trace_id = Empty,
        correlation_id = Empty,
        traceparent = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let envelope = envelope.or(match body {
        InboundBody::Envelope(e) => Some(&**e),
        InboundBody::Plain { .. } => None,
    });
    let mut traceparent = match body {
        InboundBody::Plain {
            headers: Some(h), ..
        } => h.get(TRACEPARENT),
        _ => None,
    };
    if let Some(e) = envelope {
        span.record("aggregate_id", e.aggregate_id.as_str());
        span.record("event_type", e.event_type.as_str());
        span.record("event_version", e.event_version);
        span.record("event_id", tracing::field::display(&e.event_id));
        if let Some(t) = &e.trace_id {
            span.record("trace_id", t.as_str());
        }
        if let Some(c) = &e.correlation_id {
            span.record("correlation_id", c.as_str());
        }
        traceparent = traceparent.or_else(|| e.headers.get(TRACEPARENT));
    }
    if let Some(tp) = traceparent {
        span.record("traceparent", tp);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(good), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn stamping_keeps_what_the_user_set() {
        let hook = TraceContext::new(|| {
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into())
        });
        let mut e = Envelope::new("a", "T", 1, "{}");
        hook.stamp_envelope(&mut e);
        assert_eq!(
            e.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut mine = Envelope::new("a", "T", 1, "{}").with_header(TRACEPARENT, "mine");
        hook.stamp_envelope(&mut mine);
        assert_eq!(mine.headers.get(TRACEPARENT), Some("mine"));
        assert_eq!(mine.trace_id, None);
        let invalid = TraceContext::new(|| Some("garbage".into()));
        let mut h = Headers::new();
        invalid.stamp_headers(&mut h);
        assert!(h.is_empty());
        assert_eq!(hook, hook.clone());
        assert_ne!(hook, invalid);
    }
}
