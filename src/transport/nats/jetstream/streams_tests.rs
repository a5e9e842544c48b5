//! The stream manager against a real `nats-server` with JetStream (the
//! integration tests' harness, through `test_support.rs`): each
//! strategy, single flight, reading a stream back, listing what lanebus
//! manages, removal, and the errors for a name or subject someone else
//! holds.
//!
//! Each test uses topics of its own prefix on the binary's shared server,
//! so the tests run in parallel; `list` is checked by what it holds and
//! lacks, never by its length.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::Config;
use async_nats::jetstream::{self, Context};

use super::super::test_support::{raw, step, NatsServer};
use super::streams::{derived_name, stream_name, Streams};
use crate::{Discard, Persistence, Storage, TopicOptions, TransportError};
use crate::{JetStreamOptions, StreamStrategy};

/// A JetStream context on the shared server.
async fn context() -> Context {
    raw().await.1
}

fn streams(js: &Context, strategy: StreamStrategy) -> Streams {
    Streams::new(
        js.clone(),
        &JetStreamOptions::default().stream_strategy(strategy),
    )
}

async fn ensure(
    streams: &Streams,
    topic: &str,
    options: &TopicOptions,
) -> Result<Arc<str>, TransportError> {
    step("ensure", streams.ensure(topic, options)).await
}

async fn read(
    streams: &Streams,
    topic: &str,
    options: Option<&TopicOptions>,
) -> Option<TopicOptions> {
    step("read", streams.read(topic, options))
        .await
        .expect("read")
}

/// The server's config of stream `name`, if any.
async fn server_config(js: &Context, name: &str) -> Option<Config> {
    match step("stream info", js.get_stream(name)).await {
        Ok(stream) => Some(stream.cached_info().config.clone()),
        Err(_) => None,
    }
}

fn hour() -> TopicOptions {
    TopicOptions::persistent().max_age(Duration::from_secs(3600))
}

#[tokio::test]
async fn create_or_update_creates_then_updates() {
    let js = context().await;
    let topic = "st-cou.orders_created";
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let name = ensure(&manager, topic, &hour()).await.unwrap();
    assert_eq!(&*name, "st--cou_orders-_created");
    assert_eq!(manager.create_calls(), 1);
    let back = read(&manager, topic, None)
        .await
        .expect("the stream exists");
    assert_eq!(back.retention.max_age, Some(Duration::from_secs(3600)));

    // Changed options: the lead forgets the topic, the next ensure updates.
    let two_hours = TopicOptions::persistent()
        .max_age(Duration::from_secs(7200))
        .max_messages(500);
    manager.forget(topic);
    ensure(&manager, topic, &two_hours).await.unwrap();
    assert_eq!(manager.create_calls(), 2);
    let back = read(&manager, topic, None).await.unwrap();
    assert_eq!(back.retention.max_age, Some(Duration::from_secs(7200)));
    assert_eq!(back.retention.max_messages, Some(500));

    // Cached: no server call at all, whatever the options say now.
    ensure(&manager, topic, &hour()).await.unwrap();
    assert_eq!(manager.create_calls(), 2);
    assert_eq!(
        read(&manager, topic, None).await.unwrap().retention.max_age,
        Some(Duration::from_secs(7200))
    );
}

#[tokio::test]
async fn an_update_keeps_settings_lanebus_does_not_manage() {
    let js = context().await;
    let topic = "st-keep.a";
    let name = derived_name(topic);
    let mut config = super::streams::stream_config(topic, &name, &hour());
    config.max_message_size = 4096;
    config.deny_delete = true;
    step("create", js.create_stream(config)).await.unwrap();

    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let shorter = TopicOptions::persistent().max_age(Duration::from_secs(30));
    ensure(&manager, topic, &shorter).await.unwrap();
    assert_eq!(manager.create_calls(), 1);
    let server = server_config(&js, &name).await.unwrap();
    assert_eq!(server.max_age, Duration::from_secs(30));
    assert_eq!(server.max_message_size, 4096);
    assert!(server.deny_delete);
    // The duplicate window follows the new age (the server's default).
    assert_eq!(server.duplicate_window, Duration::from_secs(30));
}

#[tokio::test]
async fn equal_options_make_no_second_call() {
    let js = context().await;
    let topic = "st-equal.a";
    let options = TopicOptions::persistent()
        .max_bytes(1 << 20)
        .discard(Discard::New);
    let first = streams(&js, StreamStrategy::CreateOrUpdate);
    ensure(&first, topic, &options).await.unwrap();
    assert_eq!(first.create_calls(), 1);
    first.forget(topic);
    ensure(&first, topic, &options).await.unwrap();
    assert_eq!(first.create_calls(), 1, "an equal stream is not updated");

    // A new bus (a restarted process) finds the stream as it wants it.
    let second = streams(&js, StreamStrategy::CreateOrUpdate);
    ensure(&second, topic, &options).await.unwrap();
    assert_eq!(second.create_calls(), 0);
}

