//! Subscribing and detaching on the bus instance.
//!
//! # Algorithm
//!
//! - **Subscribe**: parse the topic (exact or wildcard), make the
//!   subscription's lanes, its policy (retry, dead letter, rate limit,
//!   timeout, classifier, dedup, metrics timings, the recovery-mode and
//!   stall [`Watch`]) and one worker per lane; then either open a broker
//!   [`Feed`] (a consumer task that fills the lanes) or enter the memory
//!   registry (the exact topic's entry, or the wildcard index); start the
//!   backlog monitor when the options ask for one, and the bus's
//!   background tasks at the first subscribe.
//! - **Detach** (unsubscribe, drop): leave the registry, stop the monitor;
//!   a broker feed is stopped first and closes the lanes once it delivered
//!   what its client holds, a memory subscription's lanes close at once;
//!   the workers are returned, for the caller to join.
//!
//! # Invariants
//!
//! - A subscription is in `live` before any record can reach it, and
//!   leaves it before its lanes close.
//! - A subscribe racing `close` is detached again (its handle reports the
//!   bus closed), so no worker outlives the close drain.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;

use crate::engine::dispatch::{spawn_workers, Policy};
use crate::engine::lanes::Lanes;
use crate::engine::pattern::Pattern;
use crate::engine::{add_wildcard_sub, remove_wildcard_sub, SubscriptionCore};
use crate::handler::sealed::Incoming;
use crate::pipeline::dead_letter::Republish;
use crate::pipeline::dedup::DedupCache;
use crate::pipeline::export::{subscription_label, HandlerTimings};
use crate::pipeline::monitor::{self, MonitorHost, Source, Watch};
use crate::pipeline::rate_limit::Limiter;
use crate::transport::{Feed, Transport};
use crate::{Handler, SubscribeError, SubscribeOptions, Subscription};

use super::inner::{BusInner, Live};

