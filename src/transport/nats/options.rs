//! [`NatsOptions`]: where and how the NATS transport connects, as plain
//! data (no async-nats types, so a config can be read and checked on a
//! build without the `nats` feature).
//!
//! # Algorithm
//!
//! - Serde reads every struct with `default` and `deny_unknown_fields`, so
//!   a config names only what it changes and a misspelt field is an error.
//!   Durations need a unit (`"5s"`, `"250ms"`). [`NatsAuth`] is tagged by
//!   `type` (`none`, `token`, `user_password`, `nkey`, `creds_file`).
//! - [`NatsOptions::validate`] runs one check per rule and names the first
//!   bad field by its dotted path (`transport.nats.tls.key_file`).
//! - Server URLs are checked by hand (`scheme://[user[:pass]@]host[:port]`)
//!   rather than by async-nats's parser, so the check is the same with and
//!   without the feature.
//! - Reconnect delays: after a connection is lost, the first attempt starts
//!   at once; attempt `n ≥ 2` waits `min(initial_delay · 2^(n-2),
//!   max_delay)` ([`NatsReconnect::delay`]). Each server URL tried counts
//!   as one attempt.
//!
//! # Invariants
//!
//! - `Debug` never prints a secret: tokens, passwords, NKey seeds and the
//!   password part of a URL show as `<redacted>`. `Serialize` does write
//!   them (a config written out must read back the same).
//! - Every serialized value reads back equal (YAML and TOML).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::JetStreamOptions;
use crate::options::{duration, ConfigError, Fields, NO_ZERO_LIMIT};

/// The URL a default [`NatsOptions`] connects to.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// What `Debug` prints in place of a secret.
const REDACTED: &str = "<redacted>";

/// How the NATS transport connects.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::{NatsAuth, NatsOptions, NatsReconnect, NatsTls};
///
/// let opts = NatsOptions::default()
///     .urls(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
///     .name("billing")
///     .connect_timeout(Duration::from_secs(2))
///     .reconnect(NatsReconnect::default().max_attempts(60))
///     .auth(NatsAuth::user_password("billing", "s3cret"))
///     .tls(NatsTls::default().ca_file("/etc/nats/ca.pem"));
/// assert!(opts.validate("transport.nats").is_ok());
/// assert!(!format!("{opts:?}").contains("s3cret"));
///
/// let err = NatsOptions::default().urls(["http://x"]).validate("nats").unwrap_err();
/// assert_eq!(err.field(), Some("nats.urls[0]"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Server URLs (`nats://`, `tls://`, `ws://`, `wss://`), tried in a
    /// random order. Default: `["nats://127.0.0.1:4222"]`.
    pub urls: Vec<String>,
    /// The client name the server shows in its connection list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long one connection attempt (TCP, TLS, the server's `INFO`,
    /// `CONNECT` and the first `PONG`) may take. Default: 5 s.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Reconnecting after the connection is lost.
    pub reconnect: NatsReconnect,
    /// How the client authenticates.
    pub auth: NatsAuth,
    /// TLS settings.
    pub tls: NatsTls,
    /// How persistent topics use JetStream.
    pub jetstream: JetStreamOptions,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            urls: vec![DEFAULT_NATS_URL.to_owned()],
            name: None,
            connect_timeout: Duration::from_secs(5),
            reconnect: NatsReconnect::default(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            jetstream: JetStreamOptions::default(),
        }
    }
}

impl NatsOptions {
    /// Connects to this one server.
    pub fn url(self, url: impl Into<String>) -> Self {
        self.urls([url])
    }

