//! A real `nats-server` for the integration tests, started and stopped by
//! the test itself.
//!
//! [`NatsServer::start`] runs Debian's `nats-server` (JetStream built in) on
//! free loopback ports with a store directory inside its own temporary
//! directory, waits until it is ready, and hands back its URL. Dropping the
//! value kills the server (also when a test panics: unwinding drops it) and
//! removes the directory. [`NatsServer::restart`] kills it with `SIGKILL`
//! and starts it again on the same port and store, for the fault tests.
//!
//! # Algorithm
//!
//! - Ports: bind two `127.0.0.1:0` listeners at once (so the client and the
//!   monitor port differ), read their ports, close them, and pass the ports
//!   to the server. Another process may take a port in between: the server
//!   then exits at once, and `start` tries again with new ports (a few
//!   times). `restart` keeps its ports and fails loudly if one is taken.
//! - Command: `nats-server -a 127.0.0.1 -p PORT -m MONITOR -js -sd DIR/store`,
//!   plus `-c DIR/server.conf` when the options ask for authentication or
//!   TLS (the harness writes the file, and for TLS makes a throwaway CA with
//!   server and client certificates in `DIR/tls` with rcgen). The server's
//!   stdout and stderr go to `DIR/server.log`, whose tail every failure
//!   message quotes.
//! - Readiness: poll until the monitor's `GET /healthz?js-enabled-only=true`
//!   answers `200` (plain HTTP/1.0 over a `std` `TcpStream`) *and* the client
//!   port greets a TCP connection with the protocol's `INFO` line (the
//!   monitor starts before the client listener). If the process exits first,
//!   or [`READY_WITHIN`] passes, the harness panics and says which.
//! - Leak guard (`watched.rs`, shared with the Kafka harness): the server
//!   is started through `sh`, which forks a watchdog reading the pipe on
//!   its stdin and then `exec`s `nats-server` (so the child the harness
//!   holds *is* the server). A normal drop tells the watchdog `done` and
//!   kills the server itself; if the test process dies without unwinding
//!   (aborted, killed), the pipe closes and the watchdog kills the server
//!   and removes the directory.
//!
//! # Invariants
//!
//! - Only loopback: the server binds `127.0.0.1`, every URL and probe
//!   targets `127.0.0.1`.
//! - Nothing is written outside the temporary directory (the server's store,
//!   its log, its config file and certificates are all inside it).
//! - No silent skip: a missing binary, a server that exits, or one that is
//!   not ready in time is a panic whose message says exactly that.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

// Included by path: this file is itself included by path from examples and
// unit tests, where it has no sibling modules. A crate with both harnesses
// compiles the one file twice, as two private modules.
#[allow(clippy::duplicate_mod)]
#[path = "watched.rs"]
mod watched;

use watched::{on_free_ports, read_log, relaunch, Launch, NotReady, Watched};

/// The binary the harness runs (Debian's package puts it in `/usr/sbin`).
pub const BINARY: &str = "nats-server";

/// Where Debian's package installs it.
const DEBIAN_PATH: &str = "/usr/sbin/nats-server";

/// How long a server may take to become ready before the test fails. A
/// hang guard for a loaded machine, not a speed check (it starts in tens of
/// milliseconds here).
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// How a server authenticates its clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// Every client must present this token.
    Token(String),
    /// Every client must log in as this user.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Every client must sign the server's nonce with the seed of this
    /// NKey public key (`U…`).
    Nkey(String),
}

/// What a server is started with beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// Client authentication, written into the config file.
    pub auth: Auth,
    /// TLS for client connections, with certificates the harness makes.
    pub tls: Option<Tls>,
}

/// TLS on the client port: the harness makes a throwaway CA, a server
/// certificate for `127.0.0.1` and `localhost`, and a client certificate,
/// all inside its temporary directory (see [`TlsPaths`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// Clients must present a certificate issued by the CA.
    pub verify_clients: bool,
}

/// Where a TLS server's files are (PEM, inside the harness's directory).
#[derive(Clone, Debug)]
pub struct TlsPaths {
    /// The CA that issued the server and client certificates: a client's
    /// root certificate.
    pub ca: PathBuf,
    /// A client certificate issued by the CA.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A running `nats-server` on loopback; killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    /// The process and its temporary directory.
    process: Watched,
    port: u16,
    monitor_port: u16,
    config: Option<PathBuf>,
    tls: Option<TlsPaths>,
}

