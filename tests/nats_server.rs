//! Proves the NATS test harness (`tests/common/nats.rs`) against the real
//! `nats-server` with raw async-nats: core publish/subscribe, JetStream
//! publish with acks and a pull consumer with explicit acks, a SIGKILL
//! restart that keeps the stream's messages, token and user/password
//! servers that refuse wrong credentials, and TLS (one-way and mutual) with
//! certificates the harness makes. Needs the `nats` feature and a
//! `nats-server` binary (scripts/test.sh installs it); without the binary
//! every test fails and says so.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions};
use common::nats::{NatsServer, TlsPaths};
use common::step::{step, STEP};
use futures_util::StreamExt;

/// Connects to `server` with `options`.
async fn connect_with(
    server: &NatsServer,
    options: ConnectOptions,
) -> Result<Client, ConnectError> {
    step("connect", options.connect(server.url())).await
}

/// A client of `server` without credentials.
async fn client_of(server: &NatsServer) -> Client {
    connect_with(server, ConnectOptions::new())
        .await
        .expect("connect")
}

/// Options of a TLS client that trusts the harness's CA.
fn trusting(paths: &TlsPaths) -> ConnectOptions {
    ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(paths.ca.clone())
}

/// Publishes `count` messages to `subject` on JetStream, awaiting each ack,
/// and returns the stream sequences the server acknowledged.
async fn publish_acked(js: &jetstream::Context, subject: &str, payloads: &[String]) -> Vec<u64> {
    let mut acks = Vec::with_capacity(payloads.len());
    for payload in payloads {
        let pending = step(
            "publish",
            js.publish(subject.to_owned(), payload.clone().into()),
        )
        .await
        .expect("publish accepted by the client");
        let ack = step("publish ack", pending).await.expect("server ack");
        acks.push(ack.sequence);
    }
    acks
}

/// Fetches up to `count` messages from `consumer`, acks each explicitly
/// (waiting for the server to confirm the ack), and returns their payloads.
async fn fetch_and_ack(consumer: &consumer::PullConsumer, count: usize) -> Vec<String> {
    let mut payloads = Vec::with_capacity(count);
    while payloads.len() < count {
        let mut batch = step(
            "fetch",
            consumer
                .fetch()
                .max_messages(count - payloads.len())
                .expires(Duration::from_secs(2))
                .messages(),
        )
        .await
        .expect("fetch request");
        let before = payloads.len();
        while let Some(message) = step("next fetched message", batch.next()).await {
            let message = message.expect("fetched message");
            payloads.push(String::from_utf8(message.payload.to_vec()).expect("utf-8 payload"));
            step("double ack", message.double_ack())
                .await
                .expect("ack confirmed");
        }
        assert!(
            payloads.len() > before,
            "a fetch returned nothing while messages were due"
        );
    }
    payloads
}

fn durable(name: &str) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ..Default::default()
    }
}

