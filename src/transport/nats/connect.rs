//! Opens an async-nats client from [`NatsOptions`] and forwards its
//! connection events (see the parent module for the algorithm).
//!
//! # Invariants
//!
//! - Every option is mapped: URLs, name, connect timeout, reconnect
//!   attempts and delays, the four kinds of credentials, the CA, the client
//!   certificate and key, and `required`.
//! - Every failure is one [`TransportError`] of transport `nats` whose
//!   message starts with what failed; the async-nats error is its source.

use std::error::Error as StdError;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions, ServerAddr};
use tokio::sync::broadcast;

use super::options::redact_url;
use super::{ConnectionEvent, NatsAuth, NatsOptions};
use crate::TransportError;

/// Events a receiver may fall behind by before it loses the oldest.
pub(crate) const EVENT_CAPACITY: usize = 64;

/// A channel for [`connect`]'s events; call `subscribe()` on the sender
/// for a receiver (before `connect`, to see the first `Connected`).
pub(crate) fn event_channel() -> broadcast::Sender<ConnectionEvent> {
    broadcast::channel(EVENT_CAPACITY).0
}

fn error(message: String, source: Option<Box<dyn StdError + Send + Sync>>) -> TransportError {
    TransportError::new("nats", message, source)
}

/// Connects to the servers `options` names, once (see the module docs),
/// and forwards the connection's events to `events` from then on.
///
/// # Errors
///
/// A [`TransportError`] naming the cause: invalid options, a file that
/// cannot be read, refused credentials, a failed TLS handshake, a timeout,
/// a refused connection.
pub(crate) async fn connect(
    options: &NatsOptions,
    events: broadcast::Sender<ConnectionEvent>,
) -> Result<async_nats::Client, TransportError> {
    options
        .validate("nats")
        .map_err(|e| error(format!("invalid options: {e}"), Some(Box::new(e))))?;
    let shown = options
        .urls
        .iter()
        .map(|u| redact_url(u))
        .collect::<Vec<_>>()
        .join(", ");
    let mut addrs = Vec::with_capacity(options.urls.len());
    for url in &options.urls {
        let addr: ServerAddr = url.parse().map_err(|e: io::Error| {
            error(
                format!("bad server url {}: {e}", redact_url(url)),
                Some(Box::new(e)),
            )
        })?;
        if addr.is_websocket() {
            return Err(error(
                format!(
                    "websocket url {} is not supported by this build (async-nats's websockets \
                     feature is off); use nats:// or tls://",
                    redact_url(url)
                ),
                None,
            ));
        }
        addrs.push(addr);
    }

    let mut connect = ConnectOptions::new()
        .connection_timeout(options.connect_timeout)
        .max_reconnects(options.reconnect.max_attempts.map(|n| n as usize));
    if let Some(name) = &options.name {
        connect = connect.name(name);
    }
    let reconnect = options.reconnect.clone();
    connect = connect.reconnect_delay_callback(move |attempt| reconnect.delay(attempt));
    connect = with_auth(connect, &options.auth).await?;
    connect = with_tls(connect, options)?;
    connect = connect.event_callback(forwarder(events));

    connect.connect(addrs).await.map_err(|e| {
        let message = describe(&e, options, &shown);
        error(message, Some(Box::new(e)))
    })
}

/// The event callback: maps each async-nats event and sends it on.
fn forwarder(
    events: broadcast::Sender<ConnectionEvent>,
) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let connected_before = AtomicBool::new(false);
    move |event| {
        use async_nats::Event;
        let event = match event {
            Event::Connected if connected_before.swap(true, Ordering::Relaxed) => {
                ConnectionEvent::Reconnected
            }
            Event::Connected => ConnectionEvent::Connected,
            Event::Disconnected => ConnectionEvent::Disconnected,
            Event::LameDuckMode => ConnectionEvent::LameDuck,
            Event::Draining => ConnectionEvent::Draining,
            Event::Closed => ConnectionEvent::Closed,
            Event::SlowConsumer(subscription) => ConnectionEvent::SlowConsumer { subscription },
            Event::ServerError(e) => ConnectionEvent::ServerError(e.to_string()),
            Event::ClientError(e) => ConnectionEvent::Error(strip_prefix(&e.to_string())),
        };
        // No receiver (yet) is not an error: events are for who listens.
        let _ = events.send(event);
        std::future::ready(())
    }
}

