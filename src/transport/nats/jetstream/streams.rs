//! The JetStream stream behind each persistent topic: its name, its
//! config from [`TopicOptions`], and what the bus does with it per
//! [`StreamStrategy`] (make it ready once, read it back, list, remove).
//!
//! # Algorithm
//!
//! - **Name and config** (in `config`): a topic's stream is
//!   `options.stream` when set, else the topic escaped injectively into
//!   the stream alphabet (stream names may not hold `.`): `-` → `--`, `_` →
//!   `-_`, `.` → `_`; so `orders.created` → `orders_created` and
//!   `user_events` → `user-_events`. A name longer than
//!   [`MAX_STREAM_NAME`] bytes (a derived one, from a topic of more than
//!   about 127 escaped characters) is refused before any call with an error
//!   that asks for a shorter `stream` option (the server refuses it too,
//!   error 10052). The config: subjects `[topic]`, retention `limits`,
//!   `max_age`, `max_bytes`, `max_msgs` (unset → unlimited), storage,
//!   replicas, discard, description; the duplicate window is left to the
//!   server (2 min, or `max_age` when shorter). Nothing from server 2.10+
//!   is sent (async-nats is built without its `server_2_10` feature), so
//!   Debian's 2.9 accepts it.
//! - **Ensure** (first use of a topic), per strategy: `skip` makes no call.
//!   Otherwise one `STREAM.INFO`; a stream that captures other subjects than
//!   exactly `[topic]` is an error (another topic's or someone else's
//!   stream holds the name). Missing: `validate_only` fails, the others
//!   create it. Present: compare the fields above in that order; when one
//!   differs, `create_or_update` updates (the server's config with those
//!   fields replaced and the duplicate window reset to the server's
//!   default, so settings lanebus does not manage survive), `create_only`
//!   leaves it and logs a warning, `validate_only` fails naming the first
//!   differing field with both values. A create that loses a race to
//!   another process (the name now exists) or an update whose stream
//!   vanished reads the stream again, once. A create refused because
//!   another stream captures the subject (server error 10065) is an error
//!   that names that stream when the server tells which.
//! - **Single flight**: a map from topic to a slot, `Ready(name)` or
//!   `Flight(shared future)`. A caller that finds `Ready` returns the name
//!   (a read lock and a hash lookup); one that finds `Flight` awaits the
//!   same shared future; one that finds nothing starts a flight. The
//!   flight's last step, run by whichever caller polls it to the end,
//!   replaces its own slot by `Ready` on success or removes it on failure
//!   (a failure is shared by the callers of that flight, never cached).
//!   Every caller polls the shared future, so a caller that gives up (a
//!   dropped publish) does not strand the others.
//! - **Timeouts**: the module's JetStream context has `api_timeout` as its
//!   request timeout, so every server call (info, create, update, delete,
//!   each page of a listing) is bounded by it.
//!
//! # Invariants
//!
//! - Distinct topics get distinct derived stream names, made only of
//!   `A-Z a-z 0-9 - _` (see `config`).
//! - [`Streams::create_calls`] counts create and update calls actually
//!   sent: an `ensure` that finds the stream equal to the options sends
//!   none, and concurrent first `ensure`s of one topic send one.
//! - `validate_only` never changes the server; `create_only` never updates
//!   a stream; `skip` never calls the server.
//! - `list` and `remove` touch only streams lanebus manages: exactly one
//!   subject, an exact topic name, and the stream name that topic maps to.
//!   `remove` refuses a stream that captures other subjects.
//! - Every error message names the topic and the stream.

// The bus wires `Streams` in next; until then only the tests use it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind,
};
use async_nats::jetstream::stream::Config;
use async_nats::jetstream::Context;
use async_nats::jetstream::ErrorCode;
use futures_util::future::Shared;
use futures_util::{FutureExt, TryStreamExt};
use parking_lot::RwLock;

use crate::options::duration;
use crate::{validate_topic_name, TopicOptions, TransportError};
use crate::{JetStreamOptions, StreamStrategy};

mod config;

pub(crate) use config::{derived_name, stream_config, stream_name, MAX_STREAM_NAME};
use config::{first_difference, topic_options, updated};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn error(message: impl Into<String>, source: Option<BoxError>) -> TransportError {
    TransportError::new("nats", message, source)
}

/// A flight's outcome, cloned to each of its callers.
type Outcome = Result<Arc<str>, SharedError>;
type Flight = Shared<Pin<Box<dyn Future<Output = Outcome> + Send>>>;