#[tokio::test]
async fn create_only_creates_but_never_updates() {
    let js = context().await;
    let topic = "st-conly.a";
    let manager = streams(&js, StreamStrategy::CreateOnly);
    ensure(&manager, topic, &hour()).await.unwrap();
    assert_eq!(manager.create_calls(), 1);

    manager.forget(topic);
    let changed = TopicOptions::persistent()
        .max_age(Duration::from_secs(60))
        .storage(Storage::Memory);
    ensure(&manager, topic, &changed).await.unwrap();
    assert_eq!(manager.create_calls(), 1);
    let back = read(&manager, topic, None).await.unwrap();
    assert_eq!(back.retention.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(back.storage, Storage::File);
}

#[tokio::test]
async fn validate_only_checks_and_never_changes() {
    let js = context().await;
    let topic = "st-valid.a";
    let name = derived_name(topic);
    let manager = streams(&js, StreamStrategy::ValidateOnly);

    let e = ensure(&manager, topic, &hour()).await.unwrap_err();
    assert_eq!(
        e.message(),
        format!("stream {name} for topic {topic} does not exist (stream_strategy: validate_only)")
    );
    assert!(server_config(&js, &name).await.is_none(), "nothing created");

    // A failure is not cached: once the stream exists, the same call passes.
    let creator = streams(&js, StreamStrategy::CreateOrUpdate);
    ensure(&creator, topic, &hour()).await.unwrap();
    assert_eq!(&*ensure(&manager, topic, &hour()).await.unwrap(), name);

    manager.forget(topic);
    let other = TopicOptions::persistent().max_age(Duration::from_secs(7200));
    let e = ensure(&manager, topic, &other).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&name) && text.contains(topic), "{text}");
    assert!(
        text.contains("retention.max_age is 1h on the server, 2h in the options"),
        "{text}"
    );
    let described = hour().discard(Discard::New);
    manager.forget(topic);
    let e = ensure(&manager, topic, &described).await.unwrap_err();
    assert!(
        e.message()
            .contains("discard is old on the server, new in the options"),
        "{e}"
    );
    assert_eq!(manager.create_calls(), 0);
    assert_eq!(
        read(&manager, topic, None).await.unwrap().retention.max_age,
        Some(Duration::from_secs(3600)),
        "the server's stream is unchanged"
    );
}

#[tokio::test]
async fn skip_makes_no_call() {
    let js = context().await;
    let manager = streams(&js, StreamStrategy::Skip);
    let topic = "st-skip.a";
    assert_eq!(
        &*ensure(&manager, topic, &hour()).await.unwrap(),
        "st--skip_a"
    );
    let custom = hour().stream("ST_SKIP_CUSTOM");
    assert_eq!(
        &*ensure(&manager, "st-skip.b", &custom).await.unwrap(),
        "ST_SKIP_CUSTOM"
    );
    assert_eq!(manager.create_calls(), 0);
    assert!(read(&manager, topic, None).await.is_none());
    assert!(server_config(&js, "ST_SKIP_CUSTOM").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_first_ensures_make_one_create_call() {
    let js = context().await;
    let manager = Arc::new(streams(&js, StreamStrategy::CreateOrUpdate));
    let topic = "st-flight.orders";
    let options = hour();
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (manager, options, barrier) = (manager.clone(), options.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                manager.ensure(topic, &options).await
            })
        })
        .collect();
    let mut names = Vec::new();
    for task in tasks {
        names.push(step("task", task).await.unwrap().expect("ensure"));
    }
    assert_eq!(manager.create_calls(), 1);
    assert_eq!(names.len(), 100);
    assert!(names.iter().all(|n| **n == *"st--flight_orders"));
    assert!(server_config(&js, "st--flight_orders").await.is_some());
}

#[tokio::test]
async fn read_maps_back_every_field() {
    let js = context().await;
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let topic = "st-read.a";
    let mut options = TopicOptions::persistent()
        .max_age(Duration::from_millis(90_500))
        .max_bytes(1 << 20)
        .max_messages(1000)
        .storage(Storage::Memory)
        .discard(Discard::New)
        .stream("ST_READ_CUSTOM");
    options.description = Some("orders for the read test".into());
    ensure(&manager, topic, &options).await.unwrap();
    let back = read(&manager, topic, Some(&options)).await.unwrap();
    assert_eq!(back, options);
    assert_eq!(back.persistence, Persistence::Persistent);
    // Without the override the derived stream is looked for: there is none.
    assert!(read(&manager, topic, None).await.is_none());

    // A derived name reads back as no override, unset limits as unset.
    let plain = "st-read.plain";
    ensure(&manager, plain, &TopicOptions::default())
        .await
        .unwrap();
    assert_eq!(
        read(&manager, plain, None).await.unwrap(),
        TopicOptions::persistent()
    );
}