/// async-nats writes client errors as `nats: …`; the event says it is NATS.
fn strip_prefix(text: &str) -> String {
    text.strip_prefix("nats: ").unwrap_or(text).to_owned()
}

/// Adds the credentials.
async fn with_auth(
    connect: ConnectOptions,
    auth: &NatsAuth,
) -> Result<ConnectOptions, TransportError> {
    Ok(match auth {
        NatsAuth::Token { token } => connect.token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Nkey { seed } => connect.nkey(seed.clone()),
        NatsAuth::CredsFile { path } => connect.credentials_file(path).await.map_err(|e| {
            error(
                format!("cannot read creds file {}: {e}", path.display()),
                Some(Box::new(e)),
            )
        })?,
        NatsAuth::None => connect,
    })
}

/// Adds the TLS settings, after checking their files can be read (async-nats
/// reads them only when a connection upgrades to TLS, and then reports a
/// missing file as a TLS error).
fn with_tls(
    mut connect: ConnectOptions,
    options: &NatsOptions,
) -> Result<ConnectOptions, TransportError> {
    let tls = &options.tls;
    let readable = |field: &str, path: &Path| {
        std::fs::File::open(path).map(drop).map_err(|e| {
            error(
                format!("tls {field} {} cannot be read: {e}", path.display()),
                Some(Box::new(e)),
            )
        })
    };
    if let Some(ca) = &tls.ca_file {
        readable("ca_file", ca)?;
        connect = connect.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        readable("cert_file", cert)?;
        readable("key_file", key)?;
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(connect.require_tls(tls.required))
}

/// What failed, in words, for the first connection.
fn describe(e: &ConnectError, options: &NatsOptions, urls: &str) -> String {
    let source = e.source();
    let detail = source.map_or_else(String::new, |s| format!(": {s}"));
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation => format!(
            "authorization failed at {urls}: the server refused the {}",
            credentials(options)
        ),
        ConnectErrorKind::Authentication => format!(
            "authentication failed: the {} could not sign the server's nonce{detail}",
            credentials(options)
        ),
        ConnectErrorKind::TimedOut => format!(
            "connect timed out to {urls} (after {})",
            crate::options::duration::format(options.connect_timeout)
        ),
        ConnectErrorKind::Tls => format!("tls setup failed for {urls}{detail}"),
        ConnectErrorKind::Dns => format!("cannot resolve {urls}{detail}"),
        ConnectErrorKind::ServerParse => format!("bad server url in {urls}{detail}"),
        ConnectErrorKind::MaxReconnects => {
            format!("gave up connecting to {urls} after the allowed attempts")
        }
        _ => {
            let io = source.and_then(|s| s.downcast_ref::<io::Error>());
            let tls = io
                .and_then(io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<async_nats::rustls::Error>());
            match (io.map(io::Error::kind), tls) {
                (_, Some(tls)) => {
                    format!(
                        "tls handshake failed with {urls}: {tls}{}",
                        tls_hint(tls, options)
                    )
                }
                (Some(io::ErrorKind::ConnectionRefused), _) => {
                    format!("connection refused by {urls}")
                }
                _ => format!("connect to {urls} failed{detail}"),
            }
        }
    }
}

/// What a TLS failure most likely means, when that is clear.
fn tls_hint(e: &async_nats::rustls::Error, options: &NatsOptions) -> &'static str {
    use async_nats::rustls::{AlertDescription, Error};
    match e {
        Error::InvalidMessage(_) => " (the server did not answer in tls: is tls enabled on it?)",
        Error::AlertReceived(
            AlertDescription::BadCertificate | AlertDescription::CertificateRequired,
        ) if options.tls.cert_file.is_none() => {
            " (the server wants a client certificate: set tls.cert_file and tls.key_file)"
        }
        Error::InvalidCertificate(_) if options.tls.ca_file.is_none() => {
            " (set tls.ca_file to the CA that issued the server's certificate)"
        }
        _ => "",
    }
}

/// The credentials the options present, named (never quoted).
fn credentials(options: &NatsOptions) -> &'static str {
    match &options.auth {
        NatsAuth::None if options.urls.iter().any(|u| redact_url(u) != *u) => {
            "credentials in the url"
        }
        NatsAuth::None => "connection without credentials",
        NatsAuth::Token { .. } => "token",
        NatsAuth::UserPassword { .. } => "user name or password",
        NatsAuth::Nkey { .. } => "nkey seed",
        NatsAuth::CredsFile { .. } => "creds file",
    }
}