/// A [`TransportError`] that the callers of one flight share: its message
/// and its cause behind an `Arc`.
#[derive(Clone)]
struct SharedError {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl SharedError {
    fn new(e: &TransportError, source: Option<BoxError>) -> Self {
        Self {
            message: e.message().to_owned(),
            source: source.map(Arc::from),
        }
    }

    fn to_error(&self) -> TransportError {
        let source = self.source.clone().map(|s| Box::new(Cause(s)) as BoxError);
        error(self.message.clone(), source)
    }
}

/// A shared cause, shown as itself.
struct Cause(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// What the map holds for a topic.
enum Slot {
    /// The stream is ready under this name.
    Ready(Arc<str>),
    /// A server call is under way (`id` tells this flight from a later one).
    Flight { id: u64, flight: Flight },
}

type Slots = RwLock<HashMap<Box<str>, Slot>>;

/// The streams of a NATS bus's persistent topics (see the module docs).
pub(crate) struct Streams {
    js: Context,
    strategy: StreamStrategy,
    api_timeout: Duration,
    slots: Arc<Slots>,
    next_flight: AtomicU64,
    calls: Arc<AtomicU64>,
}

impl fmt::Debug for Streams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streams")
            .field("strategy", &self.strategy)
            .field("api_timeout", &self.api_timeout)
            .field("create_calls", &self.create_calls())
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// The stream manager over `js`, whose API calls it bounds by
    /// `options.api_timeout`.
    pub(crate) fn new(mut js: Context, options: &JetStreamOptions) -> Self {
        js.set_timeout(options.api_timeout);
        Self {
            js,
            strategy: options.stream_strategy,
            api_timeout: options.api_timeout,
            slots: Arc::new(RwLock::new(HashMap::new())),
            next_flight: AtomicU64::new(0),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Makes `topic`'s stream ready per the strategy, once: concurrent
    /// callers for one topic share one server call, later callers get the
    /// cached name (a failure is not cached). Returns the stream name.
    pub(crate) async fn ensure(
        &self,
        topic: &str,
        options: &TopicOptions,
    ) -> Result<Arc<str>, TransportError> {
        if let Some(Slot::Ready(name)) = self.slots.read().get(topic) {
            return Ok(name.clone());
        }
        let flight = {
            let mut slots = self.slots.write();
            match slots.get(topic) {
                Some(Slot::Ready(name)) => return Ok(name.clone()),
                Some(Slot::Flight { flight, .. }) => flight.clone(),
                None => {
                    let name = checked_name(topic, options)?;
                    if self.strategy == StreamStrategy::Skip {
                        let name: Arc<str> = name.into();
                        slots.insert(topic.into(), Slot::Ready(name.clone()));
                        return Ok(name);
                    }
                    let id = self.next_flight.fetch_add(1, Ordering::Relaxed);
                    let flight = self.start_flight(id, topic, name, options);
                    slots.insert(
                        topic.into(),
                        Slot::Flight {
                            id,
                            flight: flight.clone(),
                        },
                    );
                    flight
                }
            }
        };
        flight.await.map_err(|e| e.to_error())
    }

    /// The shared future of one flight: the server calls, then the slot's
    /// update.
    fn start_flight(&self, id: u64, topic: &str, name: String, options: &TopicOptions) -> Flight {
        let call = Call {
            js: self.js.clone(),
            topic: topic.to_owned(),
            name,
            options: options.clone(),
            strategy: self.strategy,
            calls: self.calls.clone(),
            api_timeout: self.api_timeout,
        };
        let slots = self.slots.clone();
        let fut = async move {
            let outcome = call
                .make_ready()
                .await
                .map(|()| Arc::<str>::from(call.name));
            let mut slots = slots.write();
            let ours = matches!(
                slots.get(call.topic.as_str()),
                Some(Slot::Flight { id: current, .. }) if *current == id
            );
            if ours {
                match &outcome {
                    Ok(name) => {
                        slots.insert(call.topic.into(), Slot::Ready(name.clone()));
                    }
                    Err(_) => {
                        slots.remove(call.topic.as_str());
                    }
                }
            }
            outcome
        };
        let boxed: Pin<Box<dyn Future<Output = Outcome> + Send>> = Box::pin(fut);
        boxed.shared()
    }

    /// Drops the cached outcome for `topic` (a flight under way finishes
    /// for its callers but no longer fills the cache).
    pub(crate) fn forget(&self, topic: &str) {
        self.slots.write().remove(topic);
    }

    /// The server's stream for `topic`, mapped back to [`TopicOptions`];
    /// `Ok(None)` when there is no such stream.
    pub(crate) async fn read(
        &self,
        topic: &str,
        options: Option<&TopicOptions>,
    ) -> Result<Option<TopicOptions>, TransportError> {
        let name = stream_name(topic, options);
        let Some(config) = info(&self.js, topic, &name, self.api_timeout).await? else {
            return Ok(None);
        };
        check_subjects(&config, topic, &name)?;
        Ok(Some(topic_options(topic, &config)))
    }

    /// The topics whose streams lanebus manages, sorted (see the module
    /// docs); `overrides` holds the configured topics, whose `stream`
    /// option may name their stream.
    pub(crate) async fn list(
        &self,
        overrides: &[(String, TopicOptions)],
    ) -> Result<Vec<String>, TransportError> {
        let configs: Vec<Config> = self
            .js
            .streams()
            .map_ok(|info| info.config)
            .try_collect()
            .await
            .map_err(|e| {
                error(
                    format!(
                        "listing the streams failed: {}",
                        cause(&e, self.api_timeout)
                    ),
                    Some(e.into()),
                )
            })?;
        let mut topics: Vec<String> = configs
            .into_iter()
            .filter_map(|config| {
                let [subject] = config.subjects.as_slice() else {
                    return None;
                };
                validate_topic_name(subject).ok()?;
                let overridden = overrides
                    .iter()
                    .find(|(topic, _)| topic == subject)
                    .and_then(|(_, o)| o.stream.as_deref());
                let managed = config.name == derived_name(subject)
                    || overridden == Some(config.name.as_str());
                managed.then(|| subject.clone())
            })
            .collect();
        topics.sort_unstable();
        topics.dedup();
        Ok(topics)
    }

    /// Deletes `topic`'s stream and all its messages; `Ok(false)` when
    /// there was none. Refuses a stream that captures other subjects.
    /// Forgets the cached outcome either way.
    pub(crate) async fn remove(
        &self,
        topic: &str,
        options: Option<&TopicOptions>,
    ) -> Result<bool, TransportError> {
        self.forget(topic);
        let name = stream_name(topic, options);
        let Some(config) = info(&self.js, topic, &name, self.api_timeout).await? else {
            return Ok(false);
        };
        check_subjects(&config, topic, &name)
            .map_err(|e| error(format!("{}; not removed", e.message()), None))?;
        let removed = match self.js.delete_stream(&name).await {
            Ok(status) => status.success,
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(js)
                    if js.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    false
                }
                _ => {
                    return Err(error(
                        format!(
                            "stream {name} for topic {topic}: delete failed: {}",
                            cause(&e, self.api_timeout)
                        ),
                        Some(e.into()),
                    ))
                }
            },
        };
        self.forget(topic);
        Ok(removed)
    }

    /// Stream create and update calls sent so far.
    pub(crate) fn create_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

/// The name `ensure` uses for `topic`, checked.
fn checked_name(topic: &str, options: &TopicOptions) -> Result<String, TransportError> {
    let name = stream_name(topic, Some(options));
    if name.len() > MAX_STREAM_NAME {
        return Err(error(
            format!(
                "the stream name of topic {topic} is {} bytes long, more than \
                 {MAX_STREAM_NAME}; set the topic's `stream` option to a shorter name",
                name.len()
            ),
            None,
        ));
    }
    Ok(name)
}

/// One flight's owned inputs.
struct Call {
    js: Context,
    topic: String,
    name: String,
    options: TopicOptions,
    strategy: StreamStrategy,
    calls: Arc<AtomicU64>,
    api_timeout: Duration,
}

impl Call {
    /// The calls of `ensure` (see the module docs), as a shared outcome.
    async fn make_ready(&self) -> Result<(), SharedError> {
        let (topic, name) = (self.topic.as_str(), self.name.as_str());
        let wanted = stream_config(topic, name, &self.options);
        // A second round only after a lost create race or a vanished stream.
        for round in 0..2 {
            let last = round == 1;
            let shared = |e: TransportError| SharedError::new(&e, None);
            let Some(server) = info(&self.js, topic, name, self.api_timeout)
                .await
                .map_err(shared)?
            else {
                if self.strategy == StreamStrategy::ValidateOnly {
                    return Err(shared(error(
                        format!(
                            "stream {name} for topic {topic} does not exist \
                             (stream_strategy: validate_only)"
                        ),
                        None,
                    )));
                }
                self.calls.fetch_add(1, Ordering::Relaxed);
                match self.js.create_stream(wanted.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) => match e.kind() {
                        CreateStreamErrorKind::JetStream(js)
                            if js.error_code() == ErrorCode::STREAM_NAME_EXIST && !last =>
                        {
                            continue
                        }
                        CreateStreamErrorKind::JetStream(js)
                            if js.error_code() == ErrorCode::STREAM_SUBJECT_OVERLAP =>
                        {
                            let message = self.overlap_message(&js).await;
                            return Err(SharedError::new(&error(message, None), Some(e.into())));
                        }
                        _ => {
                            let message = format!(
                                "stream {name} for topic {topic}: create failed: {}",
                                cause(&e, self.api_timeout)
                            );
                            return Err(SharedError::new(&error(message, None), Some(e.into())));
                        }
                    },
                }
            };
            check_subjects(&server, topic, name).map_err(shared)?;
            let Some(diff) = first_difference(&server, &wanted) else {
                return Ok(());
            };
            match self.strategy {
                StreamStrategy::ValidateOnly => {
                    return Err(shared(error(
                        format!(
                            "stream {name} for topic {topic} differs from the topic's options: \
                             {} is {} on the server, {} in the options \
                             (stream_strategy: validate_only)",
                            diff.field, diff.server, diff.wanted
                        ),
                        None,
                    )))
                }
                StreamStrategy::CreateOrUpdate => {
                    self.calls.fetch_add(1, Ordering::Relaxed);
                    match self.js.update_stream(updated(server, &wanted)).await {
                        Ok(_) => return Ok(()),
                        Err(e) if e.kind() == CreateStreamErrorKind::NotFound && !last => continue,
                        Err(e) => {
                            let message = format!(
                                "stream {name} for topic {topic}: update of {} failed: {}",
                                diff.field,
                                cause(&e, self.api_timeout)
                            );
                            return Err(SharedError::new(&error(message, None), Some(e.into())));
                        }
                    }
                }
                _ => {
                    tracing::warn!(
                        topic,
                        stream = name,
                        field = diff.field,
                        server = %diff.server,
                        options = %diff.wanted,
                        "stream differs from the topic's options; left as it is \
                         (stream_strategy: {})",
                        self.strategy.as_str()
                    );
                    return Ok(());
                }
            }
        }
        unreachable!("the second round returns in every branch")
    }

    /// The overlap error's message, naming the stream that holds the
    /// subject when the server tells which.
    async fn overlap_message(&self, cause: &async_nats::jetstream::Error) -> String {
        let (topic, name) = (&self.topic, &self.name);
        let holder = match self.js.stream_by_subject(topic.as_str()).await {
            Ok(other) if other != *name => format!("stream {other}"),
            _ => "another stream".to_owned(),
        };
        format!(
            "stream {name} for topic {topic} cannot be created: {holder} already captures \
             subject {topic} ({cause})"
        )
    }
}

/// The stream's config, or `None` when the server has no such stream.
async fn info(
    js: &Context,
    topic: &str,
    name: &str,
    api_timeout: Duration,
) -> Result<Option<Config>, TransportError> {
    match js.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(None)
            }
            _ => Err(error(
                format!(
                    "stream {name} for topic {topic}: info failed: {}",
                    cause(&e, api_timeout)
                ),
                Some(e.into()),
            )),
        },
    }
}

