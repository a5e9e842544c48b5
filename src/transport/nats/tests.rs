//! `connect` against a real `nats-server` (the integration tests' harness,
//! through `test_support.rs`): every kind of credential and TLS, each failure's
//! message, timeouts, and the events around a SIGKILL restart.
//!
//! These are unit tests rather than a `tests/` file because `connect` is
//! crate-private: testing it here needs no public test hook.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use super::test_support::{harness, off_thread, step, NatsServer, STEP};
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::{
    connect, event_channel, ConnectionEvent, NatsAuth, NatsOptions, NatsReconnect, NatsTls,
};
use crate::TransportError;

/// Connects with `options`, failing the test on an error.
async fn open(options: &NatsOptions) -> async_nats::Client {
    match step("connect", connect(options, event_channel())).await {
        Ok(client) => client,
        Err(e) => panic!("connect with {options:?} failed: {e}"),
    }
}

/// Connects with `options`, expecting an error.
async fn refused(options: &NatsOptions) -> TransportError {
    match step("connect", connect(options, event_channel())).await {
        Ok(_) => panic!("connect with {options:?} must fail"),
        Err(e) => {
            assert_eq!(e.transport(), "nats");
            e
        }
    }
}

/// The client works: a message goes to the server and back.
async fn round_trip(client: &async_nats::Client) {
    let mut sub = step("subscribe", client.subscribe("lanebus.ping"))
        .await
        .expect("subscribe");
    step("publish", client.publish("lanebus.ping", "p".into()))
        .await
        .expect("publish");
    let msg = step("receive", sub.next()).await.expect("a message");
    assert_eq!(msg.payload.as_ref(), b"p");
}

fn loopback_port_closed() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address").port()
}

#[tokio::test]
async fn connects_without_auth_with_its_name_and_sends_connected_first() {
    let server = NatsServer::shared();
    let events = event_channel();
    let mut rx = events.subscribe();
    let options = NatsOptions::default()
        .url(server.url())
        .name("lanebus-connect-test");
    let client = step("connect", connect(&options, events)).await.unwrap();
    round_trip(&client).await;
    let first = step("event", rx.recv()).await.unwrap();
    assert_eq!(first, ConnectionEvent::Connected);

    // The server lists the connection under the client name.
    let connz = http_get(server.monitor_url(), "/connz");
    assert!(
        connz.contains("\"name\": \"lanebus-connect-test\""),
        "{connz}"
    );
}

#[tokio::test]
async fn token_right_wrong_and_missing() {
    let server = NatsServer::with_token("t0k3n-right");
    let base = NatsOptions::default().url(server.url());
    round_trip(&open(&base.clone().auth(NatsAuth::token("t0k3n-right"))).await).await;

    let e = refused(&base.clone().auth(NatsAuth::token("t0k3n-wrong"))).await;
    let text = e.to_string();
    assert!(
        text.starts_with("nats transport: authorization failed at nats://127.0.0.1:"),
        "{text}"
    );
    assert!(text.ends_with("the server refused the token"), "{text}");
    assert!(!text.contains("t0k3n"), "{text}");

    let e = refused(&base).await;
    assert!(
        e.message()
            .ends_with("the server refused the connection without credentials"),
        "{e}"
    );
}

#[tokio::test]
async fn user_password_right_and_wrong() {
    let server = NatsServer::with_user_password("app", "pw-right");
    let base = NatsOptions::default().url(server.url());
    round_trip(
        &open(
            &base
                .clone()
                .auth(NatsAuth::user_password("app", "pw-right")),
        )
        .await,
    )
    .await;

    let e = refused(
        &base
            .clone()
            .auth(NatsAuth::user_password("app", "pw-wrong")),
    )
    .await;
    assert!(e.message().starts_with("authorization failed at "), "{e}");
    assert!(
        e.message().ends_with("refused the user name or password"),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains("pw-"), "{e:?}");

    // A password inside the URL is redacted in the message too.
    let port = server.port();
    let e =
        refused(&NatsOptions::default().url(format!("nats://app:pw-url@127.0.0.1:{port}"))).await;
    assert!(
        e.message()
            .contains(&format!("nats://app:<redacted>@127.0.0.1:{port}")),
        "{e}"
    );
    assert!(
        e.message()
            .ends_with("the server refused the credentials in the url"),
        "{e}"
    );
    assert!(!e.to_string().contains("pw-url"), "{e}");
}