impl NatsServer {
    /// Starts a server with JetStream and no authentication, and waits
    /// until it is ready.
    ///
    /// # Panics
    ///
    /// When `nats-server` is not installed, exits at start, or is not ready
    /// within [`READY_WITHIN`]; the message says which and quotes its log.
    pub fn start() -> Self {
        Self::start_with(NatsOptions::default())
    }

    /// [`start`](Self::start) with a token every client must present.
    pub fn with_token(token: &str) -> Self {
        Self::start_with(NatsOptions {
            auth: Auth::Token(token.to_owned()),
            ..NatsOptions::default()
        })
    }

    /// [`start`](Self::start) with one user every client must log in as.
    pub fn with_user_password(user: &str, password: &str) -> Self {
        Self::start_with(NatsOptions {
            auth: Auth::UserPassword {
                user: user.to_owned(),
                password: password.to_owned(),
            },
            ..NatsOptions::default()
        })
    }

    /// [`start`](Self::start) with options.
    pub fn start_with(options: NatsOptions) -> Self {
        binary();
        let process = Watched::new("lanebus-nats");
        let tls = options.tls.map(|_| make_certificates(&process.dir));
        let config = write_config(&process.dir, &options, tls.as_ref());
        let mut server = NatsServer {
            process,
            port: 0,
            monitor_port: 0,
            config,
            tls,
        };
        // On a panic, dropping the server (unwinding) removes its directory.
        on_free_ports(BINARY, |ports| {
            (server.port, server.monitor_port) = ports;
            server.launch()
        });
        server
    }

    /// One server for the whole test binary, started on first use and
    /// killed by its watchdog when the test process exits.
    pub fn shared() -> &'static NatsServer {
        static SHARED: OnceLock<NatsServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut server = NatsServer::start();
            server.process.owns_dir = false;
            server
        })
    }

    /// [`start`](Self::start) with TLS on the client port (certificates
    /// in [`tls_paths`](Self::tls_paths)); with `verify_clients`, clients
    /// must present the harness's client certificate.
    pub fn with_tls(verify_clients: bool) -> Self {
        Self::start_with(NatsOptions {
            tls: Some(Tls { verify_clients }),
            ..NatsOptions::default()
        })
    }

    /// The CA and client certificate of a TLS server.
    pub fn tls_paths(&self) -> Option<&TlsPaths> {
        self.tls.as_ref()
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring endpoint's base URL, `http://127.0.0.1:PORT`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream store directory (inside the harness's temporary
    /// directory).
    pub fn store_dir(&self) -> PathBuf {
        self.process.dir.join("store")
    }

    /// The server's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Kills the server with `SIGKILL` (no shutdown of any kind) and leaves
    /// it down; [`start_again`](Self::start_again) brings it back.
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts a killed server again on the same ports, store and options,
    /// and waits until it is ready.
    ///
    /// # Panics
    ///
    /// When it does not come back (for example because another process took
    /// its port meanwhile): the message says so and quotes its log.
    pub fn start_again(&mut self) {
        let ports = (self.port, self.monitor_port);
        relaunch(BINARY, self.process.running(), ports, || self.launch());
    }

    /// Kills the server with `SIGKILL` and starts it again on the same
    /// ports and store: [`kill`](Self::kill) then
    /// [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Spawns the server and waits for readiness.
    fn launch(&mut self) -> Result<(), Launch> {
        let log_path = self.process.dir.join("server.log");
        let mut command = watched::command("lanebus-nats-harness", &self.process.dir);
        command
            .arg(binary())
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-js")
            .arg("-sd")
            .arg(self.store_dir());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        self.process.spawn(command, &log_path, BINARY)?;
        let (port, monitor_port) = (self.port, self.monitor_port);
        let ready = || healthy(monitor_port) && greets(port);
        let poll = Duration::from_millis(10);
        match self
            .process
            .wait_ready(&log_path, READY_WITHIN, poll, ready)
        {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(_, log)) if log.contains("address already in use") => {
                Err(Launch::PortTaken(log))
            }
            Err(NotReady::Exited(status, log)) => Err(Launch::Failed(format!(
                "{BINARY} exited at start ({status}) on 127.0.0.1:{port} (monitor {monitor_port}); \
                 its log:\n{log}"
            ))),
            Err(NotReady::TimedOut) => Err(Launch::Failed(format!(
                "{BINARY} was not ready within {READY_WITHIN:?} on 127.0.0.1:{port} \
                 (monitor {monitor_port}: /healthz?js-enabled-only=true and the client INFO \
                 line); its log:\n{}",
                read_log(&log_path)
            ))),
        }
    }
}

