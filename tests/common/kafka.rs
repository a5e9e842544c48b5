//! A real Apache Kafka broker for the integration tests, started and
//! stopped by the test itself.
//!
//! [`KafkaBroker::start`] runs Apache Kafka's own broker (`kafka.Kafka`,
//! from the Maven Central jars that `scripts/kafka.sh fetch` puts in
//! `.cache/kafka/<version>/lib`) as one KRaft process that is both broker
//! and controller, on free loopback ports, with its storage and log inside
//! its own temporary directory; it waits until the broker answers a
//! metadata request and hands back its bootstrap address. Dropping the
//! value kills the broker (also when a test panics: unwinding drops it) and
//! removes the directory. [`KafkaBroker::restart`] kills it with `SIGKILL`
//! and starts it again on the same ports and storage, for the crash tests.
//!
//! # Algorithm
//!
//! - Config and storage: `scripts/kafka.sh prepare DIR PORT CONTROLLER_PORT`
//!   writes `DIR/broker.properties` (PLAINTEXT and CONTROLLER listeners on
//!   `127.0.0.1`, `node.id=1`, replication factor and min ISR 1 for the
//!   internal topics, `group.initial.rebalance.delay.ms=0`, `log.dirs` =
//!   `DIR/data`) and formats `DIR/data` with the storage tool's
//!   `format --standalone` (this controller is the only voter). The script
//!   is the one place that knows the config, the JVM options and the jars.
//! - Ports: bind two `127.0.0.1:0` listeners at once (so they differ), read
//!   their ports, close them, and pass them to the script. Another process
//!   may take one in between: the broker then exits with "Address already in
//!   use", and `start` wipes the storage (which records the controller's
//!   address), picks new ports and tries again (a few times). `start_again`
//!   keeps its ports and storage and fails loudly if a port is taken.
//! - Command: `scripts/kafka.sh run DIR`, which `exec`s `java … kafka.Kafka
//!   DIR/broker.properties`; its stdout and stderr (the broker's log) go to
//!   `DIR/broker.log`, whose tail every failure message quotes.
//! - Readiness: poll until the PLAINTEXT port answers a Metadata request
//!   (version 4, written and parsed here over a `std` `TcpStream`) with a
//!   broker list that holds this broker's port. The broker opens that port
//!   only once it has joined its own quorum and been unfenced, so an answer
//!   means it takes produce, fetch, group and admin requests. If the process
//!   exits first, or [`READY_WITHIN`] passes, the harness panics and says
//!   which.
//! - Leak guard: as in the NATS harness (`watched.rs`), the broker is started through `sh`,
//!   which forks a watchdog reading the pipe on its stdin and then `exec`s
//!   the script (which `exec`s the JVM, so the child the harness holds *is*
//!   the broker). A normal drop tells the watchdog `done` and kills the
//!   broker itself; if the test process dies without unwinding, the pipe
//!   closes and the watchdog kills the broker and removes the directory.
//!
//! # Invariants
//!
//! - Only loopback: the broker binds and advertises `127.0.0.1`, and every
//!   probe targets `127.0.0.1`.
//! - Nothing is written outside the temporary directory (config, storage,
//!   log); the jars are only read.
//! - No silent skip: missing jars, a missing JDK, a broker that exits, or
//!   one that does not answer in time is a panic whose message says exactly
//!   that (for missing jars: run `scripts/kafka.sh fetch`).

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

// Included by path: this file is itself included by path from examples and
// unit tests, where it has no sibling modules. A crate with both harnesses
// compiles the one file twice, as two private modules.
#[allow(clippy::duplicate_mod)]
#[path = "watched.rs"]
mod watched;

use watched::{on_free_ports, read_log, relaunch, Launch, NotReady, Watched};

/// How long a broker may take to answer its first metadata request before
/// the test fails. A hang guard for a loaded machine, not a speed check (it
/// answers within a few seconds here).
pub const READY_WITHIN: Duration = Duration::from_secs(120);