impl BusInner {
    /// Subscribes `handler` to `topic` (see the module docs).
    pub(super) async fn subscribe<M: Incoming, H: Handler<M>>(
        &self,
        topic: &str,
        options: SubscribeOptions,
        handler: H,
    ) -> Result<Subscription, SubscribeError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SubscribeError::Closed);
        }
        let pattern = Pattern::parse(topic)?;
        options.validate("options")?;
        let dead_letter_topic =
            pattern.dead_letter_topic(topic, &options.dead_letter, "options.dead_letter")?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| SubscribeError::NoRuntime)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (lanes, consumers) = Lanes::new(options.lanes, options.ring_capacity);
        let core = Arc::new(SubscriptionCore {
            id,
            topic: Arc::from(topic),
            group: options.group.as_deref().map(Arc::from),
            wildcard: pattern.is_wildcard(),
            kind: M::KIND,
            lanes,
        });
        let sink: Weak<dyn Republish> = self.this.clone();
        let name: Arc<str> = Arc::from(subscription_label(id, &options));
        let timings = self.exporter.as_ref().map(|e| {
            e.start(&runtime, self.this.clone());
            Arc::new(HandlerTimings::new(core.lanes.len()))
        });
        let watch = Arc::new(Watch::new(options.backlog.as_ref(), core.lanes.len()));
        let rate_limit = options.rate_limit.as_ref().map(Limiter::new);
        let plain_calls = Policy::plain_calls(&rate_limit, options.handler_timeout);
        let policy = Arc::new(Policy {
            rate_limit,
            handler_timeout: options.handler_timeout,
            classifier: options.classifier.clone(),
            dedup: options.dedup.as_ref().map(DedupCache::new),
            retry: options.retry.clone(),
            dead_letter_topic,
            drain_batch: options.drain_batch,
            sink,
            retired: self.retired.clone(),
            name: name.clone(),
            timings: timings.clone(),
            watch: watch.clone(),
            plain_calls,
            idle_spins: match &self.transport {
                Transport::Memory(_) => crate::engine::dispatch::IDLE_SPINS,
                #[cfg(any(feature = "nats", feature = "kafka"))]
                _ => 0,
            },
        });
        let workers = spawn_workers::<M, H>(&runtime, &core, consumers, Arc::new(handler), policy);
        let feed = match &self.transport {
            Transport::Memory(_) => None,
            #[cfg(feature = "nats")]
            Transport::Nats(n) => match n
                .subscribe(
                    &core,
                    &options,
                    self.topic_options(topic).as_deref(),
                    &runtime,
                )
                .await
            {
                Ok(feed) => Some(feed),
                Err(e) => {
                    core.lanes.close();
                    return Err(SubscribeError::Transport(e));
                }
            },
            #[cfg(feature = "kafka")]
            Transport::Kafka(k) => {
                match k.subscribe(&core, &options, self.config.close_timeout, &runtime) {
                    Ok(feed) => Some(feed),
                    Err(e) => {
                        core.lanes.close();
                        return Err(SubscribeError::Transport(e));
                    }
                }
            }
        };
        let brokered = feed.is_some();
        self.start_background(&runtime);
        let monitor = options.backlog.clone().map(|backlog| {
            let source = match feed.as_ref().and_then(Feed::gauges) {
                Some(gauges) => Source::Broker {
                    gauges,
                    lag: self.config.transport == crate::TransportKind::Kafka,
                },
                None => Source::Lanes,
            };
            let host: Weak<dyn MonitorHost> = self.this.clone();
            monitor::spawn(&runtime, host, core.clone(), watch.clone(), backlog, source)
        });
        self.live.lock().insert(
            id,
            Live {
                core: core.clone(),
                workers,
                feed,
                watch: watch.clone(),
                monitor,
            },
        );
        // Tracked once live: an export in between would take it for gone.
        if let (Some(e), Some(t)) = (&self.exporter, &timings) {
            e.track(&core, &watch, &name, t);
        }
        if brokered {
            // The broker routes: the registry keeps only topic configs.
        } else if pattern.is_wildcard() {
            add_wildcard_sub(&self.registry, &pattern, &core);
        } else {
            self.registry.update(topic, |entry| {
                let entry = entry.cloned().unwrap_or_default();
                (Some(entry.with_sub(&core)), ())
            });
        }
        let sub = Subscription {
            core,
            bus: self.this.clone(),
            watch,
            done: false,
        };
        if self.closed.load(Ordering::Acquire) {
            // Lost a race with close(): undo.
            drop(sub);
            return Err(SubscribeError::Closed);
        }
        Ok(sub)
    }

    /// Starts the background tasks once, when configured and a runtime is
    /// at hand (at build, or at the first subscribe): the publisher-side
    /// backlog monitor and the health loop.
    pub(super) fn start_background(&self, runtime: &tokio::runtime::Handle) {
        if self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(options) = self.config.publisher_backlog.clone() {
            let host: Weak<dyn MonitorHost> = self.this.clone();
            drop(monitor::spawn_publisher(runtime, host, options));
        }
        if let Some(this) = self.this.upgrade() {
            super::health::spawn_loop(runtime, &this);
        }
    }

    /// Removes a subscription from routing and closes its lanes; returns its
    /// workers (empty if close() already took them).
    pub(crate) fn detach(&self, core: &Arc<SubscriptionCore>) -> Vec<JoinHandle<()>> {
        let id = core.id;
        let live = self.live.lock().remove(&id);
        if let Some(monitor) = live.as_ref().and_then(|l| l.monitor.as_ref()) {
            monitor.abort();
        }
        match Pattern::parse(&core.topic) {
            Ok(pattern) if pattern.is_wildcard() => {
                remove_wildcard_sub(&self.registry, &pattern, id);
            }
            _ => self.registry.update(&core.topic, |entry| match entry {
                None => (None, ()),
                Some(e) => {
                    let e = e.without_sub(id);
                    (if e.is_empty() { None } else { Some(e) }, ())
                }
            }),
        }
        match live {
            // The feed closes the lanes once it has delivered what its
            // client holds; awaiting it comes first.
            Some(Live {
                workers,
                feed: Some(feed),
                ..
            }) => std::iter::once(feed.stop()).chain(workers).collect(),
            live => {
                core.lanes.close();
                live.map(|l| l.workers).unwrap_or_default()
            }
        }
    }
}