fn payloads(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test]
async fn harness_serves_on_loopback_and_cleans_up() {
    let server = NatsServer::start();
    let url = server.url();
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    assert!(server.monitor_url().starts_with("http://127.0.0.1:"));
    let store = server.store_dir();
    let dir = store
        .parent()
        .expect("store inside the temp dir")
        .to_path_buf();
    assert!(dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    let client = client_of(&server).await;
    assert_eq!(client.server_info().port, server.port());
    assert!(client.server_info().jetstream, "the server runs JetStream");
    let pid = server.pid().expect("running");
    drop(client);
    drop(server);
    assert!(!dir.exists(), "the temp dir {} was removed", dir.display());
    let proc_entry = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(!proc_entry.exists(), "nats-server {pid} is gone after drop");
}

#[tokio::test]
async fn core_publish_subscribe_round_trip() {
    let server = NatsServer::start();
    let client = client_of(&server).await;
    let mut sub = step("subscribe", client.subscribe("harness.core.*"))
        .await
        .expect("subscribe");
    step("flush", client.flush()).await.expect("flush");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Lanebus-Key", "order-7");
    step(
        "publish with headers",
        client.publish_with_headers("harness.core.a", headers, "first".into()),
    )
    .await
    .expect("publish");
    for i in 0..100 {
        step(
            "publish",
            client.publish("harness.core.b", format!("m{i}").into()),
        )
        .await
        .expect("publish");
    }
    step("flush", client.flush()).await.expect("flush");

    let first = step("receive", sub.next())
        .await
        .expect("subscription open");
    assert_eq!(first.subject.as_str(), "harness.core.a");
    assert_eq!(&first.payload[..], b"first");
    let key = first
        .headers
        .as_ref()
        .and_then(|h| h.get("Lanebus-Key"))
        .map(|v| v.as_str());
    assert_eq!(key, Some("order-7"));
    for i in 0..100 {
        let message = step("receive", sub.next())
            .await
            .expect("subscription open");
        assert_eq!(message.subject.as_str(), "harness.core.b");
        assert_eq!(
            message.payload,
            format!("m{i}").as_bytes(),
            "in publish order"
        );
    }
}

#[tokio::test]
async fn jetstream_publish_acked_and_pull_consume_with_explicit_acks() {
    let server = NatsServer::start();
    let client = client_of(&server).await;
    let js = jetstream::new(client);
    let stream = step(
        "create stream",
        js.create_stream(stream::Config {
            name: "HARNESS".to_owned(),
            subjects: vec!["harness.js.>".to_owned()],
            ..Default::default()
        }),
    )
    .await
    .expect("create stream");
    let sent = payloads("js", 50);
    let sequences = publish_acked(&js, "harness.js.orders", &sent).await;
    assert_eq!(
        sequences,
        (1..=50).collect::<Vec<u64>>(),
        "one ack per message, in order"
    );

    let consumer: consumer::PullConsumer = step(
        "create consumer",
        stream.create_consumer(durable("harness-worker")),
    )
    .await
    .expect("create consumer");
    let received = fetch_and_ack(&consumer, sent.len()).await;
    assert_eq!(received, sent, "every message once, in order");

    let mut consumer = consumer;
    let info = step("consumer info", consumer.info())
        .await
        .expect("consumer info");
    assert_eq!(info.num_ack_pending, 0, "every message acked");
    assert_eq!(info.num_pending, 0, "nothing left to deliver");
    assert_eq!(info.delivered.stream_sequence, 50);
    assert_eq!(
        info.ack_floor.stream_sequence, 50,
        "the server recorded the acks"
    );
}

#[tokio::test]
async fn jetstream_messages_survive_a_sigkill_restart() {
    let mut server = NatsServer::start();
    let sent = payloads("durable", 200);
    {
        let client = client_of(&server).await;
        let js = jetstream::new(client.clone());
        step(
            "create stream",
            js.create_stream(stream::Config {
                name: "SURVIVE".to_owned(),
                subjects: vec!["survive.>".to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            }),
        )
        .await
        .expect("create stream");
        let sequences = publish_acked(&js, "survive.events", &sent).await;
        assert_eq!(sequences.last(), Some(&200));
        let old_pid = server.pid().expect("running");
        server.restart();
        assert_ne!(server.pid(), Some(old_pid), "a new process after SIGKILL");
        // The old client reconnects by itself to the same port.
        let mut alive = false;
        for _ in 0..200 {
            if client.connection_state() == async_nats::connection::State::Connected {
                alive = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(alive, "the old client reconnected to the restarted server");
    }

    let client = client_of(&server).await;
    let js = jetstream::new(client);
    let mut stream = step("get stream", js.get_stream("SURVIVE"))
        .await
        .expect("stream after restart");
    let info = step("stream info", stream.info())
        .await
        .expect("stream info");
    assert_eq!(
        info.state.messages, 200,
        "every acked message survived SIGKILL"
    );
    assert_eq!(info.state.last_sequence, 200);

    let consumer: consumer::PullConsumer = step(
        "create consumer",
        stream.create_consumer(durable("after-restart")),
    )
    .await
    .expect("create consumer");
    let received = fetch_and_ack(&consumer, sent.len()).await;
    assert_eq!(
        received, sent,
        "the same messages, in order, after the restart"
    );

    let next = publish_acked(&js, "survive.events", &["after".to_owned()]).await;
    assert_eq!(
        next,
        vec![201],
        "the restarted server goes on from the stored sequence"
    );
}

#[tokio::test]
async fn token_server_refuses_a_wrong_token_and_accepts_the_right_one() {
    let server = NatsServer::with_token("harness-token-1");
    for (what, options) in [
        (
            "a wrong token",
            ConnectOptions::with_token("not-the-token".to_owned()),
        ),
        ("no token", ConnectOptions::new()),
    ] {
        let error = connect_with(&server, options)
            .await
            .expect_err(&format!("{what} must be refused"));
        assert_eq!(
            error.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{what}: {error}"
        );
    }
    let client = connect_with(
        &server,
        ConnectOptions::with_token("harness-token-1".to_owned()),
    )
    .await
    .expect("the right token is accepted");
    assert_round_trip(&client).await;
}

#[tokio::test]
async fn user_password_server_refuses_a_wrong_password_and_accepts_the_right_one() {
    let server = NatsServer::with_user_password("lanebus", "pa55-word");
    let error = connect_with(
        &server,
        ConnectOptions::with_user_and_password("lanebus".to_owned(), "wrong".to_owned()),
    )
    .await
    .expect_err("a wrong password must be refused");
    assert_eq!(
        error.kind(),
        ConnectErrorKind::AuthorizationViolation,
        "{error}"
    );
    let client = connect_with(
        &server,
        ConnectOptions::with_user_and_password("lanebus".to_owned(), "pa55-word".to_owned()),
    )
    .await
    .expect("the right password is accepted");
    assert_round_trip(&client).await;
}

#[tokio::test]
async fn tls_server_accepts_a_client_that_trusts_its_ca_and_refuses_one_that_does_not() {
    let server = NatsServer::with_tls(false);
    let paths = server.tls_paths().expect("tls server").clone();
    let error = connect_with(&server, ConnectOptions::new().require_tls(true))
        .await
        .expect_err("a client that does not trust the test CA must fail the handshake");
    // async-nats reports rustls's verdict as an I/O error.
    assert!(
        matches!(error.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io)
            && error.to_string().contains("UnknownIssuer"),
        "refused for its certificate: {error}"
    );
    let client = connect_with(&server, trusting(&paths))
        .await
        .expect("a client that trusts the CA connects over TLS");
    assert!(client.server_info().tls_required, "the server requires TLS");
    assert_round_trip(&client).await;
}

#[tokio::test]
async fn mutual_tls_server_refuses_a_client_without_a_certificate() {
    let server = NatsServer::with_tls(true);
    let paths = server.tls_paths().expect("tls server").clone();
    let error = connect_with(&server, trusting(&paths))
        .await
        .expect_err("no client certificate must be refused");
    assert!(
        matches!(error.kind(), ConnectErrorKind::Tls | ConnectErrorKind::Io),
        "refused at the TLS layer: {error}"
    );
    let with_certificate = trusting(&paths)
        .add_client_certificate(paths.client_cert.clone(), paths.client_key.clone());
    let client = connect_with(&server, with_certificate)
        .await
        .expect("the client certificate is accepted");
    assert_round_trip(&client).await;
}

/// One message through the server and back, on an authenticated client.
async fn assert_round_trip(client: &async_nats::Client) {
    let mut sub = step("subscribe", client.subscribe("harness.auth"))
        .await
        .expect("subscribe");
    step("flush", client.flush()).await.expect("flush");
    step("publish", client.publish("harness.auth", "hello".into()))
        .await
        .expect("publish");
    let message = step("receive", sub.next())
        .await
        .expect("subscription open");
    assert_eq!(&message.payload[..], b"hello");
}

#[test]
fn shared_server_is_one_process_per_test_binary() {
    let first = NatsServer::shared();
    let second = NatsServer::shared();
    assert!(std::ptr::eq(first, second));
    assert!(first.pid().is_some(), "the shared server runs");
    let stream = std::net::TcpStream::connect(("127.0.0.1", first.port())).expect("connect");
    drop(stream);
}

/// Set in the child process of the leak-guard test.
const ABORT_CHILD: &str = "LANEBUS_NATS_HARNESS_ABORT_CHILD";

#[test]
fn leak_guard_kills_the_server_when_the_test_process_dies() {
    if std::env::var_os(ABORT_CHILD).is_some() {
        // The child: start a server, say where it is, and die without
        // unwinding (no destructor runs).
        let server = NatsServer::start();
        let dir = server.store_dir().parent().expect("temp dir").to_path_buf();
        println!(
            "SERVER {} {}",
            server.pid().expect("running"),
            dir.display()
        );
        use std::io::Write as _;
        std::io::stdout().flush().expect("flush");
        std::process::abort();
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "leak_guard_kills_the_server_when_the_test_process_dies",
            "--nocapture",
        ])
        .env(ABORT_CHILD, "1")
        .output()
        .expect("run the child test process");
    assert!(!out.status.success(), "the child aborted");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SERVER "))
        .unwrap_or_else(|| panic!("the child did not report its server: {stdout}"));
    let (pid, dir) = line.split_once(' ').expect("pid and dir");
    let dir = std::path::PathBuf::from(dir);
    let alive = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                // The state follows the parenthesised command name.
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                state != Some(Some('Z'))
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + STEP;
    while (alive(pid) || dir.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !alive(pid),
        "the watchdog killed nats-server {pid} after its test process died"
    );
    assert!(!dir.exists(), "the watchdog removed {}", dir.display());
}
