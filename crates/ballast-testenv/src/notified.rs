//! A daemon under a stand-in for systemd, as the agent's and the collector's reload
//! tests run theirs: a unix datagram socket as `$NOTIFY_SOCKET` receives what it
//! tells systemd (READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1), signals go to its
//! pid, and its standard output and error go to a log file the test reads.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::wait::wait_until_showing;

/// A running daemon with its notify socket and log; killed when dropped.
#[derive(Debug)]
pub struct NotifiedDaemon {
    pub child: Child,
    /// Standard output and error, both.
    pub log: PathBuf,
    notify: UnixDatagram,
}

impl NotifiedDaemon {
    /// Starts `command` (program and arguments set) with `$NOTIFY_SOCKET` bound at
    /// `dir/notify.sock`, its output in `dir/<log_name>`, no `$WATCHDOG_USEC` or
    /// `$WATCHDOG_PID` of the test's own, then `env` (a watchdog, a test hook).
    pub fn start(mut command: Command, dir: &Path, log_name: &str, env: &[(&str, &OsStr)]) -> Self {
        let socket = dir.join("notify.sock");
        let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
        let log = dir.join(log_name);
        let output = std::fs::File::create(&log).expect("create the log");
        let child = command
            .env("NOTIFY_SOCKET", &socket)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone the log handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        Self { child, log, notify }
    }

    /// Everything the daemon wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next notify datagram; fails after `timeout`, showing the log.
    pub fn next_notification(&self, timeout: Duration) -> String {
        self.notify
            .set_read_timeout(Some(timeout))
            .expect("set a timeout");
        let mut buffer = [0u8; 4096];
        let size = self.notify.recv(&mut buffer).unwrap_or_else(|error| {
            panic!(
                "no notification within {timeout:?} ({error}):\n{}",
                self.log()
            )
        });
        String::from_utf8_lossy(&buffer[..size]).into_owned()
    }

    /// Every notification that arrives within `window`.
    pub fn notifications_for(&self, window: Duration) -> Vec<String> {
        let until = Instant::now() + window;
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.notify
                .set_read_timeout(Some(left))
                .expect("set a timeout");
            match self.notify.recv(&mut buffer) {
                Ok(size) => received.push(String::from_utf8_lossy(&buffer[..size]).into_owned()),
                Err(_) => break,
            }
        }
        received
    }

    /// Waits until a notification holds the line `line` (`READY=1`), skipping
    /// others (watchdog pings); fails after `timeout`, showing the log.
    pub fn wait_notification(&self, line: &str, timeout: Duration) {
        wait_until_showing(
            line,
            timeout,
            || {
                self.notifications_for(Duration::from_millis(500))
                    .iter()
                    .any(|message| message.lines().any(|l| l == line))
            },
            || self.log(),
        );
    }

    /// Waits until the log contains `text`; fails after 30 s, showing the log.
    pub fn wait_log(&self, text: &str) {
        wait_until_showing(
            &format!("the log to say {text:?}"),
            Duration::from_secs(30),
            || self.log().contains(text),
            || self.log(),
        );
    }

    /// Sends signal `name` (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as systemd stops it, and checks that it exits with success.
    pub fn terminate(&mut self) {
        self.signal("TERM");
        let status = self.child.wait().expect("wait for the daemon");
        assert!(status.success(), "{status}:\n{}", self.log());
    }
}

impl Drop for NotifiedDaemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many of `notifications` are watchdog pings (`WATCHDOG=1`).
pub fn pings(notifications: &[String]) -> usize {
    notifications
        .iter()
        .filter(|message| message.lines().any(|line| line == "WATCHDOG=1"))
        .count()
}
