//! What the NATS unit tests share: the integration tests' `nats-server`
//! harness and hang guard (both included by path), and buses, configs and
//! raw clients on the test binary's shared server.
//!
//! # Invariants
//!
//! - Every wait on the server goes through [`step`], so a server that stops
//!   answering fails the test with the step's name instead of hanging it.
//! - A bus's client name is the test file's own (`name`): consumer names,
//!   which tests assert, derive from it.

use async_nats::jetstream;
use tokio::sync::mpsc;

use crate::{Bus, BusConfig, Message};

#[path = "../../../tests/common/nats.rs"]
#[allow(dead_code)]
pub(crate) mod harness;

#[path = "../../../tests/common/step.rs"]
mod hang_guard;

pub(crate) use hang_guard::{step, STEP};
pub(crate) use harness::NatsServer;

/// The YAML of a NATS bus on `url` named `name`; `extra` is appended to
/// the `nats` section (indented by two spaces) or adds sections of its own.
pub(crate) fn yaml(url: &str, name: &str, extra: &str) -> String {
    format!("type: nats\nnats:\n  urls: [\"{url}\"]\n  name: {name}\n{extra}")
}

/// [`yaml`] on the shared server, parsed.
pub(crate) fn config(name: &str, extra: &str) -> BusConfig {
    BusConfig::from_yaml_str(&yaml(&NatsServer::shared().url(), name, extra)).unwrap()
}

/// A bus on `url`, built from [`yaml`] as a user would.
pub(crate) async fn bus_on(url: &str, name: &str, extra: &str) -> Bus {
    let config = BusConfig::from_yaml_str(&yaml(url, name, extra)).unwrap();
    step("connect", Bus::connect(config)).await.unwrap()
}

/// A bus on the shared server ([`bus_on`]).
pub(crate) async fn bus(name: &str, extra: &str) -> Bus {
    bus_on(&NatsServer::shared().url(), name, extra).await
}

/// A raw async-nats client on the shared server, and its JetStream context.
pub(crate) async fn raw() -> (async_nats::Client, jetstream::Context) {
    let client = step(
        "raw connect",
        async_nats::connect(NatsServer::shared().url()),
    )
    .await
    .unwrap();
    let js = jetstream::new(client.clone());
    (client, js)
}

/// The next message a collecting handler forwarded.
pub(crate) async fn recv(rx: &mut mpsc::UnboundedReceiver<Message>) -> Message {
    step("a message", rx.recv()).await.expect("channel open")
}

/// Runs `act` (`NatsServer::kill`, `restart`, `start_again`: they block) on
/// a blocking thread, and hands the server back.
pub(crate) async fn off_thread(mut server: NatsServer, act: fn(&mut NatsServer)) -> NatsServer {
    tokio::task::spawn_blocking(move || {
        act(&mut server);
        server
    })
    .await
    .expect("the server action")
}