    /// Connects to these servers (replacing the list).
    pub fn urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the client name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the timeout of one connection attempt.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the reconnect policy.
    pub fn reconnect(mut self, reconnect: NatsReconnect) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets the authentication.
    pub fn auth(mut self, auth: NatsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the TLS settings.
    pub fn tls(mut self, tls: NatsTls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets how persistent topics use JetStream.
    pub fn jetstream(mut self, jetstream: JetStreamOptions) -> Self {
        self.jetstream = jetstream;
        self
    }

    /// Checks the fields; `prefix` names where the options sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.ensure("urls", !self.urls.is_empty(), "needs at least one url")?;
        for (i, url) in self.urls.iter().enumerate() {
            if let Err(reason) = check_url(url) {
                return Err(ConfigError::invalid(
                    fields.path(&format!("urls[{i}]")),
                    reason,
                ));
            }
        }
        let websocket = |u: &String| u.starts_with("ws://") || u.starts_with("wss://");
        fields.ensure(
            "urls",
            self.urls.iter().all(websocket) || !self.urls.iter().any(websocket),
            "cannot mix websocket (ws://, wss://) and nats:// or tls:// urls",
        )?;
        if let Some(name) = &self.name {
            fields.ensure("name", !name.trim().is_empty(), "must not be empty")?;
        }
        fields.ensure(
            "connect_timeout",
            !self.connect_timeout.is_zero(),
            "must be positive",
        )?;
        self.reconnect.validate(&fields.path("reconnect"))?;
        self.auth.validate(&fields.path("auth"))?;
        self.tls.validate(&fields.path("tls"))?;
        self.jetstream.validate(&fields.path("jetstream"))?;
        Ok(())
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("NatsOptions")
            .field("urls", &urls)
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("jetstream", &self.jetstream)
            .finish()
    }
}

/// Reconnecting after a lost connection.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lanebus::NatsReconnect;
///
/// let r = NatsReconnect::default().delays(Duration::from_millis(100), Duration::from_secs(1));
/// assert_eq!(r.delay(1), Duration::ZERO);
/// assert_eq!(r.delay(2), Duration::from_millis(100));
/// assert_eq!(r.delay(4), Duration::from_millis(400));
/// assert_eq!(r.delay(9), Duration::from_secs(1));
/// assert_eq!(r.max_attempts, None); // unlimited
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsReconnect {
    /// Attempts in a row before the client gives up for good (each server
    /// URL tried is one attempt); `None` (the default, or the field
    /// omitted): never give up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The wait before the second attempt; it doubles with each further
    /// attempt up to `max_delay`. Default: 100 ms.
    #[serde(with = "duration")]
    pub initial_delay: Duration,
    /// The longest wait between attempts. Default: 4 s.
    #[serde(with = "duration")]
    pub max_delay: Duration,
}

impl Default for NatsReconnect {
    fn default() -> Self {
        Self {
            max_attempts: None,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl NatsReconnect {
    /// Gives up after `attempts` attempts in a row.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Never gives up (the default).
    pub fn unlimited(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// Sets the first and the longest wait between attempts.
    pub fn delays(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_delay = initial;
        self.max_delay = max;
        self
    }

    /// The wait before attempt `attempt` (1-based, counted since the last
    /// connection): none for the first, then `initial_delay` doubling up
    /// to `max_delay`.
    pub fn delay(&self, attempt: usize) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(31);
        self.initial_delay
            .checked_mul(1 << doublings)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        fields.ensure("max_attempts", self.max_attempts != Some(0), NO_ZERO_LIMIT)?;
        fields.ensure(
            "initial_delay",
            !self.initial_delay.is_zero(),
            "must be positive",
        )?;
        fields.ensure(
            "max_delay",
            self.max_delay >= self.initial_delay,
            "must be at least initial_delay",
        )
    }
}

/// How the client authenticates. In a config it is tagged by `type`:
///
/// ```yaml
/// auth:
///   type: user_password
///   user: billing
///   password: s3cret
/// ```
///
/// `Debug` prints no secret.
///
/// # Examples
///
/// ```
/// use lanebus::NatsAuth;
///
/// let auth = NatsAuth::token("t0ken");
/// assert_eq!(format!("{auth:?}"), "Token { token: \"<redacted>\" }");
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials (the default).
    #[default]
    None,
    /// A token (the server's `authorization { token: … }`).
    Token {
        /// The token.
        token: String,
    },
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// An NKey seed (`SU…`), which signs the server's nonce.
    Nkey {
        /// The seed.
        seed: String,
    },
    /// A `.creds` file holding a user JWT and its NKey seed (read at
    /// connect time).
    CredsFile {
        /// Where the file is.
        path: PathBuf,
    },
}

impl NatsAuth {
    /// A token.
    pub fn token(token: impl Into<String>) -> Self {
        Self::Token {
            token: token.into(),
        }
    }

    /// A user name and password.
    pub fn user_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self::UserPassword {
            user: user.into(),
            password: password.into(),
        }
    }

    /// An NKey seed.
    pub fn nkey(seed: impl Into<String>) -> Self {
        Self::Nkey { seed: seed.into() }
    }

    /// A `.creds` file.
    pub fn creds_file(path: impl Into<PathBuf>) -> Self {
        Self::CredsFile { path: path.into() }
    }

    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        match self {
            Self::None => Ok(()),
            Self::Token { token } => fields.ensure("token", !token.is_empty(), "must not be empty"),
            Self::UserPassword { user, .. } => {
                fields.ensure("user", !user.is_empty(), "must not be empty")
            }
            Self::Nkey { seed } => fields.ensure(
                "seed",
                seed.starts_with('S'),
                "must be an NKey seed (it starts with `S`)",
            ),
            Self::CredsFile { path } => {
                fields.ensure("path", !path.as_os_str().is_empty(), "must not be empty")
            }
        }
    }
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Token { .. } => f.debug_struct("Token").field("token", &REDACTED).finish(),
            Self::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &REDACTED)
                .finish(),
            Self::Nkey { .. } => f.debug_struct("Nkey").field("seed", &REDACTED).finish(),
            Self::CredsFile { path } => f.debug_struct("CredsFile").field("path", path).finish(),
        }
    }
}

