//! What the server harnesses (`nats.rs`, `kafka.rs`) share: a server
//! process under a watchdog in a temporary directory of its own, free
//! loopback ports, and the tail of its log.
//!
//! Each harness includes this file as a child module by path (the harness
//! files are themselves included by path from examples and unit tests, so
//! they cannot reach a sibling module).
//!
//! # Algorithm
//!
//! - Leak guard: [`command`] starts the server through `sh`, which forks a
//!   watchdog reading the pipe on its stdin and then `exec`s the server's
//!   command line (so the child the harness holds *is* the server, or the
//!   script that `exec`s it). [`Watched::stop`] tells the watchdog `done`
//!   and kills and reaps the server itself; if the test process dies
//!   without unwinding (aborted, killed), the pipe closes and the watchdog
//!   kills the server and removes the directory.
//! - Readiness: [`Watched::wait_ready`] polls the harness's readiness check
//!   until it holds, the process exits, or the harness's bound passes.
//! - Ports: bind two `127.0.0.1:0` listeners at once (so they differ), read
//!   their ports and close them; [`on_free_ports`] hands them to the
//!   harness's launch and tries again with new ones when one was taken
//!   meanwhile (up to [`PORT_ATTEMPTS`] times). [`relaunch`] keeps a
//!   server's ports and fails loudly if one is taken.
//!
//! # Invariants
//!
//! - The watchdog never signals a reaped PID: the harness tells it `done`
//!   before it kills and reaps the server, and forgets an exited child
//!   before stopping.
//! - Dropping a [`Watched`] stops the server, and removes its directory
//!   when it owns it.

use std::fs::{self, File};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often [`on_free_ports`] picks new ports when a port was taken
/// meanwhile.
pub const PORT_ATTEMPTS: usize = 5;

/// The `sh` program that forks the watchdog and `exec`s the server. `$1` is
/// the directory to remove, the rest the server's command line. `$$` is the
/// shell's PID, which `exec` hands on to the server. The watchdog's stdin
/// is fd 3 (an asynchronous list's own stdin is /dev/null in a
/// non-interactive shell).
const WATCHDOG: &str = concat!(
    "dir=\"$1\"; shift; pid=$$; exec 3<&0; ",
    "( read -r line <&3; if [ \"$line\" != done ]; then ",
    "kill -KILL \"$pid\" 2>/dev/null; sleep 0.2; rm -rf \"$dir\"; fi ) ",
    ">/dev/null 2>&1 & ",
    "exec 3<&-; exec \"$@\" </dev/null"
);

/// The command that runs a server under the watchdog: append the server's
/// program and arguments, then give it to [`Watched::spawn`].
pub fn command(harness: &str, dir: &Path) -> Command {
    let mut command = Command::new("sh");
    command.arg("-c").arg(WATCHDOG).arg(harness).arg(dir);
    command
}

/// Why a launch failed.
pub enum Launch {
    /// A port was taken between choosing it and the server binding it (the
    /// server's log).
    PortTaken(String),
    /// Anything else: the full panic message.
    Failed(String),
}

/// Why [`Watched::wait_ready`] gave up.
pub enum NotReady {
    /// The process exited (reaped, the watchdog told to stand down): its
    /// status and the tail of its log.
    Exited(ExitStatus, String),
    /// The bound passed (the process is stopped).
    TimedOut,
}

/// A server process under a watchdog, in its own directory.
#[derive(Debug)]
pub struct Watched {
    child: Option<Child>,
    watchdog: Option<ChildStdin>,
    /// The server's temporary directory.
    pub dir: PathBuf,
    /// Removes `dir` on drop (not for a shared server, whose watchdog
    /// removes it when the test process ends, nor between two tries).
    pub owns_dir: bool,
}

impl Watched {
    /// Nothing running yet, in a fresh temporary directory named after
    /// `prefix` (owned).
    pub fn new(prefix: &str) -> Self {
        Watched {
            child: None,
            watchdog: None,
            dir: make_temp_dir(prefix),
            owns_dir: true,
        }
    }

    /// Spawns `command` (from [`command`]) with its stdout and stderr in
    /// the file `log`; `what` names the server in the error.
    pub fn spawn(&mut self, mut command: Command, log: &Path, what: &str) -> Result<(), Launch> {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("clone the handle of {}: {e}", log.display()));
        command.stdin(Stdio::piped()).stdout(out).stderr(err);
        let mut child = command
            .spawn()
            .map_err(|e| Launch::Failed(format!("could not spawn `sh` to start {what}: {e}")))?;
        self.watchdog = child.stdin.take();
        self.child = Some(child);
        Ok(())
    }

    /// Polls `ready` every `poll` until it holds (`Ok`), the process
    /// exits, or `within` passes.
    pub fn wait_ready(
        &mut self,
        log: &Path,
        within: Duration,
        poll: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), NotReady> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // Reaped already: the watchdog must not signal its PID.
                self.child = None;
                self.stop();
                return Err(NotReady::Exited(status, read_log(log)));
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(NotReady::TimedOut);
            }
            std::thread::sleep(poll);
        }
    }

    /// Whether the process was started and not stopped.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills and reaps the server, telling its watchdog to stand down
    /// first (so the watchdog never signals a reaped, reusable PID).
    pub fn stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.write_all(b"done\n");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
        if self.owns_dir {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Calls `launch` with a fresh pair of free ports until it does not report
/// [`Launch::PortTaken`], up to [`PORT_ATTEMPTS`] times.
///
/// # Panics
///
/// On [`Launch::Failed`] (its message), or when every pair was taken
/// (`name` and the last log say so).
pub fn on_free_ports(name: &str, mut launch: impl FnMut((u16, u16)) -> Result<(), Launch>) {
    let mut last_log = String::new();
    for _ in 0..PORT_ATTEMPTS {
        match launch(free_port_pair()) {
            Ok(()) => return,
            Err(Launch::PortTaken(log)) => last_log = log,
            Err(Launch::Failed(message)) => panic!("{message}"),
        }
    }
    panic!(
        "{name} could not bind free loopback ports in {PORT_ATTEMPTS} attempts; \
         its last log:\n{last_log}"
    );
}

/// Starts a stopped server again on its `ports` with `launch`.
///
/// # Panics
///
/// When the server still runs (`running`), or it does not come back (for
/// example because another process took a port meanwhile): the message
/// names `name` and quotes the log.
pub fn relaunch(
    name: &str,
    running: bool,
    ports: (u16, u16),
    launch: impl FnOnce() -> Result<(), Launch>,
) {
    assert!(!running, "start_again: {name} is still running");
    match launch() {
        Ok(()) => {}
        Err(Launch::PortTaken(log)) => panic!(
            "{name} could not restart: port {} or {} was taken meanwhile; its log:\n{log}",
            ports.0, ports.1
        ),
        Err(Launch::Failed(message)) => panic!("{message}"),
    }
}

/// A fresh, empty directory `PREFIX-PID-N-NANOS` under the system's
/// temporary directory.
fn make_temp_dir(prefix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Two distinct free loopback ports.
fn free_port_pair() -> (u16, u16) {
    let bind = || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    (port(&a), port(&b))
}

/// The last 40 lines of a server's log.
pub fn read_log(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