/// The broker's name in failure messages.
const NAME: &str = "the Kafka broker";

/// The script that fetches the jars, writes the config and runs the broker.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh")
}

/// A running single-node Kafka broker on loopback; killed when dropped.
#[derive(Debug)]
pub struct KafkaBroker {
    /// The process and its temporary directory.
    process: Watched,
    port: u16,
    controller_port: u16,
}

impl KafkaBroker {
    /// Starts a broker on fresh storage and waits until it answers a
    /// metadata request.
    ///
    /// # Panics
    ///
    /// When the jars are not fetched, the storage cannot be formatted, or
    /// the broker exits at start or does not answer within
    /// [`READY_WITHIN`]; the message says which and quotes the log.
    pub fn start() -> Self {
        jars();
        let mut broker = KafkaBroker {
            process: Watched::new("lanebus-kafka"),
            port: 0,
            controller_port: 0,
        };
        // On a panic, dropping the broker (unwinding) removes its directory.
        on_free_ports(NAME, |ports| {
            (broker.port, broker.controller_port) = ports;
            // The storage records the controller's address: new ports, new
            // storage.
            let _ = fs::remove_dir_all(broker.data_dir());
            broker.prepare();
            broker.launch()
        });
        broker
    }

    /// One broker for the whole test binary, started on first use and
    /// killed by its watchdog when the test process exits.
    pub fn shared() -> &'static KafkaBroker {
        static SHARED: OnceLock<KafkaBroker> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut broker = KafkaBroker::start();
            broker.process.owns_dir = false;
            broker
        })
    }

    /// The bootstrap address for clients, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The PLAINTEXT (client) port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's storage (its `log.dirs`).
    pub fn data_dir(&self) -> PathBuf {
        self.process.dir.join("data")
    }

    /// The broker's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The broker's resident memory in KiB (`VmRSS`), while it runs.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The last lines of the broker's log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_log(&self.process.dir.join("broker.log"))
    }

    /// Kills the broker with `SIGKILL` (no controlled shutdown, no flush)
    /// and leaves it down; [`start_again`](Self::start_again) brings it
    /// back.
    pub fn kill(&mut self) {
        self.process.stop();
    }

    /// Starts a killed broker again on the same ports and storage, and
    /// waits until it answers a metadata request.
    ///
    /// # Panics
    ///
    /// When it does not come back (for example because another process
    /// took its port meanwhile): the message says so and quotes its log.
    pub fn start_again(&mut self) {
        let ports = (self.port, self.controller_port);
        relaunch(NAME, self.process.running(), ports, || self.launch());
    }

    /// Kills the broker with `SIGKILL` and starts it again on the same
    /// ports and storage: [`kill`](Self::kill) then
    /// [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Writes the config for this broker's ports and formats its storage.
    fn prepare(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("prepare")
            .arg(&self.process.dir)
            .arg(self.port.to_string())
            .arg(self.controller_port.to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("could not run `bash scripts/kafka.sh prepare`: {e}"));
        assert!(
            out.status.success(),
            "`scripts/kafka.sh prepare` failed ({}), so no Kafka broker can start: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Spawns the broker and waits until it answers a metadata request.
    fn launch(&mut self) -> Result<(), Launch> {
        let dir = &self.process.dir;
        let log_path = dir.join("broker.log");
        // `exec` hands the shell's PID to bash and bash to the JVM.
        let mut command = watched::command("lanebus-kafka-harness", dir);
        command.arg("bash").arg(script()).arg("run").arg(dir);
        self.process.spawn(command, &log_path, NAME)?;
        let (port, controller_port) = (self.port, self.controller_port);
        let ready = || answers_metadata(port);
        let poll = Duration::from_millis(50);
        match self
            .process
            .wait_ready(&log_path, READY_WITHIN, poll, ready)
        {
            Ok(()) => Ok(()),
            Err(NotReady::Exited(_, log)) if log.contains("Address already in use") => {
                Err(Launch::PortTaken(log))
            }
            Err(NotReady::Exited(status, log)) => Err(Launch::Failed(format!(
                "the Kafka broker exited at start ({status}) on 127.0.0.1:{port} \
                 (controller {controller_port}); its log ({}):\n{log}",
                log_path.display()
            ))),
            Err(NotReady::TimedOut) => Err(Launch::Failed(format!(
                "the Kafka broker did not answer a metadata request within {READY_WITHIN:?} \
                 on 127.0.0.1:{port} (controller {controller_port}); its log ({}):\n{}",
                log_path.display(),
                read_log(&log_path)
            ))),
        }
    }
}

/// The folder of the fetched jars.
///
/// # Panics
///
/// When `scripts/kafka.sh fetch` has not run: the message says to run it.
fn jars() -> &'static Path {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let out = Command::new("bash")
            .arg(script())
            .arg("lib")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("could not run `bash scripts/kafka.sh lib`: {e}"))?;
        if out.status.success() {
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    match found {
        Ok(path) => path,
        Err(why) => panic!("the Kafka tests need a real broker and none can be started: {why}"),
    }
}