/// TLS settings. With none set, TLS is used when a URL is `tls://` or
/// `wss://` or the server asks for it, and the server's certificate is
/// checked against the system's roots.
///
/// # Examples
///
/// ```
/// use lanebus::NatsTls;
///
/// let tls = NatsTls::default()
///     .ca_file("ca.pem")
///     .client_cert("client.pem", "client-key.pem")
///     .required(true);
/// assert!(tls.validate("tls").is_ok());
/// let mut half = tls.clone();
/// half.key_file = None;
/// assert_eq!(half.validate("tls").unwrap_err().field(), Some("tls.key_file"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsTls {
    /// A PEM file of root certificates that replaces the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (mutual TLS); needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key; needs `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub required: bool,
}

impl NatsTls {
    /// Trusts the roots in this PEM file (instead of the system's).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files).
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert.into());
        self.key_file = Some(key.into());
        self
    }

    /// Requires TLS.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// Checks the fields; `prefix` names where they sit in a config.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let fields = Fields::at(prefix);
        for (name, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path {
                fields.ensure(name, !path.as_os_str().is_empty(), "must not be empty")?;
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(ConfigError::invalid(
                fields.path("key_file"),
                "is needed with cert_file",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                fields.path("cert_file"),
                "is needed with key_file",
            )),
            _ => Ok(()),
        }
    }
}

/// Why `url` is not a server URL, if it is not one.
fn check_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{}` needs a scheme: nats://, tls://, ws:// or wss://",
            redact_url(url)
        ));
    };
    if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
        return Err(format!(
            "scheme `{scheme}` is not one of nats, tls, ws, wss"
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        // [ipv6]:port
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err("an IPv6 host needs its closing `]`".to_owned());
        };
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected `{after}` after the host")),
            },
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !host_ok {
        return Err(format!("`{}` has no valid host", redact_url(url)));
    }
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("port `{port}` is not between 1 and 65535"));
        }
    }
    Ok(())
}

/// `url` with the password of its user part (if any) replaced.
/// A URL without a scheme is redacted the same way.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let Some((user_info, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{REDACTED}@{host}"),
        // A lone user part may be a token (`nats://TOKEN@host`).
        None => format!("{scheme}{REDACTED}@{host}"),
    }
}

#[cfg(test)]
#[path = "options_tests.rs"]
mod tests;