#[tokio::test]
async fn list_returns_only_managed_streams() {
    let js = context().await;
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    ensure(&manager, "st-list.a", &hour()).await.unwrap();
    ensure(&manager, "st-list.b-c", &hour()).await.unwrap();
    let custom = hour().stream("ST_LIST_CUSTOM");
    ensure(&manager, "st-list.custom", &custom).await.unwrap();
    // Not lanebus's: two subjects; a name that is neither derived nor
    // configured; a wildcard subject under its derived-looking name.
    for (name, subjects) in [
        ("st--list_two", vec!["st-list.two", "st-list.three"]),
        ("ST_LIST_FOREIGN", vec!["st-list.foreign"]),
        ("st--list_wild", vec!["st-list.wild.*"]),
    ] {
        let config = Config {
            name: name.into(),
            subjects: subjects.into_iter().map(String::from).collect(),
            ..Config::default()
        };
        step("create", js.create_stream(config)).await.unwrap();
    }

    let overrides = vec![("st-list.custom".to_owned(), custom.clone())];
    let listed = step("list", manager.list(&overrides)).await.unwrap();
    let ours: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|t| t.starts_with("st-list."))
        .collect();
    assert_eq!(ours, ["st-list.a", "st-list.b-c", "st-list.custom"]);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted: {listed:?}");

    // Without its configuration the custom name is not recognised.
    let listed = step("list", manager.list(&[])).await.unwrap();
    assert!(!listed.iter().any(|t| t == "st-list.custom"));
    assert!(listed.iter().any(|t| t == "st-list.a"));
}