/// Fails unless the stream captures exactly `[topic]`.
fn check_subjects(config: &Config, topic: &str, name: &str) -> Result<(), TransportError> {
    if config.subjects.len() == 1 && config.subjects[0] == topic {
        return Ok(());
    }
    Err(error(
        format!(
            "stream {name} exists for subjects [{}], not for topic {topic} alone \
             (set the topic's `stream` option to another name)",
            config.subjects.join(", ")
        ),
        None,
    ))
}

/// What went wrong in a JetStream call, in words: a timeout names the
/// limit, a missing JetStream says so, a server error is the server's text.
fn cause(e: &(dyn std::error::Error + 'static), limit: Duration) -> String {
    use async_nats::jetstream::context::{RequestError, RequestErrorKind};
    let timed_out = || format!("no answer within {}", duration::format(limit));
    let unavailable = || "jetstream is not enabled on the server".to_owned();
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(e) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return e.to_string();
        }
        if let Some(e) = e.downcast_ref::<CreateStreamError>() {
            match e.kind() {
                CreateStreamErrorKind::TimedOut => return timed_out(),
                CreateStreamErrorKind::JetStreamUnavailable => return unavailable(),
                CreateStreamErrorKind::JetStream(js) => return js.to_string(),
                _ => {}
            }
        }
        if let Some(e) = e.downcast_ref::<GetStreamError>() {
            if let GetStreamErrorKind::JetStream(js) = e.kind() {
                return js.to_string();
            }
        }
        if let Some(e) = e.downcast_ref::<RequestError>() {
            match e.kind() {
                RequestErrorKind::TimedOut => return timed_out(),
                RequestErrorKind::NoResponders => return unavailable(),
                _ => {}
            }
        }
        next = e.source();
    }
    e.to_string()
}