/// `GET /healthz?js-enabled-only=true` on the monitor port answers `200`.
fn healthy(monitor_port: u16) -> bool {
    let Some(mut stream) = connect(monitor_port) else {
        return false;
    };
    let request = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let status_line = response.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    status_line.starts_with("HTTP/1.") && status_line.split(' ').nth(1) == Some("200")
}

/// The client port greets a connection with `INFO {...}`.
fn greets(port: u16) -> bool {
    let Some(mut stream) = connect(port) else {
        return false;
    };
    let mut greeting = [0u8; 5];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO "
}

/// The `nats-server` to run: the one on `PATH`, else Debian's
/// `/usr/sbin/nats-server` (a non-root `PATH` may lack `/usr/sbin`).
///
/// # Panics
///
/// When neither runs `--version`: the message says so and how to install it.
fn binary() -> &'static str {
    static FOUND: OnceLock<Result<&'static str, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let mut failures = Vec::new();
        for candidate in [BINARY, DEBIAN_PATH] {
            match Command::new(candidate).arg("--version").output() {
                Ok(out) if out.status.success() => return Ok(candidate),
                Ok(out) => failures.push(format!(
                    "`{candidate} --version` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => failures.push(format!("{candidate}: {e}")),
            }
        }
        Err(failures.join("; "))
    });
    match found {
        Ok(path) => path,
        Err(why) => panic!(
            "the NATS tests need a real server and none can be started: {BINARY} is not \
             installed ({why}). Install it with `apt-get install -y nats-server` \
             (scripts/test.sh does)"
        ),
    }
}

/// Writes `server.conf` when the options need one.
fn write_config(dir: &Path, options: &NatsOptions, tls: Option<&TlsPaths>) -> Option<PathBuf> {
    let mut text = String::new();
    match &options.auth {
        Auth::None => {}
        Auth::Token(token) => {
            writeln!(text, "authorization {{\n  token: {}\n}}", quote(token)).unwrap();
        }
        Auth::UserPassword { user, password } => {
            writeln!(
                text,
                "authorization {{\n  user: {}\n  password: {}\n}}",
                quote(user),
                quote(password)
            )
            .unwrap();
        }
        Auth::Nkey(public) => {
            writeln!(
                text,
                "authorization {{\n  users: [ {{ nkey: {} }} ]\n}}",
                quote(public)
            )
            .unwrap();
        }
    }
    if let (Some(paths), Some(tls)) = (tls, options.tls) {
        let path = |p: &Path| quote(&p.to_string_lossy());
        writeln!(text, "tls {{").unwrap();
        writeln!(text, "  cert_file: {}", path(&paths.server_cert)).unwrap();
        writeln!(text, "  key_file: {}", path(&paths.server_key)).unwrap();
        if tls.verify_clients {
            writeln!(text, "  ca_file: {}\n  verify: true", path(&paths.ca)).unwrap();
        }
        writeln!(text, "}}").unwrap();
    }
    if text.is_empty() {
        return None;
    }
    let path = dir.join("server.conf");
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    Some(path)
}

/// Makes a CA, a server certificate for `127.0.0.1`/`localhost` and a
/// client certificate (rcgen, ECDSA P-256) in `dir/tls`.
fn make_certificates(dir: &Path) -> TlsPaths {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let tls_dir = dir.join("tls");
    fs::create_dir(&tls_dir).expect("create the tls directory");
    let key = || KeyPair::generate().expect("generate a key pair");

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "lanebus test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, key()).expect("self-sign the CA");

    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
        let mut params = CertificateParams::new(names).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = key();
        let cert = params.signed_by(&key, &ca).expect("sign a certificate");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "lanebus test server",
    );
    let (client_cert, client_key) = leaf(
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
        "lanebus test client",
    );

    let write = |name: &str, pem: &str| {
        let path = tls_dir.join(name);
        fs::write(&path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    };
    TlsPaths {
        ca: write("ca.pem", &ca.pem()),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
    }
}

/// A double-quoted string of the server's config syntax.
fn quote(value: &str) -> String {
    assert!(
        !value.contains(['"', '\\', '\n']),
        "the harness does not escape quotes, backslashes or newlines in config values"
    );
    format!("\"{value}\"")
}

/// A short-timeout connection to a loopback port.
fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    Some(stream)
}