/// The correlation ID of the readiness probe's request.
const PROBE_CORRELATION: i32 = 0x6c62_6b31;

/// Sends one Metadata request (version 4, no topics) to `port` and checks
/// that the answer lists a broker on that port.
fn answers_metadata(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let timeouts = Some(Duration::from_secs(5));
    if stream.set_read_timeout(timeouts).is_err() || stream.set_write_timeout(timeouts).is_err() {
        return false;
    }
    if stream.write_all(&metadata_request()).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    if stream.read_exact(&mut size).is_err() {
        return false;
    }
    let size = i32::from_be_bytes(size);
    if !(0..=1 << 20).contains(&size) {
        return false;
    }
    let mut body = vec![0u8; size as usize];
    if stream.read_exact(&mut body).is_err() {
        return false;
    }
    broker_ports(&body).is_some_and(|ports| ports.contains(&i32::from(port)))
}

/// A Metadata v4 request with header v1: api key 3, version 4, the probe's
/// correlation ID, client ID `lanebus-harness`, an empty topic array (only
/// the brokers), no topic auto-creation.
fn metadata_request() -> Vec<u8> {
    let client = b"lanebus-harness";
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes());
    body.extend_from_slice(&4i16.to_be_bytes());
    body.extend_from_slice(&PROBE_CORRELATION.to_be_bytes());
    body.extend_from_slice(&(client.len() as i16).to_be_bytes());
    body.extend_from_slice(client);
    body.extend_from_slice(&0i32.to_be_bytes());
    body.push(0);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    request
}

/// The ports of the brokers a Metadata v4 response lists, or `None` when
/// it is not an answer to the probe: correlation ID, throttle time, then
/// `[node_id: i32, host: string, port: i32, rack: nullable string]`.
fn broker_ports(body: &[u8]) -> Option<Vec<i32>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let bytes = body.get(at..at + n)?;
        at += n;
        Some(bytes)
    };
    let i32_at = |b: &[u8]| i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    if i32_at(take(4)?) != PROBE_CORRELATION {
        return None;
    }
    take(4)?; // throttle_time_ms
    let count = i32_at(take(4)?);
    if !(0..=1024).contains(&count) {
        return None;
    }
    let mut ports = Vec::new();
    for _ in 0..count {
        take(4)?; // node_id
        let host_len = i16_at(take(2)?);
        take(usize::try_from(host_len).ok()?)?;
        ports.push(i32_at(take(4)?));
        let rack_len = i16_at(take(2)?);
        if rack_len >= 0 {
            take(rack_len as usize)?;
        }
    }
    Some(ports)
}
