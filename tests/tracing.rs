//! Tracing: each handler call runs in a `lanebus.handle` span with the
//! expected fields, seen through a capturing subscriber; the
//! `traceparent` hook stamps publishes, and the header reaches the
//! handler span and the dead letter.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lanebus::{
    Bus, BusConfig, Envelope, Event, HandlerError, Message, OutboundMessage, RetryPolicy,
    SubscribeOptions, TraceContext,
};
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event as TraceEvent, Metadata, Subscriber};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Debug)]
struct SpanRec {
    name: &'static str,
    target: String,
    fields: BTreeMap<String, String>,
}

/// Records spans (with their fields), the entered-span stack and, for each
/// event, the span it happened in.
#[derive(Default)]
struct Captured {
    next: AtomicU64,
    spans: Mutex<HashMap<u64, SpanRec>>,
    stack: Mutex<Vec<u64>>,
    events: Mutex<Vec<(String, Option<u64>)>>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Captured>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.0.spans.lock().insert(
            id,
            SpanRec {
                name: attrs.metadata().name(),
                target: attrs.metadata().target().to_owned(),
                fields,
            },
        );
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some(s) = self.0.spans.lock().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &TraceEvent<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let parent = self.0.stack.lock().last().copied();
        let message = fields.remove("message").unwrap_or_default();
        self.0.events.lock().push((message, parent));
    }
    fn enter(&self, span: &Id) {
        self.0.stack.lock().push(span.into_u64());
    }
    fn exit(&self, span: &Id) {
        let mut stack = self.0.stack.lock();
        if let Some(i) = stack.iter().rposition(|&s| s == span.into_u64()) {
            stack.remove(i);
        }
    }
}

impl Capture {
    /// The handler spans, in creation order.
    fn handler_spans(&self) -> Vec<(u64, SpanRec)> {
        let mut v: Vec<(u64, SpanRec)> = self
            .0
            .spans
            .lock()
            .iter()
            .filter(|(_, s)| s.name == "lanebus.handle")
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }
}

#[tokio::test]
async fn a_handler_call_runs_in_a_span_with_the_envelope_fields() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = Bus::memory();
    let options = SubscribeOptions::default().group("billing").retry(
        RetryPolicy::attempts(3).with_backoff(Duration::from_millis(1), Duration::from_millis(1)),
    );
    let _sub = bus
        .subscribe_envelope_with("orders.events", options, |ev: Event| async move {
            tracing::info!("handling");
            if ev.context().attempt() == 1 {
                return Err(HandlerError::retryable("first try fails"));
            }
            Ok(())
        })
        .await
        .unwrap();
    let envelope = Envelope::new("order-7", "OrderPlaced", 3, "{}")
        .with_trace_id("trace-1")
        .with_correlation_id("corr-1");
    let event_id = envelope.event_id.to_string();
    let lane = (lanebus::key_hash(b"order-7") % 8).to_string();
    bus.publish_envelope("orders.events", envelope)
        .await
        .unwrap();
    bus.flush().await;
    bus.close().await.unwrap();

    let spans = capture.handler_spans();
    assert_eq!(spans.len(), 2, "one span per attempt: {spans:?}");
    for (i, (_, s)) in spans.iter().enumerate() {
        assert_eq!(s.target, "lanebus::handler");
        let f = &s.fields;
        let expect = [
            ("topic", "orders.events"),
            ("subscription", "billing"),
            ("lane", lane.as_str()),
            ("aggregate_id", "order-7"),
            ("event_type", "OrderPlaced"),
            ("event_version", "3"),
            ("event_id", event_id.as_str()),
            ("trace_id", "trace-1"),
            ("correlation_id", "corr-1"),
        ];
        for (k, v) in expect {
            assert_eq!(f.get(k).map(String::as_str), Some(v), "field {k} of {s:?}");
        }
        assert_eq!(f["attempt"], (i + 1).to_string());
        assert!(!f.contains_key("traceparent"), "no traceparent was set");
    }
    // The handler's own events happened inside its call's span.
    let ids: Vec<u64> = spans.iter().map(|(id, _)| *id).collect();
    let handled: Vec<Option<u64>> = capture
        .0
        .events
        .lock()
        .iter()
        .filter(|(m, _)| m == "handling")
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(handled, vec![Some(ids[0]), Some(ids[1])]);
}

#[tokio::test]
async fn a_plain_call_has_the_subscription_id_and_no_envelope_fields() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let bus = Bus::memory();
    let sub = bus
        .subscribe("jobs", |_m: Message| async { Ok::<(), HandlerError>(()) })
        .await
        .unwrap();
    bus.publish("jobs", "1").await.unwrap();
    bus.close().await.unwrap();
    let spans = capture.handler_spans();
    assert_eq!(spans.len(), 1);
    let f = &spans[0].1.fields;
    assert_eq!(f["topic"], "jobs");
    assert_eq!(f["subscription"], format!("#{}", sub.id()));
    assert_eq!(f["attempt"], "1");
    assert!(!f.contains_key("aggregate_id") && !f.contains_key("trace_id"));
}

#[tokio::test]
async fn the_traceparent_hook_stamps_publishes_and_reaches_spans_and_dead_letters() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let mut config = BusConfig::memory();
    config.trace_context = Some(TraceContext::new(|| Some(TP.to_owned())));
    let bus = Bus::from_config(config).unwrap();
    let options = SubscribeOptions::default().retry(RetryPolicy::none());
    let _jobs = bus
        .subscribe_with("jobs", options, |_m: Message| async {
            Err::<(), _>(HandlerError::permanent("poison"))
        })
        .await
        .unwrap();
    let dead = Arc::new(Mutex::new(Vec::new()));
    let d = dead.clone();
    let _dlq = bus
        .subscribe("jobs.dlq", move |m: Message| {
            d.lock()
                .push(m.headers().get("traceparent").map(str::to_owned));
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _events = bus
        .subscribe_envelope("orders", move |ev: Arc<Envelope>| {
            s.lock().push((
                ev.trace_id.as_deref().map(str::to_owned),
                ev.headers.get("traceparent").map(str::to_owned),
            ));
            async { Ok::<(), HandlerError>(()) }
        })
        .await
        .unwrap();

    bus.publish("jobs", "x").await.unwrap();
    // A traceparent the user set is kept.
    let own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    bus.publish_with(
        "jobs",
        OutboundMessage::new("y").with_header("traceparent", own),
    )
    .await
    .unwrap();
    bus.publish_envelope("orders", Envelope::new("a-1", "Made", 1, "{}"))
        .await
        .unwrap();
    bus.publish_envelope(
        "orders",
        Envelope::new("a-1", "Made", 2, "{}").with_trace_id("mine"),
    )
    .await
    .unwrap();
    bus.flush().await;
    bus.flush().await;
    bus.close().await.unwrap();

    let mut dead = dead.lock().clone();
    dead.sort();
    assert_eq!(dead, vec![Some(own.to_owned()), Some(TP.to_owned())]);
    assert_eq!(
        *seen.lock(),
        vec![
            // No trace ID: the traceparent's.
            (
                Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
                Some(TP.to_owned())
            ),
            (Some("mine".to_owned()), Some(TP.to_owned())),
        ]
    );
    let jobs: Vec<String> = capture
        .handler_spans()
        .into_iter()
        .filter(|(_, s)| s.fields["topic"] == "jobs")
        .map(|(_, s)| s.fields["traceparent"].clone())
        .collect();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.contains(&TP.to_owned()) && jobs.contains(&own.to_owned()),
        "{jobs:?}"
    );
}