#[tokio::test]
async fn nkey_right_and_wrong_seed() {
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let seed = |k: &nkeys::KeyPair| k.seed().expect("a generated pair has its seed");
    let server = NatsServer::start_with(harness::NatsOptions {
        auth: harness::Auth::Nkey(user.public_key()),
        ..harness::NatsOptions::default()
    });
    let base = NatsOptions::default().url(server.url());
    round_trip(&open(&base.clone().auth(NatsAuth::nkey(seed(&user)))).await).await;

    let wrong = seed(&stranger);
    let e = refused(&base.clone().auth(NatsAuth::nkey(wrong.clone()))).await;
    assert!(e.message().starts_with("authorization failed at "), "{e}");
    assert!(
        e.message().ends_with("the server refused the nkey seed"),
        "{e}"
    );
    assert!(!format!("{e} {e:?}").contains(&wrong), "{e:?}");
}

#[tokio::test]
async fn tls_with_the_ca_and_without_it() {
    let server = NatsServer::with_tls(false);
    let paths = server.tls_paths().expect("tls paths").clone();
    let base = NatsOptions::default().url(server.url());
    let with_ca = base
        .clone()
        .tls(NatsTls::default().ca_file(&paths.ca).required(true));
    round_trip(&open(&with_ca).await).await;

    // Without the CA the system's roots do not know the server's issuer.
    let e = refused(&base).await;
    assert!(
        e.message()
            .starts_with("tls handshake failed with nats://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.message().ends_with(
            "invalid peer certificate: UnknownIssuer \
             (set tls.ca_file to the CA that issued the server's certificate)"
        ),
        "{e}"
    );

    // A CA file that is not there is named before any connection.
    let missing = paths.ca.with_file_name("no-such-ca.pem");
    let e = refused(&base.clone().tls(NatsTls::default().ca_file(&missing))).await;
    assert!(
        e.message()
            .starts_with(&format!("tls ca_file {} cannot be read", missing.display())),
        "{e}"
    );

    // TLS required against a plain server is refused too.
    let plain = NatsServer::shared();
    let e = refused(
        &NatsOptions::default()
            .url(plain.url())
            .tls(NatsTls::default().ca_file(&paths.ca).required(true)),
    )
    .await;
    assert!(
        e.message()
            .starts_with("tls handshake failed with nats://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.message()
            .ends_with("(the server did not answer in tls: is tls enabled on it?)"),
        "{e}"
    );
}

#[tokio::test]
async fn mutual_tls_with_and_without_a_client_certificate() {
    let server = NatsServer::with_tls(true);
    let paths = server.tls_paths().expect("tls paths").clone();
    let base = NatsOptions::default().url(server.url());
    let ca_only = NatsTls::default().ca_file(&paths.ca);
    let mutual = ca_only
        .clone()
        .client_cert(&paths.client_cert, &paths.client_key);
    round_trip(&open(&base.clone().tls(mutual)).await).await;

    let e = refused(&base.clone().tls(ca_only)).await;
    assert!(
        e.message()
            .starts_with("tls handshake failed with nats://127.0.0.1:"),
        "{e}"
    );
    assert!(
        e.message().ends_with(
            "(the server wants a client certificate: set tls.cert_file and tls.key_file)"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn refused_port_and_silent_server_fail_in_bounded_time() {
    let port = loopback_port_closed();
    let options = NatsOptions::default()
        .url(format!("nats://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(300));
    let e = refused(&options).await;
    assert_eq!(
        e.message(),
        format!("connection refused by nats://127.0.0.1:{port}")
    );

    // A listener that never says INFO: the connect timeout ends the wait.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = silent.local_addr().expect("address").port();
    let e = refused(&options.clone().url(format!("nats://127.0.0.1:{port}"))).await;
    assert_eq!(
        e.message(),
        format!("connect timed out to nats://127.0.0.1:{port} (after 300ms)")
    );
    drop(silent);
}

#[tokio::test]
async fn bad_seed_missing_creds_websocket_and_invalid_options() {
    let server = NatsServer::shared();
    let base = NatsOptions::default().url(server.url());

    let e = refused(&base.clone().auth(NatsAuth::nkey("SUnot-a-seed"))).await;
    assert!(
        e.message()
            .starts_with("authentication failed: the nkey seed could not sign the server's nonce"),
        "{e}"
    );
    assert!(!e.to_string().contains("not-a-seed"), "{e}");

    let e = refused(
        &base
            .clone()
            .auth(NatsAuth::creds_file("/nonexistent/app.creds")),
    )
    .await;
    assert!(
        e.message()
            .starts_with("cannot read creds file /nonexistent/app.creds"),
        "{e}"
    );

    // A file that is there but holds no JWT.
    let garbage = server.store_dir().with_file_name("garbage.creds");
    std::fs::write(&garbage, "not a creds file\n").expect("write the creds file");
    let e = refused(&base.clone().auth(NatsAuth::creds_file(&garbage))).await;
    assert!(
        e.message()
            .starts_with(&format!("cannot read creds file {}", garbage.display())),
        "{e}"
    );

    let e = refused(&NatsOptions::default().url("ws://127.0.0.1:1")).await;
    assert!(
        e.message()
            .starts_with("websocket url ws://127.0.0.1:1 is not supported"),
        "{e}"
    );

    let e = refused(&base.connect_timeout(Duration::ZERO)).await;
    assert_eq!(
        e.message(),
        "invalid options: invalid config field `nats.connect_timeout`: must be positive"
    );
}

/// The next event that is not a client error (failed reconnect attempts
/// come in any number).
async fn next_state(
    rx: &mut broadcast::Receiver<ConnectionEvent>,
    seen: &mut Vec<ConnectionEvent>,
) -> ConnectionEvent {
    loop {
        let event = step("event", rx.recv()).await.expect("event channel open");
        seen.push(event.clone());
        if !matches!(event, ConnectionEvent::Error(_)) {
            return event;
        }
    }
}

/// A client of `server` that reconnects as `reconnect` says, its event
/// receiver, and the events seen so far (the first one, `Connected`).
async fn with_events(
    server: &NatsServer,
    reconnect: NatsReconnect,
) -> (
    async_nats::Client,
    broadcast::Receiver<ConnectionEvent>,
    Vec<ConnectionEvent>,
) {
    let events = event_channel();
    let mut rx = events.subscribe();
    let options = NatsOptions::default()
        .url(server.url())
        .reconnect(reconnect);
    let client = step("connect", connect(&options, events)).await.unwrap();
    let mut seen = Vec::new();
    assert_eq!(
        next_state(&mut rx, &mut seen).await,
        ConnectionEvent::Connected
    );
    (client, rx, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_disconnects_then_reconnects_and_the_subscription_carries_on() {
    let server = NatsServer::start();
    let reconnect =
        NatsReconnect::default().delays(Duration::from_millis(20), Duration::from_millis(200));
    let (client, mut rx, mut seen) = with_events(&server, reconnect).await;
    let mut sub = step("subscribe", client.subscribe("lanebus.restart"))
        .await
        .unwrap();
    step("flush", client.flush()).await.unwrap();

    let server = off_thread(server, NatsServer::restart).await;

    assert_eq!(
        next_state(&mut rx, &mut seen).await,
        ConnectionEvent::Disconnected,
        "{seen:?}"
    );
    assert_eq!(
        next_state(&mut rx, &mut seen).await,
        ConnectionEvent::Reconnected,
        "{seen:?}"
    );

    // The subscription was renewed on the new connection.
    step("publish", client.publish("lanebus.restart", "after".into()))
        .await
        .unwrap();
    let msg = step("receive after restart", sub.next())
        .await
        .expect("a message");
    assert_eq!(msg.payload.as_ref(), b"after");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_reconnect_gives_up_and_says_so() {
    let server = NatsServer::start();
    let reconnect = NatsReconnect::default()
        .max_attempts(2)
        .delays(Duration::from_millis(10), Duration::from_millis(10));
    let (_client, mut rx, mut seen) = with_events(&server, reconnect).await;
    let server = off_thread(server, NatsServer::kill).await;
    assert_eq!(
        next_state(&mut rx, &mut seen).await,
        ConnectionEvent::Disconnected
    );
    loop {
        let event = step("event", rx.recv()).await.expect("event channel open");
        if event == ConnectionEvent::Error("max reconnects reached".into()) {
            break;
        }
        assert!(matches!(event, ConnectionEvent::Error(_)), "{event:?}");
    }
    drop(server);
}

/// `GET path` from the monitor, the body as text.
fn http_get(base: String, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect to the monitor");
    stream.set_read_timeout(Some(STEP)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response
}