#[tokio::test]
async fn remove_deletes_the_stream_and_its_messages() {
    let js = context().await;
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let topic = "st-remove.a";
    let name = derived_name(topic);
    ensure(&manager, topic, &hour()).await.unwrap();
    for i in 0..3 {
        let ack = step("publish", js.publish(topic, format!("m{i}").into()))
            .await
            .unwrap();
        step("ack", ack).await.unwrap();
    }
    let mut stream = step("stream", js.get_stream(&name)).await.unwrap();
    assert_eq!(step("info", stream.info()).await.unwrap().state.messages, 3);

    assert!(step("remove", manager.remove(topic, None)).await.unwrap());
    assert!(server_config(&js, &name).await.is_none());
    assert!(read(&manager, topic, None).await.is_none());
    assert!(!step("remove", manager.remove(topic, None)).await.unwrap());

    // The cache was forgotten: the next ensure makes a new, empty stream.
    ensure(&manager, topic, &hour()).await.unwrap();
    assert_eq!(manager.create_calls(), 2);
    let mut stream = step("stream", js.get_stream(&name)).await.unwrap();
    assert_eq!(step("info", stream.info()).await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn a_subject_another_stream_captures_is_a_clear_error() {
    let js = context().await;
    let config = Config {
        name: "ST_OVERLAP_HOLDER".into(),
        subjects: vec!["st-overlap.*".into()],
        ..Config::default()
    };
    step("create", js.create_stream(config)).await.unwrap();
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let topic = "st-overlap.a";
    let e = ensure(&manager, topic, &hour()).await.unwrap_err();
    let text = e.to_string();
    for part in [
        "stream st--overlap_a for topic st-overlap.a cannot be created",
        "stream ST_OVERLAP_HOLDER already captures subject st-overlap.a",
        "10065",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(std::error::Error::source(&e).is_some());
    assert_eq!(manager.create_calls(), 1);
    // Not cached: the next call tries again (and fails the same way).
    assert!(ensure(&manager, topic, &hour()).await.is_err());
    assert_eq!(manager.create_calls(), 2);
}

#[tokio::test]
async fn a_name_held_for_another_subject_is_a_clear_error() {
    let js = context().await;
    let topic = "st-taken.a";
    let name = derived_name(topic);
    let config = Config {
        name: name.clone(),
        subjects: vec!["st-taken.other".into()],
        ..Config::default()
    };
    step("create", js.create_stream(config)).await.unwrap();
    for strategy in [
        StreamStrategy::CreateOrUpdate,
        StreamStrategy::CreateOnly,
        StreamStrategy::ValidateOnly,
    ] {
        let manager = streams(&js, strategy);
        let e = ensure(&manager, topic, &hour()).await.unwrap_err();
        assert_eq!(
            e.message(),
            format!(
                "stream {name} exists for subjects [st-taken.other], not for topic {topic} \
                 alone (set the topic's `stream` option to another name)"
            )
        );
        assert_eq!(manager.create_calls(), 0);
    }
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    let e = step("remove", manager.remove(topic, None))
        .await
        .unwrap_err();
    assert!(e.message().ends_with("; not removed"), "{e}");
    assert!(server_config(&js, &name).await.is_some(), "left in place");
    assert!(step("read", manager.read(topic, None)).await.is_err());
}

#[tokio::test]
async fn errors_name_the_topic_and_stream_when_jetstream_does_not_answer() {
    let (client, _) = raw().await;
    // An API prefix nothing listens on: every call has no responders.
    let manager = on_api(client, "$NOBODY.API", Duration::from_secs(2));
    let e = ensure(&manager, "st-nojs.a", &hour()).await.unwrap_err();
    assert_eq!(
        e.message(),
        "stream st--nojs_a for topic st-nojs.a: info failed: jetstream is not enabled on the server"
    );
    assert_eq!(manager.create_calls(), 0);
    assert_eq!(stream_name("st-nojs.a", Some(&hour().stream("X"))), "X");
}

/// A manager whose JetStream API requests go to `prefix`, each bounded by
/// `timeout`.
fn on_api(client: async_nats::Client, prefix: &str, timeout: Duration) -> Streams {
    let js = jetstream::with_prefix(client, prefix);
    Streams::new(js, &JetStreamOptions::default().api_timeout(timeout))
}

/// JetStream API requests the server has counted so far.
async fn api_requests(js: &Context) -> u64 {
    // A raw request: async-nats's account type expects fields that
    // server 2.9 does not send.
    let info: serde_json::Value = step("account", js.request("INFO", &()))
        .await
        .expect("account info");
    info["api"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no api.total in {info}"))
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_restart_the_flight() {
    // A server of its own, so that its API request count is this test's.
    let server = NatsServer::start();
    let client = step("connect", async_nats::connect(server.url()))
        .await
        .unwrap();
    let js = jetstream::new(client);
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);

    // The requests one uninterrupted first ensure makes (info, create),
    // plus the account query that measures them.
    let before = api_requests(&js).await;
    ensure(&manager, "st-cancel.baseline", &hour())
        .await
        .unwrap();
    let baseline = api_requests(&js).await - before;

    // One poll sends the info request and leaves the flight waiting for
    // the answer (the current-thread runtime cannot deliver it meanwhile);
    // then the caller gives up.
    let before = api_requests(&js).await;
    let options = hour();
    let mut first = Box::pin(manager.ensure("st-cancel.a", &options));
    assert!(futures_util::FutureExt::now_or_never(first.as_mut()).is_none());
    drop(first);
    let name = ensure(&manager, "st-cancel.a", &hour()).await.unwrap();
    assert_eq!(&*name, "st--cancel_a");
    assert_eq!(
        api_requests(&js).await - before,
        baseline,
        "the second caller joined the flight the first one started"
    );
    assert_eq!(manager.create_calls(), 2);
}

#[tokio::test]
async fn every_call_is_bounded_by_the_api_timeout() {
    let (client, _) = raw().await;
    // A responder that takes every request and never answers.
    let _silent = step("subscribe", client.subscribe("$SILENT.API.>"))
        .await
        .unwrap();
    step("flush", client.flush()).await.unwrap();
    let manager = on_api(client, "$SILENT.API", Duration::from_millis(200));
    let e = ensure(&manager, "st-silent.a", &hour()).await.unwrap_err();
    assert_eq!(
        e.message(),
        "stream st--silent_a for topic st-silent.a: info failed: no answer within 200ms"
    );
    let e = step("list", manager.list(&[])).await.unwrap_err();
    assert_eq!(
        e.message(),
        "listing the streams failed: no answer within 200ms"
    );
    let e = step("remove", manager.remove("st-silent.a", None))
        .await
        .unwrap_err();
    assert!(e.message().ends_with("no answer within 200ms"), "{e}");
}

#[tokio::test]
async fn a_name_longer_than_the_server_takes_asks_for_an_override() {
    let js = context().await;
    let manager = streams(&js, StreamStrategy::CreateOrUpdate);
    // 249 bytes, a valid topic; escaped, 373.
    let topic = "a-".repeat(124) + "a";
    assert!(crate::validate_topic_name(&topic).is_ok());
    let e = ensure(&manager, &topic, &hour()).await.unwrap_err();
    assert_eq!(
        e.message(),
        format!(
            "the stream name of topic {topic} is 373 bytes long, more than 255; \
             set the topic's `stream` option to a shorter name"
        )
    );
    assert_eq!(manager.create_calls(), 0);
    let short = hour().stream("ST_LONG_TOPIC");
    assert_eq!(
        &*ensure(&manager, &topic, &short).await.unwrap(),
        "ST_LONG_TOPIC"
    );
    assert!(read(&manager, &topic, Some(&short)).await.is_some());
}
